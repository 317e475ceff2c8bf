"""Faults while writing: disk full and read-only file systems (small tmpfs mounts; root only), SIGKILL in the
middle of an export and of a build, concurrent builds, a folder that appears during an export, leftovers
of dead processes, and the umask. Nothing is lost, nothing half-written is left or recorded."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from genrt.errors import FileError, InputError
from genrt.export.folder import export_folder
from genrt.lock import folder_lock
from genrt.manifest import read_manifest, replace_component, sha256_of, write_manifest
from tests.raw_manifest import rewrite_manifest
from tests.reliability.conftest import toy_plan
from tests.reliability.helpers import REPO, assert_refused, cli, cli_process, dead_pid, tree

RUN = ["--no-progress", "--backend", "onnxruntime-cpu", "--threads", "1"]
BUILD = ["--trt", "tensorrt_rtx", "--compute-capability", "8.6"]


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False, fill_from: Path | None = None):
    """A small tmpfs at ``path`` (skip the test where mounting is not allowed); ``fill_from`` is copied in
    before a read-only remount."""
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        if fill_from is not None:
            shutil.copytree(fill_from, path / fill_from.name)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` until about ``leave`` bytes are free."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as handle:
        with contextlib.suppress(OSError):
            handle.write(b"\0" * max(free - leave, 0))


def test_run_on_a_full_disk_writes_no_image(folders, tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        fill(disk, 4096)
        before = tree(disk, folders["ldm"])
        outcome = cli(["run", folders["ldm"], "--prompt", "a", *RUN, "--steps", "1", "--num-images", "2",
                       "--out", disk / "cat.png"])
        assert_refused(outcome, "run", "no space is left on its device")
        assert tree(disk, folders["ldm"]) == before  # neither image, no temporary file


def test_export_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    import genrt.export.families

    monkeypatch.setattr(genrt.export.families, "family_plan", lambda *args: toy_plan())
    with tmpfs(tmp_path / "disk", "200k") as disk:
        outcome = cli(["export", "vqgan", "--config", "tiny", "--random-weights", "--out", disk / "export"])
        assert_refused(outcome, "export", "no space is left on its device")
        assert list(disk.iterdir()) == []  # no folder, no staging folder, no lock file


def test_read_only_folders_are_refused_before_any_work(folders, toy_folder, tmp_path):
    with tmpfs(tmp_path / "ro", "16m", read_only=True, fill_from=toy_folder) as disk:
        before = tree(disk)
        assert_refused(cli(["parity", disk / toy_folder.name]), "parity", "cannot record parity results")
        assert_refused(cli(["run", folders["ldm"], "--prompt", "a", *RUN, "--out", disk / "x.png"]), "run",
                       "read-only or not yours")
        assert_refused(cli(["export", "ldm", "--config", "tiny", "--random-weights", "--out", disk / "new"]),
                       "export", "cannot")
        assert tree(disk) == before


def test_all_images_or_none(folders, tmp_path, monkeypatch):
    import genrt.fileio

    real, calls = genrt.fileio._fsync, []

    def second_write_fails(path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path)

    monkeypatch.setattr(genrt.fileio, "_fsync", second_write_fails)
    outcome = cli(["run", folders["ldm"], "--prompt", "a", *RUN, "--steps", "1", "--num-images", "3",
                   "--out", tmp_path / "cat.png"])
    assert_refused(outcome, "run", "no space is left on its device")
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


def test_run_force_overwrites_and_umask_applies(folders, tmp_path):
    target = tmp_path / "cat.png"
    target.write_bytes(b"old")
    old = os.umask(0o027)
    try:
        assert cli(["run", folders["vqgan"], *RUN, "--out", target, "--force", "--seed", "1"]).code == 0
    finally:
        os.umask(old)
    assert target.read_bytes()[:4] == b"\x89PNG" and (target.stat().st_mode & 0o777) == 0o640


def test_export_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        export_folder(toy_plan(), tmp_path / "export", components=["toy_encoder"])
    finally:
        os.umask(old)
    modes = {path.name: path.stat().st_mode & 0o777 for path in [tmp_path / "export", *(tmp_path / "export").rglob("*")]}
    assert modes["export"] == 0o755 and modes["manifest.json"] == 0o644 and modes["model.onnx"] == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_a_folder_that_appears_during_an_export_is_kept(tmp_path):
    out = tmp_path / "export"

    def user_creates_the_folder():
        out.mkdir(exist_ok=True)
        (out / "keep.txt").write_text("user data")

    with pytest.raises(InputError, match="is not empty"):
        export_folder(toy_plan(toy_unet=user_creates_the_folder), out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "user data"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left


def test_leftovers_of_dead_processes_are_removed_and_live_ones_kept(toy_folder, tmp_path):
    out = tmp_path / "export"
    dead, live = dead_pid(), os.getpid()
    (tmp_path / f".export.{dead}.abc123.partial").mkdir()
    (tmp_path / f".export.{live}.def456.partial").mkdir()
    (tmp_path / f".other.{dead}.abc123.partial").mkdir()  # another target's: not ours to remove
    export_folder(toy_plan(), out, components=["toy_encoder"])
    (out / "toy_encoder" / f".engine-1.plan.{dead}.x1.partial").write_bytes(b"half an engine")
    export_folder(toy_plan(), out, components=["toy_encoder"], force=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f".export.{live}.def456.partial", f".other.{dead}.abc123.partial", "export"]
    assert not list(out.rglob("*.partial"))


PYTHON_EXPORT = """
import sys, time
from genrt.export.folder import export_folder
from tests.reliability.conftest import toy_plan
export_folder(toy_plan(toy_encoder=lambda: time.sleep(120)), sys.argv[1])
"""


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigkill_mid_export_leaves_no_folder_and_the_next_export_cleans_up(tmp_path):
    out = tmp_path / "export"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", PYTHON_EXPORT, str(out)], cwd=REPO, env=env)
    try:
        wait_for(lambda: list(tmp_path.glob(f".export.{child.pid}.*.partial")))  # the export is under way
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not out.exists() and list(tmp_path.glob(".export.*.partial"))
    export_folder(toy_plan(), out, components=["toy_encoder"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def interrupted_build(toy_folder, tmp_path, component: str, signal_number: int):
    """Copy the toy folder, start `genrt build` of ``component`` in a child process and send it ``signal_number``
    once it is building; returns (the folder, its tree before, the child's exit code, its stderr)."""
    folder = tmp_path / "export"
    shutil.copytree(toy_folder, folder)
    before = tree(folder)
    child = cli_process(["build", folder, *BUILD, "--components", component])
    try:
        wait_for(lambda: "building" in (child.stdout.readline() or "building"))
    finally:
        child.send_signal(signal_number)
        _, err = child.communicate(timeout=120)
    return folder, before, child.returncode, err


def test_sigkill_mid_build_records_nothing_and_the_next_build_completes(toy_folder, tmp_path):
    folder, before, _, _ = interrupted_build(toy_folder, tmp_path, "toy_encoder", signal.SIGKILL)
    assert tree(folder) == before  # no engine, no log, manifest untouched
    outcome = cli(["build", folder, *BUILD, "--components", "toy_encoder"])
    assert outcome.code == 0, outcome.err
    engine = read_manifest(folder).component("toy_encoder").engines[0]
    assert engine.path.is_file() and not list(folder.rglob("*.partial"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # the dead build's lock file is gone


def stderr_until(child: subprocess.Popen, text: str) -> str:
    """The child's stderr lines up to the first that contains ``text`` (all of it if the child exits first)."""
    lines = []
    for line in iter(child.stderr.readline, ""):
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def test_concurrent_builds_keep_both_engines(toy_folder, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(toy_folder, folder)
    # the test holds the folder's lock until both builds wait for it: they then overlap however loaded the host is
    with folder_lock(folder, "test"):
        children = [cli_process(["build", folder, *BUILD, "--components", name])
                    for name in ("toy_encoder", "toy_unet")]
        waited = [stderr_until(child, "waiting for genrt test") for child in children]
    results = [child.communicate(timeout=600) for child in children]
    assert [child.returncode for child in children] == [0, 0], (waited, results)
    assert all("waiting for genrt test" in err for err in waited), waited
    manifest = read_manifest(folder)
    assert all(len(manifest.component(name).engines) == 1 for name in ("toy_encoder", "toy_unet"))


def test_swapped_graph_and_garbage_tokenizer_are_named(folders, tmp_path):
    ldm = tmp_path / "ldm"
    shutil.copytree(folders["ldm"], ldm)
    (ldm / "tokenizer" / "tokenizer.json").write_bytes(os.urandom(256))
    before = tree(ldm)
    assert_refused(cli(["run", ldm, "--prompt", "a", *RUN, "--out", tmp_path / "x.png"]), "run",
                   "tokenizer.json is not a tokenizers file")
    vqgan = tmp_path / "vqgan"
    shutil.copytree(folders["vqgan"], vqgan)
    shutil.copy(vqgan / "encoder" / "model.onnx", vqgan / "decoder" / "model.onnx")
    manifest = read_manifest(vqgan)
    decoder = manifest.component("decoder")
    write_manifest(replace_component(manifest, dataclasses.replace(decoder, sha256=sha256_of(decoder.onnx))))
    assert_refused(cli(["run", vqgan, *RUN, "--out", tmp_path / "y.png"]), "run",
                   "takes image, but manifest.json lists indices for component 'decoder'")
    assert tree(ldm) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ldm", "vqgan"]


def test_bf16_folders_are_refused_by_the_runtime(folders, tmp_path):
    folder = tmp_path / "bf16"
    shutil.copytree(folders["vqgan"], folder)
    write_manifest(dataclasses.replace(read_manifest(folder), precision="bf16"))
    assert_refused(cli(["run", folder, *RUN, "--out", tmp_path / "x.png"]), "run",
                   "bf16 export, which the torch-free runtime cannot run")
    assert not (tmp_path / "x.png").exists()


def test_file_errors_name_the_path_and_the_fix(tmp_path):
    from genrt.fileio import write_bytes_atomic

    with pytest.raises(FileError, match="its name is too long.*fix: choose a shorter file name"):
        write_bytes_atomic(tmp_path / ("n" * 300), b"x")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(FileError, match="a parent of it is a file"):
        write_bytes_atomic(tmp_path / "file" / "y.bin", b"x")
    assert np.array_equal(sorted(p.name for p in tmp_path.iterdir()), ["file"])


def test_ctrl_c_stops_a_build_and_records_nothing(toy_folder, tmp_path):
    folder, before, code, err = interrupted_build(toy_folder, tmp_path, "toy_unet", signal.SIGINT)
    assert code == 130 and err.strip().splitlines() == ["genrt build: interrupted"], err[-2000:]
    after = {path: digest for path, digest in tree(folder).items() if not Path(path).name.startswith("build-")}
    assert after == before  # no engine, no temporary file, manifest unchanged; only the build's log is kept


def test_a_corrupt_cached_engine_is_rebuilt_not_blessed(toy_folder, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(toy_folder, folder)
    assert cli(["build", folder, *BUILD, "--components", "toy_encoder"]).code == 0
    engine = read_manifest(folder).component("toy_encoder").engines[0].path
    for damage in (lambda data: data[:100] + bytes([data[100] ^ 0xFF]) + data[101:], lambda data: data[: len(data) // 2]):
        engine.write_bytes(damage(engine.read_bytes()))
        outcome = cli(["build", folder, *BUILD, "--components", "toy_encoder"])
        assert outcome.code == 0 and "cache hit" not in outcome.out and "built in" in outcome.out, outcome.out
        assert read_manifest(folder).component("toy_encoder").engines[0].sha256 == sha256_of(engine)
    assert "cache hit" in cli(["build", folder, *BUILD, "--components", "toy_encoder"]).out


@pytest.mark.parametrize("change, message", [
    ({"schema_version": 0}, "has schema_version 0"),
    ({"schema_version": -5}, "has schema_version -5"),
    ({"schema_version": True}, "has schema_version True"),
    ({"settings": None}, "settings is NoneType None"),
    ({"components": []}, "components is list []"),
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
    ({"family": "nope"}, "unknown model family 'nope'"),
])
def test_build_parity_and_run_share_one_manifest_rule(toy_folder, folders, tmp_path, change, message):
    for command, source, extra in (("build", toy_folder, BUILD), ("parity", toy_folder, []),
                                   ("run", folders["vqgan"], [*RUN, "--out", tmp_path / "x.png"])):
        folder = tmp_path / command
        shutil.copytree(source, folder)
        rewrite_manifest(folder, change)
        before = tree(folder)
        assert_refused(cli([command, folder, *extra]), command, message)
        assert tree(folder) == before
    assert not (tmp_path / "x.png").exists()
