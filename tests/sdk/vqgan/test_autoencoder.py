"""VQModel: image -> indices -> image round trip, module layout, and input validation."""

import pytest
import torch

from genrt.errors import InputError
from genrt.sdk.vqgan.autoencoder import VQModel
from genrt.sdk.vqgan.config import vqgan_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = VQModel(vqgan_config("tiny")).eval()
    torch.nn.init.normal_(model.quantize.embedding.weight)
    return model


def test_round_trip_shapes_and_dtypes(model):
    image = torch.rand(2, 3, 16, 24) * 2 - 1
    quant, loss, indices = model.encode(image)
    assert quant.shape == (2, 8, 8, 12) and quant.dtype == torch.float32
    assert indices.shape == (2, 8, 12) and indices.dtype == torch.int64
    assert loss.shape == () and loss.item() > 0
    assert 0 <= int(indices.min()) and int(indices.max()) < 16
    from_quant = model.decode(quant)
    from_indices = model.decode_indices(indices)
    assert from_indices.shape == (2, 3, 16, 24) and from_indices.dtype == torch.float32
    # the straight-through quant equals the codebook lookup, so both decodes agree
    assert torch.allclose(from_quant, from_indices, atol=1e-5)
    # int32 indices (the exported component's dtype) decode identically
    assert torch.equal(model.decode_indices(indices.int()), from_indices)


def test_layout_matches_taming():
    model = VQModel(vqgan_config("taming-f16-1024")).to("meta")
    names = dict(model.named_modules())
    # attention only at 16x16: encoder level 4, decoder level 4; upsample/downsample on all but one level
    assert len(names["encoder.down.4.attn"]) == 2 and len(names["encoder.down.3.attn"]) == 0
    assert len(names["decoder.up.4.attn"]) == 3 and len(names["decoder.up.4.block"]) == 3
    assert names["encoder.down.4"].downsample is None and names["encoder.down.3"].downsample is not None
    assert names["decoder.up.0"].upsample is None and names["decoder.up.1"].upsample is not None
    assert tuple(names["decoder.up.1.block.0.conv1"].weight.shape) == (128, 256, 3, 3)  # ch_mult[2] -> ch_mult[1]
    assert tuple(names["decoder.conv_in"].weight.shape) == (512, 256, 3, 3)


def test_bad_inputs(model):
    with pytest.raises(InputError, match=r"multiples of 2"):
        model.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        model.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(InputError, match="float image"):
        model.encode(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(InputError, match=r"\(B, 8, h, w\)"):
        model.decode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match=r"\[0, 15\]"):
        model.decode_indices(torch.full((1, 4, 4), -1))
