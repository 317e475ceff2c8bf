"""Tiny random-weight diffusers pipelines (SD1-like and SD2-like) written once per test module."""

import json

import pytest
import torch

from genrt.sdk.ldm.config import get_config


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins of GPT-2/CLIP byte-level BPE, in their usual order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_tiny_tokenizer(folder):
    """A CLIPTokenizer over bytes (515 tokens: bos 0, "!" 1, eos/pad 2) saved to ``folder``."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_alphabet()
    tokens = ["<|startoftext|>", "!", "<|endoftext|>"] + chars + [c + "</w>" for c in chars] + ["he</w>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nh e</w>\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with noise (norm scales 1 + N(0, 0.1^2), the rest N(0, 0.1^2)), so that
    zero-initialised layers too influence the outputs that are compared."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * 0.1
            is_norm_scale = parameter.ndim == 1 and name.endswith("weight")
            parameter.copy_(noise + 1.0 if is_norm_scale else noise)


def diffusers_components(name: str):
    """diffusers UNet2DConditionModel / AutoencoderKL and a transformers CLIPTextModel shaped like ``name``."""
    import diffusers
    import transformers

    config = get_config(name)
    u, v, t = config.unet, config.vae, config.text_encoder
    unet = diffusers.UNet2DConditionModel(
        sample_size=config.latent_size,
        block_out_channels=u.block_out_channels,
        layers_per_block=u.layers_per_block,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in u.attention_levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(u.attention_levels)),
        attention_head_dim=u.attention_heads,
        cross_attention_dim=u.cross_attention_dim,
        use_linear_projection=u.use_linear_projection,
        norm_num_groups=u.norm_num_groups,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=v.block_out_channels,
        layers_per_block=v.layers_per_block,
        down_block_types=("DownEncoderBlock2D",) * len(v.block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(v.block_out_channels),
        latent_channels=v.latent_channels,
        norm_num_groups=v.norm_num_groups,
        sample_size=config.image_size,
    )
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
        max_position_embeddings=t.max_position_embeddings, hidden_act=t.hidden_act, pad_token_id=t.pad_token_id,
        bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id,
    ))
    for seed, module in enumerate((unet, vae, text)):
        randomise(module, seed)
    return unet.eval(), vae.eval(), text.eval()


@pytest.fixture(scope="module", params=["tiny", "tiny-sd2"])
def diffusers_pipeline(request, tmp_path_factory):
    """(name, folder, (unet, vae, text)): a saved diffusers StableDiffusionPipeline and its live modules."""
    import diffusers

    name = request.param
    config = get_config(name)
    folder = tmp_path_factory.mktemp(f"diffusers-{name}")
    unet, vae, text = diffusers_components(name)
    tokenizer = write_tiny_tokenizer(folder / "tokenizer-source")
    scheduler = diffusers.DDIMScheduler(**{k: v for k, v in config.schedule_fields().items()
                                           if k != "variance_type"}, clip_sample=False, set_alpha_to_one=False)
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.save_pretrained(str(folder / "pipeline"))
    return name, folder / "pipeline", (unet, vae, text)
