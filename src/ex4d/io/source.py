"""A clip with its depth, read under the one working-size and frame-count policy of ``recon``, ``run`` and the UI.

Working size (:func:`working_size`): ``--height``/``--width`` when given, else the depth maps' size when depth is
given (the video is resized to it; aspect ratios must agree), else :func:`ex4d.io.video.reference_size` of the
video. Sides are even (every output is H.264 yuv420p) and at least 2.

Frame count: ``num_frames`` is at most that many frames from the start; a shorter clip is taken whole, and the
depth must hold at least one map per frame taken (:func:`ex4d.io.depth_file.check_frames`).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ex4d.errors import InputError, about, option
from ex4d.geometry.conventions import reference_intrinsics
from ex4d.io.depth_file import (DepthFile, check_aspect, check_depth, check_depth_maps, check_intrinsics,
                                in_file, load_depth_file, read_depth_file)
from ex4d.io.video import Video, load_video, probe_video, reference_size

__all__ = ["Source", "working_size", "check_output_size", "load_source", "match_video", "load_working_video"]


@dataclass(frozen=True)
class Source:
    """A clip ready for the DW-Mesh.

    Attributes:
        video: frames (T, H, W, 3) uint8 at the working size.
        depth: (T, H, W) float32 z-depth, checked.
        K: (T, 3, 3) float32 source intrinsics: the depth file's, else the reference's (f = 500 px, centred).
        file_intrinsics: whether ``K`` came from the depth file.
    """

    video: Video
    depth: np.ndarray
    K: np.ndarray
    file_intrinsics: bool


def check_output_size(height: int, width: int) -> None:
    """Refuse a working size the H.264 (yuv420p) outputs cannot have: sides below 2 or odd."""
    if height < 2 or width < 2:
        raise InputError(f"expected depth maps of at least 2×2, found {height}×{width}")
    if height % 2 or width % 2:
        raise InputError(f"expected even height and width for the H.264 outputs, found depth maps of "
                         f"{height}×{width}; crop or resize the depth maps by one pixel")


def working_size(video_size: tuple[int, int], depth_size: tuple[int, int] | None = None,
                 height: int | None = None, width: int | None = None,
                 depth_path: str | os.PathLike | None = None, argument: str = "depth") -> tuple[int, int]:
    """The working (H, W) of a video of ``video_size`` (H0, W0) with depth maps of ``depth_size`` (or no depth);
    ``depth_path`` (the depth file, if any) is named in the errors about the maps, which are attributed to
    ``argument``.

    Raises:
        InputError: only one of height/width, a size other than the depth maps', aspect ratios that differ
            (attributed to ``depth``), odd or tiny depth maps.
    """
    if (height is None) != (width is None):
        raise InputError(f"give both {option('height')} and {option('width')}, or neither")
    if depth_size is None:
        return (height, width) if height is not None else reference_size(*video_size)
    depth_size = (int(depth_size[0]), int(depth_size[1]))
    with about(argument), _in_file(depth_path):
        if height is not None and (height, width) != depth_size:
            raise InputError(f"depth maps are {depth_size[0]}×{depth_size[1]} but {option('height')}/"
                             f"{option('width')} ask for {height}×{width}")
        check_aspect(depth_size, video_size)
        check_output_size(*depth_size)
    return depth_size


def load_working_video(input_video: str | os.PathLike, num_frames: int | None = 49, height: int | None = None,
                       width: int | None = None, depth_file: str | os.PathLike | None = None) -> Video:
    """The clip's frames at the working size, for a depth stage that has no z-depth yet.

    With ``depth_file`` (the ``file`` depth backend's input) and no ``height``/``width``, the file's maps set the
    size, as :func:`load_source` does for a z-depth file; else ``height``/``width`` or the reference's rule (the
    backend then resizes the file's maps).

    Raises:
        InputError: bad video or size options (as :func:`~ex4d.io.video.load_video`), or attributed to
            ``depth_file``.
    """
    if depth_file is not None and height is None and width is None:
        with about("depth_file"):
            maps = read_depth_file(depth_file).maps
        with about("input_video"):
            info = probe_video(input_video)
        height, width = working_size((info["height"], info["width"]), maps.shape[1:], depth_path=depth_file,
                                     argument="depth_file")
    # Not attributed to input_video: a lone --height is no fault of the video (a file's errors name its path).
    return load_video(input_video, num_frames=num_frames, height=height, width=width)


def _read_depth(depth) -> tuple[np.ndarray, np.ndarray | None, Path | None]:
    """(maps (T, H, W), file intrinsics or None, file path or None) of any depth argument."""
    with about("depth"):
        if isinstance(depth, DepthFile):
            if depth.units != "depth":
                raise InputError(f"{depth.path}: holds a 'disparity' array, not z-depth")
            return depth.maps, depth.intrinsics, depth.path
        if isinstance(depth, (str, os.PathLike)):
            return *load_depth_file(depth), Path(depth)
        return check_depth_maps(depth), None, None


def load_source(input_video: str | os.PathLike, depth: str | os.PathLike | DepthFile | np.ndarray,
                num_frames: int | None = 49, height: int | None = None, width: int | None = None,
                intrinsics: np.ndarray | None = None) -> Source:
    """Read a clip and its depth and check them against each other (module docstring).

    Args:
        input_video: video file or image folder.
        depth: a depth file or folder (:mod:`ex4d.io.depth_file`), a read :class:`DepthFile`, or (T, H, W) z-depth.
        num_frames: at most this many frames from the start (``None`` or 0: all).
        height, width: working size; default: the depth maps'.
        intrinsics: (3, 3) or (T, 3, 3) source intrinsics overriding the depth file's.

    Raises:
        InputError: attributed to ``input_video``, ``depth``, ``intrinsics`` or a size option.
    """
    maps, K, path = _read_depth(depth)
    with about("input_video"):
        info = probe_video(input_video)
    size = working_size((info["height"], info["width"]), maps.shape[1:], height, width, path)
    with about("input_video"):
        video = load_video(input_video, num_frames=num_frames, height=size[0], width=size[1])
    return _matched(video, maps, K, path, intrinsics)


def match_video(video: Video, depth: str | os.PathLike | DepthFile | np.ndarray,
                intrinsics: np.ndarray | None = None) -> Source:
    """:func:`load_source` for frames already loaded: the depth must have their size and at least their count.

    Raises:
        InputError: as :func:`load_source`.
    """
    maps, K, path = _read_depth(depth)
    with about("depth"), _in_file(path):
        if maps.shape[1:] != video.frames.shape[1:3]:
            raise InputError(f"video frames are {video.height}×{video.width} but depth maps are "
                             f"{maps.shape[1]}×{maps.shape[2]}")
    return _matched(video, maps, K, path, intrinsics)


def _in_file(path: str | os.PathLike | None):
    return in_file(path) if path is not None else nullcontext()


def _matched(video: Video, maps: np.ndarray, K, path: Path | None, intrinsics) -> Source:
    T, size = video.num_frames, (video.height, video.width)
    with about("depth"), _in_file(path):
        depth = check_depth(maps, T)
    given = intrinsics if intrinsics is not None else K
    with about("depth" if intrinsics is None else "intrinsics"), _in_file(None if intrinsics is not None else path):
        if given is None:
            given = reference_intrinsics(*size).numpy()
        K_all = check_intrinsics(given, T)
    return Source(video, depth, K_all, file_intrinsics=intrinsics is None and K is not None)
