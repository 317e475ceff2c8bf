"""The process's one TensorRT logger per TensorRT module (``tensorrt``, ``tensorrt_rtx``), shared by the runtime's
runners and ``genrt build``.

TensorRT keeps the first logger a process hands it: builders, parsers and runtimes created later log to that
one, whatever logger they are given. Two loggers (one in the runtime, one in the export) would lose messages:
an export build after a runtime call would write an empty build log, and runtime errors after a build would go to
a build that is over. So there is one, whose ``sink`` (a list of lines) is set while a build runs
(``genrt.export.build_control.build_log``) and receives every message; with no build running, errors go to
Python logging (logger ``genrt.tensorrt``) and the rest is dropped.
"""

from __future__ import annotations

import logging

log = logging.getLogger("genrt.tensorrt")
_LOGGERS: dict[str, object] = {}  # TensorRT module name -> its one logger


def shared_logger(trt):
    """The one ``trt.ILogger`` of the TensorRT module ``trt``."""
    logger = _LOGGERS.get(trt.__name__)
    if logger is None:

        class ForwardingLogger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.sink: list[str] | None = None  # lines of the build in progress

            def log(self, severity, msg):
                sink = self.sink
                if sink is not None:
                    sink.append(f"[{severity.name}] {msg}")
                elif severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                    log.error("%s: %s", trt.__name__, msg)

        logger = _LOGGERS[trt.__name__] = ForwardingLogger()
    return logger
