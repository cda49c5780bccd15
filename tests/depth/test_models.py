"""Each model backend's real code path on tiny random models saved in the real layouts (no network)."""

import json
import shutil

import numpy as np
import pytest
import torch

from ex4d.depth import estimate_depth
from ex4d.depth.convert import MIN_DEPTH
from ex4d.errors import InputError


def _check_relative(depth, shape):
    assert depth.shape == shape and depth.dtype == np.float32
    assert np.isfinite(depth).all()
    # the reference's conversion: clip-wide min-max, so the nearest pixel sits exactly at 10000/3900
    assert depth.min() == pytest.approx(MIN_DEPTH, rel=1e-5) and depth.max() <= 1e4


# ------------------------------------------------------------------------------------------ depth anything
def test_depth_anything_shapes_alignment_determinism(da_dir, frames):
    r = estimate_depth(frames, "depth-anything-v2", model=str(da_dir), device="cpu", batch_size=3, progress=False)
    _check_relative(r.depth, frames.shape[:3])
    assert r.kind == "relative" and r.backend == "depth-anything-v2"
    assert r.intrinsics.shape == (7, 3, 3) and r.intrinsics[0, 0, 0] == 500.0
    assert len(r.info["align_scales"]) == 7 and r.info["align_scales"][0] == 1.0
    r2 = estimate_depth(frames, "depth-anything-v2", model=str(da_dir), device="cpu", batch_size=3, progress=False)
    np.testing.assert_array_equal(r.depth, r2.depth)  # no randomness
    r3 = estimate_depth(frames, "depth-anything-v2", model=str(da_dir), device="cpu", progress=False)
    np.testing.assert_allclose(r.depth, r3.depth, rtol=1e-4)  # batching changes rounding only


def test_depth_anything_alignment_matches_convert(da_dir, frames):
    from ex4d.depth.convert import align_scale_shift, disparity_to_depth
    from ex4d.depth.depth_anything import DepthAnythingV2Backend

    backend = DepthAnythingV2Backend(model=str(da_dir), device="cpu")
    raw = backend.predict(frames, progress=False)
    assert raw.shape == (7, 32, 48)
    expected = disparity_to_depth(align_scale_shift(raw.clamp_min(0))[0]).numpy()
    np.testing.assert_allclose(backend.estimate(frames, progress=False).depth, expected, rtol=1e-6)
    unaligned = DepthAnythingV2Backend(model=str(da_dir), device="cpu", align=False)
    np.testing.assert_allclose(unaligned.estimate(frames, progress=False).depth,
                               disparity_to_depth(raw.clamp_min(0)).numpy(), rtol=1e-6)


def test_depth_anything_metric_checkpoint(da_metric_dir, frames):
    r = estimate_depth(frames[:2], "depth-anything-v2", model=str(da_metric_dir), device="cpu", progress=False)
    assert r.kind == "metric" and r.depth.shape == (2, 32, 48) and 0 < r.depth.max() <= 20.0


def test_depth_anything_input_size_rule():
    from ex4d.depth._hf import keep_aspect_size

    assert keep_aspect_size(512, 512, (518, 518), 14) == (518, 518)
    assert keep_aspect_size(576, 1024, (518, 518), 14) == (518, 924)
    assert keep_aspect_size(576, 1024, (518, 518), 14, keep_aspect_ratio=False) == (518, 518)


def test_missing_model_names_download(frames):
    with pytest.raises(InputError, match=r"hf download depth-anything/Depth-Anything-V2-Small-hf.*--depth-model DIR"):
        estimate_depth(frames, "depth-anything-v2", size="small", device="cpu", download=False)
    with pytest.raises(InputError, match="not found"):
        estimate_depth(frames, "depth-pro", model="./no/such/folder", device="cpu")


def test_wrong_layout(tmp_path, da_dir, frames):
    bad = tmp_path / "bad"
    shutil.copytree(da_dir, bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(InputError, match="not a Depth Anything V2.*missing model.safetensors"):
        estimate_depth(frames, "depth-anything-v2", model=str(bad), device="cpu")


# ------------------------------------------------------------------------------------------------ depth pro
def test_depth_pro_fov_gives_intrinsics(dp_dir, frames):
    r = estimate_depth(frames[:3], "depth-pro", model=str(dp_dir), device="cpu", batch_size=2, progress=False)
    assert r.kind == "metric" and r.depth.shape == (3, 32, 48) and r.depth.dtype == np.float32
    f = 0.5 * 48 / np.tan(np.radians(30.0))  # the tiny FoV head says 60°
    np.testing.assert_allclose(r.intrinsics[:, 0, 0], f, rtol=1e-5)
    np.testing.assert_allclose(r.intrinsics[:, 1, 1], f, rtol=1e-5)
    np.testing.assert_allclose(r.intrinsics[0, :2, 2], [24, 16])
    assert r.info["fov_deg"] == [60.0, 60.0, 60.0] and r.info["intrinsics_policy"] == "estimate"


def test_depth_pro_depth_scales_with_the_focal(dp_dir, frames):
    from ex4d.depth.depth_pro import DepthProBackend

    backend = DepthProBackend(model=str(dp_dir), device="cpu")
    inv, fov = backend.predict(frames[:2], progress=False)
    f = 0.5 * 48 / np.tan(np.radians(30.0))
    est = backend.estimate(frames[:2], progress=False).depth
    expected = 1.0 / np.clip(inv.double().numpy() * 48 / f, 1e-4, 1e4)
    np.testing.assert_allclose(est, expected, rtol=1e-5)
    ref = estimate_depth(frames[:2], backend, intrinsics="reference", progress=False)
    inside = (expected > 1e-3) & (expected < 1e3)  # away from the clip limits, Z ∝ f
    np.testing.assert_allclose(ref.depth[inside], (est * 500.0 / f)[inside], rtol=1e-4)
    assert ref.intrinsics[0, 0, 0] == 500.0


def test_depth_pro_without_fov_head(tmp_path, frames):
    from . import tiny

    folder = tiny.save_depth_pro(tmp_path / "nofov", use_fov_model=False)
    with pytest.raises(InputError, match="no intrinsics estimate"):
        estimate_depth(frames[:1], "depth-pro", model=str(folder), device="cpu", intrinsics="estimate")
    r = estimate_depth(frames[:1], "depth-pro", model=str(folder), device="cpu", progress=False)
    assert r.intrinsics[0, 0, 0] == 500.0


# --------------------------------------------------------------------------------------------- depthcrafter
def test_window_schedule_and_blend():
    from ex4d.depth.depthcrafter import blend_overlap, window_starts

    assert window_starts(49, 110, 25) == (49, 0, [(0, 49)])  # the reference's clip: one pass
    assert window_starts(7, 4, 2) == (4, 2, [(0, 4), (2, 6), (4, 7)])
    assert window_starts(200, 110, 25) == (110, 25, [(0, 110), (85, 195), (170, 200)])
    prev = torch.zeros(1, 4, 1)
    cur = torch.ones(1, 4, 1)
    out = blend_overlap(prev, cur, 3)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_unet_forward_is_svd_with_per_frame_context(dc_dirs):
    from diffusers import UNetSpatioTemporalConditionModel

    from ex4d.depth.depthcrafter import unet_forward

    unet = UNetSpatioTemporalConditionModel.from_pretrained(dc_dirs[0]).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 8, 4, 6, generator=g)
    ctx = torch.randn(1, 1, 16, generator=g)
    ids = torch.tensor([[7.0, 127.0, 0.02]])
    t = torch.tensor(0.5)
    with torch.no_grad():
        ours = unet_forward(unet, x, t, ctx.expand(1, 3, 16), ids)  # the same embedding for every frame
        svd = unet(x, t, encoder_hidden_states=ctx, added_time_ids=ids).sample
        torch.testing.assert_close(ours, svd, rtol=1e-5, atol=1e-5)
        per_frame = unet_forward(unet, x, t, torch.randn(1, 3, 16, generator=g), ids)
    assert not torch.allclose(per_frame, svd)


def _dc(dc_dirs, **kw):
    return dict(unet=str(dc_dirs[0]), svd=str(dc_dirs[1]), device="cpu", progress=False, **kw)


@pytest.fixture
def small(frames):
    return frames[:6, 8:24, 12:36]  # 6 frames of 16×24


def test_depthcrafter_windows_over_a_long_clip(dc_dirs, small):
    r = estimate_depth(small, "depthcrafter", **_dc(dc_dirs, window=3, overlap=1))
    _check_relative(r.depth, (6, 16, 24))
    assert r.info["windows"] == 3 and r.info["overlap"] == 1 and r.info["steps"] == 5 and r.info["seed"] == 42
    assert r.intrinsics[0, 0, 0] == 500.0 and r.kind == "relative"
    single = estimate_depth(small, "depthcrafter", **_dc(dc_dirs))  # 6 ≤ 110: one window, overlap 0
    assert single.info["windows"] == 1 and single.info["overlap"] == 0
    assert not np.allclose(single.depth, r.depth)


def test_depthcrafter_determinism_and_seed(dc_dirs, small):
    a = estimate_depth(small[:3], "depthcrafter", **_dc(dc_dirs, steps=2))
    b = estimate_depth(small[:3], "depthcrafter", **_dc(dc_dirs, steps=2))
    c = estimate_depth(small[:3], "depthcrafter", **_dc(dc_dirs, steps=2, seed=7))
    np.testing.assert_array_equal(a.depth, b.depth)
    assert not np.array_equal(a.depth, c.depth)


def test_depthcrafter_resizes_to_the_model_multiple(dc_dirs, small):
    from ex4d.depth.depthcrafter import DepthCrafterBackend

    backend = DepthCrafterBackend(unet=str(dc_dirs[0]), svd=str(dc_dirs[1]), device="cpu", steps=1)
    assert backend.size_multiple == 8  # tiny: VAE stride 4 × UNet stride 2 (the real model: 8 × 8 = 64)
    r = backend.estimate(small[:2, :14, :22], progress=False)
    assert r.depth.shape == (2, 14, 22) and r.info["model_size"] == [16, 24]


def test_depthcrafter_guidance_runs(dc_dirs, small):
    r = estimate_depth(small[:2], "depthcrafter", **_dc(dc_dirs, steps=1, guidance=2.0))
    assert np.isfinite(r.depth).all()


def test_depthcrafter_missing_and_wrong_layout(tmp_path, dc_dirs, frames):
    with pytest.raises(InputError, match=r"hf download tencent/DepthCrafter --include 'config.json'"):
        estimate_depth(frames, "depthcrafter", device="cpu", download=False)
    svd = tmp_path / "svd"
    shutil.copytree(dc_dirs[1], svd)
    shutil.rmtree(svd / "scheduler")
    with pytest.raises(InputError, match="missing scheduler/scheduler_config.json"):
        estimate_depth(frames, "depthcrafter", unet=str(dc_dirs[0]), svd=str(svd), device="cpu")
    unet = tmp_path / "repo"  # the UNet in a unet/ subfolder is accepted too, but this one has the wrong inputs
    shutil.copytree(dc_dirs[0], unet / "unet")
    cfg = json.loads((unet / "unet" / "config.json").read_text())
    cfg["in_channels"] = 4
    (unet / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="does not fit the SVD VAE|cannot load DepthCrafter"):
        estimate_depth(frames, "depthcrafter", unet=str(unet), svd=str(dc_dirs[1]), device="cpu")
