"""Per-face tests that flag faces stretched across depth discontinuities (spec §3.4). Flags, never deletion.

The ``*_valid`` functions work on any triangles given by their corners (the readable definition, used for the
two cap faces and in tests); the ``grid_*`` functions compute the same flags for all grid faces at once from the
grid's shared edges, which is several times faster for H×W meshes.
"""

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


def min_angle_valid(corners: torch.Tensor, min_angle_deg: float | torch.Tensor = 2.5) -> torch.Tensor:
    """True for faces whose smallest interior angle is at least ``min_angle_deg``.

    A face spanning a depth step between neighbouring pixels is a sliver nearly parallel to the viewing ray;
    2.5° flags steps larger than about 23 pixel spacings.

    Args:
        corners: (..., 3, 3). Returns: (...,) bool.
    """
    return interior_angles_deg(corners).amin(-1) >= min_angle_deg


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




def _grid_edges(points: torch.Tensor):
    """The three edge families of a vertex grid, component-first for fast elementwise maths.

    Args:
        points: (B, H, W, 3) grid vertices.

    Returns:
        (horizontal (3, B, H, W-1): (v,u)->(v,u+1), vertical (3, B, H-1, W): (v,u)->(v+1,u),
        diagonal (3, B, H-1, W-1): BL->TR of each block, (v+1,u)->(v,u+1)).
    """
    planes = points.movedim(-1, 0).contiguous()  # x, y and z planes: dot products become plane arithmetic
    horizontal = planes[:, :, :, 1:] - planes[:, :, :, :-1]
    vertical = planes[:, :, 1:] - planes[:, :, :-1]
    diagonal = planes[:, :, :-1, 1:] - planes[:, :, 1:, :-1]
    return horizontal, vertical, diagonal


def grid_min_angle_valid(points: torch.Tensor, min_angle_deg: float | torch.Tensor = 2.5
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`min_angle_valid` for every grid face, from shared edges (no per-face gathers, no arccos).

    Args:
        points: (B, H, W, 3) grid vertices.
        min_angle_deg: threshold in degrees, a number or a (B,) tensor (one per frame).

    Returns:
        (first, second): (B, H-1, W-1) bool validity of each block's (BL, TL, TR) and (BL, TR, BR) face.
    """
    horizontal, vertical, diagonal = _grid_edges(points)

    def dot(a, b):
        return (a[0] * b[0]).addcmul_(a[1], b[1]).addcmul_(a[2], b[2])

    n_h, n_v, n_d = dot(horizontal, horizontal).sqrt_(), dot(vertical, vertical).sqrt_(), dot(diagonal, diagonal).sqrt_()
    top, bottom = horizontal[:, :, :-1], horizontal[:, :, 1:]
    left, right = vertical[:, :, :, :-1], vertical[:, :, :, 1:]
    n_top, n_bottom, n_left, n_right = n_h[:, :-1], n_h[:, 1:], n_v[:, :, :-1], n_v[:, :, 1:]

    # An angle is below the threshold iff its cosine is above cos(threshold) (arccos is decreasing); compared
    # without dividing: cos = a.b / (|a||b| + 1e-12) > limit  <=>  a.b > limit (|a||b| + 1e-12).
    limit = torch.cos(torch.deg2rad(torch.as_tensor(min_angle_deg, dtype=points.dtype, device=points.device)))
    if limit.ndim:
        limit = limit.reshape(-1, 1, 1)

    def sharp(dot_ab, na, nb):
        return dot_ab > limit * (na * nb + 1e-12)

    first = ~(sharp(-dot(left, diagonal), n_left, n_d)  # at BL: (TL - BL) = -left, (TR - BL) = diagonal
              | sharp(dot(left, top), n_left, n_top)  # at TL: (BL - TL) = left, (TR - TL) = top
              | sharp(dot(diagonal, top), n_d, n_top))  # at TR: (BL - TR) = -diagonal, (TL - TR) = -top
    second = ~(sharp(dot(diagonal, bottom), n_d, n_bottom)  # at BL: diagonal, (BR - BL) = bottom
               | sharp(-dot(diagonal, right), n_d, n_right)  # at TR: -diagonal, (BR - TR) = right
               | sharp(dot(bottom, right), n_bottom, n_right))  # at BR: -bottom, -right
    return first, second


def grid_extent_valid(points: torch.Tensor, z_range: torch.Tensor, threshold: float = 0.013):
    """:func:`extent_valid` for every grid face. Returns (first, second) as :func:`grid_min_angle_valid`."""
    horizontal, vertical, diagonal = (e.abs().amax(0) for e in _grid_edges(points))
    first = torch.maximum(torch.maximum(vertical[:, :, :-1], horizontal[:, :-1]), diagonal)
    second = torch.maximum(torch.maximum(diagonal, horizontal[:, 1:]), vertical[:, :, 1:])
    limit = threshold * z_range[:, None, None]
    return first < limit, second < limit
