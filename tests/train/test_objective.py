"""The training objective against the spec's formulas (§6.7 training mode, §9.2), recomputed here in float64."""

import numpy as np
import pytest
import torch

from ex4d.inpaint.schedule import Ex4dFlowMatchScheduler
from ex4d.train.objective import FlowMatchingObjective, add_noise, velocity_target, weighted_mse


def _spec_schedule(n=1000, shift=5.0):
    raw = np.linspace(1.0, 0.0, n + 1)[:n]
    sigma = shift * raw / (1 + (shift - 1) * raw)
    t = 1000 * sigma
    g = np.exp(-2 * ((t - 500) / 1000) ** 2)
    w = (g - g.min()) * n / (g - g.min()).sum()
    return sigma, t, w


def test_schedule_and_weights_follow_the_spec():
    obj = FlowMatchingObjective()
    sigma, t, w = _spec_schedule()
    np.testing.assert_allclose(obj.sigmas.numpy(), sigma, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(obj.timesteps.numpy(), t, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(obj.weights.numpy(), w, rtol=1e-4, atol=1e-5)
    # properties the formula implies: mean weight 1, zero at the farthest t from 500 (t = 1000), peak near t = 500
    assert obj.weights.sum().item() == pytest.approx(1000, rel=1e-5)
    assert obj.timesteps[0].item() == pytest.approx(1000) and obj.weights[0].item() == pytest.approx(0, abs=1e-6)
    assert abs(obj.timesteps[int(obj.weights.argmax())].item() - 500) < 2
    assert obj.sigmas[-1].item() == pytest.approx(5e-3 / (1 + 4e-3), rel=1e-4)  # σ̃ = 1/1000 shifted


def test_timestep_draws_are_uniform_and_seeded():
    obj = FlowMatchingObjective()
    a = obj.draw(200_000, torch.Generator().manual_seed(3))
    b = obj.draw(200_000, torch.Generator().manual_seed(3))
    assert torch.equal(a.index, b.index) and a.index.min() >= 0 and a.index.max() <= 999
    counts = torch.bincount(a.index, minlength=1000).double()
    # chi-square of a uniform draw: mean 999, sd ≈ 45; 6 sd is never reached by a correct sampler
    chi2 = (((counts - 200.0) ** 2) / 200.0).sum().item()
    assert chi2 < 999 + 6 * 45
    assert torch.equal(a.timestep, obj.timesteps[a.index]) and torch.equal(a.weight, obj.weights[a.index])
    assert torch.allclose(a.sigma * 1000, a.timestep)


def test_noising_target_and_loss():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 16, 2, 4, 4, generator=g), torch.randn(3, 16, 2, 4, 4, generator=g)
    sigma = torch.tensor([0.0, 0.3, 1.0])
    xt = add_noise(x0, eps, sigma)
    assert torch.equal(xt[0], x0[0]) and torch.allclose(xt[2], eps[2])
    assert torch.allclose(xt[1], 0.7 * x0[1] + 0.3 * eps[1])
    # the target is the velocity d x_t / dσ (a finite difference, independent of the formula)
    h = 1e-2
    fd = (add_noise(x0.double(), eps.double(), sigma.double() + h) - add_noise(x0.double(), eps.double(), sigma.double())) / h
    assert torch.allclose(fd.float(), velocity_target(x0, eps), atol=1e-5)
    # the same noising as the pipeline scheduler's training-mode add_noise (t = 1000σ)
    sched = Ex4dFlowMatchScheduler()
    assert torch.allclose(sched.add_noise(x0, eps, sigma * 1000), xt, atol=1e-6)
    pred, w = torch.randn(3, 16, 2, 4, 4, generator=g), torch.tensor([0.5, 1.0, 2.0])
    target = eps - x0
    manual = sum(w[i] * ((pred[i] - target[i]) ** 2).mean() for i in range(3)) / 3
    assert torch.allclose(weighted_mse(pred, target, w), manual)
    obj = FlowMatchingObjective()
    draw = obj.at(torch.tensor([10, 500, 900]))
    assert torch.allclose(obj.loss(pred, x0, eps, draw), weighted_mse(pred, target, draw.weight))
