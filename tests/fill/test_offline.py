import numpy as np
import pytest
import torch

from ex4d.data import default_intrinsics, ground_truth_for_trajectory, make_scene
from ex4d.eval.geometric import masked_psnr
from ex4d.fill import fill_from_neighbours, inpaint, neighbour_offsets, offline_fill
from ex4d.geometry.trajectory import make_trajectory, reference_radius
from ex4d.io.video import Video
from ex4d.reconstruction import recon


def _hole(h=48, w=64):
    known = np.ones((h, w), bool)
    known[12:36, 10:40] = False
    known[40:, 50:] = False  # touches the image corner
    return known


def test_inpaint_keeps_known_and_fills_everything():
    rng = np.random.default_rng(0)
    img = rng.integers(50, 200, (3, 48, 64, 3), dtype=np.uint8)
    known = np.broadcast_to(_hole(), (3, 48, 64)).copy()
    holed = np.where(known[..., None], img, 0).astype(np.uint8)
    out = inpaint(holed, known)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[known] == img[known]).all()
    assert (out[~known] >= 50).all() and (out[~known] < 200).all()  # no black, within the known range


def test_inpaint_constant():
    known = _hole()
    img = np.zeros((48, 64, 3), np.uint8)
    img[known] = (17, 123, 250)
    out = inpaint(img, known)
    assert (out == np.array([17, 123, 250], np.uint8)).all()


def test_inpaint_linear_gradient():
    v, u = np.mgrid[:48, :64]
    img = np.stack([3 * u, 4 * v, 2 * u + 2 * v], -1).astype(np.uint8)
    known = np.ones((48, 64), bool)
    known[12:36, 10:40] = False  # interior hole (at the image border the fill is flat, Neumann, not linear)
    out = inpaint(np.where(known[..., None], img, 0).astype(np.uint8), known)
    err = np.abs(out.astype(int) - img)
    assert err.max() <= 3 and err[~known].mean() < 0.5


def test_inpaint_frame_without_known_pixels_is_black():
    out = inpaint(np.full((1, 8, 8, 3), 9, np.uint8), np.zeros((1, 8, 8), bool))
    assert (out == 0).all()


def test_neighbour_offsets_nearest_first():
    assert neighbour_offsets(2) == [-1, 1, -2, 2]
    assert neighbour_offsets(0) == []


@pytest.fixture(scope="module")
def scene_result():
    H = W = 64
    T = 9
    scene = make_scene(0, motion_frames=17)
    K = default_intrinsics(H, W).numpy()
    first = ground_truth_for_trajectory(scene, np.eye(4)[None], K, H, W)
    traj = make_trajectory("60", T, reference_radius(first["source"]["depth"][0].numpy()))
    gt = ground_truth_for_trajectory(scene, traj.w2c, K, H, W)
    frames, depth = gt["source"]["frames"].numpy(), gt["source"]["depth"].numpy()
    result = recon(Video(frames, 30.0, (H, W)), depth, cam=traj, intrinsics=K, device="cpu", progress=False)
    return result, depth, gt["target"]["frames"].numpy()


def test_fill_from_neighbours_only_adds(scene_result):
    r, depth, _ = scene_result
    color, filled = fill_from_neighbours(r.source.frames, depth, r.source_K, r.trajectory.w2c, r.K, r.color,
                                         r.mask, window=2)
    assert (filled >= r.mask).all() and (filled & ~r.mask).any()
    assert (color[r.mask] == r.color[r.mask]).all()
    same, same_filled = fill_from_neighbours(r.source.frames, depth, r.source_K, r.trajectory.w2c, r.K, r.color,
                                             r.mask, window=0)
    assert (same == r.color).all() and (same_filled == r.mask).all()


def test_offline_fill_full_video(scene_result):
    r, depth, target = scene_result
    out = offline_fill(r, depth, window=4)
    assert out.shape == r.color.shape and out.dtype == np.uint8
    assert (out[r.mask] == r.color[r.mask]).all()
    hole = ~r.mask
    assert hole.any()
    assert not (out[hole] == 0).all(-1).any()  # no black holes left
    assert np.isfinite(masked_psnr(out, target, hole))
    only_inpaint = offline_fill(r, None)
    assert (only_inpaint == inpaint(r.color, r.mask)).all()


@pytest.mark.xfail(strict=False, reason="neighbour reprojection does not reliably beat per-frame inpainting on the "
                                        "default synthetic scenes (see the ex4d.fill report)")
def test_offline_fill_beats_inpainting(scene_result):
    r, depth, target = scene_result
    hole = ~r.mask
    psnr_offline = masked_psnr(offline_fill(r, depth, window=4), target, hole)
    psnr_inpaint = masked_psnr(inpaint(r.color, r.mask), target, hole)
    print(f"hole PSNR: offline {psnr_offline:.2f} dB, inpaint {psnr_inpaint:.2f} dB")
    assert psnr_offline > psnr_inpaint
