"""VectorQuantizer against brute-force nearest-neighbour search and the textbook losses."""

import pytest
import torch
from torch.nn import functional as F

from genrt.errors import InputError
from genrt.sdk.vqgan.quantizer import VectorQuantizer
from tests.conftest import relative_error


def brute_force_indices(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).double()
    return torch.cdist(flat, codebook.double()).argmin(dim=1).reshape(z.shape[0], z.shape[2], z.shape[3])


@pytest.mark.parametrize("l2", [False, True])
def test_indices_equal_brute_force_nearest_neighbour(l2):
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 16, l2_normalize=l2)
    torch.nn.init.normal_(vq.embedding.weight)
    z = torch.randn(3, 16, 5, 7)
    quant, loss, indices = vq(z)
    assert indices.shape == (3, 5, 7) and indices.dtype == torch.int64
    assert quant.shape == z.shape and quant.dtype == torch.float32
    if l2:
        expected = brute_force_indices(F.normalize(z, dim=1), F.normalize(vq.embedding.weight, dim=1))
    else:
        expected = brute_force_indices(z, vq.embedding.weight)
    assert torch.equal(indices, expected)
    assert relative_error(quant, vq.lookup(indices)) < 1e-6


def test_loss_and_straight_through_gradient():
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 8, beta=0.25)
    torch.nn.init.normal_(vq.embedding.weight)
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    quant, loss, indices = vq(z)
    e = vq.embedding.weight[indices].permute(0, 3, 1, 2)  # (B, C, h, w)
    expected = ((z - e) ** 2).mean() * 1.25
    assert relative_error(loss, expected) < 1e-6
    # straight-through: d(sum quant)/dz = 1 everywhere
    (grad,) = torch.autograd.grad(quant.sum(), z)
    assert torch.equal(grad, torch.ones_like(z))
    # codebook term moves the codebook toward z, commitment term moves z toward the codebook
    loss.backward()
    used = indices.unique()
    assert vq.embedding.weight.grad[used].abs().sum() > 0


def test_ema_codebook_update_matches_formula():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, ema=True, decay=0.9, eps=1e-5)
    torch.nn.init.normal_(vq.embedding.weight)
    vq.embed_avg.copy_(vq.embedding.weight)
    assert not vq.embedding.weight.requires_grad
    z = torch.randn(2, 4, 3, 3)
    before = vq.embedding.weight.detach().clone()
    _, loss, indices = vq.train()(z)

    flat = z.permute(0, 2, 3, 1).reshape(-1, 4).double()
    one_hot = F.one_hot(indices.flatten(), 8).double()
    cluster = 0.1 * one_hot.sum(0)
    avg = 0.9 * before.double() + 0.1 * one_hot.t() @ flat
    n = cluster.sum()
    expected = avg / ((cluster + 1e-5) / (n + 8 * 1e-5) * n)[:, None]
    assert relative_error(vq.embedding.weight, expected) < 1e-5
    # EMA loss is the commitment term only
    e = before[indices].permute(0, 3, 1, 2)
    assert relative_error(loss, 0.25 * ((z - e) ** 2).mean()) < 1e-6
    # eval mode leaves the codebook alone
    frozen = vq.embedding.weight.clone()
    vq.eval()(z)
    assert torch.equal(vq.embedding.weight, frozen)


def test_bad_inputs():
    vq = VectorQuantizer(16, 4)
    with pytest.raises(InputError, match="quantiser input"):
        vq(torch.randn(1, 5, 2, 2))
    with pytest.raises(InputError, match=r"\[0, 15\]"):
        vq.lookup(torch.tensor([[[0, 16]]]))
    with pytest.raises(InputError, match="integer indices"):
        vq.lookup(torch.zeros(1, 2, 2))
