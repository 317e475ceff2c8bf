"""`genrt batch`: prompt lines and JSONL -> PNGs + parameters.jsonl equal to `genrt run`, resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genrt.cli import main
from genrt.runtime.png import png_parameters
from tests.runtime.tiny.ldm import build_ldm
from tests.runtime.tiny.vqgan import build_vqgan

CPU = ["--backend", "onnxruntime-cpu", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def ldm_dir(tmp_path_factory):
    return build_ldm(tmp_path_factory.mktemp("ldm"))


def run_image(directory, out, *args) -> list[np.ndarray]:
    assert main(["run", str(directory), "--out", str(out), *CPU, *args]) == 0
    paths = [out] if out.exists() else sorted(out.parent.glob(f"{out.stem}_*.png"))
    return [np.asarray(Image.open(path).convert("RGB")) for path in paths]


def test_batch_writes_every_prompt_and_resumes(ldm_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n\nan oil painting of a cat\n"
                       '{"prompt": "a blue sphere", "seed": 42, "num_inference_steps": 2, "num_images_per_prompt": 2}\n'
                       "the quick brown fox\n")
    out = tmp_path / "out"
    assert main(["batch", str(ldm_dir), "--prompts", str(prompts), "--out", str(out), "--steps", "3", *CPU]) == 0
    assert "wrote 5 images" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "parameters.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [0, 2, 3, 4]
    assert records[2]["files"] == ["000003_0.png", "000003_1.png"]
    # each image is `genrt run` with the line's seed (line number + --seed 0) and settings
    expected = {"000000.png": run_image(ldm_dir, tmp_path / "r0.png", "--prompt", "a red cube", "--seed", "0",
                                        "--steps", "3")[0],
                "000004.png": run_image(ldm_dir, tmp_path / "r4.png", "--prompt", "the quick brown fox", "--seed",
                                        "4", "--steps", "3")[0]}
    pair = run_image(ldm_dir, tmp_path / "pair.png", "--prompt", "a blue sphere", "--seed", "42", "--steps", "2",
                     "--num-images", "2")
    expected.update({"000003_0.png": pair[0], "000003_1.png": pair[1]})
    for name, image in expected.items():
        np.testing.assert_array_equal(np.asarray(Image.open(out / name).convert("RGB")), image)
    assert png_parameters((out / "000003_1.png").read_bytes())["seed"] == 42
    assert records[0]["parameters"]["num_inference_steps"] == 3 and records[0]["parameters"]["seed"] == 0

    # an interrupted run: the last prompt's image and record are gone -> only it runs again
    first_bytes = (out / "000000.png").stat().st_mtime_ns
    (out / "000004.png").unlink()
    (out / "parameters.jsonl").write_text("".join(line + "\n" for line in
                                                  (out / "parameters.jsonl").read_text().splitlines()[:3]))
    assert main(["batch", str(ldm_dir), "--prompts", str(prompts), "--out", str(out), "--steps", "3", *CPU]) == 0
    assert "wrote 1 images to" in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(Image.open(out / "000004.png").convert("RGB")), expected["000004.png"])
    assert (out / "000000.png").stat().st_mtime_ns == first_bytes
    assert len((out / "parameters.jsonl").read_text().splitlines()) == 4

    # the folder belongs to this model: another model's run is refused
    other = build_vqgan(tmp_path / "vqgan")
    assert main(["batch", str(other), "--prompts", str(prompts), "--out", str(out), *CPU]) == 2
    assert "holds images of another model" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ('a cat\n{"prompt": "a dog", "steps": 2}\n', "prompts.txt line 2 has unknown key(s) steps"),
    ('a cat\n{"prompt": "a dog", "height": 61}\n', "prompt line 2: height is 61; expected a multiple of 8"),
    ("\n\n", "has no prompts"),
])
def test_batch_bad_lines_are_one_line_errors(ldm_dir, tmp_path, capsys, text, message):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(text)
    assert main(["batch", str(ldm_dir), "--prompts", str(prompts), "--out", str(tmp_path / "out"), *CPU]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "out").glob("*.png"))
