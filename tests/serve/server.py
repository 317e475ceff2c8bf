"""Test helpers: a real uvicorn server on a free loopback port in a thread, and a pipeline wrapper that
records each call's batch and can hold calls back (to fill the queue on purpose)."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import uvicorn

from genrt.serve.app import create_app
from genrt.serve.service import load_pipeline
from genrt.serve.settings import ServeSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RecordingPipeline:
    """The real pipeline, with every call's batch recorded (prompts or class ids) and an optional gate: while
    ``gate`` is clear, calls wait for it."""

    def __init__(self, pipe):
        self._pipe = pipe
        self.calls: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)  # released when a call starts

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, batch, *args, **kwargs):
        self.calls.append(list(batch))
        self.entered.release()
        assert self.gate.wait(60), "the test never opened the gate"
        return self._pipe(batch, *args, **kwargs)


@contextlib.contextmanager
def running_server(directory: Path, settings: ServeSettings | None = None) -> Iterator[tuple[str, RecordingPipeline]]:
    """(base URL, recording pipeline) of a server started on a free port; stopped (gracefully) on exit."""
    holder: list[RecordingPipeline] = []

    def load(folder, serve_settings):
        holder.append(RecordingPipeline(load_pipeline(folder, serve_settings)))
        return holder[0]

    settings = settings or ServeSettings(backend="onnxruntime-cpu", threads=1)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(directory, settings, load=load), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url, holder[0]
    finally:
        if holder:
            holder[0].gate.set()
        server.should_exit = True
        thread.join(30)


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not become ready in {timeout} s")


def decode_png(text: str) -> np.ndarray:
    """A base64 PNG of the JSON answer -> (H, W, 3) uint8."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))
