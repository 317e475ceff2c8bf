"""genrt.sdk.diffusion: the reference sampling loop in torch (``genrt.sdk.diffusion.sample.sample``).

The schedules, samplers and guidance it runs are ``genrt.sampling``'s: one implementation for torch tensors
and numpy arrays, imported from there."""
