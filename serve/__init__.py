"""genrt.serve: the runtime behind HTTP (``genrt serve``), on Ray Serve (``--ray``) and over prompt files
(``genrt batch``). Depends on ``genrt.runtime`` only (no torch); FastAPI/uvicorn (extra ``serve``) and Ray
(extra ``ray``) are imported when used.

>>> from genrt.serve.app import create_app
>>> app = create_app("out/sd15", ServeSettings(max_batch=4))   # then uvicorn.run(app)
"""

from __future__ import annotations

from genrt.serve.request import GenerationRequest
from genrt.serve.settings import ServeSettings

__all__ = ["GenerationRequest", "ServeSettings"]
