"""Export one frame's DW-Mesh to PLY or GLB with RGBA vertex colours (trimesh)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ex4d.io.atomic import atomic_path
from ex4d.mesh.build import MeshBatch

#: OpenCV (y down, z forward) -> glTF (y up, z backward): glTF viewers expect y up.
_OPENCV_TO_GLTF = np.array([1.0, -1.0, -1.0], dtype=np.float32)


def export_mesh(path: str | Path, mesh: MeshBatch, frame: int = 0) -> Path:
    """Write frame ``frame`` of ``mesh`` to ``path`` (``.ply`` or ``.glb``), atomically.

    PLY keeps our world frame (OpenCV axes, as the reference's ``DW-Mesh.ply``) and stores RGBA (the reference
    drops alpha); GLB is converted to glTF's y-up axes so viewers show it upright. Vertex order and faces are
    written as built (no merging), so vertex i is pixel (i // W, i % W); with ``occluders="delete"`` the
    hidden faces are left out.

    Raises:
        ValueError: unsupported suffix.
    """
    import trimesh

    path = Path(path)
    if path.suffix.lower() not in (".ply", ".glb"):
        raise ValueError(f"mesh export supports .ply and .glb, got {path.suffix!r}")
    vertices = mesh.vertices[frame].detach().cpu().numpy()
    faces = mesh.faces.detach().cpu().numpy()
    if mesh.face_mask is not None:
        faces = faces[mesh.face_mask[frame].cpu().numpy()]
    colors = np.round(mesh.colors[frame].detach().cpu().numpy() * 255).astype(np.uint8)
    if path.suffix.lower() == ".glb":
        vertices = vertices * _OPENCV_TO_GLTF
    tri = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colors, process=False, validate=False)
    with atomic_path(path) as tmp:
        tri.export(tmp, file_type=path.suffix.lower()[1:])
    return path
