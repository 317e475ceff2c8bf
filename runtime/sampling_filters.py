"""Next-code sampling for the VQGAN prior, in numpy: temperature, top-k, top-p (nucleus) and an inverse-CDF draw.

Semantics (taming ``cond_transformer``, and :func:`genrt.sdk.vqgan.prior.filter_logits` in torch): top-k
keeps every code whose logit is at least the k-th largest (ties at the k-th all stay); top-p then keeps,
in descending order of logit (ties in id order), each code until the codes ranked above it hold
``top_p`` of the probability mass (the first always stays). The draw takes one uniform u per row and
returns the first id whose cumulative probability exceeds u (ids 0..V-1, in id order).

Cost at a real vocabulary (V = 16384, per token): the k-th largest comes from ``np.partition`` (linear)
instead of a sort, and top-p sorts only the candidates, the top-k survivors when top-k is set (a full
sort of V only without top-k); after top-k the softmax and the draw run over the survivors alone. The
results are those of the full-vocabulary computation: the same codes survive and the same code is drawn
(the mass of a survivor can differ in its last bit, since the softmax is normalised over fewer terms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from genrt.runtime.pipelines.common import NoiseSource


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64 (-inf entries get probability 0)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def top_k_candidates(logits: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """logits (B, V), 1 <= top_k < V -> (ids (B, m) in ascending id order holding every top-k survivor of
    each row, the k-th largest logit (B, 1)).

    m is the largest survivor count over the rows (k, or more with ties at the k-th value); rows with
    fewer survivors are padded with ids below their k-th value.
    """
    vocab = logits.shape[-1]
    top = np.argpartition(logits, vocab - top_k, axis=-1)[:, vocab - top_k:]  # (B, k), the k-th largest first
    kth = np.take_along_axis(logits, top[:, :1], axis=-1)
    width = int((logits >= kth).sum(axis=-1).max())
    if width > top_k:  # ties at the k-th value: take them all
        top = np.argpartition(logits, vocab - width, axis=-1)[:, vocab - width:]
    return np.sort(top, axis=-1), kth


def nucleus_candidates(logits: np.ndarray, top_p: float, width: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """logits (B, V) -> (ids (B, m) in ascending id order holding every top-p survivor of each row, the
    softmax denominator (B, 1) of the full rows).

    The m largest logits hold the nucleus once the codes strictly above the smallest of them carry
    ``top_p`` of the mass: every other code is then dropped whatever its rank among ties. m starts at
    ``width`` and grows 4x until that holds (at worst all V ids).
    """
    vocab = logits.shape[-1]
    peak = logits.max(axis=-1, keepdims=True)
    total = np.exp(logits - peak).sum(axis=-1, keepdims=True)
    while width < vocab:
        top = np.argpartition(logits, vocab - width, axis=-1)[:, vocab - width:]  # (B, m), the m-th largest first
        values = np.take_along_axis(logits, top, axis=-1)
        above = np.where(values > values[:, :1], np.exp(values - peak), 0.0).sum(axis=-1, keepdims=True)
        if (above / total >= top_p).all():
            return np.sort(top, axis=-1), total
        width *= 4
    return np.broadcast_to(np.arange(vocab), logits.shape), total


def nucleus_drop(values: np.ndarray, top_p: float, total: np.ndarray | None) -> np.ndarray:
    """values (B, m) float64 logits in id order -> (B, m) bool, True where outside the top-p nucleus.

    ``total``: the softmax denominator of the full rows when ``values`` are only some of their codes
    (None: the values are the rows).
    """
    order = np.argsort(-values, axis=-1, kind="stable")  # (B, m) descending, ties in id order
    ranked = np.take_along_axis(values, order, axis=-1)
    shifted = np.exp(ranked - ranked[:, :1])
    probs = shifted / (shifted.sum(axis=-1, keepdims=True) if total is None else total)
    # drop a code when the codes ranked above it already hold top_p of the mass (the first stays)
    drop_ranked = np.cumsum(probs, axis=-1) - probs >= top_p
    drop = np.zeros_like(drop_ranked)
    np.put_along_axis(drop, order, drop_ranked, axis=-1)
    return drop


def filtered_candidates(logits: np.ndarray, top_k: int | None, top_p: float | None) -> tuple[np.ndarray, np.ndarray]:
    """logits (B, V) float64 -> (ids (B, m) in id order, their logits (B, m) with filtered codes at -inf).

    Every code outside ``ids`` is filtered out too.
    """
    vocab = logits.shape[-1]
    nucleus = top_p is not None and top_p < 1.0
    total = None
    if top_k is not None and top_k < vocab:
        ids, kth = top_k_candidates(logits, top_k)
        values = np.take_along_axis(logits, ids, axis=-1)
        values[values < kth] = -np.inf
    elif nucleus:
        ids, total = nucleus_candidates(logits, top_p)
        values = np.take_along_axis(logits, ids, axis=-1)
    else:
        ids, values = np.broadcast_to(np.arange(vocab), logits.shape), logits.copy()
    if nucleus:
        values[nucleus_drop(values, top_p, total)] = -np.inf
    return ids, values


def filter_logits(logits: np.ndarray, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """logits (B, V) -> float64 (B, V) with everything outside the top-k and outside the top-p nucleus at -inf."""
    logits = np.asarray(logits, dtype=np.float64)
    ids, kept = filtered_candidates(logits, top_k, top_p)
    out = np.full_like(logits, -np.inf)
    np.put_along_axis(out, ids, kept, axis=-1)
    return out


def draw_codes(probs: np.ndarray, rng: NoiseSource) -> np.ndarray:
    """probs (B, V) -> codes (B,) int32 by inverse-CDF sampling with one uniform draw per row."""
    uniform = np.asarray(rng.random((probs.shape[0],), dtype=np.float64))
    cumulative = np.cumsum(probs, axis=-1)
    codes = (cumulative <= uniform[:, None] * cumulative[:, -1:]).sum(axis=-1)
    return np.minimum(codes, probs.shape[1] - 1).astype(np.int32)


def sample_next(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None,
                rng: NoiseSource) -> np.ndarray:
    """Last-position logits (B, V) -> the next codes (B,) int32: temperature, top-k, top-p, then a draw.

    ``top_k == 1`` is greedy (the first id of the largest logit) and draws no randomness. With top-k the
    softmax and the draw run over the survivors only (in id order, so the cumulative sums are the full
    vocabulary's at those ids).
    """
    scores = np.asarray(logits / temperature, dtype=np.float64)  # divided in the logits' dtype
    if top_k == 1:
        return np.argmax(scores, axis=-1).astype(np.int32)
    if top_k is None and (top_p is None or top_p >= 1.0):
        return draw_codes(softmax(scores), rng)
    ids, kept = filtered_candidates(scores, top_k, top_p)
    positions = draw_codes(softmax(kept), rng)  # (B,) index into the candidates
    return np.take_along_axis(ids, positions[:, None].astype(np.intp), axis=-1)[:, 0].astype(np.int32)
