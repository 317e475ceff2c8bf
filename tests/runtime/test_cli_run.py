import numpy as np
import pytest
from PIL import Image

from genrt.cli import main
from tests.runtime.tiny.ldm import build_ldm
from tests.runtime.tiny.vqgan import build_vqgan


@pytest.fixture(scope="module")
def ldm_dir(tmp_path_factory):
    return build_ldm(tmp_path_factory.mktemp("ldm"))


def test_run_writes_pngs_matching_the_pipeline(ldm_dir, tmp_path, capsys):
    import genrt.runtime

    out = tmp_path / "images" / "cat.png"
    code = main(["run", str(ldm_dir), "--prompt", "a cat", "--out", str(out), "--steps", "3", "--seed", "5",
                 "--guidance", "3", "--height", "48", "--width", "32", "--num-images", "2",
                 "--sampler", "euler", "--backend", "onnxruntime-cpu", "--threads", "1"])
    assert code == 0
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == ["cat_0.png", "cat_1.png"]  # no partial files left behind
    printed = capsys.readouterr().out
    assert "wrote" in printed and printed.endswith("\nbackend: onnxruntime-cpu (as asked)\n")
    with genrt.runtime.load(ldm_dir, backend="onnxruntime-cpu", sampler="euler", threads=1) as pipe:
        expected = pipe(["a cat"] * 2, num_inference_steps=3, seed=5, guidance_scale=3, height=48, width=32).images
    for index in range(2):
        np.testing.assert_array_equal(np.asarray(Image.open(out.parent / f"cat_{index}.png")), expected[index])


def test_run_vqgan_with_class(tmp_path):
    folder = build_vqgan(tmp_path / "vqgan")
    code = main(["run", str(folder), "--class-id", "3", "--out", str(tmp_path / "sample.png"), "--seed", "0",
                 "--no-progress"])
    assert code == 0
    assert np.asarray(Image.open(tmp_path / "sample.png")).shape == (16, 16, 3)


@pytest.mark.parametrize("extra, message", [
    ([], "the ldm model needs a text prompt"),
    (["--prompt", "a cat", "--height", "60"], "height is 60; expected a multiple of 8"),
    (["--prompt", "a cat", "--num-images", "0"], "--num-images is 0"),
])
def test_run_errors_are_one_line(ldm_dir, tmp_path, capsys, extra, message):
    code = main(["run", str(ldm_dir), "--out", str(tmp_path / "x.png"), "--steps", "1", "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "fix:" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_run_refuses_a_folder_without_manifest(tmp_path, capsys):
    assert main(["run", str(tmp_path), "--prompt", "a", "--out", str(tmp_path / "x.png")]) == 2
    assert "has no manifest.json" in capsys.readouterr().err
