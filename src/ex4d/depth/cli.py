"""``ex4d depth``: depth maps (and intrinsics) of a video, written as the ``D.npz`` that ``ex4d recon --depth`` reads.

:func:`add_depth_parser` adds the subcommand; :func:`add_depth_backend_arguments` and :func:`depth_from_args` let
another subcommand (``ex4d recon --depth-backend``) offer the same backends. Building the parser imports no torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ex4d.errors import InputError
from ex4d.utils.argtypes import non_negative_int, positive_float, positive_int

__all__ = ["add_depth_parser", "add_depth_backend_arguments", "backend_options_from_args", "depth_options_from_args",
           "depth_from_args", "run_depth"]

from ex4d.depth.options import BACKEND_NAMES, DEFAULT_BACKEND, DepthOptions

# CLI destination -> DepthOptions field (the backend-specific flags; each field checks which backends take it).
_FIELDS = {"depth_model": "model", "depth_svd": "svd", "depth_window": "window", "depth_overlap": "overlap",
           "depth_steps": "steps", "depth_guidance": "guidance", "depth_seed": "seed", "depth_size": "size",
           "depth_batch_size": "batch_size", "depth_dtype": "dtype", "depth_file": "file", "depth_units": "units",
           "depth_scale": "scale"}


def add_depth_backend_arguments(parser: argparse.ArgumentParser, backend_flag: str = "--backend",
                                default: str | None = DEFAULT_BACKEND):
    """Add the backend choice (``backend_flag``, stored as ``depth_backend``) and every backend option.

    The options do not include the frame selection (``--num-frames/--height/--width``), ``--device`` or ``--quiet``,
    which the calling subcommand has already.
    """
    g = parser.add_argument_group("depth backend")
    g.add_argument(backend_flag, dest="depth_backend", choices=BACKEND_NAMES, default=default,
                   help=f"depth model (default {default}); 'file' reads --depth-file")
    g.add_argument("--depth-model", dest="depth_model", metavar="ID_OR_DIR",
                   help="hub id or local folder: DepthCrafter's UNet (default tencent/DepthCrafter), Depth Anything "
                        "V2 (default per --depth-size) or Depth Pro (default apple/DepthPro-hf)")
    g.add_argument("--depth-svd", dest="depth_svd", metavar="ID_OR_DIR",
                   help="depthcrafter: Stable Video Diffusion folder or hub id for the VAE, image encoder and "
                        "scheduler (default stabilityai/stable-video-diffusion-img2vid)")
    g.add_argument("--depth-window", dest="depth_window", type=positive_int, help="depthcrafter: frames per window "
                   "(default 110)")
    g.add_argument("--depth-overlap", dest="depth_overlap", type=non_negative_int,
                   help="depthcrafter: frames shared by consecutive windows (default 25)")
    g.add_argument("--depth-steps", dest="depth_steps", type=positive_int, help="depthcrafter: denoising steps "
                   "(default 5)")
    g.add_argument("--depth-guidance", dest="depth_guidance", type=float, help="depthcrafter: guidance (default 1)")
    g.add_argument("--depth-seed", dest="depth_seed", type=int, help="depthcrafter: seed (default 42)")
    g.add_argument("--depth-size", dest="depth_size", choices=("small", "base", "large"),
                   help="depth-anything-v2: model size (default large)")
    g.add_argument("--depth-batch-size", dest="depth_batch_size", type=positive_int,
                   help="depth-anything-v2 / depth-pro: frames per forward pass")
    g.add_argument("--depth-dtype", dest="depth_dtype", choices=("fp16", "bf16", "fp32"),
                   help="model dtype (default fp16 on CUDA, fp32 on CPU)")
    g.add_argument("--depth-file", dest="depth_file", metavar="PATH",
                   help="file backend: .npz/.npy (T,H,W) or a folder of 16-bit .png / .exr frames")
    g.add_argument("--depth-units", dest="depth_units", choices=("depth", "disparity"),
                   help="file backend: z-depth, or relative disparity converted as the reference does (default depth)")
    g.add_argument("--depth-scale", dest="depth_scale", type=positive_float,
                   help="file backend: multiply depth values by this (e.g. 0.001 for millimetre PNGs)")
    g.add_argument("--intrinsics", dest="intrinsics_policy", choices=("auto", "reference", "estimate"),
                   default="auto", help="auto: the backend's estimate if it makes one (depth-pro, files with "
                   "intrinsics), else the reference's fixed 500 px focal; reference: always 500 px; estimate: the "
                   "backend's (error if none)")
    g.add_argument("--focal", type=positive_float, metavar="PX",
                   help="known focal length in pixels of the source video (overrides --intrinsics)")
    g.add_argument("--fov", type=positive_float, metavar="DEG",
                   help="known horizontal field of view in degrees (overrides --intrinsics)")
    g.add_argument("--no-download", dest="depth_download", action="store_false",
                   help="never download weights (use the hub cache or local folders only)")
    return g


def depth_options_from_args(args: argparse.Namespace) -> DepthOptions:
    """The :class:`DepthOptions` of :func:`add_depth_backend_arguments`' flags (``--device`` of the command too).

    Raises:
        InputError: an option given that the chosen backend does not use (e.g. --depth-window with depth-pro).
    """
    fields = {field: getattr(args, dest) for dest, field in _FIELDS.items() if getattr(args, dest, None) is not None}
    return DepthOptions(backend=args.depth_backend or DEFAULT_BACKEND, intrinsics=args.intrinsics_policy,
                        focal_px=args.focal, fov_deg=args.fov, device=getattr(args, "device", None) or "auto",
                        download=getattr(args, "depth_download", True), **fields)


def backend_options_from_args(args: argparse.Namespace) -> dict:
    """The constructor options of ``args.depth_backend`` that were given (:meth:`DepthOptions.backend_kwargs`)."""
    return depth_options_from_args(args).backend_kwargs()


def depth_from_args(args: argparse.Namespace, video):
    """Run the backend chosen in ``args`` on a loaded :class:`~ex4d.io.video.Video`; returns a ``DepthResult``.

    Raises:
        InputError: bad options, missing weights, or the backend's library not installed.
    """
    options = depth_options_from_args(args)
    try:
        from ex4d.depth.api import estimate_depth

        return estimate_depth(video, options.backend, progress=not getattr(args, "quiet", False),
                              **options.estimate_kwargs())
    except ImportError as exc:
        raise InputError(str(exc)) from None


def add_depth_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``depth`` subcommand to an ``argparse`` subparsers object; its ``func`` is :func:`run_depth`."""
    p = subparsers.add_parser(
        "depth", help="estimate per-frame depth (and intrinsics) of a video -> D.npz for ex4d recon --depth",
        description="Depth maps of the frames ex4d recon uses (the first --num-frames frames at the reference's "
                    "size; with --backend file, at the file's size), written as D.npz: 'depth' (T,H,W) float32 "
                    "z-depth and 'intrinsics' (T,3,3). Model backends need the diffusion extra: "
                    "pip install 'ex4d[diffusion]'.")
    p.add_argument("--input-video", required=True, help="mp4/mov/webm/mkv/gif file or a folder of images")
    p.add_argument("--output", required=True, help="destination .npz")
    p.add_argument("--num-frames", type=non_negative_int, default=49,
                   help="at most this many frames from the start, a shorter clip whole (0 = all; default 49)")
    p.add_argument("--height", type=positive_int, help="working height (default: the reference's size rule)")
    p.add_argument("--width", type=positive_int, help="working width (default: the reference's size rule)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_depth_backend_arguments(p, "--backend")
    p.set_defaults(func=run_depth)
    return p


def run_depth(args: argparse.Namespace) -> int:
    """``ex4d depth``: load the frames, estimate, write the npz and print its path. Bad input: InputError."""
    from ex4d.depth.api import save_depth_npz
    from ex4d.io.source import load_working_video

    if not Path(args.input_video).exists():
        raise InputError(f"{args.input_video}: input video not found")
    if Path(args.output).suffix.lower() != ".npz":
        raise InputError(f"{args.output}: --output must be a .npz file")
    options = depth_options_from_args(args)  # option errors before the (slow) video decoding
    # The working-size policy of recon and run: with --backend file, the file's maps set the size.
    video = load_working_video(args.input_video, num_frames=args.num_frames or None, height=args.height,
                               width=args.width, depth_file=options.file_path)
    result = depth_from_args(args, video)
    print(save_depth_npz(args.output, result))
    return 0
