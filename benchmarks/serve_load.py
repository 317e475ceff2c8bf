"""Bounded load test of ``genrt serve`` on loopback: throughput, p50/p99 latency and errors at several
concurrencies, with micro-batching and one-at-a-time (``--max-batch 1``), and the server's RSS over a long run.

Each level sends a fixed number of requests (``--requests``) or stops at ``--duration`` seconds, whichever
comes first; every request has its own seed. The server is a ``genrt serve`` process on 127.0.0.1 (its RSS
read from /proc). Without ``--dir`` the tiny ldm config is exported with random weights first.

    python -m benchmarks.serve_load [--dir out/serve_load/ldm] [--requests 200] [--rss-requests 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
CONCURRENCY = (1, 4, 16)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A ``genrt serve`` process on a free loopback port."""

    def __init__(self, directory: Path, max_batch: int, threads: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "genrt.cli", "serve", str(directory), "--port", str(self.port), "--backend",
             "onnxruntime-cpu", "--threads", str(threads), "--max-batch", str(max_batch), "--queue-size", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise SystemExit(f"serve_load: the server on {self.url} did not become ready")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def load(url: str, body: dict, concurrency: int, requests: int, duration: float, on_done=None) -> dict:
    """Send ``requests`` requests (or until ``duration`` s) from ``concurrency`` clients; latency stats."""
    import httpx

    latencies, errors, batch = [], [], []
    lock = threading.Lock()
    counter = iter(range(requests))
    stop_at = time.monotonic() + duration

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < stop_at:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                start = time.perf_counter()
                answer = http.post(f"{url}/v1/generate", json={**body, "seed": index})
                elapsed = time.perf_counter() - start
                with lock:
                    if answer.status_code == 200:
                        latencies.append(elapsed)
                        batch.append(answer.json()["batch_images"])
                    else:
                        errors.append(answer.status_code)
                    done = len(latencies) + len(errors)
                if on_done is not None:
                    on_done(done)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000.0
    return {"concurrency": concurrency, "requests": len(latencies) + len(errors), "errors": len(errors),
            "seconds": round(wall, 3), "throughput_rps": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_batch_images": round(float(np.mean(batch)), 2)}


def export_tiny(directory: Path) -> None:
    if (directory / "manifest.json").is_file():
        return
    subprocess.run([sys.executable, "-m", "genrt.cli", "export", "ldm", "--config", "tiny", "--random-weights",
                    "--out", str(directory), "--force"], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="export folder (default: tiny ldm, exported here)")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per level at most")
    parser.add_argument("--rss-requests", type=int, default=1000, help="requests of the RSS run (concurrency 4)")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per request")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads of the server")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve-load-ldm-tiny-cpu.json")
    args = parser.parse_args(argv)

    directory = args.dir or Path("out/serve_load/ldm")
    if args.dir is None:
        export_tiny(directory)
    body = {"prompt": "a red cube", "num_inference_steps": args.steps}
    report = {"workload": {"dir": str(directory), "steps": args.steps, "requests_per_level": args.requests,
                           "max_seconds_per_level": args.duration, "server_threads": args.threads},
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version()},
              "date": time.strftime("%Y-%m-%d"), "levels": {}}
    for mode, max_batch in (("batched", 8), ("one_at_a_time", 1)):
        server = Server(directory, max_batch, args.threads)
        try:
            load(server.url, body, 4, 16, args.duration)  # warm-up
            report["levels"][mode] = [load(server.url, body, c, args.requests, args.duration) for c in CONCURRENCY]
            if mode == "batched":
                samples = []
                report["rss"] = {"requests": args.rss_requests, "start_mb": round(server.rss_mb(), 1)}
                every = max(1, args.rss_requests // 10)
                load(server.url, body, 4, args.rss_requests, 10 * args.duration,
                     on_done=lambda done: samples.append(round(server.rss_mb(), 1)) if done % every == 0 else None)
                report["rss"].update({"samples_mb": samples, "end_mb": round(server.rss_mb(), 1)})
        finally:
            server.stop()
    report["batching_gain"] = {str(b["concurrency"]): round(b["throughput_rps"] / o["throughput_rps"], 2)
                               for b, o in zip(report["levels"]["batched"], report["levels"]["one_at_a_time"])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
