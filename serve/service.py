"""The serving core without HTTP: loads the pipeline (in the background, so health checks answer while
engines load), turns requests into jobs and queues them on the :class:`~genrt.serve.batcher.Batcher`.

The FastAPI app (``genrt.serve.app``) and the Ray Serve deployment wrap one :class:`Service` each.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from genrt.errors import GenrtError
from genrt.runtime.png import manifest_sha256
from genrt.serve.batcher import Batcher
from genrt.serve.call import generate_batch, pipeline_defaults
from genrt.serve.limits import Limits, limits_for
from genrt.serve.metrics import Metrics
from genrt.serve.request import GenerationRequest, Job, make_job
from genrt.serve.settings import ServeSettings


class NotReady(GenrtError):
    """The pipeline is still loading (or failed to load)."""


def load_pipeline(directory: str | Path, settings: ServeSettings):
    """The runtime pipeline of ``directory`` as ``settings`` ask (backend, threads, sampler)."""
    import genrt.runtime

    options = {"sampler": settings.sampler} if settings.sampler else {}
    return genrt.runtime.load(directory, backend=settings.backend, threads=settings.threads, **options)


class Service:
    """``start()``, then ``job(request)`` / ``submit(job) -> Future[JobResult]``; ``close()`` drains."""

    def __init__(self, directory: str | Path, settings: ServeSettings,
                 load: Callable[[str | Path, ServeSettings], Any] = load_pipeline):
        self.directory = Path(directory)
        self.settings = settings
        self.metrics = Metrics()
        self.manifest_sha256 = manifest_sha256(self.directory)
        self._load = load
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self.pipe: Any = None
        self.family = ""
        self.defaults: dict[str, Any] = {}
        self.limits: Limits | None = None
        self.batcher: Batcher | None = None

    def start(self) -> None:
        threading.Thread(target=self._open, name="genrt-load", daemon=True).start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        self._loaded.wait(timeout)
        return self.ready

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self._load_error is None

    def _open(self) -> None:
        try:
            self.pipe = self._load(self.directory, self.settings)
            self.family = self.pipe.family
            self.defaults = pipeline_defaults(self.pipe, self.family, self.settings.sampler)
            self.limits = limits_for(self.pipe.manifest, self.defaults, self.settings.max_batch,
                                     self.settings.max_images, self.settings.max_prompt_chars, self.settings.max_steps)
            self.batcher = Batcher(lambda jobs: generate_batch(self.pipe, self.family, jobs), self._max_rows,
                                   self.settings.max_wait_s, self.settings.queue_size, self.metrics)
        except BaseException as exc:  # reported by /readyz and every request
            self._load_error = exc
        finally:
            self._loaded.set()

    def _max_rows(self, job: Job) -> int:
        return self.limits.max_rows(job.guided)

    def _check_ready(self) -> None:
        if self._load_error is not None:
            detail = self._load_error.one_line() if isinstance(self._load_error, GenrtError) else repr(self._load_error)
            raise NotReady(f"the model failed to load: {detail}", fix="fix the export folder and restart the server")
        if not self._loaded.is_set():
            raise NotReady("the model is still loading", fix="retry when /readyz answers 200")

    def job(self, request: GenerationRequest) -> Job:
        """``request`` checked against the model and the limits, with its defaults filled in (InputError)."""
        self._check_ready()
        return make_job(request, self.family, self.defaults, self.limits)

    def submit(self, job: Job) -> Future:
        self._check_ready()
        return self.batcher.submit(job)

    def describe(self) -> dict[str, Any]:
        """What /readyz reports: family, backend, defaults and limits (empty until loaded)."""
        if not self.ready:
            return {"ready": False}
        return {"ready": True, "family": self.family, "backend": self.pipe.backend,
                "manifest_sha256": self.manifest_sha256, "defaults": self.defaults,
                "limits": dataclasses.asdict(self.limits)}

    def close(self) -> None:
        """Finish every accepted job, then close the pipeline's runners."""
        self._loaded.wait()
        if self.batcher is not None:
            self.batcher.close()
        if self.pipe is not None:
            self.pipe.close()
