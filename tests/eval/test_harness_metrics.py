"""PSNR / SSIM / flicker of ex4d.eval.image_metrics: perfect scores, known perturbations, independent SSIM."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ex4d.eval import image_metrics as im
from ex4d.eval.geometric import masked_psnr


def smooth_video(t=4, h=40, w=48, seed=0, lo=20, hi=200):
    """Textured frames with values in [lo, hi] (so offsets of up to 55 never clip)."""
    rng = np.random.default_rng(seed)
    noise = gaussian_filter(rng.normal(size=(t, h, w, 3)), sigma=(0, 2, 2, 0))
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return np.round(lo + (hi - lo) * noise).astype(np.uint8)


def scipy_ssim_frame(x, y, peak=255.0):
    """Wang et al.'s SSIM written independently: scipy's Gaussian filter (σ 1.5, radius 5), valid region only."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    values = []
    for c in range(x.shape[-1]):
        def blur(a):
            return gaussian_filter(a, sigma=1.5, truncate=5 / 1.5)[5:-5, 5:-5]
        a, b = x[..., c], y[..., c]
        mx, my = blur(a), blur(b)
        sxx, syy, sxy = blur(a * a) - mx**2, blur(b * b) - my**2, blur(a * b) - mx * my
        values.append((2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))
    return np.mean(values, axis=0)  # the SSIM map, averaged over channels


def test_identical_inputs_give_perfect_scores():
    v = smooth_video()
    assert im.psnr(v, v) == np.inf
    assert np.all(im.psnr_frames(v, v) == np.inf)
    assert im.ssim(v, v) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(im.ssim_frames(v, v), 1.0, atol=1e-12)
    assert im.temporal_flicker(v, v) == 0.0
    np.testing.assert_array_equal(im.temporal_flicker_frames(v, v), np.zeros(len(v) - 1))


def test_constant_offset_has_known_psnr_and_no_flicker():
    ref = smooth_video()
    pred = ref + np.uint8(10)
    expected = 10 * np.log10(255**2 / 100)
    assert im.psnr(pred, ref) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(im.psnr_frames(pred, ref), expected, atol=1e-12)
    assert im.psnr(pred, ref) == pytest.approx(masked_psnr(pred, ref))
    assert im.temporal_flicker(pred, ref) == 0.0  # a constant error is not flicker
    assert im.ssim(pred, ref) < 1.0
    # On [0, 1] floats with peak=1 every metric is the same.
    assert im.psnr(pred / 255.0, ref / 255.0, peak=1.0) == pytest.approx(expected)
    assert im.ssim(pred / 255.0, ref / 255.0, peak=1.0) == pytest.approx(im.ssim(pred, ref), abs=1e-10)


def test_alternating_offset_has_known_flicker_and_psnr():
    ref = smooth_video(t=5)
    d = 6
    pred = ref.astype(np.int64)
    pred[1::2] += d  # frames 1 and 3 brightened
    assert im.temporal_flicker(pred, ref) == pytest.approx(d)
    np.testing.assert_allclose(im.temporal_flicker_frames(pred, ref), d)
    per = im.psnr_frames(pred, ref)
    assert np.all(per[0::2] == np.inf)
    np.testing.assert_allclose(per[1::2], 10 * np.log10(255**2 / d**2))
    # Video PSNR pools the MSE: 2 of 5 frames have MSE d².
    assert im.psnr(pred, ref) == pytest.approx(10 * np.log10(255**2 / (d**2 * 2 / 5)))


def test_ssim_matches_an_independent_scipy_implementation():
    ref = smooth_video(t=3, seed=1)
    rng = np.random.default_rng(2)
    pred = np.clip(ref + rng.normal(0, 12, ref.shape), 0, 255).astype(np.uint8)
    pred[1, 5:20, 10:30] = 255 - pred[1, 5:20, 10:30]
    smap = im.ssim_map(pred, ref)
    assert smap.shape == (3, 30, 38)
    expected = np.stack([scipy_ssim_frame(p, r) for p, r in zip(pred, ref)])
    np.testing.assert_allclose(smap, expected, atol=1e-10)
    np.testing.assert_allclose(im.ssim_frames(pred, ref), expected.mean(axis=(1, 2)), atol=1e-4)
    assert im.ssim(pred, ref) == pytest.approx(expected.mean(), abs=1e-4)
    assert 0.0 < im.ssim(pred, ref) < 0.99


def test_masked_metrics_ignore_unmasked_differences():
    ref = smooth_video(t=4, h=40, w=48)
    mask = np.zeros(ref.shape[:3], bool)
    mask[:, :, :20] = True  # left part is "seen"
    pred = ref.copy()
    rng = np.random.default_rng(3)
    pred[:, :, 30:] = rng.integers(0, 256, pred[:, :, 30:].shape)  # garbage > 5 px away from the mask
    assert im.psnr(pred, ref, mask) == np.inf
    assert np.all(im.psnr_frames(pred, ref, mask) == np.inf)
    assert im.ssim(pred, ref, mask) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(im.ssim_frames(pred, ref, mask), 1.0, atol=1e-12)
    assert im.temporal_flicker(pred, ref, mask) == 0.0
    # Complement: the unmasked differences are seen, and agree with geometric.masked_psnr.
    assert im.psnr(pred, ref, ~mask) == pytest.approx(masked_psnr(pred, ref, ~mask))
    assert im.ssim(pred, ref, ~mask) < 0.9
    assert im.temporal_flicker(pred, ref, ~mask) > 10
    # A (H, W) mask is broadcast over frames.
    assert im.psnr(pred, ref, mask[0]) == np.inf


def test_masked_ssim_is_the_mean_of_the_map_over_mask_centres():
    ref = smooth_video(t=2, seed=4)
    pred = np.clip(ref.astype(int) + np.random.default_rng(5).normal(0, 20, ref.shape), 0, 255).astype(np.uint8)
    mask = np.random.default_rng(6).random(ref.shape[:3]) > 0.5
    smap = im.ssim_map(pred, ref)
    crop = mask[:, 5:-5, 5:-5]
    assert im.ssim(pred, ref, mask) == pytest.approx(smap[crop].mean())
    np.testing.assert_allclose(im.ssim_frames(pred, ref, mask), [smap[t][crop[t]].mean() for t in range(2)])


def test_empty_selections_give_nan():
    v = smooth_video(t=3)
    empty = np.zeros(v.shape[:3], bool)
    assert np.isnan(im.psnr(v, v, empty))
    assert np.isnan(im.ssim(v, v, empty))
    assert np.isnan(im.temporal_flicker(v, v, empty))
    assert np.all(np.isnan(im.psnr_frames(v, v, empty)))
    assert np.isnan(im.temporal_flicker(v[:1], v[:1]))  # one frame: no pair


def test_static_flicker():
    still = np.repeat(smooth_video(t=1), 5, axis=0)  # the reference does not move at all
    static = im.static_pixels(still)
    assert static.shape == (4, 40, 48) and static.all()
    assert im.static_flicker(still, static) == 0.0
    pred = still.astype(np.int64)
    pred[1::2, :, :20] += 8  # the left 20 of 48 columns flash on odd frames
    assert im.static_flicker(pred, static) == pytest.approx(8 * 20 / 48)
    moving = smooth_video(t=3, seed=7)
    assert not im.static_pixels(moving, threshold=0).all()


def test_shape_checks():
    v = smooth_video()
    with pytest.raises(ValueError, match="same shape"):
        im.psnr(v, v[:2])
    with pytest.raises(ValueError, match="mask"):
        im.psnr(v, v, np.zeros((3, 5, 5), bool))
    with pytest.raises(ValueError, match="at least 11x11"):
        im.ssim(v[:, :8, :8], v[:, :8, :8])
