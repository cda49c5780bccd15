import numpy as np
import pytest
import torch
import trimesh

from ex4d.geometry.conventions import reference_intrinsics
from ex4d.mesh.build import MeshSettings, build_dw_mesh
from ex4d.mesh.export import export_mesh


def _mesh(settings=MeshSettings()):
    H, W = 9, 11
    depth = torch.full((2, H, W), 3.0)
    depth[:, 3:6, 4:8] = 1.5
    frames = torch.randint(0, 256, (2, H, W, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return build_dw_mesh(depth, frames, reference_intrinsics(H, W), settings), H, W


@pytest.mark.parametrize("suffix", [".ply", ".glb"])
def test_export_reloads_with_all_vertices_faces_and_alpha(tmp_path, suffix):
    mesh, H, W = _mesh()
    path = export_mesh(tmp_path / f"m{suffix}", mesh, frame=1)
    loaded = trimesh.load(path, process=False, force="mesh")
    assert len(loaded.vertices) == H * W
    assert len(loaded.faces) == 2 * (H - 1) * (W - 1) + 2
    colors = np.asarray(loaded.visual.vertex_colors)
    expected = np.round(mesh.colors[1].numpy() * 255).astype(np.uint8)
    assert np.array_equal(colors, expected)
    assert (colors[:, 3] == 0).any() and (colors[:, 3] == 255).any()
    verts = mesh.vertices[1].numpy()
    flip = np.array([1, -1, -1]) if suffix == ".glb" else np.ones(3)
    assert np.allclose(loaded.vertices, verts * flip, atol=1e-5)
    assert np.array_equal(loaded.faces, mesh.faces.numpy())
    assert not list(tmp_path.glob(".*tmp*"))


def test_plain_mesh_export_drops_deleted_faces(tmp_path):
    mesh, H, W = _mesh(MeshSettings(occluders="delete"))
    loaded = trimesh.load(export_mesh(tmp_path / "p.ply", mesh), process=False, force="mesh")
    assert len(loaded.faces) == int(mesh.face_mask[0].sum()) < 2 * (H - 1) * (W - 1) + 2


def test_unknown_suffix(tmp_path):
    mesh, _, _ = _mesh()
    with pytest.raises(ValueError):
        export_mesh(tmp_path / "m.obj", mesh)
