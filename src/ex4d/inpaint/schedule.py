"""The reference's flow-matching schedule (spec §6.7): ``FlowMatchScheduler(shift=5, sigma_min=0, extra_one_step=True)``.

Inference with N steps and strength s: σ̃_i = linspace(σ_start, σ_min, N+1)[:N] with σ_start = σ_min + (σ_max−σ_min)·s
(the trailing 0 is dropped, "extra_one_step"), σ_i = shift·σ̃_i / (1 + (shift−1)·σ̃_i), t_i = 1000·σ_i (float,
passed to the DiT as is). Euler: x_{i+1} = x_i + v̂_i·(σ_{i+1} − σ_i) with σ_N := 0. Everything is computed in
float32 torch arithmetic, as the reference does.

The diffusers-style :class:`Ex4dFlowMatchScheduler` wraps these formulas so that the pipeline can hold it as its
``scheduler`` component (saved as ``scheduler/scheduler_config.json``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

__all__ = [
    "reference_sigmas",
    "reference_timesteps",
    "training_weights",
    "Ex4dFlowMatchScheduler",
    "Ex4dSchedulerOutput",
]


def _shift(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def reference_sigmas(
    num_inference_steps: int = 25,
    shift: float = 5.0,
    denoising_strength: float = 1.0,
    sigma_max: float = 1.0,
    sigma_min: float = 0.0,
    extra_one_step: bool = True,
) -> torch.Tensor:
    """The N shifted sigmas σ_0 … σ_{N−1} of the reference (float32, without the final 0)."""
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    sigma_start = sigma_min + (sigma_max - sigma_min) * denoising_strength
    if extra_one_step:
        raw = torch.linspace(sigma_start, sigma_min, num_inference_steps + 1, dtype=torch.float32)[:-1]
    else:
        raw = torch.linspace(sigma_start, sigma_min, num_inference_steps, dtype=torch.float32)
    return _shift(raw, shift)


def reference_timesteps(num_inference_steps: int = 25, shift: float = 5.0, denoising_strength: float = 1.0) -> torch.Tensor:
    """t_i = 1000·σ_i (float32)."""
    return reference_sigmas(num_inference_steps, shift, denoising_strength) * 1000.0


def training_weights(num_train_timesteps: int = 1000, shift: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, loss weights) of the reference's training mode (spec §6.7).

    σ̃ = linspace(1, 0, T+1)[:T], shifted, t = 1000σ; g(t) = exp(−2((t−500)/1000)²),
    w = (g − min g)·T / Σ(g − min g).
    """
    t = reference_timesteps(num_train_timesteps, shift)
    g = torch.exp(-2 * ((t - num_train_timesteps / 2) / num_train_timesteps) ** 2)
    g = g - g.min()
    return t, g * num_train_timesteps / g.sum()


@dataclass
class Ex4dSchedulerOutput(BaseOutput):
    prev_sample: torch.Tensor


class Ex4dFlowMatchScheduler(SchedulerMixin, ConfigMixin):
    """Flow-matching Euler scheduler with exactly the reference's sigma/timestep schedule (spec §6.7)."""

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        shift: float = 5.0,
        sigma_max: float = 1.0,
        sigma_min: float = 0.0,
        extra_one_step: bool = True,
    ):
        self.sigmas = torch.zeros(0)
        self.timesteps = torch.zeros(0)
        self._timesteps_host = torch.zeros(0)
        self.num_inference_steps = None
        self._step_index = None
        self._begin_index = None

    @property
    def step_index(self):
        return self._step_index

    @property
    def begin_index(self):
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0):
        self._begin_index = begin_index

    def set_timesteps(self, num_inference_steps: int, device=None, denoising_strength: float = 1.0):
        """σ_0 … σ_{N−1} followed by the terminal 0 in ``self.sigmas``; ``self.timesteps`` = 1000·σ (N values)."""
        c = self.config
        sig = reference_sigmas(num_inference_steps, c.shift, denoising_strength, c.sigma_max, c.sigma_min, c.extra_one_step)
        # A host copy: the step index is found without reading the device (no GPU sync per step).
        self._timesteps_host = sig * c.num_train_timesteps
        self.timesteps = self._timesteps_host.to(device)
        self.sigmas = torch.cat([sig, torch.zeros(1)]).to(device)
        self.num_inference_steps = num_inference_steps
        self._step_index = None

    def index_for_timestep(self, timestep) -> int:
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)[0].cpu()
        return int(torch.argmin((self._timesteps_host - t).abs()))

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True):
        """x_{i+1} = x_i + v̂·(σ_{i+1} − σ_i), i = argmin |timesteps − t| (as the reference)."""
        i = self.index_for_timestep(timestep)
        sigma, sigma_next = self.sigmas[i].to(sample.device), self.sigmas[i + 1].to(sample.device)
        prev = sample + model_output.to(sample.dtype) * (sigma_next - sigma).to(sample.dtype)  # device scalars: no sync
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return Ex4dSchedulerOutput(prev_sample=prev)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timestep) -> torch.Tensor:
        """x_t = (1−σ)·x0 + σ·ε (training mode)."""
        sigma = torch.as_tensor(timestep, dtype=torch.float32) / self.config.num_train_timesteps
        sigma = sigma.reshape(-1, *([1] * (original_samples.ndim - 1))).to(original_samples.device, original_samples.dtype)
        return (1 - sigma) * original_samples + sigma * noise

    def __len__(self):
        return self.config.num_train_timesteps
