"""PLMS, the pseudo linear multistep method of Liu et al. 2022 ("PNDM", eq. 12 with the F-PNDM transfer
eq. 11), as diffusers' ``PNDMScheduler`` with ``skip_prk_steps`` (Stable Diffusion 1.x's scheduler).

Notation, n inference steps, r = T // n, eps_k the model outputs of earlier steps (newest last):
    timesteps   the discrete ones with the second repeated: t_0, t_1, t_1, t_2, ..., t_{n-1}
    phi(x_t, e, t -> t') = sqrt(abar_t' / abar_t) x_t
                           - (abar_t' - abar_t) e / (abar_t sqrt(1 - abar_t') + sqrt(abar_t (1 - abar_t) abar_t'))
    step 0       e = eps_0,                          x_{t_1} = phi(x_{t_0}, e, t_0 -> t_0 - r)
    step 1       e = (eps_1 + eps_0) / 2 (Heun),     x_{t_1} = phi(x_{t_0}, e, t_1 + r -> t_1)
    then         e = (3 eps_k - eps_{k-1}) / 2, (23, -16, 5) / 12, (55, -59, 37, -9) / 24 (Adams-Bashforth),
                 x_{t - r} = phi(x_t, e, t -> t - r)
abar below timestep 0 (the last step) is 1 with set_alpha_to_one, else abar_0. A v-prediction output is
turned into eps after the combination: e <- sqrt(abar_t) e + sqrt(1 - abar_t) x_t.
"""

from __future__ import annotations

from genrt.errors import ConfigError
from genrt.sampling.base import TimestepSampler, check_model_output
from genrt.sampling.schedule import ScheduleConfig

# Adams-Bashforth weights on the newest-first outputs, and their divisor, by the number of outputs.
ADAMS_BASHFORTH = {2: ((3, -1), 2), 3: ((23, -16, 5), 12), 4: ((55, -59, 37, -9), 24)}


class PNDMSampler(TimestepSampler):
    """Deterministic PLMS sampler (n + 1 model calls for n steps). ``noise`` is not used."""

    timestep_rule = "plms"

    def __init__(self, config: ScheduleConfig):
        if config.prediction_type == "sample":
            raise ConfigError("sampler 'pndm' does not implement prediction_type='sample'",
                              fix="use an epsilon or v_prediction model, or another sampler")
        super().__init__(config)
        self._start = None  # x_{t_0}, kept from step 0 for the Heun correction of step 1

    def _restart(self) -> None:
        super()._restart()
        self._start = None

    def _step(self, model_output, x, noise):
        """x_t (B, C, H, W), model_output (B, C, H, W) -> x at the next timestep."""
        check_model_output(model_output, x)
        ratio = self.config.num_train_timesteps // self.num_steps
        t, prev = int(self._t), int(self._t) - ratio
        counter = self._steps_taken
        if counter != 1:
            self._history = self._history[-3:] + [model_output]
        else:  # the repeated timestep: redo step 0 from x_{t_0} with the averaged output
            t, prev = t + ratio, t
        outputs = self._history
        if len(outputs) == 1 and counter == 0:
            combined, self._start = model_output, x
        elif len(outputs) == 1 and counter == 1:
            combined, x, self._start = (model_output + outputs[-1]) / 2, self._start, None
        else:
            weights, divisor = ADAMS_BASHFORTH[len(outputs)]
            combined = sum(w * e for w, e in zip(weights, reversed(outputs))) / divisor
        return self._transfer(x, combined, t, prev)

    def _transfer(self, x, e, t: int, prev: int):
        """phi(x_t, e, t -> prev), Liu et al. eq. (11)."""
        abar_t, abar_prev = self._alpha_bar(t), self._alpha_bar(prev)
        if self.config.prediction_type == "v_prediction":
            e = abar_t**0.5 * e + (1 - abar_t) ** 0.5 * x
        denominator = abar_t * (1 - abar_prev) ** 0.5 + (abar_t * (1 - abar_t) * abar_prev) ** 0.5
        return (abar_prev / abar_t) ** 0.5 * x - ((abar_prev - abar_t) / denominator) * e
