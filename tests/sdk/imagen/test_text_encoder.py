"""Frozen T5 encoder: equals transformers, padding invariance end to end (T5 -> U-Net), loading."""

import json

import pytest
import torch

from genrt.errors import CheckpointError, InputError
from genrt.sdk.imagen.config import if_unet_config, imagen_unet_config, text_encoder_config
from genrt.sdk.imagen.if_unet import IFUNet
from genrt.sdk.imagen.text_encoder import T5TextEncoder, encode_prompts, load_tokenizer, t5_config
from genrt.sdk.imagen.unet import ImagenUNet
from tests.conftest import relative_error

CORPUS = ["a photo of a red cat", "an astronaut riding a horse on the moon", "a blue bowl of soup"]


def write_t5_tokenizer(folder):
    """A tiny word-level tokenizer with T5's special tokens (<pad> = 0, </s> appended)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
    }))
    return folder


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return T5TextEncoder(text_encoder_config("tiny-t5"))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(write_t5_tokenizer(tmp_path_factory.mktemp("t5tok")))


def test_equals_transformers_and_is_frozen(encoder):
    from transformers import T5EncoderModel

    reference = T5EncoderModel(t5_config(encoder.config)).eval()
    reference.load_state_dict(encoder.transformer.state_dict())
    ids = torch.randint(0, 64, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.int32)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    out = encoder(ids, mask)
    assert out.shape == (2, 9, 32) and out.dtype == torch.float32
    assert relative_error(out, expected) < 1e-6
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training


def test_padding_does_not_change_the_embeddings(encoder, tokenizer):
    short, short_mask = encode_prompts(tokenizer, encoder, CORPUS, max_length=10)
    long, long_mask = encode_prompts(tokenizer, encoder, CORPUS, max_length=16)
    assert short_mask.dtype == torch.int32 and short_mask.sum(1).tolist() == [7, 9, 6]  # words + </s>
    assert relative_error(long[:, :10], short) < 1e-6
    assert torch.equal(long[:, 10:], torch.zeros(3, 6, 32))
    assert torch.equal(short * (1 - short_mask[..., None]), torch.zeros_like(short))  # padding rows are zero


def test_mask_invariance_end_to_end(encoder, tokenizer):
    """Prompt -> T5 -> U-Net: the output is the same for 10 and 16 padded tokens (Imagen and IF U-Nets)."""
    torch.manual_seed(1)
    unet = ImagenUNet(imagen_unet_config("tiny-base-64")).eval()
    sample, timestep = torch.randn(3, 3, 16, 16), torch.tensor([1.0, 500.0, 999.0])
    short = encode_prompts(tokenizer, encoder, CORPUS, max_length=10)
    long = encode_prompts(tokenizer, encoder, CORPUS, max_length=16)
    with torch.no_grad():
        assert relative_error(unet(sample, timestep, *long), unet(sample, timestep, *short)) < 1e-5
    if_config = if_unet_config("tiny-if-stage1")
    if_unet = IFUNet(if_config).eval()
    project = torch.nn.Linear(32, if_config.encoder_hid_dim)  # tiny T5 is 32 wide, the tiny IF U-Net takes 48
    with torch.no_grad():
        a = if_unet(sample, timestep, project(long[0]), long[1])
        b = if_unet(sample, timestep, project(short[0]), short[1])
    assert relative_error(a, b) < 1e-5


def test_from_folder_round_trip(encoder, tmp_path):
    encoder.transformer.save_pretrained(tmp_path)
    loaded = T5TextEncoder.from_folder(tmp_path, max_length=16)
    assert loaded.config == encoder.config
    ids, mask = torch.randint(0, 64, (1, 5)), torch.ones(1, 5, dtype=torch.int32)
    assert torch.equal(loaded(ids, mask), encoder(ids, mask))
    with pytest.raises(CheckpointError, match="no config.json"):
        T5TextEncoder.from_folder(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="tokenizer folder not found"):
        load_tokenizer(tmp_path / "missing")


def test_input_checks(encoder, tokenizer):
    ids, mask = torch.randint(0, 64, (2, 5)), torch.ones(2, 5, dtype=torch.int32)
    with pytest.raises(InputError, match="input_ids"):
        encoder(ids.float(), mask)
    with pytest.raises(InputError, match="attention_mask"):
        encoder(ids, mask[:, :4])
    with pytest.raises(InputError, match="outside 0..63"):
        encoder(ids + 64, mask)
    with pytest.raises(InputError, match="list of strings"):
        encode_prompts(tokenizer, encoder, "a cat")
