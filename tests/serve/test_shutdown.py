"""`genrt serve` as a process: SIGTERM finishes every accepted request before the process ends; CLI errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from genrt.cli import main
from tests.runtime.tiny.ldm import build_ldm
from tests.serve.server import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_finishes_accepted_requests(tmp_path):
    folder = build_ldm(tmp_path / "ldm")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    server = subprocess.Popen([sys.executable, "-m", "genrt.cli", "serve", str(folder), "--port", str(port),
                               "--backend", "onnxruntime-cpu", "--threads", "1", "--max-batch", "1"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        answers: dict[int, httpx.Response] = {}
        clients = [httpx.Client(timeout=120) for _ in range(6)]  # made first: a client takes a while to set up

        def send(seed: int) -> None:
            answers[seed] = clients[seed].post(f"{url}/v1/generate",
                                               json={"prompt": "a slow one", "seed": seed, "num_inference_steps": 500})

        threads = [threading.Thread(target=send, args=(seed,)) for seed in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while "genrt_queue_depth 5" not in httpx.get(f"{url}/metrics").text:  # one running, five queued
            assert time.monotonic() < deadline, "the requests never queued up"
            time.sleep(0.01)
        server.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(120)
        code = server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
    output = server.stdout.read()
    # uvicorn re-raises the signal after its clean shutdown, so the process ends as killed by SIGTERM
    assert code == -signal.SIGTERM and "Application shutdown complete" in output, output
    assert sorted(answers) == list(range(6))
    assert [answers[seed].status_code for seed in range(6)] == [200] * 6, output
    assert all(len(answers[seed].json()["images"]) == 1 for seed in range(6))
    with pytest.raises(httpx.ConnectError):  # the port is closed after shutdown
        httpx.get(f"{url}/healthz", timeout=5)


@pytest.mark.parametrize("args, message", [
    (["serve", "/no/such/folder"], "/no/such/folder has no manifest.json"),
    (["batch", "/no/such/folder", "--prompts", "p.txt", "--out", "o"], "/no/such/folder has no manifest.json"),
])
def test_cli_errors_are_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err and len(err.strip().splitlines()) == 1


def test_serve_settings_errors_are_one_line(tmp_path, capsys):
    folder = build_ldm(tmp_path / "ldm")
    assert main(["serve", str(folder), "--max-batch", "0"]) == 2
    assert "max_batch is 0" in capsys.readouterr().err
    assert main(["serve", str(folder), "--ray", "--replicas", "2", "--max-replicas", "1"]) == 2
    assert "replicas 2, max replicas 1" in capsys.readouterr().err


def test_api_key_comes_from_the_environment_unless_given(monkeypatch):
    from genrt.cli import build_parser
    from genrt.serve.cli import settings_from

    monkeypatch.setenv("GENRT_API_KEY", "from-env")
    assert settings_from(build_parser().parse_args(["serve", "DIR"])).api_key == "from-env"
    assert settings_from(build_parser().parse_args(["serve", "DIR", "--api-key", "given"])).api_key == "given"
    monkeypatch.delenv("GENRT_API_KEY")
    assert settings_from(build_parser().parse_args(["serve", "DIR"])).api_key is None
