"""Evaluate generated videos against references: one pair (:func:`evaluate_pair`) or two folders
(:func:`evaluate_dirs`), with dataset-level means and the reference's angle buckets.

Inputs are video files (anything :func:`ex4d.io.video.load_video` reads, at their own size), image folders, or
``.npz`` archives with ``frames`` or ``color`` ``(T, H, W, 3)`` uint8. Masks (1 = seen in the source, the
convention of ``docs/conventions.md``) are videos (a pixel is seen when its mean over RGB is > 127) or ``.npz``
archives with ``mask`` ``(T, H, W)`` / ``(H, W)`` (bool, 0/1, or uint8 0/255 with > 127 = seen).

Metric definitions: :mod:`ex4d.eval.image_metrics` and :mod:`ex4d.eval.features`; summary in ``docs/eval.md``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ex4d.errors import InputError
from ex4d.eval import features as feats
from ex4d.eval import image_metrics as im
from ex4d.io.video import load_video, probe_video
from ex4d.utils.windows import DEFAULT_OVERLAP, DEFAULT_WINDOW

__all__ = [
    "ALL_METRICS", "ANGLE_BUCKETS", "BUCKET_ORDER", "DEFAULT_METRICS", "VIDEO_SUFFIXES",
    "angle_bucket", "evaluate_dirs", "evaluate_pair", "format_table", "is_video_dir", "load_frames", "load_mask",
    "parse_metrics",
]

ALL_METRICS = ("psnr", "ssim", "flicker", "seam", "lpips", "fid", "fvd")
DEFAULT_METRICS = ("psnr", "ssim", "flicker")
FEATURE_METRICS = ("lpips", "fid", "fvd")
#: File suffixes taken as videos when scanning folders (image folders are single videos, not scanned).
VIDEO_SUFFIXES = (".npz", ".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif")
#: The reference's camera names (file-name suffix) -> angle bucket.
ANGLE_BUCKETS = {"30": "small", "60": "large", "90": "extreme", "180": "full", "180_outer": "full"}
BUCKET_ORDER = ("small", "large", "extreme", "full")
_BUCKET_RE = re.compile(r"(?:^|[_-])(30|60|90|180_outer|180)$")

# Scalar result keys in display order (those present are shown).
_KEYS = ("psnr", "psnr_seen", "psnr_unseen", "ssim", "ssim_seen", "ssim_unseen",
         "flicker", "flicker_seen", "flicker_unseen", "flicker_static", "flicker_static_ref",
         "seam_boundary", "seam_inside", "seam_ratio", "lpips", "fid", "fvd")


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------

def _npz_array(path: Path, keys: Sequence[str]) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in keys:
                if key in data.files:
                    return data[key]
            found = ", ".join(data.files) or "none"
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({' '.join(str(exc).split())})") from None
    raise InputError(f"{path}: has no {' or '.join(repr(k) for k in keys)} array (keys: {found})")


def load_frames(source) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a video file, image folder, ``.npz`` (``frames`` or ``color``) or array."""
    if isinstance(source, np.ndarray):
        frames, name = source, "frames"
    else:
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.suffix.lower() == ".npz":
            frames = _npz_array(path, ("frames", "color"))
        else:
            info = probe_video(path)
            h, w = info["height"], info["width"]
            if h % 2 or w % 2:
                raise InputError(f"{path}: odd frame size {h}x{w} is not supported for video files; "
                                 "pass the frames as .npz")
            frames = load_video(path, num_frames=None, height=h, width=w).frames
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"{name}: frames must be (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    if frames.shape[0] == 0:
        raise InputError(f"{name}: holds no frames")
    return frames


def load_mask(source) -> np.ndarray:
    """(T, H, W) or (1, H, W) bool seen-mask from a video (mean RGB > 127), ``.npz`` (``mask``) or array."""
    if isinstance(source, np.ndarray):
        mask, name = source, "mask"
    else:
        path = Path(source)
        name = str(path)
        if path.suffix.lower() == ".npz":
            mask = _npz_array(path, ("mask",))
        else:
            return load_frames(path).mean(axis=-1) > 127
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 4 and mask.shape[-1] in (1, 3):
        mask = mask.mean(axis=-1)
    if mask.ndim != 3:
        raise InputError(f"{name}: mask must be (T, H, W) or (H, W), got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    mask = mask.astype(np.float64)
    return mask > 0.5 if mask.max(initial=0) <= 1 else mask > 127


def angle_bucket(name: str | os.PathLike) -> str | None:
    """The reference's angle bucket named by a file's camera suffix (``output_90.mp4`` -> ``extreme``), or None."""
    m = _BUCKET_RE.search(Path(name).name.split(".")[0])
    return ANGLE_BUCKETS[m.group(1)] if m else None


def parse_metrics(metrics: str | Iterable[str] | None) -> tuple[str, ...]:
    """Validate metric names (a comma-separated string or a list); None -> :data:`DEFAULT_METRICS`."""
    if metrics is None:
        return DEFAULT_METRICS
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in names if n not in ALL_METRICS]
    if unknown or not names:
        raise InputError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {','.join(ALL_METRICS)}")
    return tuple(n for n in ALL_METRICS if n in names)


# --------------------------------------------------------------------------------------------------------------
# Networks (loaded once, weights checked before any video is read)
# --------------------------------------------------------------------------------------------------------------

class _Networks:
    def __init__(self, metrics: Sequence[str], device, lpips_net: str, weights: dict | None):
        weights = weights or {}
        self.lpips = self.inception = self.i3d = None
        if "lpips" in metrics:
            self.lpips = feats.load_lpips(lpips_net, weights.get("lpips"), weights.get("lpips_backbone"), device)
        if "fid" in metrics:
            self.inception = feats.load_inception(weights.get("inception"), device)
        if "fvd" in metrics:
            self.i3d = feats.load_i3d(weights.get("i3d"), device)


def _resolve_device(device):
    from ex4d.utils.device import resolve_device

    return resolve_device(device) if isinstance(device, str) else device


# --------------------------------------------------------------------------------------------------------------
# One pair
# --------------------------------------------------------------------------------------------------------------

def _check_pair(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None, names: tuple[str, str, str]) -> None:
    pn, rn, mn = names
    if pred.shape != ref.shape:
        raise InputError(f"{pn} has {pred.shape[0]} frames of {pred.shape[1]}x{pred.shape[2]} but {rn} has "
                         f"{ref.shape[0]} frames of {ref.shape[1]}x{ref.shape[2]}; they must match")
    if mask is not None and (mask.shape[1:] != pred.shape[1:3] or mask.shape[0] not in (1, pred.shape[0])):
        raise InputError(f"{mn} has {mask.shape[0]} frames of {mask.shape[1]}x{mask.shape[2]} but {pn} has "
                         f"{pred.shape[0]} frames of {pred.shape[1]}x{pred.shape[2]}; they must match")
    if min(pred.shape[1:3]) < im.SSIM_WINDOW:
        raise InputError(f"{pn}: frames of {pred.shape[1]}x{pred.shape[2]} are too small (SSIM needs "
                         f"{im.SSIM_WINDOW}x{im.SSIM_WINDOW})")


def _fvd_clips(frames: np.ndarray, clip_frames: int, name: str) -> np.ndarray:
    if clip_frames and len(frames) < clip_frames:
        raise InputError(f"{name}: FVD uses clips of {clip_frames} frames but the video has {len(frames)} "
                         f"(lower --fvd-frames, or 0 for whole videos)")
    return feats.video_clips(frames, clip_frames)


def _seam(pred, ref, mask, windows: tuple[int, int]) -> dict:
    """Reference-relative flicker (on the filled pixels, mask 0, when a mask is given) across the boundaries of the
    generation windows — the pairs entering and leaving each cross-fade — against every other pair of frames.
    A ratio near 1 means no step at the boundaries; NaN for a clip of one window."""
    from ex4d.utils.windows import plan_windows

    plan = plan_windows(len(pred), *windows)
    # pair (t-1, t) is flicker index t-1
    at = sorted({t - 1 for prev, win in zip(plan, plan[1:]) for t in (win.start, prev.stop) if 0 < t < len(pred)})
    flicker = im.temporal_flicker_frames(pred, ref, None if mask is None else ~np.broadcast_to(mask, pred.shape[:3]))
    inside = np.setdiff1d(np.arange(len(flicker)), at)
    boundary = float(np.nanmean(flicker[at])) if at and np.isfinite(flicker[at]).any() else math.nan
    rest = float(np.nanmean(flicker[inside])) if len(inside) and np.isfinite(flicker[inside]).any() else math.nan
    if not (math.isfinite(rest) and math.isfinite(boundary)):
        ratio = math.nan
    elif rest == 0:
        ratio = 1.0 if boundary == 0 else math.inf
    else:
        ratio = boundary / rest
    return {"seam_boundary": boundary, "seam_inside": rest, "seam_ratio": ratio}


def _image_metrics(pred, ref, mask, metrics, device, windows=None) -> tuple[dict, dict]:
    out, per_frame = {}, {}
    selections = [("", None)]
    if mask is not None:
        mask = np.broadcast_to(mask, pred.shape[:3])
        selections += [("_seen", mask), ("_unseen", ~mask)]
    if "psnr" in metrics:
        for suffix, m in selections:
            out["psnr" + suffix] = im.psnr(pred, ref, m)
            per_frame["psnr" + suffix] = im.psnr_frames(pred, ref, m)
    if "ssim" in metrics:
        smap = im.ssim_map(pred, ref, device=device)
        for suffix, m in selections:
            if m is None:
                out["ssim"], per_frame["ssim"] = float(smap.mean()), smap.mean(axis=(1, 2))
                continue
            r = im.SSIM_WINDOW // 2
            c = m[:, r:m.shape[1] - r, r:m.shape[2] - r]
            count = c.sum(axis=(1, 2))
            out["ssim" + suffix] = float(smap[c].mean()) if c.any() else math.nan
            with np.errstate(invalid="ignore", divide="ignore"):
                per_frame["ssim" + suffix] = np.where(count > 0, (smap * c).sum(axis=(1, 2)) / count, np.nan)
    if "flicker" in metrics:
        for suffix, m in selections:
            out["flicker" + suffix] = im.temporal_flicker(pred, ref, m)
            per_frame["flicker" + suffix] = np.concatenate([[np.nan], im.temporal_flicker_frames(pred, ref, m)])
        static = im.static_pixels(ref)
        out["flicker_static"] = im.static_flicker(pred, static)
        out["flicker_static_ref"] = im.static_flicker(ref, static)
    if "seam" in metrics:
        out.update(_seam(pred, ref, mask, windows or (DEFAULT_WINDOW, DEFAULT_OVERLAP)))
    return out, per_frame


def _pair(pred, ref, mask, metrics, nets: _Networks, device, fvd_frames, names, features_only=False, windows=None):
    """Metrics of one loaded pair, plus the FID/FVD features (returned for dataset-level distances)."""
    _check_pair(pred, ref, mask, names)
    out, per_frame = _image_metrics(pred, ref, mask, metrics, device, windows)
    extra = {}
    if nets.lpips is not None:
        values = feats.lpips_frames(nets.lpips, pred, ref)
        out["lpips"], per_frame["lpips"] = float(values.mean()), values
    if nets.inception is not None:
        extra["fid"] = (feats.inception_features(nets.inception, pred), feats.inception_features(nets.inception, ref))
        if not features_only:
            out["fid"] = _frechet(*extra["fid"], ddof=1)
    if nets.i3d is not None:
        clips = (_fvd_clips(pred, fvd_frames, names[0]), _fvd_clips(ref, fvd_frames, names[1]))
        extra["fvd"] = tuple(feats.i3d_features(nets.i3d, c) for c in clips)
        if not features_only:
            out["fvd"] = _frechet(*extra["fvd"], ddof=0)
    return out, per_frame, extra


def _frechet(f1: np.ndarray, f2: np.ndarray, ddof: int) -> float:
    if min(len(f1), len(f2)) <= ddof:
        return math.nan  # one sample with an unbiased covariance: undefined
    return feats.frechet_distance_from_features(f1, f2, ddof=ddof)


def _ordered(result: dict) -> dict:
    return {k: result[k] for k in _KEYS if k in result}


def evaluate_pair(pred, ref, mask=None, metrics: str | Iterable[str] | None = DEFAULT_METRICS, device="auto",
                  lpips_net: str = "alex", fvd_frames: int = feats.FVD_CLIP_FRAMES, weights: dict | None = None,
                  per_frame: bool = True, windows: tuple[int, int] = (DEFAULT_WINDOW, DEFAULT_OVERLAP)) -> dict:
    """Metrics of one predicted video against its reference.

    Args:
        pred, ref: video files, image folders, ``.npz`` archives or (T, H, W, 3) uint8 arrays; same frame count
            and size.
        mask: optional seen-mask (file or array, 1 = seen): adds ``*_seen`` and ``*_unseen`` variants.
        metrics: subset of :data:`ALL_METRICS` (list or comma-separated); default psnr, ssim, flicker.
        device: ``auto``/``cpu``/``cuda`` (or a torch.device) for SSIM and the feature networks.
        lpips_net: ``alex`` (default, as the ``lpips`` package) or ``vgg``.
        fvd_frames: frames per FVD clip (0 = the whole video is one clip).
        weights: optional explicit weight paths: keys ``lpips``, ``lpips_backbone``, ``inception``, ``i3d``.
        per_frame: include per-frame values (``per_frame`` key).
        windows: ``(window, overlap)`` of the generation windows, for ``seam`` (see :mod:`ex4d.utils.windows`).

    Returns:
        ``{"pred", "ref", "mask", "frames", "height", "width", "bucket", <metrics>..., "per_frame": {...}}``.
        Flicker's per-frame lists start with NaN (frame 0 has no predecessor). Pair-level FID/FVD use the
        pair's frames/clips as the two samples (few samples: only a sanity check; use :func:`evaluate_dirs`).

    Raises:
        InputError: unreadable input, frame count or size mismatch, unknown metric, missing weights
            (:class:`ex4d.eval.features.MissingWeightsError`).
    """
    metrics = parse_metrics(metrics)
    dev = _resolve_device(device)
    nets = _Networks(metrics, dev, lpips_net, weights)  # missing weights fail before any decoding
    names = tuple("pred" if isinstance(x, np.ndarray) else str(x) for x in (pred, ref)) + (
        "mask" if isinstance(mask, np.ndarray) else str(mask),)
    p, r = load_frames(pred), load_frames(ref)
    m = load_mask(mask) if mask is not None else None
    out, frames_out, _ = _pair(p, r, m, metrics, nets, dev, fvd_frames, names, windows=windows)
    result = {
        "pred": names[0], "ref": names[1], "mask": None if mask is None else names[2],
        "frames": int(p.shape[0]), "height": int(p.shape[1]), "width": int(p.shape[2]),
        "bucket": None if isinstance(pred, np.ndarray) else angle_bucket(pred),
        "metrics": list(metrics), **_ordered(out),
    }
    if per_frame:
        result["per_frame"] = {k: [float(v) for v in frames_out[k]] for k in _KEYS if k in frames_out}
    return result


# --------------------------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------------------------

def _index(folder: Path) -> dict[str, Path]:
    """relative path without suffix -> file, for the video/npz files under ``folder`` (npz preferred)."""
    rank = {s: i for i, s in enumerate(VIDEO_SUFFIXES)}
    out: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        suffix = p.suffix.lower()
        if suffix not in rank or not p.is_file() or p.name.startswith("."):
            continue
        key = p.relative_to(folder).with_suffix("").as_posix()
        if key not in out or rank[suffix] < rank[out[key].suffix.lower()]:
            out[key] = p
    return out


def is_video_dir(path: str | os.PathLike) -> bool:
    """True for a folder holding video or .npz files (a dataset); an image folder is a single video."""
    path = Path(path)
    return path.is_dir() and any(
        p.suffix.lower() in VIDEO_SUFFIXES and p.is_file() for p in path.rglob("*"))


def _mask_for(key: str, masks: dict[str, Path]) -> tuple[Path | None, list[str]]:
    parent, _, stem = key.rpartition("/")
    prefix = f"{parent}/" if parent else ""
    candidates = [key]
    m = _BUCKET_RE.search(stem)
    if m:
        cam = m.group(1)
        candidates += [f"{prefix}mask_{cam}", f"{prefix}render_{cam}"]
    for c in candidates:
        if c in masks:
            return masks[c], candidates
    return None, candidates


def _mean(values: list[float]) -> float:
    arr = np.asarray(values, np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def evaluate_dirs(pred_dir, ref_dir, mask_dir=None, metrics: str | Iterable[str] | None = DEFAULT_METRICS,
                  device="auto", lpips_net: str = "alex", fvd_frames: int = feats.FVD_CLIP_FRAMES,
                  weights: dict | None = None, per_frame: bool = False, progress: bool = False,
                  windows: tuple[int, int] = (DEFAULT_WINDOW, DEFAULT_OVERLAP)) -> dict:
    """Metrics of every predicted video against the reference of the same name, and dataset-level numbers.

    Files (video or ``.npz``, searched recursively) are matched by their path relative to the folder, without
    suffix (``a/output_90.mp4`` matches ``a/output_90.npz``). A mask for ``a/output_90`` is looked up in
    ``mask_dir`` as ``a/output_90``, then ``a/mask_90``, then ``a/render_90`` (``.npz`` with ``mask``).

    Returns:
        ``{"count", "metrics", "mean": {...}, "buckets": {bucket: {"count", "mean"}}, "videos": [per-pair
        results], "unmatched_pred": [...], "unmatched_ref": [...]}``. ``mean`` averages the per-video values
        (NaN ones, e.g. an empty mask, are left out); FID and FVD are computed once over all frames / clips of
        the set (and of each bucket), not averaged. Buckets come from the file names' camera suffix
        (:data:`ANGLE_BUCKETS`); files without one count only in the overall numbers.

    Raises:
        InputError: a folder is missing or no file names match, a pair does not match in size, a mask is
            missing, or missing weights.
    """
    metrics = parse_metrics(metrics)
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for label, folder in (("pred", pred_dir), ("ref", ref_dir), ("mask", mask_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise InputError(f"{folder}: {label} folder not found")
    preds, refs = _index(pred_dir), _index(ref_dir)
    masks = _index(Path(mask_dir)) if mask_dir is not None else None
    keys = sorted(set(preds) & set(refs))
    if not keys:
        raise InputError(f"no file in {pred_dir} ({len(preds)} videos) has a namesake in {ref_dir} "
                         f"({len(refs)} videos)")
    mask_files = {}
    if masks is not None:
        for key in keys:
            found, tried = _mask_for(key, masks)
            if found is None:
                raise InputError(f"no mask for {key} in {mask_dir} (looked for {', '.join(tried)})")
            mask_files[key] = found

    dev = _resolve_device(device)
    nets = _Networks(metrics, dev, lpips_net, weights)
    videos, features = [], []
    iterator: Iterable[str] = keys
    if progress:
        from tqdm import tqdm

        iterator = tqdm(keys, desc="eval", unit="video")
    for key in iterator:
        p, r = load_frames(preds[key]), load_frames(refs[key])
        m = load_mask(mask_files[key]) if key in mask_files else None
        names = (str(preds[key]), str(refs[key]), str(mask_files.get(key)))
        out, frames_out, extra = _pair(p, r, m, metrics, nets, dev, fvd_frames, names, features_only=True,
                                       windows=windows)
        entry = {"name": key, "pred": names[0], "ref": names[1], "mask": names[2] if m is not None else None,
                 "frames": int(p.shape[0]), "height": int(p.shape[1]), "width": int(p.shape[2]),
                 "bucket": angle_bucket(key), **_ordered(out)}
        if per_frame:
            entry["per_frame"] = {k: [float(v) for v in frames_out[k]] for k in _KEYS if k in frames_out}
        videos.append(entry)
        features.append(extra)

    def summary(indices: list[int]) -> dict:
        mean = {}
        for k in _KEYS:
            if k in ("fid", "fvd"):
                if k in metrics:
                    f1 = np.concatenate([features[i][k][0] for i in indices])
                    f2 = np.concatenate([features[i][k][1] for i in indices])
                    mean[k] = _frechet(f1, f2, ddof=1 if k == "fid" else 0)
            elif k in videos[indices[0]]:
                mean[k] = _mean([videos[i][k] for i in indices])
        return {"count": len(indices), "mean": mean}

    overall = summary(list(range(len(videos))))
    buckets = {}
    for b in BUCKET_ORDER:
        idx = [i for i, v in enumerate(videos) if v["bucket"] == b]
        if idx:
            buckets[b] = summary(idx)
    return {
        "pred_dir": str(pred_dir), "ref_dir": str(ref_dir), "mask_dir": None if mask_dir is None else str(mask_dir),
        "metrics": list(metrics), "count": overall["count"], "mean": overall["mean"], "buckets": buckets,
        "videos": videos,
        "unmatched_pred": sorted(set(preds) - set(refs)), "unmatched_ref": sorted(set(refs) - set(preds)),
    }


# --------------------------------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------------------------------

_FORMATS = {"psnr": "{:.2f}", "ssim": "{:.4f}", "flicker": "{:.3f}", "lpips": "{:.4f}", "fid": "{:.2f}",
            "fvd": "{:.2f}"}
_UNITS = {"psnr": "dB"}


def _fmt(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return _FORMATS[key.split("_")[0]].format(value)


def format_table(result: dict) -> str:
    """A plain-text table of :func:`evaluate_pair` or :func:`evaluate_dirs` results (metrics as rows)."""
    if "videos" in result:
        columns = [("all", result["mean"], result["count"])] + [
            (b, s["mean"], s["count"]) for b, s in result["buckets"].items()]
    else:
        columns = [("value", result, None)]
    keys = [k for k in _KEYS if any(k in c[1] for c in columns)]
    rows = [["metric"] + [c[0] if c[2] is None else f"{c[0]} ({c[2]})" for c in columns]]
    for k in keys:
        unit = _UNITS.get(k.split("_")[0])
        rows.append([f"{k} [{unit}]" if unit else k] + [_fmt(k, c[1].get(k)) for c in columns])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
