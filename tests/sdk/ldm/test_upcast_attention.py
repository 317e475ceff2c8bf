"""``upcast_attention``: attention logits beyond float16's 65504 stay finite in a float16 model."""

import pytest
import torch

from genrt.export.precision import DEFAULT_FP32_MODULES, cast_with_islands
from genrt.sdk.ldm.transformer import BasicTransformerBlock
from tests.conftest import relative_error

SCALE = 150.0  # to_q = to_k = SCALE * I: self-logits |x|^2 SCALE^2 / sqrt(32) ~ 1.3e5 > 65504


def _block(upcast: bool) -> BasicTransformerBlock:
    """One head of 32: each token attends to itself (its logit is far above the others), at ~1.3e5."""
    torch.manual_seed(0)
    block = BasicTransformerBlock(32, heads=1, dim_head=32, context_dim=16, upcast_attention=upcast).eval()
    with torch.no_grad():
        block.attn1.to_q.weight.copy_(torch.eye(32) * SCALE)
        block.attn1.to_k.weight.copy_(torch.eye(32) * SCALE)
    return block


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_upcast_attention_keeps_half_precision_finite(dtype):
    x, context = torch.randn(2, 64, 32), torch.randn(2, 7, 16)
    with torch.no_grad():
        reference = _block(True)(x, context)  # float32 model: upcast changes nothing
        assert torch.equal(reference, _block(False)(x, context))
        h = _block(True).norm1(x)
        logits = _block(True).attn1.to_q(h) @ _block(True).attn1.to_k(h).transpose(1, 2) / 32 ** 0.5
        assert logits.abs().max() > 65504  # beyond the float16 range
        half, islands = cast_with_islands(_block(True), dtype, DEFAULT_FP32_MODULES)
        out = half(x.to(dtype), context.to(dtype)).float()
    # torch's CPU kernels accumulate half attention in float32 anyway; the overflow without upcast shows in
    # ONNX graphs (tests/diffusers_parity/test_upcast_attention.py)
    assert islands == ["attention_upcast", "layer_norm"]
    assert torch.isfinite(out).all()
    assert relative_error(out, reference) < 2e-2, relative_error(out, reference)
