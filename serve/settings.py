"""How a server runs: what ``genrt serve`` takes on its command line, as one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from genrt.errors import InputError

API_KEY_ENV = "GENRT_API_KEY"  # environment variable read when --api-key is not given


@dataclass(frozen=True)
class ServeSettings:
    """Settings of one server process (a Ray Serve replica has its own copy)."""

    backend: str = "auto"  # engine backend of the pipeline (genrt.runtime.load)
    threads: int = 0  # ONNX Runtime CPU threads (0: its default)
    sampler: str | None = None  # sampler of diffusion families; None: the manifest's
    max_batch: int = 8  # most images in one pipeline call (capped by the engines' profile)
    max_wait_s: float = 0.01  # longest a job waits for companions before its call starts
    queue_size: int = 64  # most jobs waiting; beyond it requests get 503 with Retry-After
    timeout_s: float = 60.0  # per request, from arrival to answer; queued work is dropped after it (504)
    max_images: int = 4  # most images one request may ask for
    max_prompt_chars: int = 1000  # longest prompt or negative prompt
    max_steps: int = 500  # most denoising steps of one request
    max_body_bytes: int = 65536  # largest request body (413 beyond)
    api_key: str | None = None  # when set, /v1/generate and /metrics need it (Bearer or X-API-Key)

    def __post_init__(self):
        for name in ("max_batch", "queue_size", "max_images", "max_prompt_chars", "max_steps", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} is {getattr(self, name)}", fix=f"set {name} to 1 or more")
        if self.max_wait_s < 0 or self.timeout_s <= 0:
            raise InputError(f"max_wait_s {self.max_wait_s} / timeout_s {self.timeout_s}",
                             fix="use a max wait >= 0 and a timeout > 0")
        if self.api_key is not None and not self.api_key:
            raise InputError("the API key is empty", fix=f"pass a non-empty --api-key or unset {API_KEY_ENV}")
