import pytest
import torch

from ex4d.inpaint.schedule import Ex4dFlowMatchScheduler, reference_sigmas, reference_timesteps, training_weights

# spec §6.7
SIGMAS = [1.0, 0.9917, 0.9829, 0.9735, 0.9633, 0.9524, 0.9406, 0.9278, 0.9140, 0.8989, 0.8824, 0.8642, 0.8442,
          0.8219, 0.7971, 0.7692, 0.7377, 0.7018, 0.6604, 0.6122, 0.5556, 0.4878, 0.4054, 0.3030, 0.1724]
TIMESTEPS = [1000, 991.74, 982.91, 973.45, 963.30, 952.38, 940.59, 927.84, 913.98, 898.88, 882.35, 864.20, 844.16,
             821.92, 797.10, 769.23, 737.70, 701.75, 660.38, 612.24, 555.56, 487.80, 405.41, 303.03, 172.41]


def test_sigma_table_matches_spec():
    s = reference_sigmas(25, shift=5.0)
    assert s.dtype == torch.float32 and s.shape == (25,)
    assert torch.allclose(s, torch.tensor(SIGMAS), atol=5e-5)
    assert torch.allclose(reference_timesteps(25), torch.tensor(TIMESTEPS), atol=5e-3)
    raw = 1 - torch.arange(25) / 25
    assert torch.allclose(s, 5 * raw / (1 + 4 * raw), atol=1e-6)


def test_scheduler_steps_euler_with_terminal_zero():
    sch = Ex4dFlowMatchScheduler()
    sch.set_timesteps(25)
    assert torch.equal(sch.timesteps, reference_sigmas(25) * 1000)
    assert sch.sigmas[-1] == 0 and len(sch.sigmas) == 26
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    for i in (0, 10, 24):
        t = sch.timesteps[i] + 0.01  # the index is found by argmin |timesteps - t|
        out = sch.step(v, t, x).prev_sample
        assert torch.allclose(out, x + v * (sch.sigmas[i + 1] - sch.sigmas[i]))


def test_scheduler_agrees_with_diffusers_flow_match_euler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    d = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    d.set_timesteps(sigmas=(1 - torch.arange(25) / 25).tolist())
    assert torch.allclose(d.sigmas[:-1], reference_sigmas(25), atol=1e-6)
    assert torch.allclose(d.timesteps, reference_timesteps(25), atol=1e-3)


def test_scheduler_config_round_trip(tmp_path):
    Ex4dFlowMatchScheduler(shift=3.0).save_pretrained(tmp_path)
    assert Ex4dFlowMatchScheduler.from_pretrained(tmp_path).config.shift == 3.0


def test_training_weights():
    t, w = training_weights()
    assert t.shape == w.shape == (1000,)
    assert torch.isclose(w.sum(), torch.tensor(1000.0), rtol=1e-4)
    assert (w >= 0).all() and w.min() == 0
    assert abs(float(t[w.argmax()]) - 500) < 5


def test_add_noise():
    sch = Ex4dFlowMatchScheduler()
    x0, eps = torch.randn(1, 2, 3), torch.randn(1, 2, 3)
    assert torch.allclose(sch.add_noise(x0, eps, torch.tensor([250.0])), 0.75 * x0 + 0.25 * eps)


def test_bad_step_count():
    with pytest.raises(ValueError):
        reference_sigmas(0)
