"""End-to-end checks of the reconstruction stage against independent geometric expectations."""

import numpy as np
import pytest
import torch

from tests.conftest import wall_and_box
from ex4d.geometry.conventions import reference_intrinsics, transform_points, invert_rigid, unproject_depth
from ex4d.geometry.trajectory import Trajectory, make_trajectory
from ex4d.io.video import Video
from ex4d.mesh.build import MeshSettings
from ex4d.reconstruction import recon
from ex4d.render.dwmesh import RenderSettings


def as_video(frames, fps=12.0):
    return Video(frames=frames, fps=fps, source_size=frames.shape[1:3])


def run(frames, depth, cam, **kw):
    return recon(as_video(frames), depth, cam=cam, num_frames=None, progress=False, device="cpu", **kw)


def translation_trajectory(num_frames, shift_x):
    w2c = np.tile(np.eye(4), (num_frames, 1, 1))
    w2c[:, 0, 3] = -shift_x * np.arange(num_frames) / max(num_frames - 1, 1)
    return Trajectory(w2c=w2c, name="slide")


def test_plane_renders_where_projection_says():
    T, H, W, D = 3, 32, 40, 5.0
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    depth = np.full((T, H, W), D, np.float32)
    # Camera slides right by 2 * 3 px worth of motion at depth D: content moves left by 3 px per frame.
    shift = 2 * 3 * D / 500.0
    res = run(frames, depth, translation_trajectory(T, shift))
    for t, px in ((1, 3), (2, 6)):
        inner = (slice(3, H - 3), slice(3, W - 3 - px))
        assert res.mask[t][inner].all()
        assert np.array_equal(res.color[t][inner], frames[t][3:H - 3, 3 + px:W - 3])
        assert np.allclose(res.depth[t][inner], D, rtol=1e-5)


def test_source_camera_reproduces_the_input_on_seen_pixels():
    frames, depth = wall_and_box(num_frames=3, height=40, width=48)
    identity = Trajectory(w2c=np.tile(np.eye(4), (3, 1, 1)), name="still")
    identity.w2c[0, 0, 3] = 1e-3  # not at the source, so frame 0 is rendered rather than copied
    res = run(frames, depth, identity)
    for t in (1, 2):
        seen = res.mask[t]
        assert seen.mean() > 0.6  # all but the border ring and the box outline
        assert np.array_equal(res.color[t][seen], frames[t][seen])
        assert np.allclose(res.depth[t][seen], depth[t][seen], rtol=1e-5)
        # What is not seen is exactly the frame border ring and pixels next to the depth step.
        step = np.zeros_like(seen)
        d = depth[t]
        step[:, :-1] |= d[:, :-1] != d[:, 1:]
        step[:, 1:] |= d[:, :-1] != d[:, 1:]
        step[:-1] |= d[:-1] != d[1:]
        step[1:] |= d[:-1] != d[1:]
        ring = np.ones_like(seen)
        ring[2:-2, 2:-2] = False
        grown = step | np.roll(step, 1, 0) | np.roll(step, -1, 0) | np.roll(step, 1, 1) | np.roll(step, -1, 1)
        assert not (~seen & ~ring & ~grown).any()


def test_frame_zero_is_the_source_frame():
    frames, depth = wall_and_box(num_frames=5, height=32, width=32)
    res = run(frames, depth, "60")
    assert np.array_equal(res.color[0], frames[0]) and res.mask[0].all()
    assert not res.mask[4].all()


def leak_fraction(res, depth, K):
    """Fraction of pixels marked seen whose 3D point the source camera could not see (an independent check
    through the source depth maps, not the mesh)."""
    T, H, W = res.mask.shape
    leaks = 0
    for t in range(1, T):
        pts_cam = unproject_depth(torch.from_numpy(res.depth[t]), K)  # target camera coordinates
        c2w = invert_rigid(torch.from_numpy(res.trajectory.w2c[t]).float())
        pts = transform_points(c2w, pts_cam.reshape(-1, 3)).reshape(H, W, 3)[torch.from_numpy(res.mask[t])]
        u = (K[0, 0] * pts[:, 0] / pts[:, 2] + K[0, 2]).numpy()
        v = (K[1, 1] * pts[:, 1] / pts[:, 2] + K[1, 2]).numpy()
        z = pts[:, 2].numpy()
        ok = np.zeros(len(z), bool)
        # Accept a match with any of the 2×2 source pixels around the projection (silhouettes are sub-pixel).
        for du in (-0.5, 0.5):
            for dv in (-0.5, 0.5):
                ui = np.clip(np.floor(u + du).astype(int), 0, W - 1)
                vi = np.clip(np.floor(v + dv).astype(int), 0, H - 1)
                ok |= np.abs(depth[t][vi, ui] - z) < 0.05 * z
        ok &= (u >= 0) & (u < W) & (v >= 0) & (v < H)
        leaks += (~ok).sum()
    return leaks / (res.mask[1:].size)


@pytest.mark.parametrize("cam", ["30", "90", "180", "180_outer"])
def test_dw_mesh_hides_what_the_source_did_not_see_and_the_plain_mesh_leaks(cam):
    frames, depth = wall_and_box(num_frames=9, height=48, width=48)
    K = torch.tensor([[50.0, 0, 24], [0, 50.0, 24], [0, 0, 1]])  # a 51° field of view
    dw = run(frames, depth, cam, intrinsics=K.numpy())
    plain = run(frames, depth, cam, intrinsics=K.numpy(), mesh_settings=MeshSettings(occluders="delete"))
    assert leak_fraction(dw, depth, K) < 0.002
    assert leak_fraction(plain, depth, K) > 10 * max(leak_fraction(dw, depth, K), 1e-3)
    # The orbit opens a hole beside the box: some pixels inside the image must be generated.
    assert (~dw.mask[1:, 4:-4, 4:-4]).sum() > 20


def test_warp_and_torch_backends_agree_on_a_tiny_scene():
    frames, depth = wall_and_box(num_frames=3, height=24, width=24)
    fast = run(frames, depth, "60")
    slow = run(frames, depth, "60", render_settings=RenderSettings(backend="torch"))
    assert (fast.mask != slow.mask).mean() < 0.01
    both = fast.mask & slow.mask
    assert np.abs(fast.color[both].astype(int) - slow.color[both]).max() <= 1


def test_video_and_depth_paths(tiny_inputs):
    video, depth_path, frames, depth = tiny_inputs
    res = recon(video, depth_path, cam="30", num_frames=9, progress=False, device="cpu")
    assert res.color.shape == (9, 64, 64, 3) and res.mask.shape == (9, 64, 64) and res.depth.dtype == np.float32
    assert res.fps == pytest.approx(12)
    assert res.K.shape == (9, 3, 3) and res.K[0, 0, 0] == 500
