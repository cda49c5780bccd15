"""Analytic checks of the reference rasteriser (ray casting); the Warp rasteriser is tested against it."""

import math

import pytest
import torch

from ex4d.render.raster import RasterSettings
from ex4d.render.torch_ref import rasterize_torch

H, W = 16, 24
K = torch.tensor([[20.0, 0.0, 12.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]])
QUAD = torch.tensor([[0, 1, 2], [0, 2, 3]])


def pixel_rays(s: int = 1):
    """(H*s, W*s, 3) camera rays with d_z = 1 through every sample."""
    y = (torch.arange(H * s) + 0.5) / s
    x = (torch.arange(W * s) + 0.5) / s
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([(xx - 12.0) / 20.0, (yy - 8.0) / 20.0, torch.ones_like(xx)], -1)


def rigid(angle: float, axis: int, t) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    m = torch.eye(4)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    m[:3, 3] = torch.tensor(t, dtype=torch.float32)
    return m


def render_cam(verts_cam, faces, attrs=None, settings=RasterSettings(), face_mask=None, fn=rasterize_torch):
    """Render camera-space geometry through a non-trivial camera (world = c2w @ cam), B = 1."""
    c2w = rigid(0.7, 1, [0.3, -0.2, 1.0]) @ rigid(-0.4, 0, [0.0, 0.0, 0.0])
    world = verts_cam @ c2w[:3, :3].T + c2w[:3, 3]
    attrs = verts_cam if attrs is None else attrs
    return fn(world[None], faces, attrs[None], torch.linalg.inv(c2w)[None], K, H, W, settings,
              None if face_mask is None else face_mask[None])


def square(x0, x1, y0, y1, z=2.0):
    return torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])


@pytest.mark.parametrize("s", [1, 2])
def test_fronto_square_coverage_depth_attributes(s):
    x0, x1, y0, y1, z = -0.52, 0.27, -0.18, 0.33, 2.0
    out = render_cam(square(x0, x1, y0, y1, z), QUAD, settings=RasterSettings(supersample=s))
    d = pixel_rays(s)
    p = d * z
    inside = ((p[..., 0] >= x0) & (p[..., 0] <= x1) & (p[..., 1] >= y0) & (p[..., 1] <= y1)).float()
    cov = inside.reshape(H, s, W, s).mean(dim=(1, 3))
    assert torch.equal(out.coverage[0], cov)  # no holes along the shared diagonal, nothing outside
    assert 0 < cov.sum() < H * W
    full = cov == 1
    assert torch.allclose(out.depth[0][cov > 0], torch.full_like(out.depth[0][cov > 0], z), atol=1e-5)
    assert torch.all(out.depth[0][cov == 0] == 0)
    expect = (p * inside[..., None]).reshape(H, s, W, s, 3).mean(dim=(1, 3))
    assert torch.allclose(out.attributes[0], expect, atol=1e-5)
    assert full.sum() > 20


def test_edges_and_vertices_inclusive():
    # edges through pixel centres (u = 7.5 .. 14.5, v = 5.5 .. 10.5) are covered; the diagonal leaves no gap
    x0, x1, y0, y1, z = (7.5 - 12) / 10, (14.5 - 12) / 10, (5.5 - 8) / 10, (10.5 - 8) / 10, 2.0
    out = render_cam(square(x0, x1, y0, y1, z), QUAD)
    expect = torch.zeros(H, W)
    expect[5:11, 7:15] = 1
    assert torch.equal(out.coverage[0], expect)


def test_slanted_plane_is_perspective_correct():
    # plane z = 2 + 0.5 x + 0.25 y: the ray t*d hits it at t = 2 / (1 - 0.5 dx - 0.25 dy)
    xy = torch.tensor([[-0.6, -0.4], [0.6, -0.4], [0.6, 0.4], [-0.6, 0.4]])
    verts = torch.cat([xy, (2 + 0.5 * xy[:, :1] + 0.25 * xy[:, 1:])], 1)
    out = render_cam(verts, QUAD)
    d = pixel_rays()
    t = 2.0 / (1 - 0.5 * d[..., 0] - 0.25 * d[..., 1])
    p = t[..., None] * d
    margin = torch.minimum(0.6 - p[..., 0].abs(), 0.4 - p[..., 1].abs())
    assert torch.equal(out.coverage[0][margin > 1e-4], torch.ones_like(margin[margin > 1e-4]))
    assert torch.all(out.coverage[0][margin < -1e-4] == 0)
    inner = margin > 1e-4
    assert torch.allclose(out.depth[0][inner], t[inner], atol=1e-5)
    assert torch.allclose(out.attributes[0][inner], p[inner], atol=1e-5)
    # screen-linear (affine) interpolation would be off by far more than the tolerance
    assert (t.max() - t.min()) > 0.2


def test_occlusion_nearest_wins_either_order():
    near_tri = torch.tensor([[-0.3, -0.3, 2.0], [0.3, -0.3, 2.0], [0.0, 0.3, 2.0]])
    far_tri = torch.tensor([[-3.0, -3.0, 3.0], [3.0, -3.0, 3.0], [0.0, 3.0, 3.0]])
    verts = torch.cat([near_tri, far_tri])
    attrs = torch.tensor([[1.0]] * 3 + [[2.0]] * 3)
    for faces in (torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[3, 4, 5], [0, 1, 2]])):
        out = render_cam(verts, faces, attrs)
        assert out.depth[0, 8, 12] == pytest.approx(2.0, abs=1e-5)
        assert out.attributes[0, 8, 12, 0] == pytest.approx(1.0, abs=1e-5)
        assert out.depth[0, 1, 1] == pytest.approx(3.0, abs=1e-5)
        assert out.attributes[0, 1, 1, 0] == pytest.approx(2.0, abs=1e-5)


def test_near_plane_clips_visible_part_and_far_plane():
    # a floor y = 0.3 triangle reaching behind the camera: ray rows hit it at t = 0.3 / dy
    verts = torch.tensor([[-3.0, 0.3, -1.0], [3.0, 0.3, -1.0], [0.0, 0.3, 6.0]])
    settings = RasterSettings(near=1.0, far=3.0)
    out = render_cam(verts, torch.tensor([[0, 1, 2]]), settings=settings)
    d = pixel_rays()
    t = torch.where(d[..., 1] > 0, 0.3 / d[..., 1].clamp(min=1e-9), torch.full_like(d[..., 1], -1.0))
    p = t[..., None] * d
    # inside the triangle in the (x, z) plane: below both slanted edges
    inside = (t > 0) & (p[..., 2] >= -1) & (p[..., 2] + 1 <= 7 * (1 - p[..., 0].abs() / 3))
    expect = inside & (t >= 1.0) & (t <= 3.0)
    robust = ((t - 1.0).abs() > 1e-3) & ((t - 3.0).abs() > 1e-3)
    assert torch.equal(out.coverage[0][robust] > 0, expect[robust])
    assert expect.any() and (inside & (t < 1.0)).any()  # the clipped part is on screen
    assert torch.allclose(out.depth[0][expect & robust], t[expect & robust], atol=1e-5)


def test_face_mask_hides_faces():
    verts = square(-0.5, 0.5, -0.3, 0.3)
    full = render_cam(verts, QUAD)
    half = render_cam(verts, QUAD, face_mask=torch.tensor([True, False]))
    none = render_cam(verts, QUAD, face_mask=torch.tensor([False, False]))
    assert 0 < half.coverage.sum() < full.coverage.sum()
    assert none.coverage.sum() == 0 and none.depth.abs().sum() == 0 and none.attributes.abs().sum() == 0
    # face 0 = (x0, y0), (x1, y0), (x1, y1): the side of the diagonal where (y + 0.3) / 0.6 <= x + 0.5
    p = pixel_rays() * 2.0
    gap = (p[..., 0] + 0.5) - (p[..., 1] + 0.3) / 0.6
    inside = (p[..., 0].abs() <= 0.5) & (p[..., 1].abs() <= 0.3)
    robust = (gap.abs() > 1e-4) & ((0.5 - p[..., 0].abs()).abs() > 1e-4) & ((0.3 - p[..., 1].abs()).abs() > 1e-4)
    assert torch.equal(half.coverage[0][robust] > 0, (inside & (gap > 0))[robust])


def test_batch_frames_independent():
    verts = square(-0.5, 0.5, -0.3, 0.3)[None].repeat(2, 1, 1)
    verts[1, :, 2] = 4.0
    w2c = torch.eye(4)[None].repeat(2, 1, 1)
    out = rasterize_torch(verts, QUAD, verts, w2c, K, H, W)
    assert out.depth[0].max() == pytest.approx(2.0) and out.depth[1].max() == pytest.approx(4.0)
    assert out.coverage[1].sum() < out.coverage[0].sum()


BAD = [
    ("vertices", dict(vertices=torch.zeros(4, 3))),
    ("faces", dict(faces=torch.zeros(2, 4, dtype=torch.long))),
    ("faces", dict(faces=torch.zeros(2, 3))),
    ("faces", dict(faces=torch.tensor([[0, 1, 4]]))),
    ("attributes", dict(attributes=torch.zeros(1, 3, 2))),
    ("w2c", dict(w2c=torch.eye(4))),
    ("K", dict(K=torch.eye(3)[None].repeat(2, 1, 1))),
    ("face_mask", dict(face_mask=torch.ones(1, 3, dtype=torch.bool))),
    ("supersample", dict(settings=RasterSettings(supersample=0))),
    ("near", dict(settings=RasterSettings(near=0.0))),
]


def valid_args():
    return dict(vertices=square(-0.5, 0.5, -0.3, 0.3)[None], faces=QUAD, attributes=torch.zeros(1, 4, 2),
                w2c=torch.eye(4)[None], K=K, height=H, width=W, settings=RasterSettings(), face_mask=None)


@pytest.mark.parametrize("name,override", BAD)
def test_bad_inputs_raise(name, override):
    with pytest.raises(ValueError, match=name):
        rasterize_torch(**{**valid_args(), **override})


def test_valid_args_render():
    out = rasterize_torch(**valid_args())
    assert out.attributes.shape == (1, H, W, 2) and out.depth.shape == (1, H, W) and out.coverage.shape == (1, H, W)
    assert out.attributes.dtype == out.depth.dtype == out.coverage.dtype == torch.float32


# --- bounded memory: tiles with candidate culling give exactly the all-pairs result ---------------------------------

def dw_mesh_views(size: int, frames: int, cam: str):
    """(mesh, w2c (T, 4, 4), K (1, 3, 3)) of the wall-and-box scene's DW-Mesh along a preset, size×size."""
    from ex4d.geometry.conventions import reference_intrinsics
    from ex4d.geometry.trajectory import make_trajectory, reference_radius
    from ex4d.mesh.build import build_dw_mesh
    from tests.conftest import wall_and_box

    rgb, depth = wall_and_box(num_frames=frames, height=size, width=size)
    K = reference_intrinsics(size, size, focal=size)[None].expand(frames, 3, 3).contiguous()  # a 53° view
    mesh = build_dw_mesh(torch.from_numpy(depth), torch.from_numpy(rgb), K)
    traj = make_trajectory(cam, frames, reference_radius(depth[0]))
    return mesh, traj.w2c_tensor().float(), K


@pytest.mark.parametrize("cam,frame", [("180", 24), ("180", 48), ("90", 20), ("zoom_in", 40), ("orbit:angle=-90", 30)])
def test_tiled_render_is_bit_identical_to_all_pairs(cam, frame):
    """Novel views of a DW-Mesh (occluders seen edge-on, faces behind the camera, vanishing lines in the image)."""
    mesh, w2c, K = dw_mesh_views(24, 49, cam)
    mesh_args = (mesh.vertices[frame:frame + 1], mesh.faces, mesh.colors[frame:frame + 1], w2c[frame:frame + 1],
                 K[frame:frame + 1], 24, 24, RasterSettings(supersample=2))
    mask = mesh.face_valid[frame:frame + 1] if cam == "90" else None  # "90": the plain mesh (a face mask)
    dense = rasterize_torch(*mesh_args, face_mask=mask, tile=None)
    assert dense.coverage.mean() > 0.05
    for tile, max_pairs in ((8, 1 << 19), (4, 300)):  # the default split; tiny tiles with faces in many chunks
        out = rasterize_torch(*mesh_args, face_mask=mask, tile=tile, max_pairs=max_pairs)
        for a, b in zip((out.attributes, out.depth, out.coverage), (dense.attributes, dense.depth, dense.coverage)):
            assert torch.equal(a, b)


def test_culling_keeps_a_tile_few_faces():
    """A 64×64 orbit view tests a small share of the all-pairs work (that share is what makes it usable)."""
    import ex4d.render.torch_ref as ref

    mesh, w2c, K = dw_mesh_views(64, 2, "90")
    pairs = []
    real = ref.ray_triangle

    def counting(d, verts, faces, tol):
        pairs.append(d.shape[0] * faces.shape[0])
        return real(d, verts, faces, tol)

    ref.ray_triangle = counting
    try:
        rasterize_torch(mesh.vertices[1:], mesh.faces, mesh.colors[1:], w2c[1:], K[1:], 64, 64)
    finally:
        ref.ray_triangle = real
    assert sum(pairs) < 0.05 * 64 * 64 * mesh.faces.shape[0]


RSS_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from tests.render.test_torch_ref import dw_mesh_views
from ex4d.render.torch_ref import rasterize_torch
torch.set_num_threads(2)
size, frames = {size}, {frames}
mesh, w2c, K = dw_mesh_views(size, frames, "180")
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for t in range(frames):  # as ex4d recon --render-backend torch renders each frame
    out = rasterize_torch(mesh.vertices[t:t + 1], mesh.faces, mesh.colors[t:t + 1], w2c[t:t + 1], K[t:t + 1],
                          size, size)
    assert out.coverage.mean() > 0.5
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024)  # KiB -> MiB
"""


def peak_rss_growth_mib(size: int, frames: int) -> float:
    import pathlib
    import subprocess
    import sys

    root = str(pathlib.Path(__file__).resolve().parents[2])
    code = RSS_SCRIPT.format(root=root, size=size, frames=frames)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(res.stdout.strip().splitlines()[-1])


#: Peak memory of one frame (any size): one chunk of MAX_PAIRS (sample, face) pairs (~40 float32 temporaries
#: each, ~80 MiB) plus the per-face culling data and per-sample outputs (~100 MiB at 256×256, 130k faces).
FRAME_BOUND_MIB = 400


def test_render_memory_is_bounded_64px():
    """64×64 (8k faces): all pairs would hold 4k × 8k × 4 B = 128 MiB per temporary, several GiB in all."""
    assert peak_rss_growth_mib(64, 1) < FRAME_BOUND_MIB


@pytest.mark.slow  # a few minutes on 2 CPU cores
def test_render_memory_is_bounded_256px():
    """The 256×256 scene that asked for 204 GB before tiling (65k samples × 130k faces), 2 of its frames."""
    assert peak_rss_growth_mib(256, 2) < FRAME_BOUND_MIB
