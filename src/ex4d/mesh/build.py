"""Depth Watertight Mesh (DW-Mesh) construction, vectorised over frames (spec §3).

Every pixel becomes a vertex; every 2×2 pixel block two triangles; the 1-pixel image border is pushed to a far
wall at depth 100 and two cap triangles close the solid behind the scene. Faces stretched across depth
discontinuities (minimum interior angle < 2.5°) are kept as *invisible occluders*: every vertex they touch gets
RGBA = 0, so a novel view sees "must be generated" instead of background leaking through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ex4d.errors import InputError
from ex4d.geometry.conventions import PIXEL_CENTER, unproject_depth
from ex4d.mesh.filters import extent_valid, grid_extent_valid, grid_min_angle_valid, min_angle_valid


@dataclass(frozen=True)
class MeshSettings:
    """How depth becomes a mesh. Defaults reproduce the reference DW-Mesh except ``pixel_offset``."""

    border_depth: float = 100.0
    """Depth of the far wall the 1-pixel image border is pushed to."""
    min_angle_deg: float = 2.5
    """A face whose smallest interior angle is below this (degrees) is a stretched face."""
    angle_reference_focal: float | None = None
    """If set (e.g. 500, the reference's focal), ``min_angle_deg`` is taken to hold at this focal length and is
    rescaled for the actual one, tan θ' = tan θ · f_ref / f, so the test flags the same depth step relative to the
    pixel footprint at any resolution. ``None`` (default) applies ``min_angle_deg`` as is, like the reference."""
    occluders: Literal["keep", "delete"] = "keep"
    """``keep``: DW-Mesh (stretched faces stay as alpha-0 occluders); ``delete``: plain depth mesh (ablation)."""
    extent_filter: bool = False
    """Also flag faces failing the reference's projected-extent test (computed but unused there)."""
    extent_threshold: float = 0.013
    """Threshold of that test: a face is valid if its largest edge extent / scene z-range is below this."""
    pixel_offset: float = PIXEL_CENTER
    """Where in a pixel its vertex is unprojected: 0.5 (centre, ours) or 0.0 (the reference's corner, which
    shifts re-rendered content by half a pixel)."""
    cap: bool = True
    """Add the two closing faces behind the scene at the border depth."""

    def __post_init__(self):
        if self.occluders not in ("keep", "delete"):
            raise ValueError(f"occluders must be 'keep' or 'delete', got {self.occluders!r}")
        # InputError (a ValueError) naming the setting: the CLI shows it as its flag (--border-depth, ...).
        if not 0 < self.border_depth < math.inf:
            raise InputError(f"expected a finite depth > 0, got {self.border_depth}", "border_depth")
        if not 0 < self.min_angle_deg < 60:
            raise InputError(f"expected an angle in degrees in (0, 60), got {self.min_angle_deg}", "min_angle")
        if not 0 <= self.pixel_offset <= 1:
            raise InputError(f"expected a position in the pixel in [0, 1], got {self.pixel_offset}", "pixel_offset")
        if self.angle_reference_focal is not None and not self.angle_reference_focal > 0:
            raise ValueError("angle_reference_focal must be positive (or None)")


@dataclass
class MeshBatch:
    """Per-frame meshes sharing one grid topology.

    Attributes:
        vertices: (B, N, 3) float32 in the source camera frame (OpenCV), N = H·W, vertex i = v·W + u.
        colors: (B, N, 4) float32 RGBA in [0, 1]; alpha 0 (and RGB 0) on occluder vertices.
        faces: (F, 3) int64, F = 2(H−1)(W−1) + 2 (with caps), shared by all frames.
        face_valid: (B, F) bool, False for stretched faces.
        face_mask: (B, F) bool faces to render, or None for all (``occluders="delete"`` hides invalid ones).
        height, width: the grid size.
    """

    vertices: torch.Tensor
    colors: torch.Tensor
    faces: torch.Tensor
    face_valid: torch.Tensor
    face_mask: torch.Tensor | None
    height: int
    width: int


def _min_angle(settings: MeshSettings, K: torch.Tensor, batch: int) -> float | torch.Tensor:
    """The stretched-face threshold in degrees: a number, or (B,) when rescaled by each frame's focal length."""
    if settings.angle_reference_focal is None:
        return float(settings.min_angle_deg)
    focal = K.expand(batch, 3, 3)[:, [0, 1], [0, 1]].mean(-1)
    scaled = math.tan(math.radians(settings.min_angle_deg)) * settings.angle_reference_focal / focal
    return torch.rad2deg(torch.atan(scaled))


def grid_faces(height: int, width: int, cap: bool = True, device=None) -> torch.Tensor:
    """Triangles of an H×W vertex grid in the reference's order and winding (spec §3.2).

    For each block (TL, TR, BL, BR): all (BL, TL, TR) faces in row-major block order, then all (BL, TR, BR)
    faces, then the caps (TR_c, TL_c, BR_c) and (BR_c, TL_c, BL_c) over the four image corners.

    Returns:
        faces: (2(H−1)(W−1) [+ 2], 3) int64, shared between calls with the same arguments (the topology of every
        frame of a video is the same; rebuilding it per batch cost ~10 % of a CPU reconstruction): do not modify
        it in place.
    """
    key = (int(height), int(width), bool(cap), str(torch.device(device) if device is not None else "cpu"))
    faces = _FACES_CACHE.get(key)
    if faces is None:
        faces = _grid_faces(height, width, cap, device)
        if len(_FACES_CACHE) >= 4:
            _FACES_CACHE.pop(next(iter(_FACES_CACHE)))
        _FACES_CACHE[key] = faces
    return faces


_FACES_CACHE: dict = {}


def _grid_faces(height: int, width: int, cap: bool, device) -> torch.Tensor:
    idx = torch.arange(height * width, device=device).reshape(height, width)
    tl, tr = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    bl, br = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    faces = [torch.stack([bl, tl, tr], 1), torch.stack([bl, tr, br], 1)]
    if cap:
        c_tl, c_tr, c_bl, c_br = 0, width - 1, (height - 1) * width, height * width - 1
        faces.append(torch.tensor([[c_tr, c_tl, c_br], [c_br, c_tl, c_bl]], device=device))
    return torch.cat(faces, 0)


#: Build with the fused Warp kernels (:mod:`ex4d.mesh.warp_build`) where they apply; ``False`` (tests, debugging)
#: always runs the torch path below, which is the specification: both give bit-identical meshes. The Warp path is
#: used on CPU only: its CUDA branch has not been run on a GPU yet, and torch is fast there anyway.
USE_WARP = True


def _warp_applies(depth_z: torch.Tensor, frames: torch.Tensor, settings: MeshSettings) -> bool:
    return (USE_WARP and not settings.extent_filter and frames.dtype == torch.uint8 and depth_z.ndim == 3
            and depth_z.shape[1] >= 2 and depth_z.shape[2] >= 2 and depth_z.device.type == "cpu"
            and tuple(frames.shape) == (*depth_z.shape, 3))


def _build_warp(depth_z: torch.Tensor, frames: torch.Tensor, K: torch.Tensor,
                settings: MeshSettings) -> MeshBatch | None:
    """:func:`build_dw_mesh` through the fused Warp kernels (no extent filter), bit-identical to the torch path;
    None where it cannot be (see :func:`ex4d.mesh.warp_build.build_grid`)."""
    from ex4d.mesh.warp_build import build_grid

    batch, height, width = depth_z.shape
    depth = depth_z.to(torch.float32)
    K = K.to(depth).expand(batch, 3, 3)
    min_angle = _min_angle(settings, K, batch)
    # the threshold's cosine exactly as grid_min_angle_valid computes it (same op, same shape)
    limit = torch.cos(torch.deg2rad(torch.as_tensor(min_angle, dtype=torch.float32, device=depth.device)))
    limit = limit.expand(batch) if limit.ndim == 0 else limit.reshape(batch)
    built = build_grid(depth, frames.to(depth.device), K, limit, settings.pixel_offset, settings.border_depth,
                       settings.occluders == "keep", settings.cap)
    if built is None:
        return None
    vertices, colors, valid = built
    faces = grid_faces(height, width, settings.cap, device=depth.device)
    if settings.cap:
        cap_corners = vertices[:, faces[-2:]]  # (B, 2, 3, 3)
        valid[:, -2:] = min_angle_valid(cap_corners, min_angle if isinstance(min_angle, float) else min_angle[:, None])
    face_mask = valid if settings.occluders == "delete" else None
    return MeshBatch(vertices, colors, faces, valid, face_mask, height, width)


def build_dw_mesh(depth_z: torch.Tensor, frames: torch.Tensor, K: torch.Tensor,
                  settings: MeshSettings = MeshSettings(), *, _reference: bool = False) -> MeshBatch:
    """Build the DW-Mesh of each frame.

    Args:
        depth_z: (B, H, W) float z-depth, finite and positive (checked by the caller).
        frames: (B, H, W, 3) uint8 colours.
        K: (3, 3) or (B, 3, 3) intrinsics of the source camera.
        settings: construction options.

    Returns:
        A :class:`MeshBatch` on ``depth_z``'s device.

    Without the extent filter this runs fused Warp kernels (see :data:`USE_WARP`); ``_reference=True`` forces the
    torch implementation below (the specification; the results are bit-identical).
    """
    if not _reference and _warp_applies(depth_z, frames, settings):
        mesh = _build_warp(depth_z, frames, K, settings)
        if mesh is not None:
            return mesh
    batch, height, width = depth_z.shape
    depth = depth_z.to(torch.float32).clone()
    # The reference pushes the 1-pixel border to a far wall; with the caps this closes the solid.
    depth[:, [0, -1], :] = settings.border_depth
    depth[:, :, [0, -1]] = settings.border_depth
    points = unproject_depth(depth, K.to(depth), offset=settings.pixel_offset)  # (B, H, W, 3)
    vertices = points.reshape(batch, -1, 3)
    faces = grid_faces(height, width, settings.cap, device=depth.device)

    min_angle = _min_angle(settings, K.to(depth), batch)
    first, second = grid_min_angle_valid(points, min_angle)  # (B, H-1, W-1) each
    if settings.extent_filter:
        z_range = (depth.amax((1, 2)) - depth.amin((1, 2))).clamp_min(1e-12)
        extent_first, extent_second = grid_extent_valid(points, z_range, settings.extent_threshold)
        first, second = first & extent_first, second & extent_second
    valid = [first.reshape(batch, -1), second.reshape(batch, -1)]
    if settings.cap:
        cap_corners = vertices[:, faces[-2:]]  # (B, 2, 3, 3)
        cap_valid = min_angle_valid(cap_corners, min_angle if isinstance(min_angle, float) else min_angle[:, None])
        if settings.extent_filter:
            cap_valid &= extent_valid(cap_corners, z_range, settings.extent_threshold)
        valid.append(cap_valid)
    valid = torch.cat(valid, 1)

    colors = torch.ones(batch, height, width, 4, device=depth.device)
    colors[..., :3] = frames.to(device=depth.device, dtype=torch.float32) / 255.0
    face_mask = None
    if settings.occluders == "keep":
        # Every vertex touching a stretched face becomes transparent black (per-vertex, as the reference).
        bad_first, bad_second = ~first, ~second
        bad_both = bad_first | bad_second
        occluder = torch.zeros(batch, height, width, dtype=torch.bool, device=depth.device)
        occluder[:, :-1, :-1] |= bad_first  # TL
        occluder[:, 1:, :-1] |= bad_both  # BL
        occluder[:, :-1, 1:] |= bad_both  # TR
        occluder[:, 1:, 1:] |= bad_second  # BR
        if settings.cap:
            # The closing faces are occluders too. The reference leaves the TL/BR corners opaque, which gives
            # its caps an alpha gradient that can z-fight with the far wall along the image border.
            occluder[:, [0, 0, -1, -1], [0, -1, 0, -1]] = True
        colors[occluder] = 0.0
    else:
        face_mask = valid
    colors = colors.reshape(batch, -1, 4)
    return MeshBatch(vertices, colors, faces, valid, face_mask, height, width)
