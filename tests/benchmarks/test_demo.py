"""`make demo`'s plumbing on a small input: a random-weight VQGAN in the shipped layout, two captions.

The demo runs its real steps (export, parity, TensorRT-RTX build, runtime on auto); the test checks what it
wrote: the sheet holds the runtime's images for those captions and seeds at their places, and the JSON
scores them as genrt.adherence does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import demo
from benchmarks.contact_sheet import CELL, FRAME, TITLE, caption_height, image_box
from benchmarks.shapes_models import SHIPPED
from genrt.adherence import adheres
from genrt.errors import InputError
from genrt.shapes import all_captions


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder whose vqgan-shapes/last.ckpt is the shapes VQGAN + prior with random weights."""
    from genrt.sdk.vqgan.autoencoder import VQModel
    from genrt.sdk.vqgan.checkpoint import to_taming_state_dict
    from genrt.sdk.vqgan.config import prior_config, vqgan_config
    from genrt.sdk.vqgan.prior import GPTPrior

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    vqgan, prior = VQModel(vqgan_config("shapes")).eval(), GPTPrior(prior_config("shapes")).eval()
    (folder / "vqgan-shapes").mkdir()
    torch.save({"state_dict": to_taming_state_dict(vqgan, prior)}, folder / "vqgan-shapes" / "last.ckpt")
    return folder


def test_demo_writes_the_export_sheet_and_scores(models, tmp_path, capsys):
    import genrt.runtime

    out, captions = tmp_path / "demo", list(all_captions()[:2])
    assert demo.main(["--families", "vqgan", "--models", str(models), "--captions", "2", "--seed", "5",
                      "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "adherence.json").read_text())
    (row,) = report["families"]
    assert report["captions"] == captions and report["seed"] == 5
    assert row["backend"] == "onnxruntime-cpu" and row["total"] == 2 and row["image_size"] == [64, 64]
    assert set(row["seconds"]) == {"export", "parity", "build", "generate"}
    if row["build"] == "tensorrt_rtx sm86":
        assert list((out / "vqgan").rglob("*.plan"))
    else:
        assert "could not run here" in row["build"]
    assert "| vqgan | onnxruntime-cpu |" in printed and "total" in printed

    sheet = np.asarray(Image.open(out / "vqgan-sheet.png"))
    assert sheet.shape == (TITLE + CELL + caption_height(captions), 6 * CELL, 3)
    with genrt.runtime.load(out / "vqgan", backend="onnxruntime-cpu", threads=1) as pipe:
        expected = [pipe(prompt=[caption], seed=5 + i).images[0] for i, caption in enumerate(captions)]
    for index, image in enumerate(expected):
        left, top, right, bottom = image_box(index, 6, captions)
        scaled = image.repeat(2, axis=0).repeat(2, axis=1)
        np.testing.assert_array_equal(sheet[top + FRAME:bottom - FRAME, left + FRAME:right - FRAME],
                                      scaled[FRAME:-FRAME, FRAME:-FRAME])
    assert row["adherent"] == sum(adheres(image, caption) for image, caption in zip(expected, captions))


def test_a_missing_shipped_model_is_named_with_the_fix(tmp_path):
    with pytest.raises(InputError, match=r"shipped imagen model missing: .*stage_I, .*stage_II.*make train-demo"):
        SHIPPED["imagen"].export_arguments(tmp_path)
    for stage in ("stage_I", "stage_II"):
        (tmp_path / "imagen-shapes" / stage).mkdir(parents=True)
    assert SHIPPED["imagen"].export_arguments(tmp_path) == [
        "--checkpoint", str(tmp_path / "imagen-shapes" / "stage_I"),
        "--checkpoint-sr", str(tmp_path / "imagen-shapes" / "stage_II"), "--sequence-length", "77"]


def test_the_demo_names_a_missing_model_before_any_work(tmp_path, capsys):
    assert demo.main(["--families", "ldm", "vqgan", "--models", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "shipped ldm model missing" in error and "make train-demo" in error
    assert not (tmp_path / "out").exists()


def test_the_default_demo_skips_unshipped_families_by_name(tmp_path, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(demo, "run", lambda settings, families: ran.append(families) or {})
    assert demo.main(["--models", str(tmp_path), "--out", str(tmp_path / "out")]) == 2  # nothing shipped
    assert capsys.readouterr().err.strip().splitlines()[-1] == "demo: no shipped model found: run make train-demo"
    (tmp_path / "vqgan-shapes").mkdir()
    (tmp_path / "vqgan-shapes" / "last.ckpt").write_bytes(b"")
    monkeypatch.setattr(demo, "write_report", lambda *args: None)
    monkeypatch.setattr(demo, "summary", lambda report: "")
    assert demo.main(["--models", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert ran == [["vqgan"]]
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("demo: skipping")]
    assert [line.split(":")[1].strip() for line in skipped] == ["skipping ldm", "skipping imagen"]
