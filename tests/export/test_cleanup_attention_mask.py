"""The attention masks (``multi_head_attention``'s key mask, the VQGAN prior's causal mask over its key/value
cache) export without a NaN guard and give the boolean mask's output.

The Imagen attention attends over [null; text; pixels] with padded text tokens masked out; the prior's query
i at position P + i sees keys 0..P+i. A boolean SDPA mask exports as ``Where(mask, 0, -inf)`` plus an
``IsNaN``/``Where`` guard over the attention probabilities; the additive finite mask exports as one ``Add``.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch.nn import functional as F

from genrt.export.cleanup import clean_graph
from genrt.sdk.imagen.unet import ImageTextAttention
from genrt.sdk.nn.attention import additive_key_mask, mask_in_keys_attention
from genrt.sdk.vqgan.config import PriorConfig
from genrt.sdk.vqgan.prior import CausalSelfAttention


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
    # the mask rides in Q.K^T (mask_in_keys_attention): the softmax reads the MatMul, no Add over the scores
    producers = {output: node.op_type for node in model.graph.node for output in node.output}
    assert [producers[node.input[0]] for node in model.graph.node if node.op_type == "Softmax"] == ["MatMul"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": x.numpy(), "text": text.numpy(), "text_mask": text_mask.numpy()})
    error = np.abs(out - reference.numpy()).max() / np.abs(reference.numpy()).max()
    assert error < 1e-5, error


def test_exported_prior_attention_with_a_cache_has_no_nan_guard_and_equals_the_boolean_mask(tmp_path, monkeypatch):
    torch.manual_seed(0)
    module = CausalSelfAttention(PriorConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=32)).eval()
    x = torch.randn(2, 3, 32)  # 3 new tokens after 5 cached ones
    past = torch.randn(2, 2, 2, 5, 16)  # (2, B, heads, P, d)
    original = F.scaled_dot_product_attention
    masks = []

    def with_boolean_mask(q, k, v, attn_mask=None, **kwargs):
        masks.append(attn_mask)
        return original(q, k, v, attn_mask=attn_mask == 0, **kwargs)

    with torch.no_grad():
        out, present = module(x, past)
        with monkeypatch.context() as patch:
            patch.setattr(F, "scaled_dot_product_attention", with_boolean_mask)
            reference, _ = module(x, past)
    assert masks[0].shape == (3, 8) and torch.equal(masks[0] == 0, torch.ones(3, 8, dtype=torch.bool).tril(5))
    assert torch.equal(out, reference)  # identical, not merely close

    path = tmp_path / "prior_attention.onnx"
    torch.onnx.export(module, (x, past), str(path), dynamo=False, opset_version=17, input_names=["x", "past"],
                      output_names=["out", "present"],
                      dynamic_axes={"x": {1: "T"}, "past": {3: "P"}, "present": {3: "P+T"}})
    model, _ = clean_graph(onnx.load(str(path)), "prior_attention")
    op_types = {node.op_type for node in model.graph.node}
    assert "IsNaN" not in op_types and "Softmax" in op_types
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for length, cached in ((3, 5), (1, 9)):  # a prompt chunk, then one code at a time
        x, past = torch.randn(2, length, 32), torch.randn(2, 2, 2, cached, 16)
        with torch.no_grad():
            expected, _ = module(x, past)
        got = session.run(["out"], {"x": x.numpy(), "past": past.numpy()})[0]
        error = np.abs(got - expected.numpy()).max() / np.abs(expected.numpy()).max()
        assert error < 1e-5, error


def test_mask_in_keys_attention_equals_the_additive_mask_in_float32_and_float16():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 10, 16), torch.randn(2, 3, 12, 16), torch.randn(2, 3, 12, 16)
    key_mask = torch.rand(2, 12) > 0.4
    key_mask[:, 0] = True  # every row keeps a key, as every caller does
    for dtype, atol in ((torch.float32, 1e-6), (torch.float16, 2e-3)):
        args = [t.to(dtype) for t in (q, k, v)]
        expected = F.scaled_dot_product_attention(*args, attn_mask=additive_key_mask(key_mask, dtype))
        got = mask_in_keys_attention(*args, key_mask)
        assert got.dtype == dtype and torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), expected.float(), rtol=0, atol=atol)
