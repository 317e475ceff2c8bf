"""Bad input to every `genrt` command: exit code 2, one stderr line with a fix, no traceback, and no file
written or changed (the export folder and the output folder hash the same before and after)."""

from __future__ import annotations

import shutil

import pytest

from tests.raw_manifest import rewrite_manifest
from tests.reliability.helpers import assert_refused, cli, tree

RUN = ["--no-progress", "--backend", "onnxruntime-cpu", "--threads", "1"]
LONG = "x" * 300

# (family, arguments after DIR, text the error line must contain); --out is added unless the case sets it
RUN_CASES = [
    ("ldm", [], "needs a text prompt"),
    ("ldm", ["--prompt", "a", "--steps", "0"], "--steps is 0"),
    ("ldm", ["--prompt", "a", "--steps", "-3"], "--steps is -3"),
    ("ldm", ["--prompt", "a", "--steps", "2.7"], "invalid int value"),
    ("ldm", ["--prompt", "a", "--steps", "x"], "invalid int value"),
    ("ldm", ["--prompt", "a", "--steps", "100000"], "num_inference_steps is 100000"),
    ("ldm", ["--prompt", "a", "--guidance", "nan"], "--guidance is nan"),
    ("ldm", ["--prompt", "a", "--guidance", "inf"], "--guidance is inf"),
    ("ldm", ["--prompt", "a", "--guidance=-inf"], "--guidance is -inf"),
    ("ldm", ["--prompt", "a", "--guidance", "-1"], "--guidance is -1.0"),
    ("ldm", ["--prompt", "a", "--guidance", "1e9"], "--guidance is 1000000000.0"),
    ("ldm", ["--prompt", "a", "--seed", "-1"], "--seed is -1"),
    ("ldm", ["--prompt", "a", "--seed", "99999999999999999999"], "--seed is 99999999999999999999"),
    ("ldm", ["--prompt", "a", "--seed", "1.5"], "invalid int value"),
    ("ldm", ["--prompt", "a", "--height", "60"], "height is 60; expected a multiple of 8 in [32, 128]"),
    ("ldm", ["--prompt", "a", "--width", "63"], "width is 63; expected a multiple of 8"),
    ("ldm", ["--prompt", "a", "--height", "0"], "--height is 0"),
    ("ldm", ["--prompt", "a", "--height", "-64"], "--height is -64"),
    ("ldm", ["--prompt", "a", "--height", "4096"], "height is 4096; expected a multiple of 8 in [32, 128]"),
    ("ldm", ["--prompt", "a", "--height", "99999999999"], "height is 99999999999"),
    ("ldm", ["--prompt", "a", "--num-images", "0"], "--num-images is 0"),
    ("ldm", ["--prompt", "a", "--num-images", "-1"], "--num-images is -1"),
    ("ldm", ["--prompt", "a", "--num-images", "100"], "input_ids"),
    ("ldm", ["--prompt", "a", "--threads", "-1"], "--threads is -1"),
    ("ldm", ["--prompt", "a", "--class-id", "3"], "--class-id does not apply to ldm"),
    ("ldm", ["--prompt", "a", "--sampler", "nope"], "nope"),
    ("ldm", ["--prompt", "a", "--backend", "nope"], "invalid choice"),
    ("ldm", ["--prompt", "a", "--bogus"], "unrecognized arguments: --bogus"),
    ("ldm", ["--prompt", "a", "--out", ""], "--out is empty"),
    ("ldm", ["--prompt", "a", "--out", "{tmp}"], "is a folder"),
    ("ldm", ["--prompt", "a", "--out", "{tmp}/taken.png"], "exists"),
    ("ldm", ["--prompt", "a", "--out", "{tmp}/taken.png/x.png"], "is a file, not a folder"),
    ("ldm", ["--prompt", "a", "--out", f"{{tmp}}/{LONG}.png"], "name is too long"),
    ("ldm", ["--prompt", "a", "--num-images", "2", "--out", "{tmp}/pair.png"], "pair_1.png exists"),
    ("vqgan", ["--prompt", "a"], "this vqgan export names no classes, so it takes no prompt"),
    ("vqgan", ["--negative-prompt", "a"], "--negative-prompt does not apply to vqgan"),
    ("vqgan", ["--steps", "3"], "--steps does not apply to vqgan"),
    ("vqgan", ["--guidance", "2"], "--guidance does not apply to vqgan"),
    ("vqgan", ["--height", "32"], "--height does not apply to vqgan"),
    ("vqgan", ["--sampler", "ddim"], "--sampler does not apply to vqgan"),
    ("vqgan", ["--class-id", "-1"], "condition ids span [-1, -1]"),
    ("vqgan", ["--class-id", "1000000"], "condition ids span [1000000, 1000000]"),
    ("vqgan", ["--class-id", "2.5"], "invalid int value"),
    ("vqgan", ["--num-images", "0"], "--num-images is 0"),
    ("vqgan", ["--seed", "-5"], "--seed is -5"),
    ("imagen", ["--prompt", "a", "--height", "32"], "--height does not apply to imagen"),
    ("imagen", ["--prompt", "a", "--class-id", "1"], "--class-id does not apply to imagen"),
    ("imagen", ["--prompt", "a", "--guidance", "nan"], "--guidance is nan"),
    ("imagen", ["--prompt", "a", "--steps", "0"], "--steps is 0"),
    ("imagen", ["--prompt", "a", "--seed", "-5"], "--seed is -5"),
    ("imagen", [], "needs a text prompt"),
]


@pytest.mark.parametrize("family, args, message", RUN_CASES, ids=[f"{c[0]}:{' '.join(c[1])[:40]}" for c in RUN_CASES])
def test_run_refuses(folders, tmp_path, family, args, message):
    (tmp_path / "taken.png").write_bytes(b"user's image")
    (tmp_path / "pair_1.png").write_bytes(b"user's image")
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    out = [] if "--out" in args else ["--out", tmp_path / "new.png"]
    before = tree(folders[family], tmp_path)
    outcome = cli(["run", folders[family], *RUN, *out, *args])
    assert_refused(outcome, "run", message)
    assert tree(folders[family], tmp_path) == before


@pytest.mark.parametrize("args, message", [
    (["--guidance", "nan"], "--guidance is nan"),
    (["--steps", "0"], "--steps is 0"),
    (["--seed", "-1"], "--seed is -1"),
    (["--class-id", "2"], "--class-id does not apply to ldm"),
    (["--height", "60"], "height is 60"),
    (["--repeats", "0"], "--repeats 0"),
    (["--warmup", "-1"], "--warmup -1"),
])
def test_bench_refuses(folders, tmp_path, args, message):
    before = tree(folders["ldm"])
    outcome = cli(["bench", folders["ldm"], "--prompt", "a", *RUN[1:], "--out", tmp_path / "bench", *args])
    assert_refused(outcome, "bench", message)
    assert tree(folders["ldm"]) == before and not (tmp_path / "bench").exists()


def test_run_missing_and_foreign_folders(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    for folder, message in ((tmp_path / "absent", "has no manifest.json"), (tmp_path / "file", "has no manifest.json"),
                            (tmp_path, "has no manifest.json")):
        assert_refused(cli(["run", folder, "--prompt", "a", "--out", tmp_path / "x.png"]), "run", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


EXPORT = ["ldm", "--config", "tiny", "--random-weights"]
EXPORT_CASES = [
    (["nope", "--config", "tiny", "--random-weights"], "unknown model family 'nope'"),
    (["ldm", "--config", "nope", "--random-weights"], "nope"),
    (["ldm", "--random-weights"], "no --config given"),
    ([*EXPORT, "--out", ""], "no --out folder given"),
    ([*EXPORT, "--batch", "0"], "--batch '0'"),
    ([*EXPORT, "--batch", "0-0-0"], "--batch '0-0-0'"),
    ([*EXPORT, "--batch", "4-1"], "--batch 4-1 is not ordered"),
    ([*EXPORT, "--batch", "1-9999"], "values from 1 to 256"),
    ([*EXPORT, "--batch", "abc"], "--batch 'abc'"),
    ([*EXPORT, "--batch", "1-2-3-4"], "--batch '1-2-3-4'"),
    ([*EXPORT, "--resolution", "99999999"], "values from 1 to 8192"),
    ([*EXPORT, "--resolution", "-64"], "--resolution '-64'"),
    ([*EXPORT, "--resolution", "61"], "resolution 61 is not a multiple of"),
    ([*EXPORT, "--sequence-length", "0"], "--sequence-length '0'"),
    ([*EXPORT, "--sequence-length", "1-999999"], "values from 1 to 4096"),
    ([*EXPORT, "--seed", "-1"], "--seed is -1"),
    ([*EXPORT, "--seed", "99999999999999999999"], "--seed is 99999999999999999999"),
    ([*EXPORT, "--seed", "x"], "invalid int value"),
    ([*EXPORT, "--precision", "fp8"], "--precision is 'fp8'"),
    ([*EXPORT, "--precision", "bf16"], "bf16 export of text_encoder is not supported"),
    (["imagen", "--config", "tiny", "--random-weights", "--precision", "bf16", "--components", "t5_encoder"],
     "bf16 export of t5_encoder is not supported"),
    ([*EXPORT, "--checkpoint-sr", "x"], "--checkpoint-sr does not apply to ldm"),
    (["ldm", "--config", "tiny"], "no weights given"),
    (["ldm", "--config", "tiny", "--random-weights", "--checkpoint", "x"], "both --checkpoint and --random-weights"),
    ([*EXPORT, "--components", "nope"], "unknown ldm component(s): nope"),
    ([*EXPORT, "--tokenizer", "/nonexistent"], "tokenizer folder /nonexistent not found"),
    ([*EXPORT, "--out", "{tmp}/full"], "is not empty"),
    ([*EXPORT, "--out", "{tmp}/file"], "exists and is not a folder"),
    ([*EXPORT, "--out", "{tmp}/file/sub"], "cannot create"),
    ([*EXPORT, "--out", f"{{tmp}}/{LONG}"], "name is too long"),
    ([*EXPORT, "--frobnicate"], "unrecognized arguments"),
]


@pytest.mark.parametrize("args, message", EXPORT_CASES, ids=[" ".join(c[0])[-40:] for c in EXPORT_CASES])
def test_export_refuses(tmp_path, args, message):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    (tmp_path / "file").write_text("user data")
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    out = [] if "--out" in args else ["--out", tmp_path / "new"]
    before = tree(tmp_path)
    assert_refused(cli(["export", *args, *out]), "export", message)
    assert tree(tmp_path) == before


BUILD_CASES = [
    (["--trt", "nope"], "unknown --trt 'nope'"),
    (["--opt-level", "9"], "--opt-level 9"),
    (["--opt-level", "-1"], "--opt-level -1"),
    (["--opt-level", "2.5"], "invalid int value"),
    (["--workspace", "nan"], "--workspace nan"),
    (["--workspace", "inf"], "--workspace inf"),
    (["--workspace", "-1"], "--workspace -1.0"),
    (["--workspace", "0"], "--workspace 0.0"),
    (["--compute-capability", "abc"], "abc"),
    (["--components", "nope"], "unknown component(s) nope"),
    (["--static", "--bogus"], "unrecognized arguments"),
]


@pytest.mark.parametrize("args, message", BUILD_CASES, ids=[" ".join(c[0]) for c in BUILD_CASES])
def test_build_refuses(toy_folder, args, message):
    before = tree(toy_folder.parent)
    assert_refused(cli(["build", toy_folder, "--trt", "tensorrt_rtx", *args]), "build", message)
    assert tree(toy_folder.parent) == before


def test_build_and_parity_refuse_folders_without_manifest(tmp_path):
    for command in ("build", "parity"):
        assert_refused(cli([command, tmp_path / "absent"]), command, "has no manifest.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed is -1"),
    (["--seed", "99999999999999999999"], "--seed is 99999999999999999999"),
    (["--seed", "1.5"], "invalid int value"),
    (["--components", "nope"], "unknown component(s) nope"),
    (["--components"], "expected at least one argument"),
])
def test_parity_refuses(toy_folder, args, message):
    before = tree(toy_folder.parent)
    assert_refused(cli(["parity", toy_folder, *args]), "parity", message)
    assert tree(toy_folder.parent) == before


def test_parity_refuses_a_swapped_family(toy_folder, tmp_path):
    folder = tmp_path / "swapped"
    shutil.copytree(toy_folder, folder)
    rewrite_manifest(folder, {"family": "ldm"})
    before = tree(folder)
    assert_refused(cli(["parity", folder]), "parity", "settings has unknown key(s)")
    assert tree(folder) == before


@pytest.mark.parametrize("argv, message", [
    (["frob"], "invalid choice: 'frob'"),
    (["run"], "the following arguments are required"),
    (["export"], "the following arguments are required: FAMILY"),
])
def test_usage_errors_are_one_line(argv, message):
    outcome = cli(argv)
    prog = "genrt" if argv == ["frob"] else f"genrt {argv[0]}"
    lines = outcome.err.strip().splitlines()
    assert outcome.code == 2 and len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and message in lines[0]
    assert f"see `{prog} --help`" in lines[0]
