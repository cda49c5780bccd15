"""``ex4d prepare``: training pairs (target, masked colour, mask) from a folder of monocular clips.

Building the parser imports nothing heavy; :func:`run_prepare` calls :func:`ex4d.train.pairs.build_pairs`.
"""

from __future__ import annotations

import argparse
import functools
import sys

from ex4d.depth.cli import add_depth_backend_arguments, backend_options_from_args
from ex4d.errors import InputError, about
from ex4d.utils.argtypes import flag_of, positive_int

__all__ = ["add_prepare_parser", "run_prepare"]


def add_prepare_parser(sub) -> argparse.ArgumentParser:
    """Add the ``prepare`` subcommand to an ``argparse`` subparsers object."""
    p = sub.add_parser(
        "prepare", help="build training pairs (target, masked colour, mask) from monocular videos",
        description="For every clip in --videos: a simulated mask (rendering: what a novel camera on a sampled "
                    "trajectory would see, brought back to the source view; tracking: a hole carried along "
                    "optical flow or point tracks; or both), written as DATA/<clip>/target.mp4, cond.mp4, "
                    "mask.mp4 (255 = kept), pair.npz and meta.json, plus DATA/index.jsonl. Depth: <stem>.npz "
                    "beside a video, else --depth-backend. Reruns skip finished clips. Tracking masks along "
                    "optical flow need OpenCV: pip install \"ex4d[train]\".")
    p.add_argument("--videos", required=True, help="folder of clips (video files or image folders)")
    p.add_argument("--output-dir", required=True, help="DATA folder (created if missing)")
    p.add_argument("--trajectories", default="30,60,90,180",
                   help="presets a clip's camera path is drawn from, comma-separated (default 30,60,90,180; "
                        "integer angles get a random sign; parameters as orbit:angle=120,elevation=10)")
    p.add_argument("--fixed-sign", action="store_true", help="do not flip integer-angle presets at random")
    p.add_argument("--mask-kinds", default="render,track",
                   help="kinds drawn per clip with weights: render, track, both (render ∧ track), e.g. "
                        "render:0.6,track:0.2,both:0.2 (default render,track = 70/30)")
    p.add_argument("--track-hole", choices=("blobs", "render"), default="blobs",
                   help="what tracking masks carry along the flow: random ellipses, or the hidden region of a "
                        "random frame's rendering mask (needs depth; default blobs)")
    p.add_argument("--tracker", choices=("flow", "tracks"), default="flow",
                   help="what tracking masks' holes move along: OpenCV optical flow, or point tracks read from "
                        "<stem>.tracks.npz beside each clip (e.g. from CoTracker3; a clip without one fails; "
                        "layout in docs/training.md) (default flow)")
    p.add_argument("--workers", type=positive_int, default=1, help="clips processed in parallel (processes)")
    p.add_argument("--num-frames", type=positive_int, default=49, help="frames taken from the start (default 49)")
    p.add_argument("--height", type=positive_int, default=512, help="working height (default 512)")
    p.add_argument("--width", type=positive_int, default=512, help="working width (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-clip random choices (default 0)")
    p.add_argument("--save-frames", action="store_true", help="also store the exact frames in pair.npz")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda; meshes, renders "
                   "and the depth model run there (default auto)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="frames meshed and rendered together")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_depth_backend_arguments(p, "--depth-backend", default="depthcrafter")
    p.set_defaults(func=run_prepare)
    return p


def _depth_options(args: argparse.Namespace) -> tuple[dict, dict]:
    """(backend constructor options, options for reading per-clip ``<stem>.npz`` files)."""
    if args.depth_file is not None:
        raise InputError("--depth-file does not apply to prepare: put each clip's depth beside it as <stem>.npz")
    file_options = {k: v for k, v in (("units", args.depth_units), ("scale", args.depth_scale)) if v is not None}
    if args.depth_backend == "file":
        return {}, file_options
    # --depth-units/--depth-scale apply to the per-clip files, not to the model backend.
    model_args = argparse.Namespace(**{**vars(args), "depth_units": None, "depth_scale": None})
    return backend_options_from_args(model_args), file_options


def run_prepare(args: argparse.Namespace) -> int:
    """``ex4d prepare``; exit status 0, or 1 when some clips failed (each reported on stderr)."""
    from ex4d.train.pairs import PairSettings, build_pairs, find_clips, parse_mask_kinds, parse_trajectories

    depth_options, file_options = _depth_options(args)
    with about("trajectories"):
        trajectories = parse_trajectories(args.trajectories)
    with about("mask_kinds"):
        mask_kinds = parse_mask_kinds(args.mask_kinds)
    settings = PairSettings(
        trajectories=trajectories, random_sign=not args.fixed_sign,
        num_frames=args.num_frames, height=args.height, width=args.width,
        mask_kinds=mask_kinds, track_hole=args.track_hole, tracker=args.tracker, seed=args.seed,
        depth_backend=args.depth_backend,
        depth_options=depth_options, depth_file_options=file_options,
        intrinsics={"intrinsics": args.intrinsics_policy, "focal_px": args.focal, "fov_deg": args.fov},
        save_frames=args.save_frames, device=args.device, batch_size=args.batch_size)
    with about("videos"):
        clips = find_clips(args.videos)
    result = build_pairs(clips, args.output_dir, settings, workers=args.workers, progress=not args.quiet)
    for outcome in result.outcomes:
        if outcome.status == "failed":  # options named as the flags typed here (--num-frames, not num_frames)
            text = outcome.message if outcome.error is None else \
                " ".join(outcome.error.render(functools.partial(flag_of, args)).split())
            print(f"ex4d prepare: {outcome.name}: {text}", file=sys.stderr)
    done, skipped, failed = (len(result.names(s)) for s in ("done", "skipped", "failed"))
    print(f"{done} clips prepared, {skipped} already there, {failed} failed: {result.index}")
    return 1 if failed else 0
