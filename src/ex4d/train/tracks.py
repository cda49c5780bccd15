"""Tracking masks from point tracks (spec §9.2: the reference tracked points with CoTracker3).

A frame-0 hole is carried along sparse point tracks instead of dense optical flow: at every frame t the tracks
visible in both frame 0 and frame t give scattered samples of the *backward* map x_t -> x_0; a dense map is
interpolated from them (piecewise-linear over their Delaunay triangulation; beyond the tracks' hull it blends
towards the nearest track's displacement), and frame 0's hole is sampled once at the mapped points, as
:func:`ex4d.train.masks.propagate_hole` does with chained flow. Tracks are long-range correspondences, so nothing
is chained here: no drift accumulates over the clip.

Tracks are ``(T, N, 2)`` float pixel coordinates ``(x, y)`` in the project's convention (pixel (v, u) covers
``[u, u+1) x [v, v+1)``, its centre is ``(u + 0.5, v + 0.5)``) with ``visible: (T, N) bool``. They come from a
``<stem>.tracks.npz`` file beside a clip (:func:`load_tracks_file`) or from a tracker callable
``(frames: (T, H, W, 3) uint8) -> (tracks, visible)`` (``PairSettings(tracker=...)``). Only NumPy/SciPy: no
OpenCV needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ex4d.errors import InputError

__all__ = ["TRACKS_SUFFIX", "backward_maps", "check_tracks", "load_tracks_file", "tracks_mask", "tracks_path"]

#: A clip's tracks file is ``<stem>.tracks.npz`` beside it.
TRACKS_SUFFIX = ".tracks.npz"


def tracks_path(video: str | os.PathLike, name: str) -> Path:
    """Where the tracks file of clip ``name`` (video file or image folder ``video``) is looked for."""
    return Path(video).parent / f"{name}{TRACKS_SUFFIX}"


def check_tracks(tracks, visible, num_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise a tracker's output.

    Args:
        tracks: (T, N, 2) float pixel coordinates (x, y).
        visible: (T, N) bool (or numbers: > 0.5 = visible).
        num_frames: required T (None: any).

    Returns:
        ``(tracks (T, N, 2) float64, visible (T, N) bool)``; points with non-finite coordinates are invisible.

    Raises:
        InputError: wrong shapes.
    """
    tracks, visible = np.asarray(tracks), np.asarray(visible)
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise InputError(f"tracks must be (T, N, 2), got {tracks.shape}")
    if visible.shape != tracks.shape[:2]:
        raise InputError(f"visible must be {tracks.shape[:2]} like tracks' (T, N), got {visible.shape}")
    if num_frames is not None and tracks.shape[0] != num_frames:
        raise InputError(f"tracks cover {tracks.shape[0]} frames, need {num_frames}")
    tracks = tracks.astype(np.float64)
    visible = (visible > 0.5) if visible.dtype.kind == "f" else visible.astype(bool)
    return tracks, visible & np.isfinite(tracks).all(-1)


def load_tracks_file(path: str | os.PathLike, num_frames: int, size: tuple[int, int],
                     source_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``<stem>.tracks.npz`` and bring it to the working clip.

    The file holds ``tracks`` (T0, N, 2) (x, y) in the project's pixel convention and ``visible`` (T0, N), for the
    frames of the source video (``T0 >= num_frames``; the first ``num_frames`` are used, as the clip is cut), and
    optionally ``size`` = (H, W) of the frames the tracks were computed on (default ``source_size``).

    Args:
        path: the file.
        num_frames: frames of the working clip.
        size: (H, W) of the working clip; coordinates are scaled by W / W0 and H / H0 (exact in this convention,
            where the image spans [0, W0] x [0, H0]).
        source_size: (H0, W0) of the source video.

    Returns:
        ``(tracks (num_frames, N, 2), visible (num_frames, N) bool)`` in the working clip's pixels.

    Raises:
        InputError: missing/unreadable file, missing keys, wrong shapes, too few frames.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no tracks file {path.name} beside the clip (needed with --tracker tracks)")
    try:
        with np.load(path) as data:
            missing = [k for k in ("tracks", "visible") if k not in data.files]
            if missing:
                raise InputError(f"{path.name}: missing {', '.join(missing)} (has {', '.join(data.files)})")
            tracks, visible = data["tracks"], data["visible"]
            file_size = tuple(int(s) for s in np.asarray(data["size"]).ravel()) if "size" in data.files else None
    except InputError:
        raise
    except Exception as exc:  # not an npz, truncated, ...
        raise InputError(f"{path.name}: cannot read tracks ({type(exc).__name__}: {exc})") from None
    tracks, visible = check_tracks(tracks, visible)
    if tracks.shape[0] < num_frames:
        raise InputError(f"{path.name}: tracks cover {tracks.shape[0]} frames, need {num_frames}")
    if file_size is not None and (len(file_size) != 2 or min(file_size) <= 0):
        raise InputError(f"{path.name}: size must be (H, W), got {file_size}")
    h0, w0 = file_size if file_size is not None else source_size
    scale = np.array([size[1] / w0, size[0] / h0])
    return tracks[:num_frames] * scale, visible[:num_frames]


def _nearest_fill(points: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    _, idx = cKDTree(points).query(queries)
    return values[idx]


def _ring(points: np.ndarray, H: int, W: int, per_side: int = 16) -> np.ndarray:
    """(4 * per_side, 2) points on a rectangle 1 px outside both the image and ``points``' bounding box."""
    lo = np.minimum(points.min(0), 0.0) - 1.0
    hi = np.maximum(points.max(0), [W, H]) + 1.0
    s = np.linspace(0.0, 1.0, per_side, endpoint=False)[:, None]
    corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    return np.concatenate([a + s * (b - a) for a, b in zip(corners, np.roll(corners, -1, 0))])


def _rasterise_linear(points: np.ndarray, values: np.ndarray, simplices: np.ndarray, H: int, W: int,
                      chunk: int = 1 << 21) -> np.ndarray:
    """Piecewise-linear interpolation of ``values`` (M, 2) over triangles ``simplices`` (S, 3) of ``points`` (M, 2)
    at every pixel centre, by rasterising each triangle's bounding box.

    Returns:
        (H * W, 2) float64, NaN at pixels no triangle covers.

    Why not scipy's ``LinearNDInterpolator``: its point location computes barycentric transforms through LAPACK,
    whose first calls stalled for seconds (OpenBLAS threads) on a busy 2-core machine; this is plain NumPy.
    """
    tri, val = points[simplices], values[simplices]  # (S, 3, 2)
    a, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    lo, hi = tri.min(1), tri.max(1)
    # Pixel indices whose centres (index + 0.5) fall within each bounding box, clipped to the image.
    u0 = np.clip(np.ceil(lo[:, 0] - 0.5), 0, W).astype(np.int64)
    u1 = np.clip(np.floor(hi[:, 0] - 0.5), -1, W - 1).astype(np.int64)
    v0 = np.clip(np.ceil(lo[:, 1] - 0.5), 0, H).astype(np.int64)
    v1 = np.clip(np.floor(hi[:, 1] - 0.5), -1, H - 1).astype(np.int64)
    widths = np.maximum(u1 - u0 + 1, 0)
    counts = widths * np.maximum(v1 - v0 + 1, 0) * (np.abs(det) > 1e-12)  # flat triangles cover nothing
    field = np.full((H * W, 2), np.nan)
    ends = np.cumsum(counts)
    start = 0
    while start < len(counts):  # chunks of about ``chunk`` candidate pixels bound the memory
        stop = max(int(np.searchsorted(ends, ends[start] - counts[start] + chunk, "right")), start + 1)
        idx = np.arange(start, stop)
        n = counts[idx]
        k = np.repeat(idx, n)
        local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        u = u0[k] + local % widths[k]
        v = v0[k] + local // widths[k]
        dx, dy = u + 0.5 - a[k, 0], v + 0.5 - a[k, 1]
        l1 = (e2[k, 1] * dx - e2[k, 0] * dy) / det[k]
        l2 = (e1[k, 0] * dy - e1[k, 1] * dx) / det[k]
        l0 = 1.0 - l1 - l2
        inside = (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        k, l0, l1, l2 = k[inside], l0[inside, None], l1[inside, None], l2[inside, None]
        # A pixel on a shared edge is written by each of its triangles, with the same value.
        field[v[inside] * W + u[inside]] = l0 * val[k, 0] + l1 * val[k, 1] + l2 * val[k, 2]
        start = stop
    return field


def backward_maps(shape: tuple[int, int, int], tracks, visible) -> np.ndarray:
    """Dense frame-0 positions of every pixel of every frame, interpolated from point tracks.

    Args:
        shape: (T, H, W) of the clip.
        tracks: (T, N, 2) (x, y) in the project's pixel convention.
        visible: (T, N) bool.

    Returns:
        (T, H, W, 2) float32: ``maps[t, v, u]`` = the (x, y) in frame 0 of what frame t shows at pixel (v, u)
        (frame 0 is the identity: pixel centres). Uses the tracks visible in both frame 0 and frame t; a frame
        with none of them keeps the previous frame's map (the content is assumed not to move).
    """
    from scipy.spatial import Delaunay, QhullError

    T, H, W = shape
    tracks, visible = check_tracks(tracks, visible, T)
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    centres = np.stack([u.ravel(), v.ravel()], -1)
    maps = np.empty((T, H * W, 2), np.float32)
    maps[0] = centres
    for t in range(1, T):
        ok = visible[0] & visible[t]
        if not ok.any():
            maps[t] = maps[t - 1]
            continue
        here, disp = tracks[t, ok], tracks[0, ok] - tracks[t, ok]
        try:
            # Displacements, not positions, are interpolated; a ring of anchors around the image and the tracks,
            # carrying their nearest track's displacement, puts every pixel inside the triangulation.
            ring = _ring(here, H, W)
            points = np.concatenate([here, ring])
            values = np.concatenate([disp, _nearest_fill(here, disp, ring)])
            field = _rasterise_linear(points, values, Delaunay(points).simplices, H, W)
            missed = np.isnan(field[:, 0])  # rounding at the ring's edges; cannot happen in exact arithmetic
            if missed.any():
                field[missed] = _nearest_fill(here, disp, centres[missed])
        except (QhullError, ValueError):  # input Qhull rejects (the ring makes this all but impossible)
            field = _nearest_fill(here, disp, centres)
        maps[t] = centres + field
    return maps.reshape(T, H, W, 2)


def tracks_mask(shape: tuple[int, int, int], hole: np.ndarray, tracks, visible) -> np.ndarray:
    """A hole that moves with the scene: ``hole`` (in frame 0) carried along point tracks.

    Args:
        shape: (T, H, W) of the clip.
        hole: (H, W) bool, True = hidden, in frame 0's image.
        tracks: (T, N, 2) float (x, y) pixel coordinates, pixel centres at ``u + 0.5`` (docs/conventions.md).
        visible: (T, N) bool, True where the point is visible in that frame.

    Returns:
        (T, H, W) bool, True = kept, False = hidden; frame 0 is all True, as :func:`ex4d.train.masks.tracking_mask`.
        Pixels whose frame-0 origin lies outside frame 0 are kept.
    """
    from scipy.ndimage import map_coordinates

    T, H, W = (int(s) for s in shape)
    hole = np.asarray(hole, bool)
    if hole.shape != (H, W):
        raise ValueError(f"hole must be {(H, W)}, got {hole.shape}")
    maps = backward_maps((T, H, W), tracks, visible)
    source = hole.astype(np.float32)
    keep = np.ones((T, H, W), bool)
    for t in range(1, T):
        # Array index = continuous coordinate - 0.5; beyond frame 0's edges the region is empty (cval 0).
        rows, cols = maps[t, ..., 1] - 0.5, maps[t, ..., 0] - 0.5
        sampled = map_coordinates(source, [rows, cols], order=1, mode="grid-constant", cval=0.0)
        keep[t] = sampled < 0.5
    return keep
