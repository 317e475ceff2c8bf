"""Generation loops that keep their state on the engine's device and take any runner.

- ``step_graphs``: the small ONNX step graphs (guided affine step, DDPM step with dynamic thresholding), opened
  like any component (``Runners.open_graph``).
- ``step_loop``: the skeleton of the two denoising loops (U-Net -> step graph -> U-Net, constants uploaded once).
- ``guided``: the latent-diffusion guided loop (DDIM, Euler, Euler ancestral).
- ``ddpm``: the Imagen cascade's DDPM loop.
- ``kv_cache``: the VQGAN prior's sampling loop with its key/value cache on the device.
"""
