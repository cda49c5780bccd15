"""What the rasteriser computes, shared by its implementations (the Warp kernels of :mod:`ex4d.render.raster_warp`
and the torch specification :mod:`ex4d.render.torch_ref`): settings, output, argument checks and the exact camera
inputs. Re-exported by :mod:`ex4d.render.raster`, the public entry point. Light: no Warp.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from ex4d.geometry.conventions import transform_points

#: Inclusive-edge tolerance, in pixels (at focal max(fx, fy)): a sample this close outside a triangle counts as in.
#: Shared edges/vertices need none (the test is watertight); it settles samples exactly on a mesh's outer border
#: (e.g. a depth-map mesh seen from its own camera), where float32 rounding is ~1e-5 px. Unlike a barycentric
#: tolerance it does not grow with the triangle (huge skirt faces would bleed).
EDGE_TOL_PX = 1e-3


@dataclass(frozen=True)
class RasterSettings:
    """Rasteriser options.

    Attributes:
        near: near plane (camera z); surface closer than this is clipped away.
        far: far plane (camera z); surface farther than this is not rendered.
        supersample: s >= 1; each pixel averages s x s samples (edge antialiasing).
    """

    near: float = 1e-3
    far: float = 1e3
    supersample: int = 1


@dataclass
class RasterOutput:
    """Rasteriser result, on the inputs' device.

    Attributes:
        attributes: (B, H, W, C) float32, mean over the pixel's samples, uncovered samples counting as 0.
        depth: (B, H, W) float32 camera z of the nearest hit, mean over covered samples; 0 where nothing was hit.
        coverage: (B, H, W) float32 in [0, 1], fraction of the pixel's samples that hit a triangle.
    """

    attributes: torch.Tensor
    depth: torch.Tensor
    coverage: torch.Tensor


def _shape_error(name: str, expected: str, tensor) -> ValueError:
    actual = tuple(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__
    return ValueError(f"{name}: expected shape {expected}, got {actual}")


def validate_inputs(vertices, faces, attributes, w2c, K, height, width, settings, face_mask):
    """Check the public arguments and bring them to canonical dtypes/shapes (shared by both implementations).

    Returns:
        (vertices (B, N, 3) f32, faces (F, 3) int64, attributes (B, N, C) f32, w2c (B, 4, 4) f32,
        K (B, 3, 3) f32, face_mask (B, F) bool or None).

    Raises:
        ValueError: on a bad shape, dtype, device, index or setting; the message names the argument.
    """
    for name, t in (("vertices", vertices), ("faces", faces), ("attributes", attributes), ("w2c", w2c), ("K", K)):
        if not torch.is_tensor(t):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise _shape_error("vertices", "(B, N, 3)", vertices)
    B, N = vertices.shape[:2]
    if B < 1:
        raise _shape_error("vertices", "(B, N, 3) with B >= 1", vertices)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise _shape_error("faces", "(F, 3)", faces)
    if faces.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"faces: expected dtype int32 or int64, got {faces.dtype}")
    if attributes.ndim != 3 or attributes.shape[:2] != (B, N):
        raise _shape_error("attributes", f"({B}, {N}, C)", attributes)
    if w2c.shape != (B, 4, 4):
        raise _shape_error("w2c", f"({B}, 4, 4)", w2c)
    if K.shape == (3, 3):
        K = K.expand(B, 3, 3)
    elif K.shape != (B, 3, 3):
        raise _shape_error("K", f"(3, 3) or ({B}, 3, 3)", K)
    for name, t in (("vertices", vertices), ("attributes", attributes), ("w2c", w2c), ("K", K)):
        if not t.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if not torch.all(K[:, 2] == torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype, device=K.device)):
        raise ValueError("K: expected last row [0, 0, 1] (pinhole intrinsics)")
    if not (isinstance(height, numbers.Integral) and isinstance(width, numbers.Integral) and height > 0 < width):
        raise ValueError(f"height, width: expected positive ints, got {height!r}, {width!r}")
    s = settings.supersample
    if not (isinstance(s, numbers.Integral) and s >= 1):
        raise ValueError(f"settings.supersample: expected an int >= 1, got {s!r}")
    if not (0.0 < settings.near < settings.far):
        raise ValueError(f"settings: expected 0 < near < far, got near={settings.near}, far={settings.far}")
    if face_mask is not None:
        if not torch.is_tensor(face_mask) or face_mask.shape != (B, faces.shape[0]):
            raise _shape_error("face_mask", f"({B}, {faces.shape[0]})", face_mask)
        face_mask = face_mask.to(device=vertices.device, dtype=torch.bool)
    dev = vertices.device
    for name, t in (("faces", faces), ("attributes", attributes), ("w2c", w2c), ("K", K)):
        if t.device != dev:
            raise ValueError(f"{name}: expected device {dev} (that of vertices), got {t.device}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= N):
        raise ValueError(f"faces: expected indices in [0, {N}), got range [{int(faces.min())}, {int(faces.max())}]")
    return (vertices.float(), faces.long(), attributes.float(), w2c.float(), K.float(), face_mask)


def camera_inputs(vertices: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor):
    """Camera-space vertices and exact-last-row ``K^-1`` (shared so both implementations see the same numbers).

    Returns:
        (verts_cam (B, N, 3) f32 contiguous, K_inv (B, 3, 3) f32 with last row exactly [0, 0, 1]).
    """
    verts_cam = transform_points(w2c.double(), vertices.double()).float().contiguous()
    K_inv = torch.linalg.inv(K.double())
    K_inv[:, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=K_inv.dtype, device=K_inv.device)  # keeps d_z == 1 exactly
    return verts_cam, K_inv.float().contiguous()


def empty_output(B: int, height: int, width: int, C: int, device) -> RasterOutput:
    """All-zero output (nothing hit)."""
    z = torch.zeros(B, height, width, device=device)
    return RasterOutput(torch.zeros(B, height, width, C, device=device), z, z.clone())


def k_inverse(K: torch.Tensor) -> torch.Tensor:
    """``K^-1`` exactly as :func:`camera_inputs` computes it (without its host sync on CUDA)."""
    Kd = K.double()
    K_inv = torch.linalg.inv(Kd) if K.device.type == "cpu" else torch.linalg.inv_ex(Kd).inverse
    K_inv[:, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=K_inv.dtype, device=K_inv.device)  # keeps d_z == 1 exactly
    return K_inv.float().contiguous()
