"""Ray Serve (`genrt serve --ray`, two replicas) and Ray Data (`genrt batch --ray`, two actors) on a local Ray
instance kept off the network: every process runs inside a network namespace of the test's own (only a
loopback interface), with HOME and Ray's temp folder in temporary folders."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genrt.cli import main
from tests.runtime.tiny.ldm import build_ldm

pytest.importorskip("ray.serve", reason="Ray is not installed (pip install 'genrt[ray]')")
pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]


def namespace_prefix() -> list[str]:
    """The command prefix that runs a command in a new network namespace with loopback up ([] if impossible)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return []
    for flags in (["-n"], ["-r", "-n"]):  # as root; else inside a user namespace
        prefix = ["unshare", *flags, "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return []


PREFIX = namespace_prefix()
needs_namespace = pytest.mark.skipif(not PREFIX, reason="network namespaces are unavailable here (unshare -n needs "
                                                       "root or unprivileged user namespaces); Ray would bind every "
                                                       "interface")


@pytest.fixture
def isolated_env(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "HOME": str(tmp_path / "home"), "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    (tmp_path / "home").mkdir()
    env.pop("RAY_ADDRESS", None)
    yield env
    shutil.rmtree(ray_tmp, ignore_errors=True)


@needs_namespace
def test_ray_serve_two_replicas_answer_concurrent_requests(tmp_path, isolated_env):
    folder = build_ldm(tmp_path / "ldm")
    script = tmp_path / "drive.py"
    script.write_text(DRIVE_SERVE)
    result = subprocess.run([*PREFIX, sys.executable, str(script), str(folder), str(tmp_path / "answers.json")],
                            env=isolated_env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    log = Path(str(tmp_path / "answers.json") + ".log")
    assert result.returncode == 0, result.stderr[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert answers["cli_exit"] == 0 and set(answers["statuses"]) == {200}
    assert len(set(answers["workers"])) == 2, answers["workers"]  # both replicas answered
    for seed, png in answers["images"].items():  # each image is `genrt run` with its seed
        out = tmp_path / f"run-{seed}.png"
        assert main(["run", str(folder), "--prompt", "a red cube", "--seed", seed, "--steps", "20", "--out", str(out),
                     "--backend", "onnxruntime-cpu", "--threads", "1", "--no-progress"]) == 0
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB")),
                                      np.asarray(Image.open(out).convert("RGB")))


# Runs inside the namespace: `genrt serve --ray` in a subprocess, rounds of 12 concurrent requests until both
# replicas have answered, then SIGTERM; the server's output goes to a file (a pipe held open would hang the test).
DRIVE_SERVE = r'''
import json, signal, socket, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
import httpx

folder, out = sys.argv[1], sys.argv[2]
with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]
server = subprocess.Popen([sys.executable, "-m", "genrt.cli", "serve", folder, "--ray", "--replicas", "2",
                           "--port", str(port), "--backend", "onnxruntime-cpu", "--threads", "1"],
                          stdout=open(out + ".log", "w"), stderr=subprocess.STDOUT)
url = f"http://127.0.0.1:{port}"

def send(seed):
    answer = httpx.post(url + "/v1/generate", json={"prompt": "a red cube", "seed": seed, "num_inference_steps": 20},
                        timeout=120)
    return seed, answer.status_code, answer.headers.get("x-genrt-worker"), answer.json()["images"][0]

try:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    statuses, workers, images = [], [], {}
    for round_ in range(10):
        with ThreadPoolExecutor(12) as pool:
            for seed, status, worker, image in pool.map(send, range(round_ * 12, round_ * 12 + 12)):
                statuses.append(status); workers.append(worker); images[str(seed)] = image
        if len(set(workers)) >= 2:
            break
finally:
    server.send_signal(signal.SIGTERM)
    code = server.wait(120)
json.dump({"statuses": statuses, "workers": workers, "images": dict(list(images.items())[:4]), "cli_exit": code},
          open(out, "w"))
'''


@needs_namespace
def test_ray_data_batch_matches_a_local_batch(tmp_path, isolated_env):
    folder = build_ldm(tmp_path / "ldm")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {index}\n" for index in range(6)) +
                       '{"prompt": "two images", "num_images_per_prompt": 2, "seed": 9}\n')
    common = ["--backend", "onnxruntime-cpu", "--threads", "1", "--no-progress", "--steps", "3"]
    local = subprocess.run([sys.executable, "-m", "genrt.cli", "batch", str(folder), "--prompts", str(prompts),
                            "--out", str(tmp_path / "local"), *common], env=isolated_env, capture_output=True,
                           text=True, timeout=300, cwd=ROOT)
    assert local.returncode == 0, local.stderr[-3000:]
    start = time.monotonic()
    on_ray = subprocess.run([*PREFIX, sys.executable, "-m", "genrt.cli", "batch", str(folder), "--prompts",
                             str(prompts),
                             "--out", str(tmp_path / "ray"), "--ray", "--actors", "2", "--max-batch", "2", *common],
                            env=isolated_env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert on_ray.returncode == 0, on_ray.stdout[-3000:] + on_ray.stderr[-3000:]
    assert "wrote 8 images" in on_ray.stdout, on_ray.stdout
    names = sorted(p.name for p in (tmp_path / "local").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "ray").glob("*.png")) and len(names) == 8
    for name in names:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "ray" / name)),
                                      np.asarray(Image.open(tmp_path / "local" / name)))
    lines = [json.loads(line)["line"] for line in (tmp_path / "ray" / "parameters.jsonl").read_text().splitlines()]
    assert sorted(lines) == list(range(7))
    print(f"Ray Data batch: {time.monotonic() - start:.1f} s")
