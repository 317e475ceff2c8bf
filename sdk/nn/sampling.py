"""Spatial down- and up-sampling by a factor of two.

Both are shape-generic: they export to ONNX graphs that accept any even (down) or any (up)
spatial size, because the output size is derived from the input at run time, never frozen.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Downsample(nn.Module):
    """(B, C, H, W) -> (B, C_out, H/2, W/2) by a stride-2 conv, or by average pooling.

    ``asymmetric_padding`` pads right/bottom by one and convolves without padding: the layout of
    the taming VQGAN and the Stable Diffusion autoencoder. Otherwise the conv pads by one on all sides.
    """

    def __init__(self, channels: int, out_channels: int | None = None, *, use_conv: bool = True,
                 asymmetric_padding: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.asymmetric_padding = asymmetric_padding
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels, 3, stride=2, padding=0 if asymmetric_padding else 1)
        else:
            if out_channels != channels:
                raise ValueError("average-pool downsampling cannot change the channel count")
            self.conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.asymmetric_padding:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """(B, C, H, W) -> (B, C_out, 2H, 2W): nearest-neighbour doubling, then an optional 3x3 conv."""

    def __init__(self, channels: int, out_channels: int | None = None, *, use_conv: bool = True):
        super().__init__()
        out_channels = out_channels or channels
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)
