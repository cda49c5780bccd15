"""Render DW-Meshes from new cameras into colour, mask and depth (spec §4.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ex4d.mesh.build import MeshBatch
from ex4d.render.raster import RasterSettings

#: The reference's mask rule: rendered alpha (0–255) > 125 means "seen in the source".
REFERENCE_ALPHA_THRESHOLD = 125.0 / 255.0
RENDER_BACKENDS = ("warp", "torch")


@dataclass(frozen=True)
class RenderSettings:
    """How meshes are rasterised and turned into masks."""

    backend: str = "warp"
    """``warp`` (fast, CPU and CUDA) or ``torch`` (slow reference, tiny scenes only)."""
    raster: RasterSettings = field(default_factory=RasterSettings)
    """Near/far planes and supersampling (edge antialiasing)."""
    alpha_threshold: float = REFERENCE_ALPHA_THRESHOLD
    """Pixels whose rendered alpha exceeds this are marked seen."""

    def __post_init__(self):
        if self.backend not in RENDER_BACKENDS:
            raise ValueError(f"render backend must be one of {RENDER_BACKENDS}, got {self.backend!r}")


@dataclass
class RenderedFrames:
    """Output of :func:`render_dw_mesh`.

    Attributes:
        color: (B, H, W, 3) float32 in [0, 1], black where ``seen`` is False (colour × mask, as the reference).
        seen: (B, H, W) bool, True = seen in the source.
        depth_z: (B, H, W) float32 z-depth in the target camera, 0 where nothing was hit.
    """

    color: torch.Tensor
    seen: torch.Tensor
    depth_z: torch.Tensor


def render_dw_mesh(mesh: MeshBatch, w2c: torch.Tensor, K: torch.Tensor,
                   settings: RenderSettings = RenderSettings()) -> RenderedFrames:
    """Rasterise each frame's mesh from its camera.

    Args:
        mesh: B meshes (see :func:`ex4d.mesh.build.build_dw_mesh`).
        w2c: (B, 4, 4) target world-to-camera matrices.
        K: (3, 3) or (B, 3, 3) target intrinsics.
        settings: backend, raster settings and mask threshold.
    """
    if settings.backend == "warp":
        from ex4d.render.raster import rasterize
    else:
        from ex4d.render.torch_ref import rasterize_torch as rasterize
    device = mesh.vertices.device
    out = rasterize(mesh.vertices, mesh.faces, mesh.colors, w2c.to(device), K.to(device),
                    mesh.height, mesh.width, settings.raster, face_mask=mesh.face_mask)
    seen = out.attributes[..., 3] > settings.alpha_threshold
    color = out.attributes[..., :3] * seen[..., None]
    return RenderedFrames(color=color, seen=seen, depth_z=out.depth)


def to_uint8(color: torch.Tensor) -> torch.Tensor:
    """(…, 3) float colour in [0, 1] → uint8, rounded half to even and clamped (the videos' pixel values)."""
    return color.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def render_dw_mesh_into(mesh: MeshBatch, w2c: torch.Tensor, K: torch.Tensor, settings: RenderSettings,
                        color: torch.Tensor, seen: torch.Tensor, depth_z: torch.Tensor) -> None:
    """:func:`render_dw_mesh` written straight into the final frames: ``color`` (B, H, W, 3) uint8
    (= :func:`to_uint8` of the float colour), ``seen`` (B, H, W) bool, ``depth_z`` (B, H, W) float32.

    On the CPU with the Warp backend and contiguous outputs, the rasteriser's resolve pass writes them directly (one
    pass over the frames instead of five); otherwise the float render is converted on its device and copied into
    the outputs (which may be on another device, e.g. host tensors for a GPU render).
    """
    device = mesh.vertices.device
    # The fused kernel path is what the CPU needs (five passes over the frames cost ~10 % there); on CUDA those
    # passes are negligible and the float path, checked bit for bit against the CPU on the GPU, is kept.
    direct = (settings.backend == "warp" and mesh.colors.shape[-1] == 4 and device.type == "cpu"
              and all(t.device == device and t.is_contiguous() for t in (color, seen, depth_z)))
    if direct:
        from ex4d.render.raster import rasterize

        rasterize(mesh.vertices, mesh.faces, mesh.colors, w2c.to(device), K.to(device), mesh.height, mesh.width,
                  settings.raster, face_mask=mesh.face_mask, rgba_u8=(color, seen, depth_z),
                  alpha_threshold=settings.alpha_threshold)
        return
    out = render_dw_mesh(mesh, w2c, K, settings)
    color.copy_(to_uint8(out.color))
    seen.copy_(out.seen)
    depth_z.copy_(out.depth_z)
