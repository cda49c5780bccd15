"""What every depth backend returns, and the interface it implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

__all__ = ["DepthResult", "DepthBackend", "DEPTH_KINDS"]

#: ``relative``: arbitrary but clip-consistent scale (the reference's §2.3 conversion of a relative disparity);
#: ``metric``: metres from a metric model; ``given``: the user's own depth, in the user's units.
DEPTH_KINDS = ("relative", "metric", "given")


@dataclass
class DepthResult:
    """Depth maps of a clip.

    Attributes:
        depth: (T, H, W) float32 z-depth (camera-space Z, never ray distance), positive and finite, at the size of
            the frames that were passed in.
        intrinsics: (T, 3, 3) float32 pixel intrinsics for those frames, or None when the backend has no estimate
            (the caller's intrinsics policy then decides, see :mod:`ex4d.depth.intrinsics`).
        kind: one of :data:`DEPTH_KINDS`.
        backend: registry name of the backend that made it.
        info: small JSON-friendly facts (estimated field of view, alignment scales, windows, ...).
    """

    depth: np.ndarray
    intrinsics: np.ndarray | None = None
    kind: str = "relative"
    backend: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        depth = np.asarray(self.depth)
        if depth.ndim != 3:
            raise ValueError(f"depth must be (T, H, W), got shape {depth.shape}")
        self.depth = depth.astype(np.float32, copy=False)
        if self.intrinsics is not None:
            K = np.asarray(self.intrinsics, dtype=np.float32)
            if K.shape == (3, 3):
                K = np.repeat(K[None], depth.shape[0], 0)
            if K.shape != (depth.shape[0], 3, 3):
                raise ValueError(f"intrinsics must be (3, 3) or ({depth.shape[0]}, 3, 3), got {K.shape}")
            self.intrinsics = K
        if self.kind not in DEPTH_KINDS:
            raise ValueError(f"kind must be one of {DEPTH_KINDS}, got {self.kind!r}")

    @property
    def num_frames(self) -> int:
        return int(self.depth.shape[0])


@runtime_checkable
class DepthBackend(Protocol):
    """A depth estimator. Constructed with its own options (model id/folder, device, dtype, ...), then called.

    ``estimate`` receives the clip's frames and, when the caller already knows it, the focal length (pixels at the
    frames' size) that will go with the depth: metric backends that convert through a focal (Depth Pro) use it;
    the others ignore it. With ``focal_px=None`` a backend that can estimate intrinsics uses and returns its
    estimate; one that cannot returns ``intrinsics=None``.
    """

    name: ClassVar[str]

    def estimate(self, frames: np.ndarray, focal_px: float | None = None, progress: bool = True) -> DepthResult:
        """frames: (T, H, W, 3) uint8 RGB -> :class:`DepthResult` at (T, H, W)."""
        ...
