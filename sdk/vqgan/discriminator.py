"""PatchGAN discriminator (pix2pix ``NLayerDiscriminator``) and the two GAN losses of taming.

Module indices of ``main`` follow taming (``loss.discriminator.main.N.*`` in a taming ckpt).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

KERNEL = 4  # every conv is 4x4 with padding 1
LEAKY_SLOPE = 0.2
MAX_WIDTH_MULT = 8  # channel multiplier cap: ndf * min(2^n, 8)


class NLayerDiscriminator(nn.Module):
    """image (B, C, H, W) -> patch logits (B, 1, H', W'), one per overlapping receptive field.

    ``num_layers`` stride-2 convs (the first without norm), one stride-1 conv, all followed by
    LeakyReLU(0.2) and, except the first, BatchNorm; then a stride-1 conv to one channel.
    For 256x256 inputs and 3 layers the output is 30x30 (70x70 receptive fields).
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, KERNEL, stride=2, padding=1),
                                   nn.LeakyReLU(LEAKY_SLOPE, inplace=False)]
        width = ndf
        for n in range(1, num_layers + 1):
            out = ndf * min(2 ** n, MAX_WIDTH_MULT)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(width, out, KERNEL, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.LeakyReLU(LEAKY_SLOPE, inplace=False)]
            width = out
        layers.append(nn.Conv2d(width, 1, KERNEL, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """DCGAN init: conv weights N(0, 0.02), BatchNorm scales N(1, 0.02) and zero shifts."""
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.main(image)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(G(z)))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (E[softplus(-D(x))] + E[softplus(D(G(z)))]): the non-saturating BCE loss on logits."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


DISCRIMINATOR_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}
