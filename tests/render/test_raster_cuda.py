"""CUDA and CPU rasterisers agree bit for bit (the claim of ex4d.render.raster and BENCHMARKS.md).

Needs a GPU: the CUDA strategy (one launch over all frames, atomics, tiled big triangles) against the CPU strategy
(frames over threads), on DW-Meshes seen from rotated cameras and on random overlapping triangles that cross the near
plane, in float and in the fused uint8 output.
"""

import math

import pytest
import torch

from ex4d.render.raster import RasterSettings, rasterize

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def dw_mesh(T: int = 4, H: int = 48, W: int = 64):
    """(mesh, w2c, K): a DW-Mesh (skirts, caps, occluders) of a slanted wall with a near box, an orbit of T cameras."""
    from ex4d.geometry.conventions import reference_intrinsics
    from ex4d.geometry.trajectory import make_trajectory
    from ex4d.mesh.build import build_dw_mesh

    g = torch.Generator().manual_seed(0)
    depth = 3.0 + 0.3 * torch.linspace(0, 1, W).expand(T, H, W).clone()
    depth[:, 12:30, 15:40] = 1.5
    frames = torch.randint(0, 256, (T, H, W, 3), generator=g, dtype=torch.uint8)
    K = reference_intrinsics(H, W)
    mesh = build_dw_mesh(depth, frames, K)
    return mesh, make_trajectory("orbit:angle=60", T, 3.0).w2c_tensor(), K


def dw_mesh_scene():
    mesh, w2c, K = dw_mesh()
    return dict(vertices=mesh.vertices, faces=mesh.faces, attributes=mesh.colors, w2c=w2c, K=K, height=mesh.height,
                width=mesh.width, face_mask=mesh.face_mask)


def random_scene(seed: int, B: int = 3, n_verts: int = 60, n_faces: int = 50):
    """Random overlapping triangles, some crossing the near plane, some huge, seen by random cameras."""
    g = torch.Generator().manual_seed(seed)
    verts = torch.rand(B, n_verts, 3, generator=g) * torch.tensor([6.0, 6.0, 5.0]) - torch.tensor([3.0, 3.0, 0.5])
    faces = torch.randint(0, n_verts, (n_faces, 3), generator=g)
    w2c = torch.eye(4).repeat(B, 1, 1)
    for b in range(B):
        a = 0.3 * (float(torch.rand(1, generator=g)) - 0.5)
        w2c[b, 0, 0], w2c[b, 0, 2], w2c[b, 2, 0], w2c[b, 2, 2] = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
        w2c[b, :3, 3] = 0.2 * torch.randn(3, generator=g)
    K = torch.tensor([[30.0, 0.0, 20.0], [0.0, 28.0, 15.0], [0.0, 0.0, 1.0]])
    return dict(vertices=verts, faces=faces, attributes=torch.rand(B, n_verts, 4, generator=g), w2c=w2c, K=K,
                height=30, width=40, face_mask=torch.rand(B, n_faces, generator=g) > 0.1)


def on(args: dict, device: str) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in args.items()}


SCENES = {"dw_mesh": dw_mesh_scene, "random_0": lambda: random_scene(0), "random_1": lambda: random_scene(1)}


@pytest.mark.parametrize("scene", sorted(SCENES))
@pytest.mark.parametrize("supersample", [1, 2, 3])
def test_cuda_equals_cpu_bit_for_bit(scene, supersample):
    args = SCENES[scene]()
    settings = RasterSettings(near=0.5, far=50.0, supersample=supersample)
    cpu = rasterize(**args, settings=settings)
    cuda = rasterize(**on(args, "cuda"), settings=settings)
    assert cuda.depth.device.type == "cuda"
    assert float(cpu.coverage.mean()) > 0.05 and cpu.depth.unique().numel() > 50  # a scene worth comparing
    for name in ("attributes", "depth", "coverage"):
        assert torch.equal(getattr(cpu, name), getattr(cuda, name).cpu()), name


@pytest.mark.parametrize("supersample", [1, 2])
def test_fused_uint8_output_equal_on_cuda_and_cpu(supersample):
    args = dw_mesh_scene()
    B, H, W = args["vertices"].shape[0], args["height"], args["width"]
    settings = RasterSettings(supersample=supersample)
    outs = {}
    for device in ("cpu", "cuda"):
        color = torch.empty(B, H, W, 3, dtype=torch.uint8, device=device)
        seen = torch.empty(B, H, W, dtype=torch.bool, device=device)
        depth = torch.empty(B, H, W, device=device)
        rasterize(**on(args, device), settings=settings, rgba_u8=(color, seen, depth), alpha_threshold=125 / 255)
        outs[device] = (color.cpu(), seen.cpu(), depth.cpu())
    assert 0.2 < float(outs["cpu"][1].float().mean()) < 1.0
    for a, b in zip(outs["cpu"], outs["cuda"]):
        assert torch.equal(a, b)


def test_dw_mesh_frames_rendered_on_cuda_equal_the_cpu_frames():
    # render_dw_mesh_into: on the CPU the resolve pass writes the uint8 frames; on CUDA the float render is converted
    # there (to_uint8) and copied to the host outputs; the frames must be the same
    import dataclasses

    from ex4d.render.dwmesh import RenderSettings, render_dw_mesh_into

    mesh, w2c, K = dw_mesh()
    B, H, W = mesh.vertices.shape[0], mesh.height, mesh.width
    frames = {}
    for device in ("cpu", "cuda"):
        moved = dataclasses.replace(mesh, **{f.name: getattr(mesh, f.name).to(device) for f in dataclasses.fields(mesh)
                                             if torch.is_tensor(getattr(mesh, f.name))})
        out = (torch.empty(B, H, W, 3, dtype=torch.uint8), torch.empty(B, H, W, dtype=torch.bool), torch.empty(B, H, W))
        render_dw_mesh_into(moved, w2c, K, RenderSettings(), *out)
        frames[device] = out
    assert 0.2 < float(frames["cpu"][1].float().mean()) < 1.0
    for a, b in zip(frames["cpu"], frames["cuda"]):
        assert torch.equal(a, b)
