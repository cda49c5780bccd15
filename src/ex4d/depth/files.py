"""The ``file`` backend: depth the user brings, and writers for the same formats.

Accepted inputs:

* ``.npz`` — array ``depth`` (or ``disparity``, or the archive's only array), (T, H, W) or (T, 1, H, W); optional
  ``intrinsics`` (3, 3) or (T, 3, 3) in pixels of those maps;
* ``.npy`` — (T, H, W) or (T, 1, H, W);
* a folder of per-frame images in natural name order (``2.png`` before ``10.png``): 16-bit (or 8-bit) grey PNG,
  or OpenEXR (single channel, or the first of RGB), read with PyAV.

Values are multiplied by ``scale`` (e.g. 0.001 for PNGs in millimetres). ``units="depth"``: z-depth; non-positive
values (a PNG's 0 = no measurement) are an error. ``units="disparity"``: a relative inverse depth, turned into depth
by the reference's conversion (spec §2.3; ``scale`` then does not matter). Maps of another size than the frames
are resized bilinearly when the aspect ratios agree (their intrinsics are scaled with them).
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ex4d.depth.base import DepthResult
from ex4d.depth.convert import disparity_to_depth
from ex4d.depth.intrinsics import resize_intrinsics
from ex4d.errors import InputError, load_failure
from ex4d.io.atomic import atomic_path

__all__ = ["FileDepthBackend", "UNITS", "FRAME_FORMATS", "load_depth_array", "save_depth_frames", "resize_maps"]

UNITS = ("depth", "disparity")
#: Per-frame image formats of a depth folder, by suffix.
FRAME_FORMATS = {".png": "png", ".exr": "exr"}


def _natural_key(name: str) -> tuple:
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", name.lower())))


def _read_frame(path: Path) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            name = frame.format.name
            if name.startswith(("gray16", "ya16", "rgb48", "rgba64")):
                arr = frame.to_ndarray(format="gray16le") if not name.startswith("gray16") else frame.to_ndarray()
                if name.startswith(("rgb48", "rgba64")):  # a colour 16-bit PNG: take the first channel
                    arr = frame.to_ndarray(format="rgb48le")[..., 0]
            elif "f32" in name or "f16" in name:
                arr = frame.to_ndarray()
                if arr.ndim == 3:  # gbrp(a)f32: first channel (R; depth EXRs store it in R or in all three)
                    arr = arr[..., 0]
            else:
                arr = frame.to_ndarray(format="gray")
    except InputError:
        raise
    except Exception as exc:  # av raises many types for unreadable images
        raise InputError(f"{path}: cannot read depth image ({type(exc).__name__}: {exc})") from None
    return np.asarray(arr).astype(np.float32 if arr.dtype != np.uint16 else np.float64)


def _load_folder(folder: Path) -> np.ndarray:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_FORMATS
             and not p.name.startswith(".")]
    if not files:
        raise InputError(f"{folder}: holds no depth frames ({'/'.join(s[1:] for s in FRAME_FORMATS)})")
    suffixes = {p.suffix.lower() for p in files}
    if len(suffixes) > 1:
        raise InputError(f"{folder}: mixes depth frame formats ({', '.join(sorted(suffixes))})")
    files.sort(key=lambda p: _natural_key(p.name))
    maps = [_read_frame(p) for p in files]
    for p, m in zip(files, maps):
        if m.shape != maps[0].shape:
            raise InputError(f"{folder}: depth frames differ in size ({files[0].name} is {maps[0].shape}, "
                             f"{p.name} is {m.shape})")
    return np.stack(maps)


def load_depth_array(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """(maps (T, H, W) float, intrinsics or None) from an npz/npy file or a folder of PNG/EXR frames.

    Raises:
        InputError: missing or unreadable path, no suitable array, wrong rank.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: depth file or folder not found")
    K = None
    if path.is_dir():
        maps = _load_folder(path)
    elif path.suffix.lower() in (".npz", ".npy"):
        try:
            data = np.load(path, allow_pickle=False)  # allow_pickle=False: a data file never runs code
            if isinstance(data, np.ndarray):
                maps = data
            else:
                with data:
                    names = data.files
                    key = next((k for k in ("depth", "disparity") if k in names), None)
                    if key is None:
                        arrays = [k for k in names if k != "intrinsics"]
                        if len(arrays) != 1:
                            raise InputError(f"{path}: expected an array 'depth' (found: "
                                             f"{', '.join(names) or 'nothing'})")
                        key = arrays[0]
                    # Arrays are read inside the try: a pickled (object) or truncated member fails only here.
                    maps = data[key]
                    K = data["intrinsics"] if "intrinsics" in names else None
        except InputError:
            raise
        except Exception as exc:  # numpy raises many types for a file that is not a clean npz/npy
            raise InputError(f"{path}: cannot read ({load_failure(exc)})") from None
    elif path.suffix.lower() in FRAME_FORMATS:
        maps = _read_frame(path)[None]
    else:
        raise InputError(f"{path}: unknown depth format; use .npz, .npy or a folder of 16-bit .png / .exr frames")
    maps = np.asarray(maps)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3 or not np.issubdtype(maps.dtype, np.number) or np.iscomplexobj(maps):
        raise InputError(f"{path}: depth must be a (T, H, W) numeric array, got shape {maps.shape} {maps.dtype}")
    return maps, None if K is None else np.asarray(K, np.float32)


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


def _check_K(K: np.ndarray, num_frames: int, path: Path) -> np.ndarray:
    try:
        K = np.asarray(K, np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{path}: expected intrinsics as a numeric (3, 3) array, found {np.asarray(K).dtype}") from None
    if K.shape == (3, 3):
        K = np.repeat(K[None], num_frames, 0)
    if K.shape != (num_frames, 3, 3):
        raise InputError(f"{path}: intrinsics must be (3, 3) or ({num_frames}, 3, 3), got {K.shape}")
    if not np.isfinite(K).all() or (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise InputError(f"{path}: intrinsics must be finite with positive focal lengths")
    return K.astype(np.float32)


class FileDepthBackend:
    """Depth read from the user's file or folder (module docstring)."""

    name = "file"

    def __init__(self, path: str | os.PathLike, units: str = "depth", scale: float = 1.0):
        if units not in UNITS:
            raise InputError(f"depth units must be one of {', '.join(UNITS)}, got {units!r}")
        if not np.isfinite(scale) or scale <= 0:
            raise InputError(f"depth scale must be positive, got {scale}")
        self.path, self.units, self.scale = Path(path), units, float(scale)
        self.maps, self.file_K = load_depth_array(self.path)

    @property
    def estimates_intrinsics(self) -> bool:
        return self.file_K is not None

    def estimate(self, frames: np.ndarray, focal_px: float | None = None, progress: bool = True) -> DepthResult:
        T, H, W = frames.shape[:3]
        maps = self.maps
        if maps.shape[0] != T:
            raise InputError(f"{self.path}: has {maps.shape[0]} depth maps but {T} video frames are used; "
                             f"pass --num-frames {maps.shape[0]} or depth with {T} frames")
        h, w = maps.shape[1:]
        if h < 2 or w < 2:
            raise InputError(f"{self.path}: depth maps must be at least 2×2, got {h}×{w}")
        if abs(W / H - w / h) > 0.02 * (W / H):
            raise InputError(f"{self.path}: depth maps are {h}×{w} (H×W) but the frames are {H}×{W}: "
                             f"aspect ratios differ")
        x = torch.from_numpy(np.asarray(maps, np.float64))
        if not torch.isfinite(x).all():
            raise InputError(f"{self.path}: depth contains NaN or inf values")
        if self.units == "depth":
            x = x * self.scale
            bad = int((x <= 0).sum())
            if bad:
                raise InputError(f"{self.path}: {bad} depth values are ≤ 0 (missing measurements?); depth must be "
                                 f"positive z-depth (use --depth-units disparity for inverse depth)")
            depth = resize_maps(x, H, W).float()
            kind = "given"
        else:
            depth = disparity_to_depth(resize_maps(x, H, W).float())
            kind = "relative"
        K = None
        if self.file_K is not None:
            K = resize_intrinsics(_check_K(self.file_K, T, self.path), (h, w), (H, W))
        return DepthResult(depth.numpy(), K, kind=kind, backend=self.name,
                           info={"source": str(self.path), "units": self.units, "scale": self.scale,
                                 "source_size": [h, w]})
