"""Python API of the depth stage: :func:`estimate_depth` and :func:`save_depth_npz`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ex4d.depth.base import DepthResult
from ex4d.depth.intrinsics import IntrinsicsPolicy, intrinsics_matrix, make_policy
from ex4d.depth.registry import DEFAULT_BACKEND, create_backend
from ex4d.errors import InputError
from ex4d.io.atomic import save_npz_atomic
from ex4d.io.video import Video

__all__ = ["estimate_depth", "save_depth_npz"]


def estimate_depth(video: Video | np.ndarray, backend=DEFAULT_BACKEND, *, intrinsics: str | IntrinsicsPolicy = "auto",
                   focal_px: float | None = None, fov_deg: float | None = None, progress: bool = True,
                   **options) -> DepthResult:
    """Depth maps and intrinsics of a clip.

    Args:
        video: a :class:`~ex4d.io.video.Video` (from :func:`~ex4d.io.video.load_video`: the reference's 49 frames at
            sides that are multiples of 64) or frames (T, H, W, 3) uint8.
        backend: a registry name (``depthcrafter``, ``depth-anything-v2``, ``depth-pro``, ``file``) or a backend
            instance.
        intrinsics: policy ``auto`` / ``reference`` / ``estimate`` (see :mod:`ex4d.depth.intrinsics`).
        focal_px: a known focal in pixels of the *source* video (``video.source_size``); implies policy ``focal``.
        fov_deg: a known horizontal field of view in degrees; implies policy ``fov``.
        progress: show a progress bar.
        **options: the backend's constructor options (model, device, dtype, window, ...; ``path`` for ``file``).

    Returns:
        :class:`DepthResult` with depth (T, H, W) float32 at the frames' size and intrinsics (T, 3, 3) float32
        (never None here).

    Raises:
        InputError: unknown backend or option, bad frames, missing weights, contradictory intrinsics options.
        ImportError: the backend's model library is not installed (``pip install 'ex4d[diffusion]'``).
    """
    if isinstance(video, Video):
        frames, source_size = video.frames, video.source_size
    else:
        frames, source_size = np.asarray(video), None
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
        raise InputError(f"frames must be (T, H, W, 3) uint8 RGB, got shape {frames.shape} {frames.dtype}")
    T, H, W = frames.shape[:3]
    policy = intrinsics if isinstance(intrinsics, IntrinsicsPolicy) else make_policy(intrinsics, focal_px, fov_deg)
    if isinstance(intrinsics, IntrinsicsPolicy) and (focal_px is not None or fov_deg is not None):
        raise InputError("pass focal_px/fov_deg through the IntrinsicsPolicy, not both")

    est = create_backend(backend, **options) if isinstance(backend, str) else backend
    name = getattr(est, "name", type(est).__name__)
    estimates = bool(getattr(est, "estimates_intrinsics", False))
    if policy.mode == "estimate" and not estimates:
        raise InputError(f"depth backend {name!r} makes no intrinsics estimate; use the reference focal, "
                         f"a focal length or a field of view instead")
    known = policy.known_focal(H, W, source_size, backend_estimates=estimates)
    result = est.estimate(frames, focal_px=None if known is None else float(known[0]), progress=progress)

    if result.depth.shape != (T, H, W):
        raise RuntimeError(f"depth backend {name!r} returned shape {result.depth.shape}, expected {(T, H, W)}")
    if not np.isfinite(result.depth).all() or (result.depth <= 0).any():
        raise RuntimeError(f"depth backend {name!r} returned non-positive or non-finite depth")
    if known is not None:
        K = intrinsics_matrix(known[0], H, W, T, fy=known[1])
    elif result.intrinsics is not None:
        K = result.intrinsics
    else:
        raise InputError(f"depth backend {name!r} made no intrinsics estimate for this clip")
    info = dict(result.info, intrinsics_policy=policy.mode if known is not None or policy.mode != "auto"
                else "estimate")
    if policy.value is not None:
        info["intrinsics_value"] = policy.value
    return DepthResult(result.depth, K, kind=result.kind, backend=result.backend or name, info=info)


def save_depth_npz(path: str | os.PathLike, result: DepthResult) -> Path:
    """Write ``D.npz`` as ``ex4d recon --depth`` reads it, atomically.

    Keys: ``depth`` (T, H, W) float32 z-depth; ``intrinsics`` (T, 3, 3) float32 when known; ``kind`` and ``backend``
    (0-d strings); ``info`` (a 0-d JSON string).
    """
    arrays = {"depth": np.ascontiguousarray(result.depth, np.float32), "kind": np.array(result.kind),
              "backend": np.array(result.backend), "info": np.array(json.dumps(result.info, default=str))}
    if result.intrinsics is not None:
        arrays["intrinsics"] = np.ascontiguousarray(result.intrinsics, np.float32)
    return save_npz_atomic(path, **arrays)
