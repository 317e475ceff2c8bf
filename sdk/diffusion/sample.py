"""The reference sampling loop every family's torch pipeline reuses (LDM latents, Imagen pixels)."""

from __future__ import annotations

from typing import Callable

import torch

from genrt.errors import InputError
from genrt.sampling import classifier_free_guidance

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample(
    model_fn: ModelFn,
    sampler,
    shape: tuple[int, ...],
    num_steps: int,
    generator: torch.Generator,
    guidance_scale: float | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run ``sampler`` for ``num_steps`` from Gaussian noise; returns x_0 of ``shape`` (B, C, H, W) in ``dtype``.

    ``model_fn(x, t)``: x (B', C, H, W) the scaled network input, t (B',) float32 timesteps ->
    (B', C_out, H, W). Without guidance B' = B. With ``guidance_scale`` B' = 2B: rows [:B] are to be
    evaluated unconditionally and rows [B:] conditionally (``model_fn`` pairs them with its empty and
    prompt conditioning); the first C output channels are guided, further channels (a learned
    variance) come from the conditional half.

    Random numbers, all ``torch.randn(shape, dtype=float32, generator=generator)`` on the generator's
    device, are drawn in this order:
      1. the initial noise; x_T = noise * sampler.init_noise_sigma
      2. only if ``sampler.needs_noise``: one draw per step, after that step's model call, passed to ``step``.
    """
    if len(shape) < 2:
        raise InputError(f"sample shape is {tuple(shape)}", fix="pass (B, C, ...) with a batch and a channel dim")
    device = torch.device(device) if device is not None else generator.device

    def draw() -> torch.Tensor:
        return torch.randn(shape, dtype=torch.float32, generator=generator, device=generator.device).to(device, dtype)

    # 1. timesteps and the initial noise
    timesteps = sampler.set_timesteps(num_steps)
    x = draw() * sampler.init_noise_sigma
    batch, channels = shape[0], shape[1]
    for t in timesteps:
        # 2. the network on the scaled input (batch doubled for classifier-free guidance)
        model_input = sampler.scale_model_input(x, t)
        if guidance_scale is not None:
            model_input = torch.cat([model_input, model_input])
        t_batch = torch.full((model_input.shape[0],), float(t), dtype=torch.float32, device=device)
        output = model_fn(model_input, t_batch)
        if guidance_scale is not None:
            uncond, cond = output[:batch], output[batch:]
            guided = classifier_free_guidance(uncond[:, :channels], cond[:, :channels], guidance_scale)
            output = torch.cat([guided, cond[:, channels:]], dim=1)
        # 3. the sampler update, with fresh noise for stochastic samplers
        noise = draw() if sampler.needs_noise else None
        x = sampler.step(output, t, x, noise)
    return x
