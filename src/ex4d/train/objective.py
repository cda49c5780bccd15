"""The reference's flow-matching training objective (spec §6.7 "training mode", §9.2).

DiffSynth's ``FlowMatchScheduler(shift=5, sigma_min=0, extra_one_step=True).set_timesteps(1000, training=True)``:

* 1000 training timesteps: σ̃_i = linspace(1, 0, 1001)[:1000], σ_i = 5σ̃_i / (1 + 4σ̃_i), t_i = 1000·σ_i;
* a step draws i uniformly in 0…999 (per sample);
* x_t = (1 − σ)·x0 + σ·ε, the DiT predicts the velocity, target ε − x0;
* loss = w(t_i)·MSE(v̂, ε − x0), with g(t) = exp(−2((t − 500)/1000)²) and w = (g − min g)·1000 / Σ(g − min g).

The sigmas and weights come from :func:`ex4d.inpaint.schedule.training_weights` (the same schedule the pipeline
uses at inference, with 1000 steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ex4d.inpaint.schedule import training_weights

__all__ = ["FlowMatchingObjective", "TimestepDraw", "add_noise", "velocity_target", "weighted_mse"]


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = (1 − σ)·x0 + σ·ε; ``sigma`` is (B,), broadcast over the other dimensions of ``x0`` (B, …)."""
    s = sigma.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow velocity d x_t / dσ = ε − x0."""
    return noise - x0


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean_b w_b · mean(( v̂_b − target_b )²), computed in float32 (pred/target (B, …), weight (B,))."""
    err = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return (weight.float().to(err.device) * err).mean()


@dataclass
class TimestepDraw:
    """Per-sample draw: index into the training schedule, t = 1000σ (the DiT's input), σ and the loss weight."""

    index: torch.Tensor  # (B,) int64
    timestep: torch.Tensor  # (B,) float32
    sigma: torch.Tensor  # (B,) float32
    weight: torch.Tensor  # (B,) float32


class FlowMatchingObjective:
    """Timestep sampling, noising, target and weighting of the reference's training (see module doc)."""

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 5.0):
        self.num_train_timesteps = int(num_train_timesteps)
        self.timesteps, self.weights = training_weights(self.num_train_timesteps, shift)
        self.sigmas = self.timesteps / self.num_train_timesteps

    def draw(self, batch_size: int, generator: torch.Generator | None = None) -> TimestepDraw:
        """Indices uniform in 0…T−1 (on the CPU, so that a seeded generator gives the same draw everywhere)."""
        idx = torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator)
        return self.at(idx)

    def at(self, index: torch.Tensor) -> TimestepDraw:
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        return TimestepDraw(index, self.timesteps[index], self.sigmas[index], self.weights[index])

    def loss(self, pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, draw: TimestepDraw) -> torch.Tensor:
        return weighted_mse(pred, velocity_target(x0, noise), draw.weight)
