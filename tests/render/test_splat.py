import numpy as np
import pytest
import torch

from ex4d.render.splat import splat_points


def _K(f=50.0, height=16, width=20):
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def _frames(batch, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, height, width, 3), generator=g, dtype=torch.uint8)


def _translation(tx=0.0, ty=0.0, tz=0.0):
    """w2c with translation (tx, ty, tz): x_cam = x_world + t, i.e. the camera sits at -t."""
    m = torch.eye(4)
    m[:3, 3] = torch.tensor([tx, ty, tz])
    return m


def test_identity_camera_reproduces_the_frame():
    H, W = 16, 20
    g = torch.Generator().manual_seed(1)
    depth = 1.0 + 9.0 * torch.rand(2, H, W, generator=g)
    frames = _frames(2, H, W)
    color, seen, dz = splat_points(depth, frames, _K(), torch.eye(4).expand(2, 4, 4), _K())
    assert seen.all()
    assert torch.equal(color, frames)
    assert torch.allclose(dz, depth, rtol=1e-6)
    assert color.dtype == torch.uint8 and seen.dtype == torch.bool and dz.dtype == torch.float32


@pytest.mark.parametrize("shift", [1, 3, -2])
def test_fronto_parallel_plane_shifts_by_whole_pixels(shift):
    # A plane at z = Z seen with w2c translation tx (camera at x = -tx): x_cam = x + tx, so u moves by f tx / Z.
    H, W, f, Z = 16, 20, 50.0, 5.0
    depth = torch.full((1, H, W), Z)
    frames = _frames(1, H, W, seed=2)
    tx = shift * Z / f  # content moves right by `shift` pixels
    color, seen, dz = splat_points(depth, frames, _K(f, H, W), _translation(tx)[None], _K(f, H, W))
    expected_seen = torch.zeros(H, W, dtype=torch.bool)
    if shift > 0:
        expected_seen[:, shift:] = True
        assert torch.equal(color[0, :, shift:], frames[0, :, :W - shift])
    else:
        expected_seen[:, :W + shift] = True
        assert torch.equal(color[0, :, :W + shift], frames[0, :, -shift:])
    assert torch.equal(seen[0], expected_seen)
    assert (color[0][~expected_seen] == 0).all()
    assert torch.allclose(dz[0][expected_seen], torch.tensor(Z))
    assert (dz[0][~expected_seen] == 0).all()


def test_vertical_shift():
    # Moving the camera down (to y = +2Z/f, y is down) moves content up by 2 px.
    H, W, f, Z = 16, 20, 50.0, 10.0
    depth = torch.full((1, H, W), Z)
    frames = _frames(1, H, W, seed=3)
    color, seen, _ = splat_points(depth, frames, _K(f, H, W), _translation(ty=-2 * Z / f)[None], _K(f, H, W))
    assert seen[0, :H - 2].all() and not seen[0, H - 2:].any()
    assert torch.equal(color[0, :H - 2], frames[0, 2:])


def test_nearer_point_wins():
    # Two source points on the same target ray at different depths: the nearer one wins, whatever their order.
    H, W, f = 5, 5, 10.0
    K = torch.tensor([[f, 0.0, W / 2], [0.0, f, H / 2], [0.0, 0.0, 1.0]])
    depth = torch.zeros(1, H, W)  # 0 = no point
    frames = torch.zeros(1, H, W, 3, dtype=torch.uint8)
    # Source pixel (2, 2) is on the optical axis: (0, 0, 6). Source pixel (2, 3) at depth 3: x = 0.1 * 3 = 0.3.
    depth[0, 2, 2], frames[0, 2, 2] = 6.0, torch.tensor([0, 255, 0], dtype=torch.uint8)
    depth[0, 2, 3], frames[0, 2, 3] = 3.0, torch.tensor([255, 0, 0], dtype=torch.uint8)
    # Camera moved to x = 0.6: axis point at x_cam = -0.6, z 6 -> u = -1 + 2.5 = 1.5; near point x_cam = -0.3,
    # z 3 -> u = -1 + 2.5 = 1.5. Both in column 1.
    color, seen, dz = splat_points(depth, frames, K, _translation(-0.6)[None], K)
    assert seen.sum() == 1 and seen[0, 2, 1]
    assert color[0, 2, 1].tolist() == [255, 0, 0]
    assert dz[0, 2, 1] == pytest.approx(3.0)
    # Swapping which pixel is nearer swaps the winner.
    depth2 = torch.zeros(1, H, W)
    depth2[0, 2, 2] = 3.0  # axis point (0, 0, 3) -> x_cam = -0.6, u = -2 + 2.5 = 0.5 -> column 0
    depth2[0, 2, 3] = 6.0  # (0.6, 0, 6) -> x_cam = 0 -> u = 2.5 -> column 2
    _, seen2, _ = splat_points(depth2, frames, K, _translation(-0.6)[None], K)
    assert seen2.sum() == 2 and seen2[0, 2, 0] and seen2[0, 2, 2]


def test_occluded_points_lose_in_every_pixel():
    # A near square in front of a far wall, identity camera: all pixels are seen, each with its own depth.
    H, W = 12, 12
    depth = torch.full((1, H, W), 10.0)
    depth[0, 4:8, 4:8] = 2.0
    frames = _frames(1, H, W, seed=4)
    # Camera moved left by 0.2: content moves right by f 0.2 / z px, i.e. the square 2 px, the wall 0.4 px (it
    # stays in its pixels): the square covers wall pixels, whose points lose the z-test.
    f = 20.0
    K = torch.tensor([[f, 0.0, W / 2], [0.0, f, H / 2], [0.0, 0.0, 1.0]])
    color, seen, dz = splat_points(depth, frames, K, _translation(0.2)[None], K)
    assert torch.equal(color[0, 4:8, 6:10], frames[0, 4:8, 4:8])
    assert torch.allclose(dz[0, 4:8, 6:10], torch.tensor(2.0))
    # The wall pixels uncovered by the square (columns 4-5) are holes: nothing from the source lands there.
    assert not seen[0, 4:8, 4:6].any()


def test_points_behind_or_outside_are_dropped():
    H, W = 8, 8
    depth = torch.full((1, H, W), 2.0)
    frames = _frames(1, H, W, seed=5)
    K = _K(10.0, H, W)
    # Camera moved 3 units forwards: every point is behind it.
    _, seen, _ = splat_points(depth, frames, K, _translation(tz=-3.0)[None], K)
    assert not seen.any()
    # Far plane.
    _, seen, _ = splat_points(depth, frames, K, torch.eye(4)[None], K, far=1.5)
    assert not seen.any()
    # Non-positive / non-finite depth is no point.
    depth[0, 0, 0], depth[0, 1, 1], depth[0, 2, 2] = 0.0, float("nan"), -1.0
    _, seen, _ = splat_points(depth, frames, K, torch.eye(4)[None], K)
    assert seen.sum() == H * W - 3


def test_numpy_inputs_and_batch_intrinsics():
    H, W = 6, 7
    depth = np.full((2, H, W), 3.0, np.float32)
    frames = np.full((2, H, W, 3), 9, np.uint8)
    K = _K(10.0, H, W)
    color, seen, _ = splat_points(torch.from_numpy(depth), torch.from_numpy(frames), K.expand(2, 3, 3),
                                  torch.eye(4).expand(2, 4, 4), K)
    assert seen.all() and (color == 9).all()
    with pytest.raises(ValueError):
        splat_points(torch.from_numpy(depth), torch.from_numpy(frames), K, torch.eye(4)[None], K)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    H, W = 32, 40
    g = torch.Generator().manual_seed(6)
    depth = 2.0 + 6.0 * torch.rand(3, H, W, generator=g)
    frames = _frames(3, H, W, seed=7)
    K = _K(30.0, H, W)
    w2c = torch.stack([_translation(0.1 * i, -0.05 * i, 0.02 * i) for i in range(3)])
    cpu = splat_points(depth, frames, K, w2c, K)
    gpu = splat_points(depth.cuda(), frames.cuda(), K.cuda(), w2c.cuda(), K.cuda())
    assert torch.equal(cpu[1], gpu[1].cpu())
    assert torch.equal(cpu[0], gpu[0].cpu())


def test_target_intrinsics_are_used():
    # Same camera, target focal doubled and principal point moved by half a pixel: source column c lands at
    # u' = 2 (c + 0.5 - 4) + 4.5 = 2c - 2.5, i.e. columns 2..5 -> 1, 3, 5, 7 (pixel centres, no rounding ties).
    H = W = 8
    depth = torch.full((1, H, W), 3.0)
    frames = _frames(1, H, W, seed=8)
    K_src = _K(10.0, H, W)
    K_tgt = torch.tensor([[20.0, 0.0, 4.5], [0.0, 20.0, 4.5], [0.0, 0.0, 1.0]])
    color, seen, _ = splat_points(depth, frames, K_src, torch.eye(4)[None], K_tgt)
    idx = torch.tensor([1, 3, 5, 7])
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[idx[:, None], idx[None]] = True
    assert torch.equal(seen[0], expected)
    assert torch.equal(color[0][1::2, 1::2], frames[0, 2:6, 2:6])
