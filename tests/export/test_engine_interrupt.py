"""Ctrl-C during a real `genrt build` (TensorRT-RTX, in a subprocess) stops it cleanly."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from genrt.export.folder import export_folder
from genrt.export.ldm import plan
from genrt.export.options import ExportOptions

pytest.importorskip("tensorrt_rtx")


def _folder_hashes(directory) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.startswith("build-")}


@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory):
    """A tiny ldm U-Net export: its TensorRT-RTX build takes several seconds on this CPU."""
    full = plan("tiny", "fp32", ExportOptions(random_weights=True, seed=0))
    out = tmp_path_factory.mktemp("interrupt") / "ldm"
    export_folder(dataclasses.replace(full, components={"unet": full.components["unet"]}), out)
    return out


def test_sigint_during_a_build_stops_it_with_one_line_and_nothing_written(unet_folder):
    before = _folder_hashes(unet_folder)
    command = [sys.executable, "-m", "genrt.cli", "build", str(unet_folder), "--trt", "tensorrt_rtx",
               "--compute-capability", "8.6"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    announced = process.stdout.readline()
    assert "building for compute capability 8.6" in announced, announced
    time.sleep(1.0)  # inside TensorRT's builder, which logs (and calls back into Python) all the time
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    stopped_after = time.monotonic() - sent
    assert process.returncode == 130, (out, err)
    assert err.strip() == "genrt build: interrupted", err
    assert "built in" not in out
    assert stopped_after < 30
    assert _folder_hashes(unet_folder) == before  # no engine, no temp file, manifest unchanged
    assert not list(unet_folder.rglob("*.plan")) and not list(unet_folder.rglob("*.partial"))
