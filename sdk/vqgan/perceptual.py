"""LPIPS perceptual distance on VGG16 features (Zhang et al. 2018), as used by the taming VQGAN loss.

d(x, y) = sum over 5 taps l of mean_hw( sum_c w_lc (n(f_l(x)) - n(f_l(y)))^2 ), with f_l the VGG16
activations relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of the scaled input, n() the unit-length
normalisation along channels and w_l the learned 1x1 linear heads.

Weights load from local files: the backbone from a torchvision ``vgg16`` state dict
(``features.N.*``, ``classifier.*`` ignored) and the heads from the LPIPS ``vgg.pth``
(``lin{l}.model.1.weight``). The whole module is frozen: it is a loss, never trained.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genrt.errors import CheckpointError
from genrt.sdk.checkpoint import load_state_dict_strict, read_state_dict

# torchvision's vgg16 "D" configuration: conv widths, "M" = 2x2 max-pool
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# indices in ``features`` of the ReLUs whose outputs LPIPS compares (relu1_2 ... relu5_3)
VGG16_TAPS = (3, 8, 15, 22, 29)
VGG16_TAP_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS input scaling: (x - shift) / scale maps [-1, 1] images to ImageNet-normalised inputs
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORMALIZE_EPS = 1e-10  # added to the channel norm before dividing (LPIPS normalize_tensor)


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` up to relu5_3, module indices included.

    x (B, 3, H, W) -> list of the 5 tap activations, tap l of shape (B, C_l, H / 2^l, W / 2^l).
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for entry in VGG16_LAYOUT:
            if entry == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, entry, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                channels = entry
        self.features = nn.Sequential(*layers)  # indices 0..29, as in torchvision

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in VGG16_TAPS:
                taps.append(x)
        return taps


def normalize_channels(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> same, each pixel's feature vector divided by its l2 norm (+ eps)."""
    norm = features.pow(2).sum(dim=1, keepdim=True).sqrt()  # (B, 1, H, W)
    return features / (norm + NORMALIZE_EPS)


class LPIPS(nn.Module):
    """Perceptual distance between images x, y (B, 3, H, W) in [-1, 1] -> (B, 1, 1, 1).

    H and W must be at least 16 (relu5_3 sits after four 2x2 pools).
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE)[None, :, None, None], persistent=False)
        self.net = VGG16Features()
        # lin{l} of LPIPS: a bias-free 1x1 conv from C_l channels to one
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in VGG16_TAP_CHANNELS)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        """Always stays in eval mode: the loss network is frozen."""
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        taps_x = self.net((x - self.shift) / self.scale)
        taps_y = self.net((y - self.shift) / self.scale)
        distance = 0.0
        for head, fx, fy in zip(self.heads, taps_x, taps_y):
            squared = (normalize_channels(fx) - normalize_channels(fy)).pow(2)  # (B, C_l, h, w)
            distance = distance + head(squared).mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
        return distance

    def load_weights(self, vgg_path: str | Path, heads_path: str | Path) -> "LPIPS":
        """Backbone from a torchvision vgg16 state dict, heads from the LPIPS ``vgg.pth``; returns self."""
        vgg = read_state_dict(vgg_path)
        backbone = {key: value for key, value in vgg.items() if key.startswith("features.")}
        if not backbone:
            raise CheckpointError(f"{vgg_path} has no 'features.*' keys",
                                  fix="pass a torchvision vgg16 state dict (e.g. vgg16-397923af.pth)")
        load_state_dict_strict(self.net, backbone, str(vgg_path))
        return self.load_heads(heads_path)

    def load_heads(self, heads_path: str | Path) -> "LPIPS":
        """The linear heads from the LPIPS ``vgg.pth`` (``lin{l}.model.1.weight``); returns self."""
        heads = {key.replace("lin", "", 1).replace(".model.1.", "."): value
                 for key, value in read_state_dict(heads_path).items()}
        load_state_dict_strict(self.heads, heads, str(heads_path))
        return self
