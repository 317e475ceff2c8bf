"""LPIPS, PatchGAN discriminator, GAN losses and the adaptive weight against float64 references."""

import pytest
import torch
from torch.nn import functional as F

from genrt.errors import CheckpointError, ConfigError, InputError
from genrt.sdk.checkpoint import count_parameters
from genrt.sdk.vqgan.config import VQGANLossConfig
from genrt.sdk.vqgan.discriminator import NLayerDiscriminator, hinge_d_loss, vanilla_d_loss
from genrt.sdk.vqgan.losses import VQGANLoss, adaptive_weight
from genrt.sdk.vqgan.perceptual import LPIPS
from tests.conftest import relative_error

# VGG16 "D": 13 convs in 5 stages; LPIPS taps the ReLU after the last conv of each stage
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


@pytest.fixture(scope="module")
def lpips():
    torch.manual_seed(0)
    model = LPIPS()
    with torch.no_grad():  # LPIPS heads are non-negative; random but realistic
        for head in model.heads:
            head.weight.uniform_(0.0, 0.1)
        for parameter in model.net.parameters():
            parameter.mul_(3.0)  # keep activations from vanishing through 13 random convs
    return model


def reference_lpips(lpips: LPIPS, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS written out with functional float64 ops from the torchvision-indexed state dict."""
    state = {k: v.double() for k, v in lpips.state_dict().items()}
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64)[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64)[None, :, None, None]

    def taps(h):
        out, conv = [], iter(TORCHVISION_CONV_INDICES)
        for stage_index, stage in enumerate(STAGES):
            if stage_index:
                h = F.max_pool2d(h, 2)
            for _ in stage:
                i = next(conv)
                h = F.relu(F.conv2d(h, state[f"net.features.{i}.weight"], state[f"net.features.{i}.bias"], padding=1))
            out.append(h)
        return out

    total = 0.0
    fx, fy = taps((x.double() - shift) / scale), taps((y.double() - shift) / scale)
    for layer, (a, b) in enumerate(zip(fx, fy)):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        w = state[f"heads.{layer}.weight"].reshape(-1)
        total = total + torch.einsum("bchw,c->bhw", (a - b) ** 2, w).mean(dim=(1, 2))
    return total.reshape(-1, 1, 1, 1)


def test_vgg16_layout_is_torchvision():
    model = LPIPS().to("meta")
    convs = {name: tuple(m.weight.shape) for name, m in model.net.features.named_children()
             if isinstance(m, torch.nn.Conv2d)}
    assert tuple(int(n) for n in convs) == TORCHVISION_CONV_INDICES
    assert convs["28"] == (512, 512, 3, 3) and convs["0"] == (64, 3, 3, 3)
    assert count_parameters(model.net) == 14_714_688  # torchvision vgg16 features
    assert count_parameters(model.heads) == 64 + 128 + 256 + 512 + 512  # LPIPS lin0..lin4


def test_lpips_matches_float64_reference(lpips):
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    distance = lpips(x, y)
    assert distance.shape == (2, 1, 1, 1) and distance.dtype == torch.float32
    expected = reference_lpips(lpips, x, y)
    assert expected.min() > 0
    assert relative_error(distance, expected) < 1e-5
    assert lpips(x, x).abs().max() == 0
    # frozen, yet differentiable with respect to the images
    assert not any(p.requires_grad for p in lpips.parameters())
    y = y.requires_grad_(True)
    lpips(x, y).sum().backward()
    assert y.grad.abs().sum() > 0
    assert not lpips.train().training


def test_lpips_loads_torchvision_and_lpips_files(lpips, tmp_path):
    vgg = {f"features.{k[len('net.features.'):]}": v for k, v in lpips.state_dict().items() if k.startswith("net.")}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's classifier: ignored
    heads = {f"lin{i}.model.1.weight": head.weight.detach().clone() for i, head in enumerate(lpips.heads)}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(heads, tmp_path / "vgg.pth")
    loaded = LPIPS().load_weights(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    assert torch.equal(loaded(x, y), lpips(x, y))

    del heads["lin4.model.1.weight"]
    torch.save(heads, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"broken\.pth.*missing keys: 4\.weight"):
        LPIPS().load_weights(tmp_path / "vgg16.pth", tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="no 'features"):
        LPIPS().load_weights(tmp_path / "vgg.pth", tmp_path / "vgg.pth")


def test_patchgan_layout_and_size():
    d = NLayerDiscriminator().to("meta")
    assert d(torch.zeros(2, 3, 256, 256, device="meta")).shape == (2, 1, 30, 30)  # 70x70 PatchGAN
    # pix2pix reports 2.765 M parameters for the 3-layer, ndf=64 PatchGAN with BatchNorm
    assert count_parameters(d) == 2_765_633
    kinds = [type(m).__name__ for m in d.main]
    assert kinds[:5] == ["Conv2d", "LeakyReLU", "Conv2d", "BatchNorm2d", "LeakyReLU"] and len(kinds) == 12
    assert d.main[8].stride == (1, 1) and d.main[5].stride == (2, 2)


def test_gan_losses():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.3, 1.5])
    expected_hinge = 0.5 * ((0 + 0.5 + 2.0) / 3 + (0 + 1.3 + 2.5) / 3)
    assert relative_error(hinge_d_loss(real, fake), torch.tensor(expected_hinge)) < 1e-6
    sp = lambda t: torch.log1p(torch.exp(t.double()))
    expected_vanilla = 0.5 * (sp(-real).mean() + sp(fake).mean())
    assert relative_error(vanilla_d_loss(real, fake), expected_vanilla) < 1e-6


def test_adaptive_weight():
    torch.manual_seed(0)
    last = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(5, 4)
    rec, g = (x @ last).pow(2).mean(), -(x @ last).sum() * 1e-3
    rec_grad, g_grad = torch.autograd.grad(rec, last, retain_graph=True)[0], torch.autograd.grad(g, last, retain_graph=True)[0]
    expected = rec_grad.norm() / (g_grad.norm() + 1e-4)
    weight = adaptive_weight(rec, g, last)
    assert relative_error(weight, expected) < 1e-6 and not weight.requires_grad
    assert adaptive_weight(rec, g * 0.0, last) == 1e4  # clamped at the top


def test_generator_and_discriminator_losses():
    torch.manual_seed(0)
    loss = VQGANLoss(VQGANLossConfig(disc_start=10, perceptual_weight=0.0, disc_ndf=8, disc_num_layers=2))
    last = torch.randn(3, 3, 1, 1, requires_grad=True)
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    reconstruction = F.conv2d(image, last)
    codebook = torch.tensor(0.3)
    before, logs = loss.generator_loss(image, reconstruction, codebook, step=9, last_layer=last)
    l1 = (image - reconstruction).abs().mean()
    assert relative_error(before, l1 + 0.3) < 1e-6 and "g_loss" not in logs
    after, logs = loss.generator_loss(image, reconstruction, codebook, step=10, last_layer=last)
    g = -loss.discriminator(reconstruction).mean()
    weight = adaptive_weight(l1, g, last) * 0.8
    assert relative_error(after, l1 + 0.3 + weight * g) < 1e-5
    assert relative_error(logs["d_weight"], weight) < 1e-6
    d_before, _ = loss.discriminator_loss(image, reconstruction, step=9)
    assert d_before == 0
    d_after, logs = loss.discriminator_loss(image, reconstruction, step=10)
    expected = hinge_d_loss(loss.discriminator(image), loss.discriminator(reconstruction))
    assert relative_error(d_after, expected) < 1e-5 and d_after > 0


def test_perceptual_batch_compares_only_the_first_images(lpips):
    loss = VQGANLoss(VQGANLossConfig(perceptual_weight=0.5, perceptual_batch=2, disc_ndf=8))
    loss.perceptual_loss = lpips
    torch.manual_seed(1)
    image, reconstruction = torch.rand(2, 4, 3, 16, 16) * 2 - 1
    expected = (image - reconstruction).abs().mean() + 0.5 * reference_lpips(lpips, image[:2], reconstruction[:2]).mean()
    assert relative_error(loss.reconstruction_loss(image, reconstruction), expected) < 1e-5
    with pytest.raises(ConfigError, match="perceptual_batch"):
        VQGANLossConfig(perceptual_batch=0)


def test_lpips_counts_from_perceptual_start_on(lpips):
    loss = VQGANLoss(VQGANLossConfig(perceptual_start=5, disc_start=100, disc_ndf=8))
    loss.perceptual_loss = lpips
    torch.manual_seed(2)
    image, reconstruction = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    l1 = (image - reconstruction).abs().mean()
    no_codebook = torch.zeros(())
    before, _ = loss.generator_loss(image, reconstruction, no_codebook, step=4, last_layer=None)
    after, _ = loss.generator_loss(image, reconstruction, no_codebook, step=5, last_layer=None)
    assert relative_error(before, l1) < 1e-6
    assert relative_error(after, l1 + reference_lpips(lpips, image, reconstruction).mean()) < 1e-5


def test_bad_inputs_and_config():
    loss = VQGANLoss(VQGANLossConfig(perceptual_weight=0.0, disc_ndf=8))
    with pytest.raises(InputError, match="reconstruction"):
        loss.reconstruction_loss(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="disc_loss"):
        VQGANLossConfig(disc_loss="wasserstein")
