"""The key mask of ``multi_head_attention`` exports without a NaN guard and gives the boolean mask's output.

The Imagen attention attends over [null; text; pixels] with padded text tokens masked out. A boolean
SDPA mask exports as ``Where(mask, 0, -inf)`` plus an ``IsNaN``/``Where`` guard over the attention
probabilities; the additive finite mask exports as one ``Add``.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch.nn import functional as F

from genrt.export.cleanup import clean_graph
from genrt.sdk.imagen.unet import ImageTextAttention
from genrt.sdk.nn.attention import additive_key_mask


def boolean_mask_attention(module: ImageTextAttention, x, text, text_mask, monkeypatch):
    """The module's forward with SDPA's boolean mask (the previous implementation), as the reference."""
    calls = []
    original = F.scaled_dot_product_attention

    def with_boolean_mask(q, k, v, attn_mask=None, **kwargs):
        calls.append(tuple(attn_mask.shape))
        return original(q, k, v, attn_mask=attn_mask == 0, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(F, "scaled_dot_product_attention", with_boolean_mask)
        return module(x, text, text_mask), calls


def test_additive_mask_is_zero_where_attended_and_finite_elsewhere():
    mask = torch.tensor([[True, False, True]])
    bias = additive_key_mask(mask, torch.float16)
    assert bias.shape == (1, 1, 1, 3) and bias.dtype == torch.float16
    assert bias.flatten().tolist() == [0.0, torch.finfo(torch.float16).min, 0.0]
    assert torch.isfinite(bias).all()


def test_exported_attention_has_no_nan_guard_and_matches_the_boolean_mask(tmp_path, monkeypatch):
    torch.manual_seed(0)
    module = ImageTextAttention(32, 24, heads=2, head_dim=16, self_attention=True, groups=8).eval()
    x = torch.randn(2, 32, 8, 8)
    text = torch.randn(2, 7, 24)
    text_mask = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [1, 0, 1, 1, 0, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        reference, calls = boolean_mask_attention(module, x, text, text_mask, monkeypatch)
        additive = module(x, text, text_mask)
    assert calls == [(2, 1, 1, 1 + 7 + 64)]
    torch.testing.assert_close(additive, reference, rtol=0, atol=1e-6)
    # padded tokens are really ignored: changing them leaves the output unchanged
    with torch.no_grad():
        other_text = torch.where(text_mask[..., None], text, torch.randn_like(text))
        torch.testing.assert_close(module(x, other_text, text_mask), additive, rtol=0, atol=1e-6)

    path = tmp_path / "attention.onnx"
    torch.onnx.export(module, (x, text, text_mask), str(path), dynamo=False, opset_version=17,
                      input_names=["x", "text", "text_mask"], output_names=["out"])
    model, _ = clean_graph(onnx.load(str(path)), "attention")
    op_types = {node.op_type for node in model.graph.node}
    assert "IsNaN" not in op_types and "Softmax" in op_types
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": x.numpy(), "text": text.numpy(), "text_mask": text_mask.numpy()})
    error = np.abs(out - reference.numpy()).max() / np.abs(reference.numpy()).max()
    assert error < 1e-5, error
