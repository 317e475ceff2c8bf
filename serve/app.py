"""The HTTP app: FastAPI routes over one :class:`~genrt.serve.service.Service`.

``POST /v1/generate`` (JSON :class:`~genrt.serve.request.GenerationRequest` -> base64 PNGs in JSON, or
one ``image/png`` when the client accepts only that), ``GET /healthz``, ``GET /readyz``, ``GET /metrics``
(Prometheus text), ``GET /`` (the web page), ``GET /openapi.json``. Every error is JSON
``{"error": "<one line>"}`` with a 4xx/5xx status, never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from genrt.errors import GenrtError, InputError, require
from genrt.runtime.png import png_bytes
from genrt.serve.batcher import QueueFull, ShuttingDown
from genrt.serve.metrics import CONTENT_TYPE
from genrt.serve.request import GenerationRequest
from genrt.serve.service import NotReady, Service, load_pipeline
from genrt.serve.settings import ServeSettings

fastapi = require("fastapi", "serve")  # this module is imported only to serve: the extra is needed here
from fastapi import Request  # noqa: E402  (after the check that names the extra)
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response  # noqa: E402

PAGE = Path(__file__).parent / "static" / "index.html"
DISCONNECT_POLL_S = 0.05  # how often a waiting request checks whether its client went away
CLIENT_GONE = 499  # status recorded for a client that disconnected before its answer (nginx's convention)


class RequestTooLarge(GenrtError):
    """A request body beyond the server's limit."""


class Unauthorized(GenrtError):
    """A missing or wrong API key."""


class TimedOut(GenrtError):
    """A request that waited longer than the per-request timeout."""


class ClientGone(GenrtError):
    """The client disconnected while its job waited."""


STATUS = {InputError: 400, Unauthorized: 401, RequestTooLarge: 413, TimedOut: 504, ClientGone: CLIENT_GONE,
          QueueFull: 503, ShuttingDown: 503, NotReady: 503}


def create_app(directory: str | Path, settings: ServeSettings, load: Callable = load_pipeline,
               wait_loaded: bool = False):
    """The FastAPI app serving ``directory``; ``load(directory, settings)`` opens the pipeline at startup, in
    the background (``/readyz`` says when it is done) or, with ``wait_loaded``, before startup completes (a Ray
    Serve replica is then healthy only with its engines loaded)."""
    from pydantic import TypeAdapter

    service = Service(directory, settings, load)
    worker = f"{socket.gethostname()}:{os.getpid()}"

    async def lifespan(app):
        service.start()
        if wait_loaded and not await asyncio.to_thread(service.wait_ready):
            service.job(GenerationRequest())  # raises NotReady with the load error
        yield
        await asyncio.to_thread(service.close)  # uvicorn has already let in-flight requests finish

    app = fastapi.FastAPI(title="genrt", summary=f"image generation from {Path(directory).name}", lifespan=lifespan)
    app.state.service = service

    def error(exc: GenrtError) -> JSONResponse:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        if status == 503:
            headers["Retry-After"] = str(service.batcher.retry_after_s() if service.batcher else 1)
        return JSONResponse({"error": exc.one_line()}, status_code=status, headers=headers)

    @app.exception_handler(GenrtError)
    async def genrt_error(request, exc: GenrtError):
        return error(exc)

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        return JSONResponse({"error": f"internal error: {text}"}, status_code=500)

    app.add_middleware(CountRequests, metrics=service.metrics)

    def check_key(request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise Unauthorized("missing or wrong API key",
                               fix="send the header 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")

    request_schema = TypeAdapter(GenerationRequest).json_schema()

    @app.post("/v1/generate", summary="generate images",
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"application/json": {"schema": request_schema}}}},
              responses={200: {"description": "base64 PNGs with seed, timings and parameters (JSON), or one PNG "
                                              "when the request accepts only image/png",
                               "content": {"image/png": {}}}})
    async def generate(request: Request):
        check_key(request)
        body = await _read_body(request, settings.max_body_bytes)
        job = service.job(GenerationRequest.from_text(body))
        wants_png = _wants_png(request.headers.get("accept", ""))
        if wants_png and job.rows != 1:
            raise InputError(f"image/png carries one image, not {job.rows}",
                             fix="ask for num_images_per_prompt 1, or accept application/json")
        queued = time.perf_counter()
        future = service.submit(job)
        result = await _wait(future, request, settings.timeout_s)
        parameters = job.parameters(service.manifest_sha256)
        timings = {**result.timings, "queue": time.perf_counter() - queued - result.timings.get("total", 0.0)}
        pngs = await asyncio.to_thread(lambda: [png_bytes(image, {**parameters, "index": index})
                                                for index, image in enumerate(result.images)])
        if wants_png:
            return Response(pngs[0], media_type="image/png",
                            headers={"X-Genrt-Seed": str(job.seed), "X-Genrt-Manifest-Sha256": service.manifest_sha256,
                                     "X-Genrt-Timings": json.dumps(timings, separators=(",", ":")),
                                     "X-Genrt-Batch-Images": str(result.batch_rows), "X-Genrt-Worker": worker})
        return JSONResponse({"images": [base64.b64encode(png).decode("ascii") for png in pngs], "seed": job.seed,
                "timings": timings, "batch_images": result.batch_rows, "manifest_sha256": service.manifest_sha256,
                "parameters": parameters}, headers={"X-Genrt-Worker": worker})

    @app.get("/healthz", summary="the process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="the engines are loaded")
    async def readyz():
        description = service.describe()
        return JSONResponse(description, status_code=200 if description["ready"] else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics(request: Request):
        check_key(request)
        return PlainTextResponse(service.metrics.render(), media_type=CONTENT_TYPE)

    page = PAGE.read_text()

    @app.get("/", summary="web page", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    return app


class CountRequests:
    """ASGI middleware: status and latency of every ``/v1/generate`` answer into the metrics."""

    def __init__(self, app, metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/generate":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.request(status[0], time.perf_counter() - start)


def _wants_png(accept: str) -> bool:
    """True when the client accepts image/png but not JSON."""
    kinds = {part.split(";")[0].strip() for part in accept.split(",") if part.strip()}
    return "image/png" in kinds and not kinds & {"application/json", "*/*", "application/*"}


async def _read_body(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = RequestTooLarge(f"the request body exceeds {limit} bytes", fix="send a smaller JSON request")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def _wait(future, request, timeout_s: float) -> Any:
    """The job's result; a queued job is dropped when its client disconnects or its time runs out."""
    waiting = asyncio.wrap_future(future)
    deadline = time.monotonic() + timeout_s
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=min(DISCONNECT_POLL_S, max(0.0, deadline - time.monotonic())))
        if done:
            return waiting.result()
        if await request.is_disconnected():
            future.cancel()
            raise ClientGone("the client disconnected", fix="keep the connection open until the answer arrives")
        if time.monotonic() >= deadline:
            future.cancel()
            raise TimedOut(f"no answer within {timeout_s:g} s", fix="retry later, or start the server with a longer "
                                                                   "--timeout")
