"""tests/gpu/conftest.py: with the GPU probe faked, GPU tests fail without a GPU backend (runs on the CPU, outside
tests/gpu, which tests/conftest.py skips without a GPU)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INNER_CONFTEST = """
import tests.gpu.conftest as gate
from tests.gpu.conftest import gpu_backends, require_a_gpu_backend

gate.probe = lambda: ({present}, {backends!r})
"""
INNER_TEST = """
def test_runs_on_a_gpu_backend(gpu_backends):
    assert gpu_backends
"""


@pytest.mark.parametrize("present, backends, outcome", [
    (True, [], {"errors": 1}),  # a GPU without a backend: red, not skipped
    (True, ["onnxruntime-cuda"], {"passed": 1}),
    (True, ["tensorrt_rtx"], {"passed": 1}),
])
def test_gpu_tests_fail_on_a_gpu_without_a_backend(pytester, present, backends, outcome):
    pytester.makeconftest(INNER_CONFTEST.format(present=present, backends=backends))
    pytester.makepyfile(INNER_TEST)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(**outcome)
    if outcome.get("errors"):
        result.stdout.fnmatch_lines(["*an NVIDIA GPU is present but no GPU backend is installed*genrt?gpu?*"])


def test_without_a_gpu_the_gate_lets_the_root_conftest_skip(pytester):
    pytester.makeconftest(INNER_CONFTEST.format(present=False, backends=[]))
    pytester.makepyfile("def test_needs_nothing(gpu_backends):\n    assert gpu_backends == []\n")
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
