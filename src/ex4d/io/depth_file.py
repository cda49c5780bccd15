"""Depth files the user brings: the one reader and the one set of checks behind every command.

``ex4d recon --depth``, ``ex4d run --depth``, the web app's depth upload, ``ex4d depth --backend file`` and
``ex4d prepare`` (``<stem>.npz`` beside a clip) all read depth with :func:`read_depth_file` and check it with
:func:`check_depth_maps`, :func:`check_frames`, :func:`check_z_depth` and :func:`check_intrinsics`, so they accept
and refuse the same files. Accepted formats:

* ``.npz`` — array ``depth`` (or ``disparity``, or the archive's only array), (T, H, W) or (T, 1, H, W);
  optional ``intrinsics`` (3, 3) or (T, 3, 3) in pixels of those maps;
* ``.npy`` — (T, H, W) or (T, 1, H, W);
* a folder of per-frame images in natural name order (``2.png`` before ``10.png``): 16-bit (or 8-bit) grey PNG,
  or OpenEXR (single channel, or the first of RGB), read with PyAV; a single ``.png`` / ``.exr`` is one frame.

Frame counts: a file may hold more maps than the frames used (the first ones are taken, as frames are taken from
the start of a clip), never fewer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ex4d.errors import InputError, load_failure, option
from ex4d.utils.sorting import natural_key

__all__ = ["DepthFile", "DEPTH_SUFFIXES", "FRAME_FORMATS", "ASPECT_TOLERANCE", "read_depth_file", "load_depth_file",
           "check_depth_maps", "check_frames", "check_z_depth", "check_depth", "check_intrinsics", "check_aspect",
           "in_file"]

#: Single-file depth formats, by suffix.
DEPTH_SUFFIXES = (".npz", ".npy")
#: Per-frame image formats of a depth folder, by suffix.
FRAME_FORMATS = {".png": "png", ".exr": "exr"}
#: Largest relative difference of width/height ratios for depth maps and frames to count as one aspect ratio.
ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class DepthFile:
    """What a depth file holds, read but not yet checked against a clip.

    Attributes:
        maps: (T, H, W) numeric maps as stored (16-bit PNGs as float64).
        intrinsics: the file's intrinsics as stored ((3, 3) or (T, 3, 3) expected), or None.
        units: ``"disparity"`` when the file says so (an npz array named ``disparity``), else ``"depth"``.
        path: where it was read from.
    """

    maps: np.ndarray
    intrinsics: np.ndarray | None
    units: str
    path: Path


def read_depth_file(path: str | os.PathLike) -> DepthFile:
    """Read any accepted depth format (module docstring); checks the maps' rank and type, not their values.

    Raises:
        InputError: missing or unreadable path, no suitable array, wrong rank or type.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: depth file not found")
    K, units = None, "depth"
    if path.is_dir():
        maps = _read_folder(path)
    elif path.suffix.lower() in DEPTH_SUFFIXES:
        maps, K, units = _read_numpy(path)
    elif path.suffix.lower() in FRAME_FORMATS:
        maps = _read_frame(path)[None]
    else:
        raise InputError(f"{path}: unknown depth format; use .npz, .npy or a folder of 16-bit .png / .exr frames")
    with in_file(path):
        maps = check_depth_maps(maps)
    return DepthFile(maps, None if K is None else np.asarray(K), units, path)


def load_depth_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """(maps (T, H, W), intrinsics or None) of a z-depth file, for the commands that take z-depth as it is.

    Raises:
        InputError: as :func:`read_depth_file`, or the file holds a disparity (convert it first).
    """
    depth = read_depth_file(path)
    if depth.units != "depth":
        raise InputError(f"{depth.path}: holds a 'disparity' array, not z-depth; convert it with ex4d depth "
                         f"--backend file --depth-file {depth.path} --depth-units disparity")
    return depth.maps, depth.intrinsics


def check_depth_maps(maps) -> np.ndarray:
    """``maps`` as (T, H, W) numeric, at least one map of at least 2×2; (T, 1, H, W) is squeezed.

    Raises:
        InputError: wrong rank, non-numeric type, empty or smaller than 2×2.
    """
    maps = np.asarray(maps)
    if maps.ndim == 4 and maps.shape[1] == 1:  # (T, 1, H, W), as the reference stores it
        maps = maps[:, 0]
    if maps.ndim != 3 or not np.issubdtype(maps.dtype, np.number) or np.iscomplexobj(maps):
        raise InputError(f"expected a (T, H, W) numeric depth array, found shape {maps.shape} {maps.dtype}")
    if maps.shape[0] < 1:
        raise InputError("expected at least one depth map, found none")
    if maps.shape[1] < 2 or maps.shape[2] < 2:
        raise InputError(f"expected depth maps of at least 2×2, found {maps.shape[1]}×{maps.shape[2]}")
    return maps


def check_frames(maps: np.ndarray, num_frames: int) -> np.ndarray:
    """The first ``num_frames`` of (T, ...) ``maps``.

    Raises:
        InputError: fewer than ``num_frames`` maps (the message suggests taking fewer frames).
    """
    if len(maps) < num_frames:
        raise InputError(f"depth has {len(maps)} maps but {num_frames} video frames are used; pass "
                         f"{option('num_frames', len(maps))} or depth with {num_frames} maps")
    return maps[:num_frames]


def check_z_depth(depth) -> np.ndarray:
    """(T, H, W) z-depth as float32, finite and positive.

    Raises:
        InputError: NaN or inf (also float64 values beyond float32's range), zero or negative values.
    """
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, reported below
        depth = np.asarray(depth).astype(np.float32)
    finite = np.isfinite(depth)
    if not finite.all():
        t = int(np.argwhere(~finite)[0, 0])
        raise InputError(f"expected finite z-depth, found {int((~finite).sum())} NaN or inf values "
                         f"(first in frame {t})")
    if (depth <= 0).any():
        raise InputError(f"expected positive z-depth, found {int((depth <= 0).sum())} values ≤ 0 "
                         f"(minimum {depth.min():g}; a 0 often marks a missing measurement)")
    return depth


def check_depth(depth, num_frames: int) -> np.ndarray:
    """Validate z-depth for ``num_frames`` video frames; returns the first ``num_frames`` maps as float32.

    Raises:
        InputError: wrong rank or type, too few maps, maps below 2×2, non-finite or non-positive values.
    """
    return check_z_depth(check_frames(check_depth_maps(depth), num_frames))


def check_intrinsics(K, num_frames: int, what: str = "intrinsics") -> np.ndarray:
    """Validate (3, 3) or (T, 3, 3) pixel intrinsics (T ≥ ``num_frames``: the first are taken); returns
    (num_frames, 3, 3) float32.

    Raises:
        InputError: not numeric, wrong shape, too few matrices, non-finite values or non-positive focal lengths.
    """
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"expected {what} as a (3, 3) or ({num_frames}, 3, 3) numeric array, "
                         f"found {type(K).__name__}") from None
    if K.shape == (3, 3):
        K = np.repeat(K[None], num_frames, 0)
    if K.ndim != 3 or K.shape[1:] != (3, 3) or len(K) < num_frames:
        raise InputError(f"{what} must be (3, 3) or ({num_frames}, 3, 3), got {K.shape}")
    K = K[:num_frames]
    if not np.isfinite(K).all() or (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise InputError(f"{what} must be finite with positive focal lengths")
    return K.astype(np.float32)


def check_aspect(depth_size: tuple[int, int], frame_size: tuple[int, int], frames: str = "the video is") -> None:
    """The one aspect-ratio rule: depth maps (H, W) fit frames (H0, W0) when W/H is within 2 % of W0/H0.

    Raises:
        InputError: the ratios differ by more.
    """
    (hd, wd), (h0, w0) = depth_size, frame_size
    if abs(w0 / h0 - wd / hd) > ASPECT_TOLERANCE * (w0 / h0):
        raise InputError(f"depth maps are {hd}×{wd} (H×W) but {frames} {h0}×{w0}: aspect ratios differ")


@contextmanager
def in_file(path: str | os.PathLike) -> Iterator[None]:
    """Prefix ``path`` to an :class:`InputError` raised inside (the checks know the array, not the file)."""
    try:
        yield
    except InputError as exc:
        exc.args = (f"{path}: {exc.args[0]}",) + exc.args[1:]
        raise


# -- readers ------------------------------------------------------------------------------------------------------

def _read_numpy(path: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    K, units = None, "depth"
    try:
        data = np.load(path, allow_pickle=False)  # allow_pickle=False: a data file never runs code
        if isinstance(data, np.ndarray):
            return data, None, units
        with data:
            names = data.files
            key = next((k for k in ("depth", "disparity") if k in names), None)
            if key is None:
                arrays = [k for k in names if k != "intrinsics"]
                if len(arrays) != 1:
                    raise InputError(f"{path}: expected an array 'depth' (found: {', '.join(names) or 'nothing'})")
                key = arrays[0]
            units = "disparity" if key == "disparity" else "depth"
            # Arrays are read inside the try: a pickled (object) or truncated member fails only here.
            maps = data[key]
            K = data["intrinsics"] if "intrinsics" in names else None
    except InputError:
        raise
    except Exception as exc:  # numpy raises many types for a file that is not a clean npz/npy
        raise InputError(f"{path}: cannot read depth file ({load_failure(exc)})") from None
    return maps, K, units


def _read_frame(path: Path) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            name = frame.format.name
            if name.startswith(("rgb48", "rgba64")):  # a colour 16-bit PNG: take the first channel
                arr = frame.to_ndarray(format="rgb48le")[..., 0]
            elif name.startswith(("gray16", "ya16")):
                arr = frame.to_ndarray() if name.startswith("gray16") else frame.to_ndarray(format="gray16le")
            elif "f32" in name or "f16" in name:
                arr = frame.to_ndarray()
                if arr.ndim == 3:  # gbrp(a)f32: first channel (R; depth EXRs store it in R or in all three)
                    arr = arr[..., 0]
            else:
                arr = frame.to_ndarray(format="gray")
    except Exception as exc:  # av raises many types for unreadable images
        raise InputError(f"{path}: cannot read depth image ({type(exc).__name__}: {exc})") from None
    return np.asarray(arr).astype(np.float32 if arr.dtype != np.uint16 else np.float64)


def _read_folder(folder: Path) -> np.ndarray:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_FORMATS
             and not p.name.startswith(".")]
    if not files:
        raise InputError(f"{folder}: holds no depth frames ({'/'.join(s[1:] for s in FRAME_FORMATS)})")
    suffixes = {p.suffix.lower() for p in files}
    if len(suffixes) > 1:
        raise InputError(f"{folder}: mixes depth frame formats ({', '.join(sorted(suffixes))})")
    files.sort(key=lambda p: natural_key(p.name))
    maps = [_read_frame(p) for p in files]
    for p, m in zip(files, maps):
        if m.shape != maps[0].shape:
            raise InputError(f"{folder}: depth frames differ in size ({files[0].name} is {maps[0].shape}, "
                             f"{p.name} is {m.shape})")
    return np.stack(maps)
