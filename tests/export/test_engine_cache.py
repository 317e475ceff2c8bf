"""The engine cache verifies what it reuses (real TensorRT-RTX builds for SM86, no GPU needed)."""

from __future__ import annotations

import hashlib

import pytest

from genrt.export.engine import BuildSettings, build_engines
from genrt.export.folder import export_folder
from genrt.manifest import read_manifest
from tests.export.toy import toy_encoder_spec, toy_plan

pytest.importorskip("tensorrt_rtx")
SETTINGS = BuildSettings(flavour="tensorrt_rtx", compute_capabilities=("8.6",))


@pytest.fixture()
def built(tmp_path):
    out = tmp_path / "export"
    export_folder(toy_plan(specs=[toy_encoder_spec()]), out)
    (result,) = build_engines(out, SETTINGS)
    assert not result.cache_hit
    return out, result.path


def _recorded_sha256(out) -> str:
    (engine,) = read_manifest(out).components["toy_encoder"].engines
    return engine.sha256


def _damage_bit_flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _damage_truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [_damage_bit_flip, _damage_truncate], ids=["bit-flip", "truncate"])
def test_a_damaged_cached_engine_is_rebuilt_and_the_manifest_records_the_new_file(built, damage):
    out, path = built
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    assert _recorded_sha256(out) == good
    damage(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() != good
    (again,) = build_engines(out, SETTINGS)
    assert not again.cache_hit and again.path == path
    rebuilt = hashlib.sha256(path.read_bytes()).hexdigest()
    assert _recorded_sha256(out) == rebuilt
    assert path.stat().st_size > 1000
    (third,) = build_engines(out, SETTINGS)  # the rebuilt file verifies: a real cache hit
    assert third.cache_hit and _recorded_sha256(out) == rebuilt


def test_an_engine_file_whose_hash_is_not_the_recorded_one_is_rebuilt_not_blessed(built):
    out, path = built
    stray = b"not an engine" * 100
    manifest_path = out / "manifest.json"
    manifest_path.write_text(manifest_path.read_text().replace(_recorded_sha256(out), "0" * 64))
    path.write_bytes(stray)
    (again,) = build_engines(out, SETTINGS)
    assert not again.cache_hit
    assert path.read_bytes() != stray
    assert _recorded_sha256(out) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_build_of_a_process_has_a_full_log(built):
    """TensorRT keeps the first logger it is given: the second and third builds must still log."""
    out, first = built
    logs = []
    for static in (True, False):
        (result,) = build_engines(out, BuildSettings(flavour="tensorrt_rtx", compute_capabilities=("8.9",),
                                                     static=static))
        logs.append((out / f"toy_encoder/build-{result.key[:16]}.log").read_text().splitlines())
    assert all(len(lines) > 20 for lines in logs), [len(lines) for lines in logs]
    assert all(any("[VERBOSE]" in line or "[INFO]" in line for line in lines) for lines in logs)
