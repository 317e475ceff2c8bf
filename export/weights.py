"""The weights of a family's networks, built once and only when a component needs them.

A family export names each network by a key prefix (imagen: its component names, ``t5_encoder.``,
``base_unet.``, ...). With ``random_weights`` a network is initialised from ``seed`` and its prefix
(independent of which components are exported or in which order); with a checkpoint (one safetensors
or .ckpt file of the sdk modules' state dicts under those prefixes) its tensors are loaded strictly.
Families with established checkpoint layouts (ldm: diffusers/original; vqgan: taming) load those
through their sdk readers instead.
"""

from __future__ import annotations

import zlib
from typing import Callable

import torch
from torch import nn

from genrt.export.options import ExportOptions


class Weights:
    """Network factory with a cache: ``weights.get("unet.", lambda: UNet2DCondition(config))``."""

    def __init__(self, options: ExportOptions):
        self.options = options
        self._state_dict: dict[str, torch.Tensor] | None = None
        self._networks: dict[str, nn.Module] = {}

    def _checkpoint(self) -> dict[str, torch.Tensor]:
        from genrt.sdk.checkpoint import read_state_dict

        if self._state_dict is None:
            self._state_dict = read_state_dict(self.options.checkpoint)
        return self._state_dict

    def get(self, prefix: str, build: Callable[[], nn.Module]) -> nn.Module:
        """The network under ``prefix`` in float32 eval mode, built (and loaded) on first use."""
        if prefix not in self._networks:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.options.seed * 1_000_003 + zlib.crc32(prefix.encode()))
                network = build()
            if self.options.checkpoint is not None:
                from genrt.sdk.checkpoint import load_state_dict_strict

                tensors = {k[len(prefix):]: v for k, v in self._checkpoint().items() if k.startswith(prefix)}
                load_state_dict_strict(network, tensors, f"{self.options.checkpoint} ({prefix}*)")
            self._networks[prefix] = network.float().eval().requires_grad_(False)
        return self._networks[prefix]
