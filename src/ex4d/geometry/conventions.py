"""The one statement of ex4d's geometric conventions (mirrored in ``docs/conventions.md``).

* **Camera axes (OpenCV):** +x right, +y down, +z forward (into the scene).
* **World frame:** the camera of the *source* video, i.e. frame 0's camera is the identity pose.
* **Extrinsics:** ``w2c`` is a (4, 4) world-to-camera matrix, ``x_cam = w2c @ x_world``; its inverse is ``c2w``.
  The word "pose" is never used for either.
* **Intrinsics:** ``K`` (3, 3) in pixels. A pixel with integer indices (row v, column u) covers
  ``[u, u+1) x [v, v+1)`` and its centre is at ``(u + 0.5, v + 0.5)``; a camera point (X, Y, Z) projects to
  ``(fx X/Z + cx, fy Y/Z + cy)`` in that continuous frame.
* **Depth:** z-depth (the camera-space Z of the surface point), in scene units, never ray distance.
* **Masks:** ``True``/1/255 = seen in the source video (copy it); ``False``/0 = must be generated.
* **Images:** ``frames: (T, H, W, 3) uint8`` at I/O boundaries; colours inside meshes are float in [0, 1].

The reference implementation saves extrinsics as OpenGL-style world-to-camera matrices (x right, y up,
z backward), i.e. ``diag(1, -1, -1, 1) @ w2c``; :func:`w2c_to_reference` / :func:`reference_to_w2c` convert.
"""

from __future__ import annotations

import numpy as np
import torch

#: Focal length (px) the reference uses for every video, whatever its resolution (spec §2.4).
REFERENCE_FOCAL_PX = 500.0

#: Pixel-centre offset: pixel (v, u) is sampled at continuous coordinates (u + 0.5, v + 0.5).
PIXEL_CENTER = 0.5

#: Flip between OpenCV camera axes and the reference's saved (OpenGL-style) camera axes. Its own inverse.
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def reference_intrinsics(height: int, width: int, focal: float = REFERENCE_FOCAL_PX) -> torch.Tensor:
    """Intrinsics the reference uses: ``[[f, 0, W/2], [0, f, H/2], [0, 0, 1]]`` with f = 500 px.

    Returns:
        K: (3, 3) float32.
    """
    return torch.tensor(
        [[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float32
    )


def pixel_grid(height: int, width: int, offset: float = PIXEL_CENTER, device=None, dtype=torch.float32):
    """Continuous image coordinates of every pixel's sample point.

    Returns:
        (u, v): two (H, W) tensors; ``u[v_i, u_i] = u_i + offset``, ``v[v_i, u_i] = v_i + offset``.
    """
    v = torch.arange(height, device=device, dtype=dtype) + offset
    u = torch.arange(width, device=device, dtype=dtype) + offset
    return torch.meshgrid(u, v, indexing="xy")


def unproject_depth(depth_z: torch.Tensor, K: torch.Tensor, offset: float = PIXEL_CENTER) -> torch.Tensor:
    """Lift z-depth maps to camera-space points, one per pixel.

    Args:
        depth_z: (..., H, W) z-depth.
        K: (3, 3) or (..., 3, 3) intrinsics matching the leading dims of ``depth_z``.
        offset: where inside a pixel the sample lies (0.5 = centre, ours; 0.0 = the reference's corner).

    Returns:
        points: (..., H, W, 3) with ``points[..., 2] == depth_z``.
    """
    height, width = depth_z.shape[-2:]
    u, v = pixel_grid(height, width, offset, device=depth_z.device, dtype=depth_z.dtype)
    K = K.to(depth_z)
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    x = (u - cx) / fx * depth_z
    y = (v - cy) / fy * depth_z
    return torch.stack([x, y, depth_z], dim=-1)


def project_points(points_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Project camera-space points to continuous pixel coordinates.

    Args:
        points_cam: (..., 3) points in camera coordinates (Z > 0).
        K: (3, 3) intrinsics.

    Returns:
        uv: (..., 2) with pixel centres at integer + 0.5.
    """
    K = K.to(points_cam)
    z = points_cam[..., 2]
    u = K[0, 0] * points_cam[..., 0] / z + K[0, 2]
    v = K[1, 1] * points_cam[..., 1] / z + K[1, 2]
    return torch.stack([u, v], dim=-1)


def transform_points(w2c: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply a rigid (..., 4, 4) transform to (..., N, 3) points."""
    w2c = w2c.to(points)
    return points @ w2c[..., :3, :3].transpose(-1, -2) + w2c[..., None, :3, 3]


def invert_rigid(w2c: torch.Tensor) -> torch.Tensor:
    """Inverse of a rigid (..., 4, 4) transform (``w2c`` -> ``c2w`` or back), exact for rotations."""
    rot_t = w2c[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(w2c)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ w2c[..., :3, 3, None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def w2c_to_reference(w2c):
    """OpenCV ``w2c`` (..., 4, 4) -> the extrinsics the reference saves (``diag(1,-1,-1,1) @ w2c``)."""
    flip = torch.as_tensor(OPENCV_TO_OPENGL, dtype=w2c.dtype, device=w2c.device) if torch.is_tensor(w2c) \
        else OPENCV_TO_OPENGL.astype(np.asarray(w2c).dtype)
    return flip @ w2c


def reference_to_w2c(extrinsics):
    """The reference's saved extrinsics (..., 4, 4) -> OpenCV ``w2c``. The flip is its own inverse."""
    return w2c_to_reference(extrinsics)


def scale_intrinsics(K: torch.Tensor, scale_x: float, scale_y: float) -> torch.Tensor:
    """Intrinsics after resizing the image by (scale_x, scale_y); exact under the pixel-centre convention."""
    out = K.clone()
    out[..., 0, :] = out[..., 0, :] * scale_x
    out[..., 1, :] = out[..., 1, :] * scale_y
    return out
