"""genrt.serve needs only the runtime: every serve module imports, and `genrt batch` plus one HTTP request run,
in a process where torch (and transformers, diffusers, genrt.sdk) cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.runtime.tiny.ldm import build_ldm
from tests.torch_blocker import TORCH_BLOCKER

ROOT = Path(__file__).resolve().parents[2]

CHILD = TORCH_BLOCKER + textwrap.dedent("""
    import genrt.serve
    modules = [info.name for info in pkgutil.walk_packages(genrt.serve.__path__, "genrt.serve.")]
    for name in modules:
        importlib.import_module(name)
    folder, prompts, out = sys.argv[1:4]
    from genrt.cli import main
    code = main(["batch", folder, "--prompts", prompts, "--out", out, "--steps", "2", "--backend", "onnxruntime-cpu",
                 "--no-progress"])
    from tests.serve.server import running_server
    import httpx
    with running_server(folder) as (url, pipe):
        status = httpx.post(url + "/v1/generate", json={"prompt": "a cat", "num_inference_steps": 2}).status_code
    print(json.dumps({"attempts": attempts, "modules": modules, "batch": code, "status": status}))
""")


def test_serve_runs_without_torch(tmp_path):
    folder = build_ldm(tmp_path / "ldm")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\n")
    result = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(prompts), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert {"genrt.serve.app", "genrt.serve.batcher", "genrt.serve.ray_app", "genrt.serve.ray_batch"} <= set(
        report["modules"])
    assert report["batch"] == 0 and report["status"] == 200
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["000000.png", "000001.png"]
