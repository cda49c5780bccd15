"""The fused Warp mesh builder reproduces the torch path (the specification) bit for bit."""

import itertools

import pytest
import torch

import ex4d.mesh.build as build
from ex4d.geometry.conventions import reference_intrinsics
from ex4d.mesh.build import MeshSettings, build_dw_mesh


def scene(B, H, W, seed):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    depth = (3 + 2 * xx + 0.3 * torch.sin(20 * yy))[None].repeat(B, 1, 1)
    depth = depth + 0.05 * seed * torch.randn(B, H, W, generator=g)  # noise: many faces near the threshold
    for b in range(B):  # depth steps: a foreground block and a cliff
        depth[b, H // 4:H // 2, W // 5:W // 2] = 0.8 + 0.5 * torch.rand(1, generator=g).item()
    depth[:, H // 3, :] *= 3
    frames = torch.randint(0, 256, (B, H, W, 3), dtype=torch.uint8, generator=g)
    return depth.float(), frames


def assert_identical(a, b):
    assert torch.equal(a.vertices, b.vertices)
    assert torch.equal(a.colors, b.colors)
    assert torch.equal(a.faces, b.faces)
    assert torch.equal(a.face_valid, b.face_valid)
    assert (a.face_mask is None) == (b.face_mask is None)
    if a.face_mask is not None:
        assert torch.equal(a.face_mask, b.face_mask)
    assert (a.height, a.width) == (b.height, b.width)


@pytest.mark.parametrize("size", [(7, 9), (33, 47), (65, 64)])
@pytest.mark.parametrize("occluders,cap,ref_focal", list(itertools.product(["keep", "delete"], [True, False],
                                                                             [None, 130.0])))
def test_warp_path_is_bit_identical_to_torch(size, occluders, cap, ref_focal):
    H, W = size
    K = reference_intrinsics(H, W)
    if ref_focal is not None:  # per-frame intrinsics: a per-frame (scaled) threshold
        K = torch.stack([K, K * torch.tensor([[1.3, 1.0, 1.1], [1.0, 1.3, 1.0], [1.0, 1.0, 1.0]])])
    for seed in range(3):
        depth, frames = scene(2, H, W, seed)
        settings = MeshSettings(occluders=occluders, cap=cap, angle_reference_focal=ref_focal,
                                min_angle_deg=2.5 if seed < 2 else 9.0, pixel_offset=0.5 if seed else 0.0)
        fast = build_dw_mesh(depth, frames, K, settings)
        assert_identical(fast, build_dw_mesh(depth, frames, K, settings, _reference=True))
        assert 0 < (~fast.face_valid).sum() < fast.face_valid.numel()


def test_many_near_threshold_faces_and_thread_counts():
    H, W = 129, 150
    depth, frames = scene(3, H, W, 5)
    K = reference_intrinsics(H, W)
    reference = build_dw_mesh(depth, frames, K, _reference=True)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert_identical(build_dw_mesh(depth, frames, K), reference)
    finally:
        torch.set_num_threads(threads)


def test_float64_depth_and_flag_and_fallbacks(monkeypatch):
    depth, frames = scene(2, 12, 13, 1)
    K = reference_intrinsics(12, 13).double()
    assert_identical(build_dw_mesh(depth.double(), frames, K), build_dw_mesh(depth.double(), frames, K, _reference=True))
    calls = []
    monkeypatch.setattr(build, "_build_warp", lambda *a: calls.append(1))
    build_dw_mesh(depth, frames, K, MeshSettings(extent_filter=True))  # extent filter: torch path
    build_dw_mesh(depth, frames.float(), K)  # non-uint8 colours: torch path
    monkeypatch.setattr(build, "USE_WARP", False)
    build_dw_mesh(depth, frames, K)
    assert not calls
    monkeypatch.setattr(build, "USE_WARP", True)
    build_dw_mesh(depth, frames, K)  # the fake returns None: falls back to the torch path
    assert calls == [1]
