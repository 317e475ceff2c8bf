"""The tiny VQGAN family: encoder, decoder and a one-layer class-conditional prior with a key/value cache, their
export folder and an uncached torch reference of the prior's sampling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genrt.settings import VqganSettings
from tests.runtime.tiny.common import TorchNoise, seeded
from tests.runtime.tiny.exports import export_component, write_manifest

CODES = 16  # codebook entries of the tiny VQGAN
CODE_DIM = 8  # width of a codebook entry
VQ_FACTOR = 4  # pixels per code
PRIOR_HEADS, PRIOR_HEAD_DIM = 2, 4
PRIOR_BLOCK = 40  # positions of the tiny prior (condition prefix + codes)
CLASSES = 10


class TinyVQEncoder(nn.Module):
    """image (B, 3, H, W) -> indices (B, H/4, W/4) int32 (nearest codebook entry)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, CODE_DIM, 1)
        self.codebook = nn.Parameter(torch.zeros(CODES, CODE_DIM))

    def forward(self, image):
        z = self.conv(nn.functional.avg_pool2d(image, VQ_FACTOR)).permute(0, 2, 3, 1)  # (B, h, w, C)
        distances = (z[..., None, :] - self.codebook).pow(2).sum(-1)  # (B, h, w, K)
        return distances.argmin(-1).to(torch.int32)


class TinyVQDecoder(nn.Module):
    """indices (B, h, w) int32 -> image (B, 3, 4h, 4w)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(CODES, 3)

    def forward(self, indices):
        x = self.embed(indices.long()).permute(0, 3, 1, 2)  # (B, 3, h, w)
        return torch.tanh(nn.functional.interpolate(x, scale_factor=VQ_FACTOR, mode="nearest"))


class TinyPrior(nn.Module):
    """One causal attention layer with a KV cache, in the ``prior`` I/O of docs/contracts.md:
    input_ids (B, T), position (1,), past_key_values (1, 2, B, heads, P, d) -> logits (B, T, V),
    present_key_values (1, 2, B, heads, P+T, d)."""

    def __init__(self):
        super().__init__()
        width = PRIOR_HEADS * PRIOR_HEAD_DIM
        self.tok = nn.Embedding(CODES, width)
        self.pos = nn.Embedding(PRIOR_BLOCK, width)
        self.qkv = nn.Linear(width, 3 * width)
        self.head = nn.Linear(width, CODES)

    def forward(self, input_ids, position, past_key_values):
        batch, length = input_ids.shape
        positions = position.long() + torch.arange(length)  # (T,)
        x = self.tok(input_ids.long()) + self.pos(positions)  # (B, T, C)
        q, k, v = (t.reshape(batch, length, PRIOR_HEADS, PRIOR_HEAD_DIM).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))  # (B, heads, T, d)
        k = torch.cat([past_key_values[0, 0], k], dim=2)  # (B, heads, P+T, d)
        v = torch.cat([past_key_values[0, 1], v], dim=2)
        keys = torch.arange(k.shape[2])  # absolute positions 0..P+T-1
        scores = q @ k.transpose(-1, -2) / PRIOR_HEAD_DIM ** 0.5  # (B, heads, T, P+T)
        scores = scores.masked_fill(keys[None, :] > positions[:, None], float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, -1)  # (B, T, C)
        return self.head(x + out), torch.stack([k, v])[None]


def vqgan_modules() -> dict[str, nn.Module]:
    return {"encoder": seeded(TinyVQEncoder(), 5), "decoder": seeded(TinyVQDecoder(), 6),
            "prior": seeded(TinyPrior(), 7)}


def build_vqgan(root: Path) -> Path:
    """A tiny vqgan export: 4x4 code grids (16x16 images) by default, class-conditional prior."""
    modules = vqgan_modules()
    cache = ("L", 2, "B", PRIOR_HEADS, "P", PRIOR_HEAD_DIM)  # the exported axes

    components = {
        "encoder": export_component(
            root, "encoder", modules["encoder"], [("image", np.zeros((2, 3, 16, 16), np.float32), ("B", 3, "H", "W"))],
            [("indices", "int32", ("B", "H/4", "W/4"))],
            {"image": {"min": [1, 3, 8, 8], "opt": [2, 3, 16, 16], "max": [4, 3, 32, 32]}}),
        "decoder": export_component(
            root, "decoder", modules["decoder"], [("indices", np.zeros((2, 4, 4), np.int32), ("B", "h", "w"))],
            [("image", "float32", ("B", 3, "4*h", "4*w"))],
            {"indices": {"min": [1, 2, 2], "opt": [2, 4, 4], "max": [4, 8, 8]}}),
        "prior": export_component(
            root, "prior", modules["prior"],
            [("input_ids", np.zeros((2, 2), np.int32), ("B", "T")), ("position", np.array([3], np.int32), (1,)),
             ("past_key_values", np.zeros((1, 2, 2, PRIOR_HEADS, 3, PRIOR_HEAD_DIM), np.float32), cache)],
            [("logits", "float32", ("B", "T", CODES)), ("present_key_values", "float32", cache)],
            {"input_ids": {"min": [1, 1], "opt": [2, 1], "max": [4, 4]},
             "past_key_values": {"min": [1, 2, 1, PRIOR_HEADS, 0, PRIOR_HEAD_DIM],
                                 "opt": [1, 2, 2, PRIOR_HEADS, 16, PRIOR_HEAD_DIM],
                                 "max": [1, 2, 4, PRIOR_HEADS, PRIOR_BLOCK - 1, PRIOR_HEAD_DIM]}}),
    }
    # the cache has one layer: the manifest's shape has the fixed layer count
    prior = components["prior"]
    fixed = (1,) + cache[1:]
    components["prior"] = dataclasses.replace(
        prior, inputs=prior.inputs[:2] + (dataclasses.replace(prior.inputs[2], shape=fixed),),
        outputs=(prior.outputs[0], dataclasses.replace(prior.outputs[1], shape=fixed)))
    settings = VqganSettings(downsample_factor=VQ_FACTOR, n_embed=CODES, image_size=16, block_size=PRIOR_BLOCK,
                             n_condition_tokens=1, condition_vocab_size=CLASSES, n_layer=1, n_head=PRIOR_HEADS,
                             head_dim=PRIOR_HEAD_DIM, temperature=1.0)
    return write_manifest(root, "vqgan", components, settings)


@torch.no_grad()
def reference_prior_codes(prior: nn.Module, prefix: np.ndarray, count: int, seed: int, temperature: float = 1.0,
                          top_k: int | None = None) -> np.ndarray:
    """Codes (B, count) drawn with full-sequence (uncached) prior calls and the runtime's inverse-CDF
    rule on torch-drawn uniforms."""
    noise = TorchNoise(seed)
    sequence = torch.from_numpy(prefix).long()
    batch = sequence.shape[0]
    for _ in range(count):
        empty = torch.zeros(1, 2, batch, PRIOR_HEADS, 0, PRIOR_HEAD_DIM)
        logits = prior(sequence, torch.zeros(1, dtype=torch.int32), empty)[0][:, -1].double() / temperature
        if top_k is not None:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_k == 1:
            token = logits.argmax(-1)
        else:
            cumulative = logits.softmax(-1).cumsum(-1)
            uniform = torch.from_numpy(noise.random((batch,)))
            token = (cumulative <= uniform[:, None] * cumulative[:, -1:]).sum(-1).clamp(max=CODES - 1)
        sequence = torch.cat([sequence, token[:, None]], dim=1)
    return sequence[:, prefix.shape[1]:].numpy().astype(np.int32)
