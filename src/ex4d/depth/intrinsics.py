"""Intrinsics policy of the depth stage.

* ``reference`` — the reference's fixed focal: fx = fy = 500 px whatever the resolution, principal point at the image
  centre (W/2, H/2) (spec §2.4).
* ``focal`` — a focal length given by the user, **in pixels of the source video** (before the reference's resizing);
  scaled to the working size like every intrinsic (x by W/W0, y by H/H0).
* ``fov`` — a horizontal field of view in degrees (resolution-free): fx = fy = (W/2) / tan(fov/2) at the working size.
* ``estimate`` — the backend's own estimate (Depth Pro's field-of-view head); an error for backends without one.
* ``auto`` (default) — the backend's estimate when it makes one, else ``reference``. For DepthCrafter, Depth Anything
  and the file backend (without intrinsics in the file) this is exactly the reference's behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ex4d.errors import InputError
from ex4d.geometry.conventions import REFERENCE_FOCAL_PX, reference_intrinsics, scale_intrinsics

__all__ = ["POLICIES", "IntrinsicsPolicy", "make_policy", "focal_from_fov", "fov_from_focal", "intrinsics_matrix",
           "resize_intrinsics"]

POLICIES = ("auto", "reference", "estimate", "focal", "fov")


def focal_from_fov(fov_deg: float, size_px: float) -> float:
    """Focal (px) giving field of view ``fov_deg`` across ``size_px`` pixels: (size/2) / tan(fov/2)."""
    return 0.5 * size_px / math.tan(0.5 * math.radians(fov_deg))


def fov_from_focal(focal_px: float, size_px: float) -> float:
    """Field of view (degrees) across ``size_px`` pixels at focal ``focal_px``: 2·atan(size / (2 f))."""
    return math.degrees(2.0 * math.atan2(size_px, 2.0 * focal_px))


def intrinsics_matrix(fx: float, height: int, width: int, num_frames: int | None = None,
                      fy: float | None = None) -> np.ndarray:
    """``[[fx, 0, W/2], [0, fy, H/2], [0, 0, 1]]`` as float32 (3, 3), or (T, 3, 3) when ``num_frames`` is given."""
    K = reference_intrinsics(height, width, focal=float(fx)).numpy()
    if fy is not None:
        K[1, 1] = fy
    return K if num_frames is None else np.repeat(K[None], num_frames, 0)


def resize_intrinsics(K: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Intrinsics of an image resized from ``from_hw`` to ``to_hw`` (exact under the pixel-centre convention)."""
    import torch

    sx, sy = to_hw[1] / from_hw[1], to_hw[0] / from_hw[0]
    return scale_intrinsics(torch.as_tensor(np.asarray(K, np.float32)), sx, sy).numpy()


@dataclass(frozen=True)
class IntrinsicsPolicy:
    """How the intrinsics that go with the depth are chosen (module docstring); ``value`` = focal px or fov deg."""

    mode: str = "auto"
    value: float | None = None

    def __post_init__(self):
        if self.mode not in POLICIES:
            raise InputError(f"unknown intrinsics policy {self.mode!r}; choose one of {', '.join(POLICIES)}")
        if self.mode in ("focal", "fov"):
            if self.value is None or not math.isfinite(self.value) or self.value <= 0:
                raise InputError(f"the {self.mode} intrinsics policy needs a positive value, got {self.value}")
            if self.mode == "fov" and not self.value < 180:
                raise InputError(f"field of view must be below 180 degrees, got {self.value}")

    def known_focal(self, height: int, width: int, source_size: tuple[int, int] | None = None,
                    backend_estimates: bool = False) -> tuple[float, float] | None:
        """(fx, fy) in pixels at the working size (height, width), or None when the backend's estimate is wanted."""
        if self.mode == "estimate" or (self.mode == "auto" and backend_estimates):
            return None
        if self.mode in ("auto", "reference"):
            return REFERENCE_FOCAL_PX, REFERENCE_FOCAL_PX
        if self.mode == "fov":
            f = focal_from_fov(self.value, width)
            return f, f
        h0, w0 = source_size if source_size is not None else (height, width)
        return self.value * width / w0, self.value * height / h0


def make_policy(mode: str | None = None, focal_px: float | None = None, fov_deg: float | None = None) -> IntrinsicsPolicy:
    """Policy from CLI-style options; ``focal_px``/``fov_deg`` imply their mode and exclude each other."""
    if focal_px is not None and fov_deg is not None:
        raise InputError("give a focal length or a field of view, not both")
    if focal_px is not None or fov_deg is not None:
        wanted = "focal" if focal_px is not None else "fov"
        if mode not in (None, "auto", wanted):
            raise InputError(f"intrinsics policy {mode!r} contradicts the {wanted} given")
        return IntrinsicsPolicy(wanted, float(focal_px if focal_px is not None else fov_deg))
    return IntrinsicsPolicy(mode or "auto")
