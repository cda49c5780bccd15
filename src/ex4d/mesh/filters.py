"""Per-face tests that flag faces stretched across depth discontinuities (spec §3.4). Flags, never deletion."""

from __future__ import annotations


import torch


def interior_angles_deg(corners: torch.Tensor) -> torch.Tensor:
    """Interior angles of triangles.

    Args:
        corners: (..., 3, 3) the three vertices (v0, v1, v2) of each triangle, xyz last.

    Returns:
        (..., 3) angles in degrees at v0, v1, v2 (1e-12 is added to the norm products, as in the reference,
        so a zero-length edge gives a 90° angle next to it and 0° opposite).
    """
    v0, v1, v2 = corners.unbind(-2)

    def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-12)
        return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))

    return torch.stack([angle(v1 - v0, v2 - v0), angle(v2 - v1, v0 - v1), angle(v0 - v2, v1 - v2)], -1)


def min_angle_valid(corners: torch.Tensor, min_angle_deg: float = 2.5) -> torch.Tensor:
    """True for faces whose smallest interior angle is at least ``min_angle_deg``.

    A face spanning a depth step between neighbouring pixels is a sliver nearly parallel to the viewing ray;
    2.5° flags steps larger than about 23 pixel spacings.

    Args:
        corners: (..., 3, 3). Returns: (...,) bool.
    """
    if corners.shape[-3] == 0:
        return torch.ones(corners.shape[:-2], dtype=torch.bool, device=corners.device)
    # Chunk over faces: the angle temporaries are several times the size of ``corners``.
    flat = corners.reshape(-1, 3, 3)
    out = torch.empty(flat.shape[0], dtype=torch.bool, device=corners.device)
    step = 1 << 22
    for start in range(0, flat.shape[0], step):
        angles = interior_angles_deg(flat[start:start + step])
        out[start:start + step] = angles.amin(-1) >= min_angle_deg
    return out.reshape(corners.shape[:-2])


def extent_valid(corners: torch.Tensor, z_range: torch.Tensor, threshold: float = 0.013) -> torch.Tensor:
    """The reference's projected-extent test (computed there, never applied).

    A face is valid when its largest per-axis edge extent, divided by the frame's z-range over all vertices,
    is below ``threshold``.

    Args:
        corners: (B, F, 3, 3). z_range: (B,) max z − min z per frame. Returns: (B, F) bool.
    """
    v0, v1, v2 = corners.unbind(-2)
    edges = torch.stack([v1 - v0, v2 - v0, v2 - v1], -2).abs()  # (B, F, 3 edges, 3 axes)
    extent = edges.amax(dim=(-1, -2))
    return extent / z_range[:, None] < threshold


