"""The VQGAN sampling filters give the full-sort implementation's results at a real vocabulary (16384)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from genrt.runtime.sampling_filters import filter_logits, top_k_candidates, nucleus_candidates, sample_next, softmax

VOCAB = 16384


def full_sort_filter(logits: np.ndarray, top_k: int | None, top_p: float | None) -> np.ndarray:
    """The previous runtime implementation (a sort for top-k, a full argsort for top-p), as the reference."""
    logits = logits.astype(np.float64, copy=True)
    if top_k is not None:
        kth = -np.sort(-logits, axis=-1)[:, top_k - 1:top_k]
        logits[logits < kth] = -np.inf
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        ranked = np.take_along_axis(logits, order, axis=-1)
        probs = softmax(ranked)
        drop_ranked = np.cumsum(probs, axis=-1) - probs >= top_p
        drop = np.zeros_like(drop_ranked)
        np.put_along_axis(drop, order, drop_ranked, axis=-1)
        logits[drop] = -np.inf
    return logits


def full_vocabulary_step(logits, temperature, top_k, top_p, rng) -> np.ndarray:
    """The previous per-code step of the pipeline: filter, softmax over V, inverse-CDF draw over V."""
    scores = full_sort_filter(logits / temperature, top_k, top_p)
    if top_k == 1:
        return np.argmax(scores, axis=-1).astype(np.int32)
    uniform = rng.random((scores.shape[0],), dtype=np.float64)
    cumulative = np.cumsum(softmax(scores), axis=-1)
    codes = (cumulative <= uniform[:, None] * cumulative[:, -1:]).sum(axis=-1)
    return np.minimum(codes, scores.shape[1] - 1).astype(np.int32)


def random_logits(seed: int, batch: int = 3, scale: float = 4.0) -> np.ndarray:
    logits = np.random.default_rng(seed).standard_normal((batch, VOCAB)).astype(np.float32) * scale
    logits[0, :50] = 20.0  # ties at the top (the largest of the rest is about 16)
    return logits


FILTERS = [(None, None), (1, None), (50, None), (600, None), (None, 0.9), (None, 0.3), (100, 0.9), (40, 0.5),
           (VOCAB, 0.95), (1, 0.9)]


@pytest.mark.parametrize("top_k, top_p", FILTERS)
def test_filter_logits_equals_the_full_sort(top_k, top_p):
    for seed, scale in [(0, 4.0), (1, 4.0), (2, 1.0), (3, 0.01)]:  # small scales: nuclei of thousands of codes
        logits = random_logits(seed, scale=scale)
        np.testing.assert_array_equal(filter_logits(logits, top_k, top_p), full_sort_filter(logits, top_k, top_p))


def test_ties_at_the_kth_value_all_survive():
    logits = random_logits(0)
    ids, kth = top_k_candidates(logits.astype(np.float64), 10)
    assert kth[:, 0].tolist() == [-np.sort(-row)[9] for row in logits.astype(np.float64)]
    assert kth[0, 0] == 20.0 and ids.shape[1] == 50
    assert (np.diff(ids, axis=-1) > 0).all()  # ascending ids
    assert np.isfinite(filter_logits(logits, 10, None)[0]).sum() >= 50


@pytest.mark.parametrize("top_k, top_p", FILTERS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sample_next_draws_the_codes_of_the_full_vocabulary_step(top_k, top_p, temperature):
    ours, reference = np.random.default_rng(5), np.random.default_rng(5)
    for seed in range(40):
        logits = random_logits(100 + seed)
        expected = full_vocabulary_step(logits, temperature, top_k, top_p, reference)
        np.testing.assert_array_equal(sample_next(logits, temperature, top_k, top_p, ours), expected)
    assert ours.random() == reference.random()  # the same number of draws


def test_the_nucleus_search_widens_until_it_holds_the_nucleus():
    logits = np.random.default_rng(0).standard_normal((2, VOCAB))  # nucleus of 0.9: thousands of codes
    ids, total = nucleus_candidates(logits, 0.9)
    kept = np.isfinite(filter_logits(logits, None, 0.9))
    assert kept.sum(axis=-1).min() > 256 and ids.shape[1] >= kept.sum(axis=-1).max()
    assert all(set(np.flatnonzero(row)) <= set(row_ids) for row, row_ids in zip(kept, ids))
    np.testing.assert_allclose(total[:, 0], np.exp(logits - logits.max(-1, keepdims=True)).sum(-1), rtol=1e-12)


def test_top_k_top_p_is_faster_than_the_full_sort():
    logits = random_logits(0, batch=2)
    rng = np.random.default_rng(0)

    def best_of(step) -> float:
        times = []
        for _ in range(30):
            start = time.perf_counter()
            step(logits, 1.0, 100, 0.9, rng)
            times.append(time.perf_counter() - start)
        return min(times)

    assert best_of(sample_next) < 0.5 * best_of(full_vocabulary_step)
