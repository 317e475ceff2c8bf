"""Linear multistep (LMS) sampling on the sigma ODE of Karras et al. 2022 (k-diffusion's ``sample_lms``), as
diffusers' ``LMSDiscreteScheduler`` (order 4).

Notation (see euler.py for sigma, x and D), step i from sigma_i to sigma_{i+1}:
    d_k = (x_k - D(x_k; sigma_k)) / sigma_k          the ODE's derivative dx/dsigma at step k
    p   = min(i + 1, 4)                               the order (i counts from the start of the schedule)
    c_j = int_{sigma_i}^{sigma_{i+1}} prod_{k != j, k < p} (tau - sigma_{i-k}) / (sigma_{i-j} - sigma_{i-k}) dtau
    x_{i+1} = x_i + sum_j c_j d_{i-j}                 (over the derivatives kept since the start or a skip)
The integrals of the Lagrange basis polynomials are exact (numpy polynomials; diffusers integrates them
numerically with scipy's quad, exact for these degrees to rounding).
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import polynomial

from genrt.sampling.base import SigmaSampler, refuse_fields
from genrt.sampling.schedule import ScheduleConfig

# The order of the multistep update (diffusers' default ``order`` argument of step()).
LMS_ORDER = 4


def lms_coefficient(sigmas: list[float], order: int, i: int, j: int) -> float:
    """c_j of the order-``order`` update of step ``i`` (see the module docstring)."""
    nodes = [sigmas[i - k] for k in range(order) if k != j]
    scale = float(np.prod([sigmas[i - j] - node for node in nodes])) if nodes else 1.0
    antiderivative = polynomial.polyint(polynomial.polyfromroots(nodes) if nodes else np.array([1.0]))
    return float(polynomial.polyval(sigmas[i + 1], antiderivative) - polynomial.polyval(sigmas[i], antiderivative)) / scale


class LMSSampler(SigmaSampler):
    """Deterministic 4th-order linear multistep sampler; the initial noise is scaled by ``init_noise_sigma``."""

    def __init__(self, config: ScheduleConfig):
        refuse_fields(config, "lms", final_sigmas_type="zero")
        super().__init__(config)

    def _step(self, model_output, x, noise):
        """x_{i+1} = x_i + sum_j c_j d_{i-j}; ``noise`` is not used."""
        sigma, _, denoised = self._denoised(model_output, x)
        self._history = self._history[-(LMS_ORDER - 1):] + [(x - denoised) / sigma]  # d_i, newest last
        order = min(self._index + 1, LMS_ORDER)
        coefficients = [lms_coefficient(self.sigmas, order, self._index, j) for j in range(order)]
        return x + sum(c * d for c, d in zip(coefficients, reversed(self._history)))
