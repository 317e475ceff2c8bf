"""``genrt serve DIR``: the HTTP app on uvicorn (127.0.0.1 unless told otherwise), or with ``--ray`` the same
app as a Ray Serve deployment. SIGTERM / Ctrl-C stop accepting connections and finish in-flight requests.
"""

from __future__ import annotations

import argparse
import os

from genrt.errors import InputError
from genrt.serve.settings import API_KEY_ENV, ServeSettings

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="folder written by `genrt export` / `genrt build`")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0 picks a free one)")
    add_settings_arguments(parser)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request before 504 (default: 60)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0,
                        help="longest a request waits for others to batch with (default: 10)")
    parser.add_argument("--queue-size", type=int, default=64, help="requests waiting before 503 (default: 64)")
    parser.add_argument("--max-images", type=int, default=4, help="images one request may ask for (default: 4)")
    parser.add_argument("--max-prompt-chars", type=int, default=1000, help="longest prompt (default: 1000)")
    parser.add_argument("--api-key", default=None, help=f"require this key (default: ${API_KEY_ENV} when set)")
    parser.add_argument("--ray", action="store_true", help="deploy on Ray Serve (needs genrt[ray])")
    parser.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (fixed count; default: 1)")
    parser.add_argument("--max-replicas", type=int, default=None,
                        help="autoscale between --replicas and this many replicas (Ray Serve)")
    parser.add_argument("--target-ongoing-requests", type=float, default=4.0,
                        help="autoscaling target of requests in flight per replica (default: 4)")
    parser.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs each Ray Serve replica holds")


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The pipeline and batching options shared with ``genrt batch``."""
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="engine backend (default: auto)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for ONNX Runtime (0: its default)")
    parser.add_argument("--sampler", default=None, help="sampler of diffusion models (default: the manifest's)")
    parser.add_argument("--max-batch", type=int, default=8, help="images per pipeline call at most (default: 8)")


def settings_from(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(backend=args.backend, threads=args.threads, sampler=args.sampler, max_batch=args.max_batch,
                         max_wait_s=args.max_wait_ms / 1000.0, queue_size=args.queue_size, timeout_s=args.timeout,
                         max_images=args.max_images, max_prompt_chars=args.max_prompt_chars,
                         api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV))


def main(args: argparse.Namespace) -> int:
    from genrt.errors import require

    settings = settings_from(args)
    if not os.path.isfile(os.path.join(args.directory, "manifest.json")):
        raise InputError(f"{args.directory} has no manifest.json", fix="pass a folder written by `genrt export`")
    if args.ray:
        from genrt.serve.ray_app import RayOptions, serve_forever

        serve_forever(args.directory, settings, RayOptions(
            replicas=args.replicas, max_replicas=args.max_replicas, gpus_per_replica=args.gpus_per_replica,
            target_ongoing_requests=args.target_ongoing_requests, host=args.host, port=args.port))
        return 0
    uvicorn = require("uvicorn", "serve")
    from genrt.serve.app import create_app

    app = create_app(args.directory, settings)
    uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info", access_log=False)).run()
    return 0
