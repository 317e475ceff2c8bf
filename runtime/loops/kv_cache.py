"""The VQGAN prior's sampling loop with its key/value cache kept on the prior's device.

Per code, one cached ``prior`` call: ids (B, T) and the position (1,) go up, the logits (B, T, V) come down
(``to_host=("logits",)``), and ``present_key_values`` (L, 2, B, heads, P+T, d) stays a device tensor that is fed
back as the next ``past_key_values`` (``resident``). Without ``resident`` the whole cache crosses to the host
and back on every call (the host loop). Both give the same codes for the same draws. Works with any runner.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from genrt.runtime.backends.base import Runner, numpy_dtype

# Called with the last position's logits (B, V) float32; returns the next codes (B,) int32.
ChooseCodes = Callable[[np.ndarray], np.ndarray]


def sample_codes(prior: Runner, prefix: np.ndarray, count: int, cache_layout: tuple[int, int, int],
                 choose: ChooseCodes, resident: bool,
                 step_end: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
    """prefix (B, n_cond) int -> codes (B, count) int32: the prefix first (empty cache), then one single-token call
    per code on the cache the previous call returned. ``cache_layout``: (layers, heads, head size)."""
    layers, heads, head_dim = cache_layout
    dtypes = {spec.name: numpy_dtype(spec.dtype) for spec in prior.spec.inputs}
    batch = prefix.shape[0]
    cache = np.zeros((layers, 2, batch, heads, 0, head_dim), dtype=dtypes["past_key_values"])
    if resident:
        cache = prior.upload(cache)
    ids, position = prefix, 0
    codes = np.empty((batch, count), dtype=np.int32)
    for step in range(count):
        # 1. logits of the next code given everything so far; the cache grows by len(ids)
        feeds = {"input_ids": ids.astype(dtypes["input_ids"]),
                 "position": np.array([position], dtype=dtypes["position"]), "past_key_values": cache}
        outputs = prior.infer(feeds, to_host=("logits",) if resident else True)
        cache = outputs["present_key_values"]
        position += ids.shape[1]
        # 2. the caller's temperature / top-k / top-p draw
        codes[:, step] = choose(outputs["logits"][:, -1].astype(np.float32))
        ids = codes[:, step:step + 1]
        if step_end is not None:  # (step index, the codes drawn so far (B, step + 1))
            step_end(step, codes[:, :step + 1])
    return codes
