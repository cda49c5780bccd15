"""Reading and writing videos (PyAV), with the reference's frame-count and size policy.

Frames at this boundary are ``(T, H, W, 3) uint8`` RGB (see :mod:`ex4d.geometry.conventions`).
Frame count: ``num_frames`` is *at most* that many frames; a shorter clip is taken whole (a short clip is an
ordinary input). Input problems (missing file, undecodable data, bad size options) raise
:class:`ex4d.errors.InputError` with a one-line message naming the path or the option; misuse of
:func:`save_video` (wrong dtype or shape) is a programming error and raises :class:`ValueError`.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ex4d.errors import InputError, InputWarning, option
from ex4d.io.atomic import atomic_path
from ex4d.io.resize import resize_linear_u8
from ex4d.utils.sorting import natural_key

__all__ = ["Video", "IMAGE_EXTENSIONS", "reference_size", "load_video", "save_video", "probe_video"]

#: File extensions read from an image folder (case-insensitive).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})

#: Frame rate given to image folders, which carry none.
FOLDER_FPS = 30.0

SAMPLINGS = ("first", "uniform")

#: Source frames above this many pixels (4K UHD) get a note that they are downscaled while decoding.
LARGE_FRAME_PIXELS = 3840 * 2160

# Everything PyAV raises for bad input: FFmpegError covers InvalidDataError, av's FileNotFoundError etc.;
# OSError and EOFError for file-level failures outside libav.
_AV_ERRORS = (av.error.FFmpegError, OSError, EOFError)

# Container formats save_video writes, by suffix; all take H.264 and +faststart.
_WRITE_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}


@dataclass
class Video:
    """Decoded frames plus what is needed to write them back out.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB, already resized.
        fps: frame rate of the source (30 for image folders); with ``sampling="uniform"`` the frames are
            spread over the whole clip, so this is not their spacing.
        source_size: (H0, W0) of the source before resizing (after applying rotation metadata).
    """

    frames: np.ndarray
    fps: float
    source_size: tuple[int, int]

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


def reference_size(h0: int, w0: int, max_res: int = 1024, multiple: int = 64) -> tuple[int, int]:
    """The reference's working resolution for a source of size (h0, w0).

    Each side is rounded to the nearest multiple of ``multiple`` (Python's ``round``, half to even). If
    the longer result exceeds ``max_res``, the *original* size is scaled so its longer side is
    ``max_res`` and rounded again. A side never rounds to 0 (it becomes ``multiple``).

    Examples: 512x512 -> 512x512; 1080x1920 -> 576x1024; 720x1280 -> 576x1024 (H x W).

    Returns:
        (h, w), both multiples of ``multiple``.
    """
    if h0 <= 0 or w0 <= 0 or max_res <= 0 or multiple <= 0:
        raise ValueError(f"sizes must be positive, got h0={h0}, w0={w0}, max_res={max_res}, multiple={multiple}")
    h1 = round(h0 / multiple) * multiple
    w1 = round(w0 / multiple) * multiple
    if max(h1, w1) > max_res:
        s = max_res / max(h0, w0)
        h1 = round(h0 * s / multiple) * multiple
        w1 = round(w0 * s / multiple) * multiple
    return max(h1, multiple), max(w1, multiple)


def _list_images(folder: Path) -> list[Path]:
    files = [
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def _reason(exc: BaseException) -> str:
    """A short one-line description of a libav / OS error (without PyAV's repeated file name)."""
    msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(msg).split())


def _sample_indices(total: int, num_frames: int | None, sampling: str) -> list[int]:
    """Indices of the frames to keep out of ``total``: all of them when ``num_frames`` is 0/None or ≥ ``total``."""
    if not num_frames or num_frames >= total:
        return list(range(total))
    if sampling == "first":
        return list(range(num_frames))
    return [int(i) for i in np.round(np.linspace(0, total - 1, num_frames))]


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """Decoded frame -> (H, W, 3) uint8 RGB, turned upright according to its display matrix."""
    rgb = frame.to_ndarray(format="rgb24")
    # `rotation` is the counter-clockwise angle to apply for display (phones store portrait clips
    # as landscape plus this tag); np.rot90 also turns counter-clockwise.
    k = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def _resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of one (H, W, 3) uint8 frame: OpenCV's INTER_LINEAR bit for bit, as the reference reads."""
    return resize_linear_u8(rgb, height, width)


def _open(path: Path):
    """Open a media file for reading; returns (container, first video stream)."""
    try:
        container = av.open(str(path))
    except _AV_ERRORS as e:
        raise InputError(f"{path}: not a readable video or image ({_reason(e)})") from e
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads; decoding dominates load time
    return container, stream


def _decode(
    path: Path, keep: Callable[[int], bool], stop: int | None = None,
    convert: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[int, np.ndarray | None]]:
    """Yield (index, RGB frame or None when not kept) for the frames of a video file, in order.

    Stops after ``stop`` frames if given; ``convert`` (e.g. a resize) is applied to each kept frame as soon as
    it is decoded, so only one source-size frame is ever held. Any libav error becomes an :class:`InputError`.
    """
    container, stream = _open(path)
    with container:
        frames = container.decode(stream)
        index = 0
        while stop is None or index < stop:
            try:
                frame = next(frames)
                # Only convert frames we keep: conversion costs about as much as decoding.
                rgb = _to_rgb(frame) if keep(index) else None
                if rgb is not None and convert is not None:
                    rgb = convert(rgb)
            except StopIteration:
                return
            except _AV_ERRORS as e:
                raise InputError(f"{path}: cannot decode frame {index} ({_reason(e)})") from e
            yield index, rgb
            index += 1


def _count_packets(path: Path) -> int:
    """Cheap estimate of a video's frame count: demux without decoding."""
    container, stream = _open(path)
    with container:
        try:
            # The demuxer ends with an empty flush packet per stream; it holds no frame.
            return sum(1 for packet in container.demux(stream) if packet.size)
        except _AV_ERRORS as e:
            raise InputError(f"{path}: cannot read ({_reason(e)})") from e


def _fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0 and math.isfinite(float(rate)):
            return float(rate)
    return FOLDER_FPS


def _read_image(path: Path) -> np.ndarray:
    for _, rgb in _decode(path, keep=lambda i: True, stop=1):
        return rgb
    raise InputError(f"{path}: image holds no frame")


def _as_int(value) -> int | None:
    """``value`` as an int if it is an integer (Python or numpy, not bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _check_options(num_frames, height, width, sampling) -> tuple[int | None, int | None, int | None]:
    """Validate the user's options; returns (num_frames, height, width) as plain ints (or None)."""
    # Option errors name the option (argument=...), which the CLI shows as its flag (--num-frames).
    if sampling not in SAMPLINGS:
        raise InputError(f"must be one of {', '.join(SAMPLINGS)}, got {sampling!r}", argument="sampling")
    if num_frames is not None:
        n = _as_int(num_frames)
        if n is None or n < 0:
            raise InputError(f"must be a whole number ≥ 0 (0 = all frames), got {num_frames!r}",
                             argument="num_frames")
        num_frames = n
    if (height is None) != (width is None):
        raise InputError(f"give both {option('height')} and {option('width')}, or neither")
    if height is None:
        return num_frames, None, None
    sizes = []
    for name, value in (("height", height), ("width", width)):
        size = _as_int(value)
        if size is None or size <= 0:
            raise InputError(f"must be a positive whole number, got {value!r}", argument=name)
        if size % 2:
            # H.264 with 4:2:0 chroma, which every output goes through, needs even sizes.
            raise InputError(f"must be even (H.264 yuv420p), got {size}", argument=name)
        sizes.append(size)
    return num_frames, sizes[0], sizes[1]


def load_video(
    path: str | os.PathLike,
    num_frames: int | None = 49,
    height: int | None = None,
    width: int | None = None,
    sampling: str = "first",
    max_res: int = 1024,
) -> Video:
    """Load a video file (mp4/mov/webm/mkv/avi/gif/...) or a folder of images as RGB frames.

    Image folders (png/jpg/jpeg/bmp/webp) are read in natural file-name order (``2.png`` before
    ``10.png``) at 30 fps; other files in them are ignored. Rotation metadata (phone videos) is applied.

    Args:
        path: video file or image folder.
        num_frames: at most this many frames (a shorter clip is taken whole); ``None`` or 0 keeps all.
        height, width: output size; both or neither. Neither: :func:`reference_size` of the source.
        sampling: ``"first"`` keeps the first ``num_frames`` frames (the reference's behaviour);
            ``"uniform"`` spreads them over the whole clip (indices ``round(linspace(0, T-1, N))``).
        max_res: longest side allowed by :func:`reference_size`.

    Returns:
        A :class:`Video` with frames (N, height, width, 3) uint8 RGB, resized bilinearly (as OpenCV's
        INTER_LINEAR) only if the size changes.

    Raises:
        InputError: missing or unreadable path, no video stream, no frames, empty folder, images of different
            sizes, or bad options.
    """
    path = Path(path)
    num_frames, height, width = _check_options(num_frames, height, width, sampling)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")

    if path.is_dir():
        files = _list_images(path)
        if not files:
            exts = "/".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
            raise InputError(f"{path}: folder holds no images ({exts})")
        chosen = [files[i] for i in _sample_indices(len(files), num_frames, sampling)]
        shrink = _Shrink(path, height, width, max_res)
        frames = []
        for f in chosen:
            img = _read_image(f)
            if frames and img.shape[:2] != shrink.source_size:
                first = shrink.source_size
                raise InputError(
                    f"{path}: images differ in size ({chosen[0].name} is {first[0]}x{first[1]}, "
                    f"{f.name} is {img.shape[0]}x{img.shape[1]})"
                )
            frames.append(shrink(img))
        fps = FOLDER_FPS
    else:
        container, stream = _open(path)
        with container:
            fps = _fps(stream)
        shrink = _Shrink(path, height, width, max_res)
        frames = _read_video_frames(path, num_frames, sampling, shrink)
    return Video(frames=np.stack(frames), fps=fps, source_size=shrink.source_size)


class _Shrink:
    """Resizes each decoded frame to the working size (fixed by the first frame when not given).

    Why: decoding a whole clip at source size first would hold T full frames, an out-of-memory crash for
    very large videos; resizing frame by frame holds one. Frames whose size changes mid-stream are resized to
    the same working size, so the clip stays stackable.
    """

    def __init__(self, path: Path, height: int | None, width: int | None, max_res: int):
        self.path, self.size, self.max_res = path, (height, width), max_res
        self.source_size: tuple[int, int] | None = None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if self.source_size is None:
            h0, w0 = rgb.shape[:2]
            self.source_size = (h0, w0)
            if self.size[0] is None:
                self.size = reference_size(h0, w0, max_res=self.max_res)
            if h0 * w0 > LARGE_FRAME_PIXELS:
                warnings.warn(f"{self.path}: frames are {h0}×{w0} (H×W), larger than 4K; each is downscaled to "
                              f"{self.size[0]}×{self.size[1]} as it is decoded", InputWarning, stacklevel=2)
        return _resize(rgb, *self.size)


def _read_video_frames(path: Path, num_frames: int | None, sampling: str,
                       convert: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """Decode the frames of a video file that ``num_frames``/``sampling`` select, each passed through ``convert``."""
    if not num_frames or sampling == "first":
        out = [rgb for _, rgb in _decode(path, keep=lambda i: True, stop=num_frames or None, convert=convert)]
        if not out:
            raise InputError(f"{path}: no frames could be decoded")
        return out

    # Uniform sampling needs the total first. Demuxing gives it without decoding; if decoding then finds
    # a different count (rare: dropped or edit-listed frames), decode once more with the true total.
    total = _count_packets(path)
    for _ in range(2):
        if total < 1:
            raise InputError(f"{path}: no frames could be decoded")
        wanted = set(_sample_indices(total, num_frames, sampling))
        kept, decoded = {}, 0
        for index, rgb in _decode(path, keep=wanted.__contains__, convert=convert):
            decoded = index + 1
            if rgb is not None:
                kept[index] = rgb
        if decoded == total:
            return [kept[i] for i in sorted(kept)]
        total = decoded
    raise InputError(f"{path}: frame count changes between reads ({total})")


def probe_video(path: str | os.PathLike) -> dict:
    """Cheap facts about a video file or image folder, without decoding the whole clip.

    Returns:
        ``{"frames": int, "fps": float, "height": int, "width": int}``; ``frames`` comes from the container
        header, else from counting packets; ``height``/``width`` are after rotation metadata.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = _list_images(path)
        if not files:
            raise InputError(f"{path}: folder holds no images")
        h, w = _read_image(files[0]).shape[:2]
        return {"frames": len(files), "fps": FOLDER_FPS, "height": h, "width": w}
    container, stream = _open(path)
    with container:
        frames, fps = stream.frames, _fps(stream)
    first = _read_image(path)  # decoded rather than read from the header so that rotation is applied
    return {
        "frames": int(frames) if frames else _count_packets(path),
        "fps": fps,
        "height": first.shape[0],
        "width": first.shape[1],
    }


def _rgb_to_video_frame(rgb: np.ndarray) -> av.VideoFrame:
    """(H, W, 3) uint8 RGB -> BT.709 limited-range yuv420p frame, the colours players assume for HD."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")


def _fps_fraction(fps) -> Fraction:
    if isinstance(fps, Fraction):
        rate = fps
    else:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps):
            raise ValueError(f"fps must be a finite number, got {fps!r}")
        # 1001 covers NTSC rates (30000/1001 etc.) while keeping the time base small.
        rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return rate


def save_video(path: str | os.PathLike, frames, fps: float | Fraction = 30.0, crf: int = 18) -> Path:
    """Write frames as an H.264 (libx264) yuv420p mp4 that ordinary players and browsers open.

    The file is tagged BT.709 limited range, has its index at the front (``+faststart``) and is written
    atomically: on any failure no file (and no temporary file) is left, and an existing file is kept.

    Args:
        path: destination ``.mp4`` (also ``.m4v``/``.mov``); parent folders are created.
        frames: (T, H, W, 3) uint8 RGB or (T, H, W) uint8 grey, H and W even; or an iterator of such arrays
            (chunks of frames, encoded in turn: a long video never has to be in memory at once).
        fps: frame rate; fractional rates are kept exactly (e.g. ``Fraction(30000, 1001)``).
        crf: x264 constant rate factor, 0 (lossless) to 51; 18 is visually lossless.

    Returns:
        The destination path.

    Raises:
        ValueError: bad frames (dtype, shape, odd or empty sizes), fps, crf or file suffix.
    """
    path = Path(path)
    container_format = _WRITE_FORMATS.get(path.suffix.lower())
    if container_format is None:
        raise ValueError(f"{path}: save_video writes {'/'.join(_WRITE_FORMATS)} files")
    chunks = iter([frames] if isinstance(frames, np.ndarray) or not _is_chunk_iterable(frames) else frames)
    first = _check_chunk(next(chunks, None), None)
    height, width = first.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even height and width, got {height}x{width}")
    rate = _fps_fraction(fps)
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an integer in [0, 51], got {crf!r}")

    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=container_format, options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf)}
            # Tag the colours we encode with so players do not guess (they guess BT.601 for small videos).
            cc = stream.codec_context
            cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited
            pts = 0
            chunk = first
            while chunk is not None:
                for image in chunk:
                    if image.ndim == 2:
                        image = np.repeat(image[:, :, None], 3, axis=2)
                    frame = _rgb_to_video_frame(np.ascontiguousarray(image))
                    frame.pts = pts  # in units of 1/rate, the codec's time base
                    pts += 1
                    container.mux(stream.encode(frame))
                chunk = next(chunks, None)
                if chunk is not None:
                    chunk = _check_chunk(chunk, first.shape[1:])
            container.mux(stream.encode())
    return path


def _is_chunk_iterable(frames) -> bool:
    """True for an iterator/generator/list of frame arrays (chunks), False for one array-like of frames."""
    return not hasattr(frames, "shape") and not isinstance(frames, (list, tuple))


def _check_chunk(frames, shape: tuple | None) -> np.ndarray:
    """``frames`` as a uint8 (t, H, W, 3) / (t, H, W) array, of the first chunk's frame ``shape`` when given."""
    if frames is None:
        raise ValueError("frames must not be empty, got no frames")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise ValueError(f"frames must be (T, H, W, 3) RGB or (T, H, W) grey, got shape {frames.shape}")
    if shape is None and (0 in frames.shape[:3]):
        raise ValueError(f"frames must not be empty, got shape {frames.shape}")
    if shape is not None and frames.shape[1:] != shape:
        raise ValueError(f"every chunk of frames must have the first one's frame shape {shape}, got {frames.shape[1:]}")
    return frames
