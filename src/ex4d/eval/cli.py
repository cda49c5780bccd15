"""``ex4d eval``: metrics of generated videos against references (wired into :mod:`ex4d.cli` by
:func:`add_eval_parser`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ex4d.errors import InputError
from ex4d.utils.argtypes import non_negative_int

__all__ = ["add_eval_parser", "run_eval", "to_json"]

# Copies of the harness's constants, so that building the parser does not import torch (checked by the tests).
ALL_METRICS = ("psnr", "ssim", "flicker", "seam", "lpips", "fid", "fvd")
DEFAULT_METRICS = ("psnr", "ssim", "flicker")
LPIPS_NETS = ("alex", "vgg")
FVD_CLIP_FRAMES = 16


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to an ``argparse`` subparsers object; its ``func`` is :func:`run_eval`."""
    p = subparsers.add_parser(
        "eval", help="PSNR/SSIM/flicker (and LPIPS/FID/FVD) of generated videos against references",
        description="Compare a generated video with its reference, or two folders of videos matched by file "
                    "name (dataset-level means, FID/FVD over the whole set, and the reference's angle buckets "
                    "from names ending in _30/_60/_90/_180/_180_outer). LPIPS, FID and FVD need their weight "
                    "files locally (see docs/eval.md); nothing is downloaded.")
    p.add_argument("--pred", required=True, help="generated video (mp4/npz/image folder) or a folder of videos")
    p.add_argument("--ref", required=True, help="reference video, or a folder with files of the same names")
    p.add_argument("--mask", help="seen-mask video/npz (255/1 = seen in the source) or a folder of them: adds "
                                  "*_seen and *_unseen metrics")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated subset of {','.join(ALL_METRICS)} (default {','.join(DEFAULT_METRICS)})")
    p.add_argument("--json", metavar="OUT", help="also write the full results (per video, per frame) as JSON")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--lpips-net", choices=LPIPS_NETS, default="alex", help="LPIPS backbone (default alex)")
    p.add_argument("--fvd-frames", type=non_negative_int, default=FVD_CLIP_FRAMES,
                   help=f"frames per FVD clip (default {FVD_CLIP_FRAMES}; 0 = whole videos)")
    p.add_argument("--window", type=int, default=49,
                   help="seam: frames per generation window (default 49, as ex4d generate)")
    p.add_argument("--window-overlap", type=int, default=8,
                   help="seam: frames shared by consecutive windows after the first shared one (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)
    return p


def _clean(value):
    """JSON-safe copy: NaN -> null, ±inf -> "inf"/"-inf", numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def to_json(result: dict) -> str:
    """Results as strict JSON (NaN as null, infinities as the strings "inf"/"-inf")."""
    return json.dumps(_clean(result), indent=2, allow_nan=False)


def run_eval(args) -> int:
    """Run ``ex4d eval``; returns the exit code. Bad input raises :class:`InputError`."""
    from ex4d.eval.harness import evaluate_dirs, evaluate_pair, format_table, is_video_dir, parse_metrics
    from ex4d.io.atomic import atomic_path

    metrics = parse_metrics(args.metrics)
    pred, ref = Path(args.pred), Path(args.ref)
    for label, path in (("--pred", pred), ("--ref", ref), ("--mask", args.mask)):
        if path is not None and not Path(path).exists():
            raise InputError(f"{label} {path}: no such file or folder")
    common = dict(metrics=metrics, device=args.device, lpips_net=args.lpips_net, fvd_frames=args.fvd_frames,
                  windows=(args.window, args.window_overlap))
    if is_video_dir(pred):
        if not ref.is_dir():
            raise InputError(f"--pred {pred} is a folder of videos, so --ref must be a folder too (got {ref})")
        if args.mask is not None and not Path(args.mask).is_dir():
            raise InputError(f"--pred {pred} is a folder of videos, so --mask must be a folder too")
        result = evaluate_dirs(pred, ref, args.mask, per_frame=args.json is not None,
                               progress=not args.quiet and sys.stderr.isatty(), **common)
        for label, names in (("predictions without a reference", result["unmatched_pred"]),
                             ("references without a prediction", result["unmatched_ref"])):
            if names:
                shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                print(f"ex4d eval: note: {len(names)} {label} skipped ({shown})", file=sys.stderr)
        print(f"{result['count']} video pairs")
    else:
        result = evaluate_pair(pred, ref, args.mask, per_frame=args.json is not None, **common)
        print(f"{result['frames']} frames of {result['height']}x{result['width']}")
    print(format_table(result))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        text = to_json(result)
        with atomic_path(out) as tmp:
            tmp.write_text(text + "\n")
        print(out)
    return 0
