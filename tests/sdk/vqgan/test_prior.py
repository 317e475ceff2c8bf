"""GPTPrior: KV-cache equivalence, sampling with and without the cache, top-k/top-p, training, errors."""

import math

import pytest
import torch
from torch.nn import functional as F

from genrt.errors import InputError
from genrt.sdk.vqgan.config import prior_config
from genrt.sdk.vqgan.prior import GPTPrior, filter_logits
from tests.conftest import relative_error


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    model = GPTPrior(prior_config("tiny")).eval()
    with torch.no_grad():  # larger weights than the 0.02 init so that the logits are far from uniform
        for parameter in model.parameters():
            if parameter.ndim > 1:
                parameter.normal_(0.0, 0.3)
    return model


def test_cache_layout_and_incremental_logits(prior):
    config = prior.config
    ids = torch.randint(0, config.vocab_size, (3, 12))
    with torch.no_grad():
        full_logits, full_present = prior(ids)
        assert full_logits.shape == (3, 12, config.vocab_size) and full_logits.dtype == torch.float32
        assert full_present.shape == (config.n_layer, 2, 3, config.n_head, 12, config.head_dim)
        # a 5-token prefix, then one token at a time: same logits and same cache as the full pass
        logits, past = prior(ids[:, :5])
        pieces = [logits]
        for t in range(5, 12):
            logits, past = prior(ids[:, t:t + 1], past)
            assert past.shape[4] == t + 1
            pieces.append(logits)
        incremental = torch.cat(pieces, dim=1)
    assert relative_error(incremental, full_logits) < 1e-5
    assert relative_error(past, full_present) < 1e-5
    # causality: changing a later token leaves earlier logits alone
    changed = ids.clone()
    changed[:, 8] = (changed[:, 8] + 1) % config.vocab_size
    with torch.no_grad():
        other = prior(changed)[0]
    assert torch.equal(other[:, :8], full_logits[:, :8]) and not torch.equal(other[:, 8:], full_logits[:, 8:])


@pytest.mark.parametrize("options", [dict(), dict(top_k=5, temperature=0.8), dict(top_p=0.7)])
def test_sampling_with_cache_equals_without(prior, options):
    condition = torch.tensor([[3], [7]])
    num_tokens = prior.config.block_size  # the longest allowed grid: 1 + 64 - 1 = block_size tokens
    cached = prior.sample(condition, num_tokens, generator=torch.Generator().manual_seed(1), **options)
    plain = prior.sample(condition, num_tokens, generator=torch.Generator().manual_seed(1), use_cache=False,
                         **options)
    assert cached.shape == (2, num_tokens) and cached.dtype == torch.int64
    assert torch.equal(cached, plain)
    assert int(cached.min()) >= 0 and int(cached.max()) < prior.config.vocab_size
    # a different seed draws different tokens (the test would notice a sampler that ignores randomness)
    other = prior.sample(condition, num_tokens, generator=torch.Generator().manual_seed(2), **options)
    assert not torch.equal(cached, other)


def test_cached_sampling_runs_one_token_per_forward(prior):
    lengths = []
    hook = prior.tok_emb.register_forward_hook(lambda module, args, out: lengths.append(args[0].shape[1]))
    try:
        prior.sample(torch.tensor([[0]]), 10, generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert lengths == [1] * 10  # the condition prefix, then 9 single-token steps (the 10th code needs no forward)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.3, 0.15]]))
    assert torch.equal(torch.isfinite(filter_logits(logits, top_k=2)), torch.tensor([[True, False, True, False]]))
    # nucleus 0.7: 0.5 alone is below 0.7, 0.5 + 0.3 reaches it -> keep exactly those two
    assert torch.equal(torch.isfinite(filter_logits(logits, top_p=0.7)), torch.tensor([[True, False, True, False]]))
    assert torch.equal(torch.isfinite(filter_logits(logits, top_p=0.85)), torch.tensor([[True, False, True, True]]))
    assert torch.equal(filter_logits(logits, top_k=1, top_p=1.0).argmax(), torch.tensor(0))
    assert torch.isfinite(filter_logits(logits, top_k=1)).sum() == 1


def test_top_k_1_sampling_is_greedy_decoding(prior):
    condition = torch.tensor([[0], [4], [9]])
    codes = prior.sample(condition, 20, top_k=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = prior(torch.cat([condition, codes[:, :-1]], dim=1))
    assert torch.equal(codes, logits.argmax(dim=-1))  # every code is the argmax given the codes before it
    assert len(codes.unique()) > 1


def test_next_token_loss_matches_cross_entropy_and_training_lowers_it():
    torch.manual_seed(0)
    config = prior_config("tiny")
    model = GPTPrior(config)
    condition = torch.randint(0, config.condition_vocab_size, (4, 1))
    codes = torch.randint(0, config.vocab_size, (4, 16))
    loss = model.loss(condition, codes)
    logits, _ = model(torch.cat([condition, codes[:, :-1]], dim=1))
    assert relative_error(loss, F.cross_entropy(logits.reshape(-1, config.vocab_size), codes.reshape(-1))) < 1e-6
    assert abs(loss.item() - math.log(config.vocab_size)) < 0.1  # 0.02 init: nearly uniform predictions
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        optimiser.zero_grad()
        step_loss = model.loss(condition, codes)
        step_loss.backward()
        optimiser.step()
    final = model.loss(condition, codes).item()
    print(f"GPT prior loss {loss.item():.3f} -> {final:.3f} after 30 AdamW steps")
    assert final < 0.5 * loss.item()


def test_bad_inputs(prior):
    config = prior.config
    with pytest.raises(InputError, match=r"integer ids of shape \(B, T\)"):
        prior(torch.zeros(1, 3))
    with pytest.raises(InputError, match="exceeds block_size=64"):
        prior(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(InputError, match=r"\[0, 15\]"):
        prior(torch.tensor([[16]]))
    _, past = prior(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(InputError, match="past_key_values has shape"):
        prior(torch.zeros(1, 1, dtype=torch.long), past)
    with pytest.raises(InputError, match=r"condition ids in \[0, 9\]"):
        prior.sample(torch.tensor([[10]]), 4)
    with pytest.raises(InputError, match=r"\(B, 1\)"):
        prior.sample(torch.zeros(1, 2, dtype=torch.long), 4)
    with pytest.raises(InputError, match="temperature"):
        prior.sample(torch.zeros(1, 1, dtype=torch.long), 4, temperature=0.0)
    with pytest.raises(InputError, match="top_k"):
        prior.sample(torch.zeros(1, 1, dtype=torch.long), 4, top_k=config.vocab_size + 1)
    with pytest.raises(InputError, match="top_p"):
        prior.sample(torch.zeros(1, 1, dtype=torch.long), 4, top_p=0.0)
    with pytest.raises(InputError, match="sample at most 64 codes"):
        prior.sample(torch.zeros(1, 1, dtype=torch.long), 65)


def test_condition_names_name_every_condition_id():
    import dataclasses

    from genrt.errors import ConfigError
    from genrt.shapes import all_captions

    config = prior_config("shapes")
    assert config.condition_names == all_captions() and config.condition_vocab_size == 36
    with pytest.raises(ConfigError, match="3 condition names for condition_vocab_size=36"):
        dataclasses.replace(config, condition_names=("a", "b", "c"))
