"""The ``file`` backend: depth the user brings, and writers for the same formats.

Files are read and checked by :mod:`ex4d.io.depth_file` (the reader every command shares): ``.npz`` (``depth``,
``disparity`` or the only array; optional ``intrinsics``), ``.npy``, or a folder of 16-bit grey PNG / OpenEXR frames
in natural name order.

Values are multiplied by ``scale`` (e.g. 0.001 for PNGs in millimetres). ``units="depth"``: z-depth; non-positive
values (a PNG's 0 = no measurement) are an error. ``units="disparity"``: a relative inverse depth, turned into depth
by the reference's conversion (spec §2.3; ``scale`` then does not matter); default: disparity for an npz array named
``disparity``, else depth. Maps of another size than the frames are resized bilinearly when the aspect ratios agree
(their intrinsics are scaled with them); extra maps beyond the frames used are ignored.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ex4d.depth.base import DepthResult
from ex4d.depth.convert import disparity_to_depth
from ex4d.depth.intrinsics import resize_intrinsics
from ex4d.errors import InputError
from ex4d.io.atomic import atomic_path
from ex4d.io.depth_file import (FRAME_FORMATS, in_file, check_aspect, check_frames, check_intrinsics, check_z_depth,
                                read_depth_file)

__all__ = ["FileDepthBackend", "UNITS", "FRAME_FORMATS", "load_depth_array", "save_depth_frames", "resize_maps"]

UNITS = ("depth", "disparity")


def load_depth_array(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """(maps (T, H, W), intrinsics or None) of any accepted depth file or folder (:func:`read_depth_file`).

    Raises:
        InputError: missing or unreadable path, no suitable array, wrong rank.
    """
    depth = read_depth_file(path)
    return depth.maps, None if depth.intrinsics is None else np.asarray(depth.intrinsics)


def resize_maps(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of (T, H, W) maps (pixel-centre aligned, as the intrinsics scaling assumes)."""
    if tuple(maps.shape[-2:]) == (height, width):
        return maps
    return F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def save_depth_frames(folder: str | os.PathLike, depth: np.ndarray, fmt: str = "png", scale: float = 1.0,
                      prefix: str = "depth_") -> list[Path]:
    """Write (T, H, W) maps as ``prefix0000.png`` (16-bit grey, ``round(value / scale)``) or ``.exr`` (float32).

    PNG values must fit 0..65535 after scaling (e.g. ``scale=0.001`` stores millimetres).
    """
    import av
    from av.codec import CodecContext

    if fmt not in ("png", "exr"):
        raise ValueError(f"fmt must be 'png' or 'exr', got {fmt!r}")
    depth = np.asarray(depth)
    if depth.ndim != 3:
        raise ValueError(f"depth must be (T, H, W), got {depth.shape}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, m in enumerate(depth):
        if fmt == "png":
            q = np.round(m.astype(np.float64) / scale)
            if q.min() < 0 or q.max() > 65535:
                raise ValueError(f"frame {t}: values / scale span [{q.min():g}, {q.max():g}], outside 16 bits")
            arr, pix = q.astype(np.uint16), "gray16be"
        else:
            arr, pix = np.ascontiguousarray(m, np.float32), "grayf32le"
        cc = CodecContext.create(fmt, "w")
        cc.width, cc.height, cc.pix_fmt, cc.time_base = m.shape[1], m.shape[0], pix, Fraction(1, 1)
        frame = av.VideoFrame.from_ndarray(arr, format=pix)
        frame.pts = 0
        data = b"".join(bytes(p) for p in cc.encode(frame) + cc.encode(None))
        path = folder / f"{prefix}{t:04d}.{fmt}"
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        paths.append(path)
    return paths


class FileDepthBackend:
    """Depth read from the user's file or folder (module docstring)."""

    name = "file"

    def __init__(self, path: str | os.PathLike, units: str | None = None, scale: float = 1.0):
        if units is not None and units not in UNITS:
            raise InputError(f"must be one of {', '.join(UNITS)}, got {units!r}", argument="units")
        if not np.isfinite(scale) or scale <= 0:
            raise InputError(f"must be positive, got {scale}", argument="scale")
        read = read_depth_file(path)
        self.path, self.units, self.scale = read.path, units or read.units, float(scale)
        self.maps, self.file_K = read.maps, read.intrinsics

    @property
    def estimates_intrinsics(self) -> bool:
        return self.file_K is not None

    def estimate(self, frames: np.ndarray, focal_px: float | None = None, progress: bool = True) -> DepthResult:
        T, H, W = frames.shape[:3]
        with in_file(self.path):
            maps = check_frames(self.maps, T)
            h, w = maps.shape[1:]
            check_aspect((h, w), (H, W), "the frames are")
        x = torch.from_numpy(np.asarray(maps, np.float64))
        if not torch.isfinite(x).all():
            raise InputError(f"{self.path}: depth contains NaN or inf values")
        if self.units == "depth":
            x = x * self.scale
            with in_file(self.path):
                check_z_depth(x.numpy())  # the shared z-depth check, after the scale
            depth = resize_maps(x, H, W).float()
            kind = "given"
        else:
            depth = disparity_to_depth(resize_maps(x, H, W).float())
            kind = "relative"
        K = None
        if self.file_K is not None:
            with in_file(self.path):
                K = resize_intrinsics(check_intrinsics(self.file_K, T), (h, w), (H, W))
        return DepthResult(depth.numpy(), K, kind=kind, backend=self.name,
                           info={"source": str(self.path), "units": self.units, "scale": self.scale,
                                 "source_size": [h, w]})
