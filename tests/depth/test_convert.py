"""The reference's depth conversion (spec §2.3) and temporal scale/shift alignment."""

import numpy as np
import pytest
import torch

from ex4d.depth import convert


def test_conversion_constants():
    assert convert.DISPARITY_SCALE == 3900.0 and convert.DEPTH_NUMERATOR == 10000.0
    assert (convert.NEAR, convert.FAR, convert.MIN_DISPARITY) == (1e-4, 1e4, 1e-5)
    assert convert.MIN_DEPTH == pytest.approx(2.5641, abs=1e-4)


def test_disparity_to_depth_values():
    # r spans [2, 6]: n = (r - 2) / 4; D = 10000 / max(3900 n, 1e-5), clipped to [1e-4, 1e4].
    r = np.array([[[2.0, 3.0], [4.0, 6.0]], [[5.0, 2.0 + 4e-4], [2.0 + 4 * 2.564e-4, 2.5]]], np.float32)
    depth = convert.disparity_to_depth(r)
    assert isinstance(depth, np.ndarray) and depth.dtype == np.float32 and depth.shape == r.shape
    n = (r.astype(np.float64) - 2.0) / 4.0
    expected = np.clip(10000.0 / np.maximum(3900.0 * n, 1e-5), 1e-4, 1e4)
    np.testing.assert_allclose(depth, expected, rtol=1e-4)
    assert depth.max() == pytest.approx(10000.0) and depth.min() == pytest.approx(10000.0 / 3900.0, rel=1e-6)
    assert depth[0, 1, 1] == pytest.approx(2.5641, abs=1e-4)  # n = 1: nearest point
    assert depth[0, 0, 0] == 10000.0  # n = 0: floored disparity -> far clip


def test_video_output_channel_mean_and_clip_wide_normalisation():
    rng = np.random.default_rng(0)
    video = rng.uniform(0.2, 0.7, (3, 4, 5, 3)).astype(np.float32)
    video[1] *= 0.5  # a darker frame must stay farther: the normalisation is over the whole clip
    depth = convert.video_output_to_depth(video)
    r = video.mean(-1)
    np.testing.assert_allclose(depth, convert.disparity_to_depth(r), rtol=1e-6)
    assert depth[1].mean() > depth[0].mean()
    chw = torch.from_numpy(video).permute(0, 3, 1, 2)
    torch.testing.assert_close(convert.video_output_to_depth(chw, channels_last=False), torch.from_numpy(depth))


def test_constant_clip_is_finite():
    depth = convert.disparity_to_depth(torch.full((2, 3, 3), 0.4))
    assert torch.isfinite(depth).all() and torch.allclose(depth, torch.full_like(depth, convert.MIN_DEPTH))


def test_fit_scale_shift_exact():
    x = torch.rand(3, 100)
    s, b = convert.fit_scale_shift(x, 2.5 * x - 0.75)
    torch.testing.assert_close(s, torch.full((3,), 2.5, dtype=torch.float64))
    torch.testing.assert_close(b, torch.full((3,), -0.75, dtype=torch.float64))


def _moving_scene(T=8, H=40, W=56):
    yy, xx = np.mgrid[0:H, 0:W]
    base = 1.0 + 0.5 * np.sin(xx / 6.0) + 0.3 * np.cos(yy / 5.0) + yy / H
    true = np.repeat(base[None], T, 0).astype(np.float64)
    for t in range(T):
        true[t, 12:26, 4 + 4 * t: 16 + 4 * t] = 4.0  # a near box moving right (≈ 8% of the pixels)
    return true


@pytest.mark.parametrize("reference", ["previous", "first"])
def test_alignment_recovers_known_scale_and_shift(reference):
    true = _moving_scene()
    rng = np.random.default_rng(1)
    scales = rng.uniform(0.3, 3.0, len(true))
    shifts = rng.uniform(-1.0, 1.0, len(true))
    scales[0], shifts[0] = 1.0, 0.0  # frame 0 is the reference frame
    observed = (true - shifts[:, None, None]) / scales[:, None, None]  # true = s·observed + b
    aligned, s, b = convert.align_scale_shift(observed.astype(np.float32), reference=reference)
    np.testing.assert_allclose(s, scales, rtol=1e-3)
    np.testing.assert_allclose(b, shifts, atol=1e-3)
    np.testing.assert_allclose(aligned, true, atol=2e-3)


def test_alignment_keeps_global_frame0_and_removes_flicker():
    true = _moving_scene()
    gains = np.linspace(0.5, 2.0, len(true))
    observed = true * gains[:, None, None] + 0.2
    observed[0] = true[0]
    aligned, _, _ = convert.align_scale_shift(torch.from_numpy(observed).float())
    assert isinstance(aligned, torch.Tensor)
    np.testing.assert_allclose(aligned.numpy(), true, atol=2e-3)
    depth = convert.disparity_to_depth(aligned)
    background = depth[:, 35:, :].mean(dim=(1, 2))
    assert (background.max() - background.min()) / background.mean() < 1e-3


def test_alignment_rejects_bad_options():
    with pytest.raises(ValueError):
        convert.align_scale_shift(np.ones((2, 4, 4)), reference="median")
    with pytest.raises(ValueError):
        convert.align_scale_shift(np.ones((2, 4, 4)), trim=1.0)
