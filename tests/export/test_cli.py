"""`genrt export / build / parity`: the happy path and one-line exit-code-2 errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from genrt.cli import main
from genrt.manifest import read_manifest, write_manifest
from tests.raw_manifest import rewrite_manifest

EXPORT = ["export", "vqgan", "--config", "tiny", "--random-weights"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_bad_input(capsys, argv, message: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert err.count("\n") == 1 and message in err, err


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "vq"
    assert main(EXPORT + ["--out", str(out), "--precision", "fp16", "--batch", "1-2"]) == 0
    return out


def test_export_build_parity_round_trip(export_dir, capsys):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert list(manifest["components"]) == ["encoder", "decoder", "prior"]
    assert manifest["export_options"]["batch"] == [1, 1, 2] and manifest["export_options"]["random_weights"]
    code, out, _ = run(capsys, "build", export_dir, "--trt", "tensorrt_rtx")  # no GPU: the portable set
    assert code == 0 and out.count("built in") == 3 and out.count("for compute capability 8.6, 8.9, 12.0") == 3
    code, out, _ = run(capsys, "build", export_dir, "--trt", "tensorrt_rtx", "--compute-capability", "8.6,8.9,12.0")
    assert code == 0 and out.count("cache hit") == 3
    code, out, _ = run(capsys, "parity", export_dir)
    assert code == 0 and "parity: 12/12 comparisons passed" in out


def test_parity_exits_1_when_the_reference_differs(export_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    manifest = read_manifest(copy)
    options = dataclasses.replace(manifest.export_options, seed=1)  # other random weights than the graphs had
    write_manifest(dataclasses.replace(manifest, export_options=options))
    code, out, _ = run(capsys, "parity", copy, "--components", "decoder")
    assert code == 1 and "FAIL" in out


@pytest.mark.parametrize("argv, message", [
    (["export", "diffusion", "--config", "tiny", "--random-weights", "--out", "{tmp}/a"], "unknown model family"),
    (EXPORT + ["--out", "{tmp}/a", "--components", "unet"], "unknown vqgan component(s): unet"),
    (EXPORT + ["--out", "{tmp}/a", "--batch", "4-1"], "--batch 4-1 is not ordered"),
    (EXPORT + ["--out", "{tmp}/a", "--resolution", "15"], "resolution 15 is not a multiple of 2"),
    (EXPORT + ["--out", "{tmp}/a", "--precision", "fp8"], "--precision is 'fp8'"),
    (["export", "vqgan", "--config", "huge", "--random-weights", "--out", "{tmp}/a"], "unknown vqgan config"),
    (["export", "vqgan", "--config", "tiny", "--out", "{tmp}/a"], "no weights given"),
    (EXPORT + ["--out", "{tmp}/file/a"], "cannot create"),
    (EXPORT + ["--out", "{tmp}/full"], "is not empty"),
    (["build", "{tmp}/full"], "has no manifest.json"),
    (["build", "{tmp}/full", "--trt", "tensorrt8"], "unknown --trt"),
])
def test_bad_export_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep.txt").write_text("user data")
    assert_bad_input(capsys, [a.replace("{tmp}", str(tmp_path)) for a in argv], message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]  # nothing half-written
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_corrupted_or_foreign_onnx_and_newer_schema_exit_2(export_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    (copy / "prior/model.onnx").write_bytes(b"\x08\x07garbage")
    assert_bad_input(capsys, ["build", copy, "--components", "prior"], "sha256 does not match")
    shutil.copy(copy / "decoder/model.onnx", copy / "encoder/model.onnx")  # a valid graph, but not this one
    assert_bad_input(capsys, ["parity", copy, "--components", "encoder"], "sha256 does not match")
    assert_bad_input(capsys, ["build", copy, "--components", "unet"], "unknown component(s) unet")
    rewrite_manifest(copy, {"schema_version": 1})  # an older folder
    assert_bad_input(capsys, ["build", copy], "schema_version 1; this genrt")
    assert_bad_input(capsys, ["parity", copy], "schema_version 1; this genrt")


def test_build_refuses_unknown_compute_capability(export_dir, capsys):
    assert_bad_input(capsys, ["build", export_dir, "--trt", "tensorrt_rtx", "--compute-capability", "6.1"],
                     "cannot target compute capabilities")


def test_bf16_export_builds_and_parity_says_no_cpu_backend_runs_it(tmp_path, capsys):
    out = tmp_path / "bf16"
    code, out_text, _ = run(capsys, *EXPORT, "--out", out, "--precision", "bf16", "--components", "decoder")
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["components"]["decoder"]["outputs"][0]["dtype"] == "bfloat16"
    assert "group_norm" in manifest["components"]["decoder"]["fp32_islands"]
    code, out_text, _ = run(capsys, "build", out, "--trt", "tensorrt_rtx")
    assert code == 0 and "built in" in out_text
    assert_bad_input(capsys, ["parity", out], "no backend on this machine can run bf16 graphs")
