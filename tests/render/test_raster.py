"""Warp rasteriser: analytic checks and parity with the torch reference (the specification)."""

import math
import subprocess
import sys

import pytest
import torch

from ex4d.render.raster import RasterSettings, rasterize
from ex4d.render.torch_ref import rasterize_torch

H, W = 16, 24
K = torch.tensor([[20.0, 0.0, 12.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]])
QUAD = torch.tensor([[0, 1, 2], [0, 2, 3]])
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def rigid(angle: float, axis: int, t) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    m = torch.eye(4)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    m[:3, 3] = torch.tensor(t, dtype=torch.float32)
    return m


def scene_cam(verts_cam, faces, attrs=None, face_mask=None):
    """Arguments rendering camera-space geometry through a non-trivial camera, B = 1."""
    c2w = rigid(0.7, 1, [0.3, -0.2, 1.0]) @ rigid(-0.4, 0, [0.0, 0.0, 0.0])
    world = verts_cam @ c2w[:3, :3].T + c2w[:3, 3]
    attrs = torch.cat([verts_cam, torch.ones_like(verts_cam[:, :1])], 1) if attrs is None else attrs
    return dict(vertices=world[None], faces=faces, attributes=attrs[None], w2c=torch.linalg.inv(c2w)[None], K=K,
                height=H, width=W, face_mask=None if face_mask is None else face_mask[None])


def random_scene(seed: int, B: int = 2, n_verts: int = 40, n_faces: int = 30):
    """Random overlapping triangles (some crossing the near plane) seen by random cameras."""
    g = torch.Generator().manual_seed(seed)
    verts = torch.rand(B, n_verts, 3, generator=g) * torch.tensor([3.0, 3.0, 4.0]) - torch.tensor([1.5, 1.5, 0.2])
    faces = torch.randint(0, n_verts, (n_faces, 3), generator=g)
    attrs = torch.rand(B, n_verts, 3, generator=g)
    angles = 0.3 * (torch.rand(B, generator=g) - 0.5)
    shifts = 0.2 * torch.randn(B, 3, generator=g)
    w2c = torch.stack([rigid(angles[b].item(), b % 3, shifts[b].tolist()) for b in range(B)])
    Kb = K[None].repeat(B, 1, 1)
    Kb[:, :2, :2] *= 1 + 0.2 * torch.rand(B, 1, 1, generator=g)
    mask = torch.rand(B, n_faces, generator=g) > 0.1
    return dict(vertices=verts, faces=faces, attributes=attrs, w2c=w2c, K=Kb, height=H, width=W, face_mask=mask)


def big_scene():
    """Mostly-huge triangles: one covering the image, one crossing the near plane, plus small ones on top."""
    verts = torch.tensor([[-50.0, -50.0, 3.0], [50.0, -40.0, 6.0], [0.0, 60.0, 4.0],
                          [-4.0, 0.2, -2.0], [4.0, 0.2, -2.0], [0.5, -0.4, 5.0],
                          [-0.2, -0.2, 2.0], [0.2, -0.1, 2.1], [0.0, 0.2, 1.9]])
    return scene_cam(verts, torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]]))


def assert_close(out, ref, tol=1e-4, max_bad=0.0):
    """attributes/depth/coverage agree within tol on all but a fraction max_bad of the pixels."""
    bad = ((out.attributes - ref.attributes).abs().amax(-1) > tol) | ((out.depth - ref.depth).abs() > tol) \
        | ((out.coverage - ref.coverage).abs() > 1e-6)
    assert bad.float().mean().item() <= max_bad, f"{int(bad.sum())} of {bad.numel()} pixels differ"


def on(args, device):
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in args.items()}


def test_import_does_not_import_warp():
    code = "import sys, ex4d.render.raster, ex4d.render.torch_ref; print('warp' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


@pytest.mark.parametrize("s", [1, 2])
def test_fronto_square_exact(s):
    x0, x1, y0, y1, z = -0.52, 0.27, -0.18, 0.33, 2.0
    verts = torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
    out = rasterize(**scene_cam(verts, QUAD), settings=RasterSettings(supersample=s))
    ys = (torch.arange(H * s) + 0.5) / s
    xs = (torch.arange(W * s) + 0.5) / s
    py, px = torch.meshgrid((ys - 8) / 20 * z, (xs - 12) / 20 * z, indexing="ij")
    inside = ((px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)).float()
    assert torch.equal(out.coverage[0], inside.reshape(H, s, W, s).mean(dim=(1, 3)))
    covered = out.coverage[0] > 0
    assert torch.allclose(out.depth[0][covered], torch.full_like(out.depth[0][covered], z), atol=1e-5)
    assert torch.all(out.depth[0][~covered] == 0)
    expect_x = (px * inside).reshape(H, s, W, s).mean(dim=(1, 3))
    assert torch.allclose(out.attributes[0, ..., 0], expect_x, atol=1e-5)
    assert torch.allclose(out.attributes[0, ..., 3], out.coverage[0], atol=1e-6)  # constant attribute = alpha


def test_edges_and_vertices_inclusive():
    x0, x1, y0, y1, z = (7.5 - 12) / 10, (14.5 - 12) / 10, (5.5 - 8) / 10, (10.5 - 8) / 10, 2.0
    verts = torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
    out = rasterize(**scene_cam(verts, QUAD))
    expect = torch.zeros(H, W)
    expect[5:11, 7:15] = 1
    assert torch.equal(out.coverage[0], expect)


@pytest.mark.parametrize("fn", [rasterize, rasterize_torch])
@pytest.mark.parametrize("gap_px,covered", [(1e-4, True), (1e-2, False)])
def test_edge_tolerance_is_in_pixels(fn, gap_px, covered):
    # a huge square whose left edge passes gap_px right of the centres of column 7: in iff within EDGE_TOL_PX
    x0, z = (7.5 + gap_px - 12) / 20 * 50.0, 50.0
    verts = torch.tensor([[x0, -400.0, z], [400.0, -400.0, z], [400.0, 400.0, z], [x0, 400.0, z]])
    out = fn(**scene_cam(verts, QUAD), settings=RasterSettings(far=100.0))
    assert torch.all(out.coverage[0, :, 8:] == 1) and torch.all(out.coverage[0, :, :7] == 0)
    assert torch.all(out.coverage[0, :, 7] == float(covered))


SCENES = {
    "slanted": lambda: scene_cam(torch.tensor([[-0.6, -0.4, 1.6], [0.6, -0.4, 2.2], [0.6, 0.4, 2.4],
                                               [-0.6, 0.4, 1.8]]), QUAD),
    "occlusion": lambda: scene_cam(torch.tensor([[-0.3, -0.3, 2.0], [0.3, -0.3, 2.0], [0.0, 0.3, 2.0],
                                                 [-3.0, -3.0, 3.0], [3.0, -3.0, 3.0], [0.0, 3.0, 3.0]]),
                                   torch.tensor([[3, 4, 5], [0, 1, 2]])),
    "near_clip": lambda: scene_cam(torch.tensor([[-3.0, 0.3, -1.0], [3.0, 0.3, -1.0], [0.0, 0.3, 6.0]]),
                                   torch.tensor([[0, 1, 2]])),
    "face_mask": lambda: scene_cam(torch.tensor([[-0.5, -0.3, 2.0], [0.5, -0.3, 2.0], [0.5, 0.3, 2.0],
                                                 [-0.5, 0.3, 2.0]]), QUAD, face_mask=torch.tensor([True, False])),
    "big": big_scene,
}


@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("name", list(SCENES))
def test_matches_reference_on_analytic_scenes(name, s):
    settings = RasterSettings(near=1.0, far=5.0, supersample=s)
    args = SCENES[name]()
    out, ref = rasterize(**args, settings=settings), rasterize_torch(**args, settings=settings)
    assert ref.coverage.sum() > 0
    assert_close(out, ref, tol=1e-5)


def test_face_mask_all_false_renders_nothing():
    args = SCENES["face_mask"]()
    args["face_mask"] = torch.zeros_like(args["face_mask"])
    out = rasterize(**args)
    assert out.coverage.sum() == 0 and out.depth.abs().sum() == 0 and out.attributes.abs().sum() == 0


def test_big_triangle_covers_whole_image():
    out = rasterize(**big_scene(), settings=RasterSettings(supersample=2))
    assert torch.all(out.coverage == 1)


@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_meshes(seed, s):
    settings = RasterSettings(near=0.5, far=4.0, supersample=s)
    args = random_scene(seed)
    out, ref = rasterize(**args, settings=settings), rasterize_torch(**args, settings=settings)
    assert ref.coverage.mean() > 0.2
    assert_close(out, ref, tol=1e-4, max_bad=0.005)


def test_empty_faces():
    args = random_scene(0)
    args["faces"] = torch.zeros(0, 3, dtype=torch.long)
    args["face_mask"] = None
    out = rasterize(**args)
    assert out.attributes.shape == (2, H, W, 3) and out.coverage.sum() == 0


@pytest.mark.parametrize("name,override", [
    ("vertices", dict(vertices=torch.zeros(40, 3))),
    ("faces", dict(faces=torch.zeros(30, 2, dtype=torch.long))),
    ("attributes", dict(attributes=torch.zeros(2, 39, 3))),
    ("w2c", dict(w2c=torch.eye(4)[None])),
    ("K", dict(K=torch.eye(3)[None])),
    ("face_mask", dict(face_mask=torch.ones(2, 29, dtype=torch.bool))),
    ("supersample", dict(settings=RasterSettings(supersample=0))),
])
def test_bad_inputs_raise(name, override):
    with pytest.raises(ValueError, match=name):
        rasterize(**{**random_scene(0), **override})


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("s", [1, 2])
def test_cuda_matches_reference(s):
    settings = RasterSettings(near=0.5, far=4.0, supersample=s)
    for seed in (0, 1, 2):
        args = random_scene(seed)
        out, ref = rasterize(**on(args, "cuda"), settings=settings), rasterize_torch(**args, settings=settings)
        assert out.depth.device.type == "cuda"
        assert_close(type(ref)(out.attributes.cpu(), out.depth.cpu(), out.coverage.cpu()), ref, 1e-4, 0.005)
    args = big_scene()
    out, ref = rasterize(**on(args, "cuda"), settings=settings), rasterize_torch(**args, settings=settings)
    assert_close(type(ref)(out.attributes.cpu(), out.depth.cpu(), out.coverage.cpu()), ref, 1e-5)


def test_depth_map_grid_samples_on_vertices():
    # grid mesh lifted from a depth map: every pixel centre is exactly a vertex (shared by up to 6 triangles)
    from ex4d.geometry.conventions import unproject_depth

    g = torch.Generator().manual_seed(3)
    depth = 2.0 + 0.3 * torch.rand(H, W, generator=g)
    idx = torch.arange(H * W).reshape(H, W)
    a, b, c, d = idx[:-1, :-1].flatten(), idx[:-1, 1:].flatten(), idx[1:, :-1].flatten(), idx[1:, 1:].flatten()
    faces = torch.cat([torch.stack([a, c, b], 1), torch.stack([b, c, d], 1)])
    verts = unproject_depth(depth, K).reshape(1, -1, 3)
    args = dict(vertices=verts, faces=faces, attributes=verts, w2c=torch.eye(4)[None], K=K, height=H, width=W)
    out, ref = rasterize(**args), rasterize_torch(**args)
    assert torch.all(out.coverage == 1) and torch.all(ref.coverage == 1)
    assert torch.allclose(out.depth[0], depth, atol=1e-5) and torch.allclose(ref.depth[0], depth, atol=1e-5)
    assert_close(out, ref, tol=1e-5)


def dw_like_scene(B: int = 3, seed: int = 4):
    """A depth-map grid mesh with a pushed-back border (huge skirt faces) and two far caps, seen from cameras rotated
    up to 60 degrees about the y axis: tiny, sliver, big and near-plane-crossing triangles together."""
    from ex4d.geometry.conventions import unproject_depth

    g = torch.Generator().manual_seed(seed)
    depth = 2.0 + 0.3 * torch.rand(H, W, generator=g)
    depth[4:9, 6:12] -= 0.8  # a depth step: stretched faces
    depth[[0, -1], :] = 30.0
    depth[:, [0, -1]] = 30.0
    idx = torch.arange(H * W).reshape(H, W)
    tl, tr, bl, br = idx[:-1, :-1].flatten(), idx[:-1, 1:].flatten(), idx[1:, :-1].flatten(), idx[1:, 1:].flatten()
    faces = torch.cat([torch.stack([bl, tl, tr], 1), torch.stack([bl, tr, br], 1),
                       torch.tensor([[W - 1, 0, H * W - 1], [H * W - 1, 0, (H - 1) * W]])])
    verts = unproject_depth(depth, K).reshape(1, -1, 3).repeat(B, 1, 1)
    attrs = torch.rand(B, H * W, 4, generator=g)
    w2c = torch.stack([rigid(math.radians(60.0 * b / max(B - 1, 1)), 1, [0.0, 0.0, 0.0]) for b in range(B)])
    w2c[:, :3, 3] = (torch.tensor([0.0, 0.0, 2.0]) - w2c[:, :3, :3] @ torch.tensor([0.0, 0.0, 2.0]))  # pivot z = 2
    return dict(vertices=verts, faces=faces, attributes=attrs, w2c=w2c, K=K, height=H, width=W)


@pytest.mark.parametrize("s", [1, 2, 3])
def test_matches_reference_on_depth_mesh_from_rotated_views(s):
    settings = RasterSettings(near=0.5, far=50.0, supersample=s)
    args = dw_like_scene()
    out, ref = rasterize(**args, settings=settings), rasterize_torch(**args, settings=settings)
    assert ref.coverage.mean() > 0.5
    assert_close(out, ref, tol=1e-4, max_bad=0.002)


@pytest.mark.parametrize("s", [1, 3])
def test_matches_reference_non_power_of_two_supersampling(s):
    settings = RasterSettings(near=0.5, far=4.0, supersample=s)
    args = random_scene(5)
    out, ref = rasterize(**args, settings=settings), rasterize_torch(**args, settings=settings)
    assert_close(out, ref, tol=1e-4, max_bad=0.005)


def test_exact_depth_ties_go_to_the_lowest_face_id():
    # two coincident triangles with different colours: the first face wins wherever both are hit, in either order
    tri = torch.tensor([[-0.5, -0.4, 2.0], [0.6, -0.3, 2.0], [0.1, 0.5, 2.0]])
    verts = torch.cat([tri, tri])
    attrs = torch.cat([torch.ones(3, 1), 2 * torch.ones(3, 1)])
    for faces, first in ((torch.tensor([[0, 1, 2], [3, 4, 5]]), 1.0), (torch.tensor([[3, 4, 5], [0, 1, 2]]), 2.0)):
        args = scene_cam(verts, faces, attrs=attrs)
        for fn in (rasterize, rasterize_torch):
            out = fn(**args)
            covered = out.coverage[0] == 1
            assert covered.sum() > 10
            assert torch.all(out.attributes[0, ..., 0][covered] == first)


@pytest.mark.parametrize("s", [1, 2, 3])
def test_batched_path_matches_per_frame_threads(s, monkeypatch):
    # the CUDA code path (one launch over all frames, int64 atomic_min, tiled queue for big triangles, barycentrics
    # re-derived in the resolve pass) run on the CPU gives bit-identical results to the CPU's per-frame threads
    import ex4d.render.raster as raster

    settings = RasterSettings(near=0.5, far=50.0, supersample=s)
    for args in (dw_like_scene(), random_scene(1), big_scene()):
        threaded = rasterize(**args, settings=settings)
        monkeypatch.setattr(raster, "_BATCHED_ON_CPU", True)
        batched = rasterize(**args, settings=settings)
        monkeypatch.setattr(raster, "_BATCHED_ON_CPU", False)
        for name in ("attributes", "depth", "coverage"):
            assert torch.equal(getattr(threaded, name), getattr(batched, name)), name


def test_thread_count_does_not_change_results():
    args = dw_like_scene(B=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = rasterize(**args, settings=RasterSettings(supersample=2))
        torch.set_num_threads(3)
        three = rasterize(**args, settings=RasterSettings(supersample=2))
    finally:
        torch.set_num_threads(threads)
    for name in ("attributes", "depth", "coverage"):
        assert torch.equal(getattr(one, name), getattr(three, name)), name


@pytest.mark.parametrize("supersample", [1, 2])
def test_fused_uint8_output_equals_the_float_path(supersample):
    """render_dw_mesh_into (resolve writes uint8 colour + mask) == render_dw_mesh + to_uint8, bit for bit."""
    from ex4d.geometry.conventions import reference_intrinsics
    from ex4d.geometry.trajectory import make_trajectory
    from ex4d.mesh.build import build_dw_mesh
    from ex4d.render.dwmesh import RenderSettings, render_dw_mesh, render_dw_mesh_into, to_uint8
    from ex4d.render.raster import RasterSettings

    T, H, W = 4, 40, 56
    g = torch.Generator().manual_seed(0)
    depth = 3.0 + 0.3 * torch.linspace(0, 1, W).expand(T, H, W).clone()  # a smooth slanted wall
    depth[:, 10:25, 15:35] = 1.5  # a near box: occluders, holes, partial alpha at edges
    frames = torch.randint(0, 256, (T, H, W, 3), generator=g, dtype=torch.uint8)
    K = reference_intrinsics(H, W)
    settings = RenderSettings(raster=RasterSettings(supersample=supersample))
    mesh = build_dw_mesh(depth, frames, K)
    w2c = make_trajectory("orbit:angle=40", T, 3.0).w2c_tensor()
    ref = render_dw_mesh(mesh, w2c, K, settings)
    color, seen = torch.empty(T, H, W, 3, dtype=torch.uint8), torch.empty(T, H, W, dtype=torch.bool)
    depth_z = torch.empty(T, H, W)
    render_dw_mesh_into(mesh, w2c, K, settings, color, seen, depth_z)
    assert 0.2 < float(seen.float().mean()) < 1.0  # something is hidden, something seen
    assert torch.equal(color, to_uint8(ref.color)) and torch.equal(seen, ref.seen)
    assert torch.equal(depth_z, ref.depth_z)
    # the torch backend takes the conversion path, same frames up to the backends' own tolerance
    c2, s2, d2 = torch.empty_like(color), torch.empty_like(seen), torch.empty_like(depth_z)
    render_dw_mesh_into(mesh, w2c, K, RenderSettings(backend="torch", raster=settings.raster), c2, s2, d2)
    assert float((s2 != seen).float().mean()) < 0.01
    with pytest.raises(ValueError, match="rgba_u8 color"):
        from ex4d.render.raster import rasterize

        rasterize(mesh.vertices, mesh.faces, mesh.colors, w2c, K, H, W,
                  rgba_u8=(color[:, :-1], seen, depth_z))
