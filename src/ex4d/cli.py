"""Command-line interface: ``ex4d demo|depth|recon|generate|run|eval|trajectory`` (thin wrappers over the API)."""

from __future__ import annotations

import argparse
import errno
import functools
import sys
import traceback
import warnings
from pathlib import Path

from ex4d import __version__
from ex4d.depth.cli import add_depth_backend_arguments, add_depth_parser, depth_from_args
from ex4d.errors import InputError, InputWarning
from ex4d.eval.cli import add_eval_parser
from ex4d.generation_cli import add_generation_args, generation_options_from_args
from ex4d.train.prepare_cli import add_prepare_parser
from ex4d.train.train_cli import add_train_parser
from ex4d.ui.cli import add_ui_parser
from ex4d.utils.argtypes import flag_of, non_negative_int, positive_int
from ex4d.utils.quiet import quiet_third_party


def _add_recon(sub) -> None:
    p = sub.add_parser("recon", help="build the DW-Mesh of every frame and render it along a camera path",
                       description="Video + depth -> colour video, mask video (255 = seen in the source) and "
                                   "cameras along a trajectory.")
    p.add_argument("--input-video", required=True, help="mp4/mov/webm/mkv/gif file or a folder of images")
    p.add_argument("--depth", help="D.npz: 'depth' (T,H,W) float32 z-depth, optional 'intrinsics' (3,3)/(T,3,3); "
                   "or estimate it with --depth-backend")
    p.add_argument("--cam", default="180", help="preset (30, 60, 90, 180, 180_outer, orbit, spiral, dolly, "
                   "zoom_in, zoom_out, pan, tilt; parameters as orbit:angle=120) or a trajectory .json/.npz")
    p.add_argument("--output-dir", required=True, help="folder for the outputs (created if missing)")
    p.add_argument("--num-frames", type=int, default=49, help="frames taken from the start (0 = all; default 49)")
    p.add_argument("--height", type=positive_int, help="working height (default: the depth maps')")
    p.add_argument("--width", type=positive_int, help="working width (default: the depth maps')")
    p.add_argument("--save-mesh", action="store_true", help="also write frame 0's mesh as DW-Mesh.ply")
    p.add_argument("--save-arrays", action="store_true",
                   help="also write render_<cam>.npz: color (T,H,W,3) uint8, mask (T,H,W) bool, depth (T,H,W)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    g = p.add_argument_group("mesh and render options (defaults = the reference DW-Mesh)")
    g.add_argument("--mesh", choices=("dw", "plain"), default="dw",
                   help="dw: stretched faces kept as invisible occluders; plain: deleted (ablation)")
    g.add_argument("--extent-filter", action="store_true", help="also apply the reference's unused extent test")
    g.add_argument("--min-angle", type=float, default=2.5, help="stretched-face angle threshold in degrees")
    g.add_argument("--scale-min-angle", action="store_true",
                   help="rescale the angle threshold from the reference's 500 px focal to this video's focal "
                        "(fewer leaks at small resolutions; see BENCHMARKS.md)")
    g.add_argument("--border-depth", type=float, default=100.0, help="depth of the far wall (default 100)")
    g.add_argument("--pixel-offset", type=float, default=0.5,
                   help="vertex position inside its pixel: 0.5 = centre (ours), 0 = the reference's corner")
    g.add_argument("--supersample", type=positive_int, default=1, help="s×s samples per pixel (antialiasing)")
    g.add_argument("--render-backend", choices=("warp", "torch"), default="warp")
    g.add_argument("--batch-size", type=positive_int, default=8, help="frames meshed and rendered together")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_depth_backend_arguments(p, "--depth-backend", default=None)
    p.set_defaults(func=_run_recon)


def _run_recon(args) -> int:
    from ex4d.geometry.conventions import REFERENCE_FOCAL_PX
    from ex4d.mesh.build import MeshSettings
    from ex4d.reconstruction import output_name, recon, write_recon_outputs
    from ex4d.render.dwmesh import RenderSettings
    from ex4d.render.raster import RasterSettings

    if (args.depth is None) == (args.depth_backend is None):
        raise InputError("give either --depth D.npz or --depth-backend NAME (e.g. depthcrafter)")
    if not Path(args.input_video).exists():
        raise InputError(f"{args.input_video}: input video not found")
    try:
        mesh = MeshSettings(border_depth=args.border_depth, min_angle_deg=args.min_angle,
                            occluders="keep" if args.mesh == "dw" else "delete",
                            extent_filter=args.extent_filter, pixel_offset=args.pixel_offset,
                            angle_reference_focal=REFERENCE_FOCAL_PX if args.scale_min_angle else None)
    except ValueError as exc:  # an InputError names its setting, shown as the flag
        raise InputError(getattr(exc, "message", str(exc)), getattr(exc, "argument", None)) from None
    render = RenderSettings(backend=args.render_backend, raster=RasterSettings(supersample=args.supersample))
    video, depth, intrinsics = args.input_video, args.depth, None
    if args.depth_backend is not None:
        # Depth is estimated once and saved beside the outputs, so later runs can pass it with --depth.
        from ex4d.depth.api import save_depth_npz
        from ex4d.io.source import load_working_video

        file = args.depth_file if args.depth_backend == "file" else None  # its maps set the size, as with --depth
        video = load_working_video(args.input_video, num_frames=args.num_frames or None, height=args.height,
                                   width=args.width, depth_file=file)
        estimate = depth_from_args(args, video)
        depth, intrinsics = estimate.depth, estimate.intrinsics
        print(save_depth_npz(Path(args.output_dir) / "depth.npz", estimate))
    result = recon(video, depth, cam=args.cam, intrinsics=intrinsics, num_frames=args.num_frames or None,
                   height=args.height, width=args.width, mesh_settings=mesh, render_settings=render,
                   device=args.device, batch_size=args.batch_size, progress=not args.quiet)
    paths = write_recon_outputs(result, args.output_dir, output_name(args.cam), args.save_mesh, args.save_arrays)
    for path in paths:
        print(path)
    return 0


def _add_trajectory(sub) -> None:
    p = sub.add_parser("trajectory", help="write a preset or keyframed trajectory to a file",
                       description="Export any trajectory (preset or file) as .json or .npz per-frame cameras.")
    p.add_argument("--cam", required=True, help="preset name (with parameters) or a trajectory file")
    p.add_argument("--num-frames", type=positive_int, default=49)
    p.add_argument("--radius", type=float, default=None,
                   help="pivot distance r (the reference uses nearest frame-0 depth + 0.15); needed by presets")
    p.add_argument("--output", required=True, help="destination .json or .npz")
    p.set_defaults(func=_run_trajectory)


def _run_trajectory(args) -> int:
    from ex4d.geometry.trajectory import make_trajectory
    from ex4d.io.trajectory_file import TRAJECTORY_SUFFIXES, load_trajectory, save_trajectory

    if Path(args.cam).suffix.lower() in TRAJECTORY_SUFFIXES:
        trajectory = load_trajectory(args.cam, args.num_frames)
    else:
        if args.radius is None or not args.radius > 0:
            raise InputError("--radius (a positive pivot distance) is needed to build a preset")
        trajectory = make_trajectory(args.cam, args.num_frames, args.radius)
    print(save_trajectory(args.output, trajectory))
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the pipeline on a built-in synthetic scene (offline, no downloads)",
                       description="Reconstruct and render a built-in dynamic scene with exact ground truth and "
                                   "write the videos, a side-by-side preview.mp4 and metrics.json.")
    p.add_argument("--output-dir", default="ex4d-demo", help="folder for the outputs (default ex4d-demo)")
    p.add_argument("--cam", default="180", help="camera preset or trajectory file (default 180)")
    p.add_argument("--num-frames", type=positive_int, default=25)
    p.add_argument("--height", type=positive_int, default=256)
    p.add_argument("--width", type=positive_int, default=256)
    p.add_argument("--seed", type=int, default=0, help="which random scene")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from ex4d.demo import run_demo

    result = run_demo(args.output_dir, cam=args.cam, height=args.height, width=args.width,
                      num_frames=args.num_frames, seed=args.seed, device=args.device, progress=not args.quiet)
    for path in result.paths:
        print(path)
    m = result.metrics
    print(f"novel frames: leak rate {100 * m['leak_rate']:.2f}% (seen pixels the source never saw), "
          f"mask recall {100 * m['mask_recall']:.1f}%, PSNR on seen pixels {m['psnr_seen_db']:.1f} dB, "
          f"on filled pixels {m['psnr_filled_db']:.1f} dB (offline fill)")
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="fill the masked regions of a render with the EX-4D video model",
                       description="Wan2.1-I2V-14B + the EX-4D LoRA and condition encoder (needs the 'diffusion' "
                                   "extra: pip install 'ex4d[diffusion]').")
    p.add_argument("--color-video", required=True, help="color_<cam>.mp4 from ex4d recon")
    p.add_argument("--mask-video", required=True, help="mask_<cam>.mp4 from ex4d recon (255 = seen)")
    p.add_argument("--output-video", required=True, help="destination .mp4")
    p.add_argument("--height", type=positive_int, default=512)
    p.add_argument("--width", type=positive_int, default=512)
    p.add_argument("--num-frames", type=non_negative_int, default=0,
                   help="0 (default): every frame of the renders, any length (overlapping windows beyond --window); "
                        "N: N frames selected as the reference does (4k+1, others rounded; 49 = the reference)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the colour video's; the "
                                                          "reference writes 15)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--save-arrays", action="store_true",
                   help="also write the exact output frames to <output>.npz (key 'frames')")
    add_generation_args(p, parallel=True)
    p.set_defaults(func=_run_generate)


def _run_generate(args) -> int:
    from ex4d.utils.device import resolve_device

    options = generation_options_from_args(args)  # also checks that the diffusion extra is installed
    from ex4d.inpaint.generate import generate

    for flag, path in (("--color-video", args.color_video), ("--mask-video", args.mask_video)):
        if not Path(path).exists():
            raise InputError(f"{path}: {flag} not found")
    device = resolve_device(args.device)
    output = Path(args.output_video)
    _check_weights(options.model)  # before the (slow) base model loads, so a typo costs nothing
    generate(args.color_video, args.mask_video, output, height=args.height, width=args.width,
             num_frames=args.num_frames or None, fps=args.fps,
             npz=output.with_suffix(".npz") if args.save_arrays else None,
             device=device, **options.generate_kwargs())
    print(output)
    return 0


def _check_weights(model) -> None:
    if not model.model_dir.is_dir():
        raise InputError(f"{model.model_dir}: --wan-dir is not a folder")
    if not model.adapter.exists():
        raise InputError(f"{model.adapter}: --ex4d-ckpt not found (ex4d.ckpt or an ex4d adapter folder)")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="video -> depth -> DW-Mesh render -> fill, cached stage by stage",
                       description="The whole pipeline for one video and one or more camera paths. Each stage's "
                                   "result and settings are kept in --output-dir; a rerun skips unchanged stages.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input-video", help="mp4/mov/webm/mkv/gif file or a folder of images")
    src.add_argument("--manifest", help="many videos: a CSV (columns input_video,cam,depth,output_dir; see "
                     "docs/run.md) or a folder of videos; each item writes to OUT/<video stem> and OUT/summary.json "
                     "lists every item's status (exit 1 if any failed)")
    p.add_argument("--summary-json", help="also write the machine-readable summary (status, stages, files) here")
    p.add_argument("--cam", action="append", help="preset or trajectory file; repeat for several (default 180)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--depth", help="D.npz to use instead of estimating depth")
    p.add_argument("--fill", choices=("offline", "ex4d", "none"), default="offline",
                   help="offline: no learned weights; ex4d: the EX-4D video model; none: the render as output")
    p.add_argument("--num-frames", type=int, default=49, help="frames taken from the start (0 = all)")
    p.add_argument("--height", type=positive_int)
    p.add_argument("--width", type=positive_int)
    add_generation_args(p, weights_help="for --fill ex4d (default: the official hub copy)")
    p.add_argument("--save-arrays", action="store_true",
                   help="also write the exact frames: render_<cam>.npz (color, mask, depth) and output_<cam>.npz")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_depth_backend_arguments(p, "--depth-backend", default=None)
    p.set_defaults(func=_run_run)


def _run_run(args) -> int:
    import time

    from ex4d.depth.cli import depth_options_from_args

    from ex4d.runner import run

    if args.input_video is not None and not Path(args.input_video).exists():
        raise InputError(f"{args.input_video}: input video not found")
    generate_options = generation_options_from_args(args) if args.fill == "ex4d" else None
    depth_options = depth_options_from_args(args) if args.depth_backend else None
    common = dict(depth_options=depth_options, fill=args.fill,
                  num_frames=args.num_frames or None, height=args.height, width=args.width, device=args.device,
                  generate_options=generate_options, save_arrays=args.save_arrays, progress=not args.quiet)
    if args.manifest is not None:
        from ex4d.batch import format_table, run_manifest

        if args.depth is not None:
            raise InputError("with --manifest, give depth files in the manifest's 'depth' column")
        batch = run_manifest(args.manifest, args.output_dir, cams=args.cam or ["180"],
                             summary_json=args.summary_json, **common)
        print(format_table(batch.items))
        return batch.exit_code
    from ex4d.batch import ItemStatus, ManifestItem, write_summary

    # A single run is a one-item batch for the summary, so both have one JSON schema.
    item = ManifestItem(0, Path(args.input_video), args.cam or ["180"], Path(args.output_dir),
                        Path(args.depth) if args.depth else None)
    start = time.perf_counter()
    try:
        result = run(args.input_video, args.output_dir, cams=item.cams, depth=args.depth, **common)
    except Exception as exc:
        if args.summary_json:
            write_summary(Path(args.output_dir), [ItemStatus(item, "failed", time.perf_counter() - start,
                                                             error=" ".join(str(exc).split()))], 0, 1, 1,
                          args.summary_json, write_out=False)
        raise
    if args.summary_json:
        write_summary(Path(args.output_dir), [ItemStatus(item, "ok", time.perf_counter() - start,
                                                         result=result.record())], 0, 1, 1, args.summary_json,
                      write_out=False)
    for stage, state in result.stages.items():
        print(f"{stage}: {state}")
    for path in result.outputs.values():
        print(path)
    return 0


# Examples shown by `ex4d <command> --help`: one story from the demo scene (`dm/`), so each line runs as written
# after `ex4d demo --output-dir dm` (tests/test_docs.py runs them; those needing weights end in their one-line error).
EXAMPLES = {
    "demo": ["ex4d demo --output-dir dm",
             "ex4d demo --output-dir dm-small --height 64 --width 64 --num-frames 9 --cam 90"],
    "depth": ["ex4d depth --input-video dm/input.mp4 --num-frames 0 --backend file --depth-file dm/depth.npz "
              "--output d.npz",
              "ex4d depth --input-video dm/input.mp4 --num-frames 0 --backend depth-anything-v2 --depth-size small "
              "--output d.npz"],
    "recon": ["ex4d recon --input-video dm/input.mp4 --depth dm/depth.npz --num-frames 0 --cam 90 --output-dir out",
              "ex4d recon --input-video dm/input.mp4 --depth dm/depth.npz --num-frames 0 --cam orbit:angle=60 "
              "--output-dir out --save-mesh --save-arrays"],
    "generate": ["ex4d generate --color-video out/color_90.mp4 --mask-video out/mask_90.mp4 "
                 "--output-video out/output_90.mp4   # downloads Wan2.1-I2V + the EX-4D adapter (or --wan-dir, "
                 "--ex4d-ckpt)"],
    "run": ["ex4d run --input-video dm/input.mp4 --depth dm/depth.npz --num-frames 0 --cam 90 --output-dir dm-run",
            "ex4d run --input-video dm/input.mp4 --depth dm/depth.npz --num-frames 0 --cam 90 --fill none "
            "--output-dir dm-render",
            "ex4d run --input-video dm/input.mp4 --depth dm/depth.npz --num-frames 0 --cam 90 --fill ex4d "
            "--output-dir dm-model   # downloads Wan2.1-I2V + the EX-4D adapter (or --wan-dir, --ex4d-ckpt)"],
    "eval": ["ex4d eval --pred dm/output_180.mp4 --ref dm/gt_180.mp4 --mask dm/mask_180.mp4"],
    "trajectory": ["ex4d trajectory --cam orbit:angle=60 --num-frames 49 --radius 3 --output orbit.json"],
    "prepare": ["ex4d prepare --videos CLIPS --output-dir DATA --depth-backend file   "
                "# CLIPS/<stem>.npz beside each clip"],
    "train": ["ex4d train --data DATA --wan-dir Wan2.1-I2V-14B-480P-Diffusers --output-dir RUN"],
    "ui": ["ex4d ui --port 7860"],
    "view": ["ex4d view --run dm-run   # an ex4d run output folder: its clip, paths and outputs in 4D",
             "ex4d view --input-video dm/input.mp4 --depth dm/depth.npz --cam 90"],
}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's wrapping, except for the examples epilog, whose lines are commands kept as written."""

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def _add_examples(sub) -> None:
    for name, parser in sub.choices.items():
        if name in EXAMPLES:
            parser.formatter_class = _HelpFormatter
            parser.epilog = "examples:\n" + "\n".join("  " + line for line in EXAMPLES[name])


class _OneLineParser(argparse.ArgumentParser):
    """argparse's parser (its subcommands' too) whose errors are one line, as every other ``ex4d`` error:
    ``ex4d <cmd>: error: <what argparse says> (see ex4d <cmd> --help)``, exit status 2, no usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="ex4d", description="Extreme-viewpoint 4D video synthesis: a monocular video along a new camera path.",
        epilog="`ex4d <command> --help` lists a command's options with examples. Quick start, offline: "
               "ex4d demo --output-dir dm")
    parser.add_argument("--version", action="version", version=f"ex4d {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of any error (anywhere on the line)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show the libraries' own messages and warnings (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="<command>")
    _add_demo(sub)
    add_depth_parser(sub)
    _add_recon(sub)
    _add_generate(sub)
    _add_run(sub)
    add_eval_parser(sub)
    _add_trajectory(sub)
    add_prepare_parser(sub)
    add_train_parser(sub)
    add_ui_parser(sub)
    from ex4d.view.cli import add_view_parser  # here, not above: a self-contained hook

    add_view_parser(sub)
    _add_examples(sub)
    return parser


_OUTPUT_DESTS = ("output_dir", "output_video", "output", "json")
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _path_args(args) -> list[tuple[str, Path]]:
    """(flag, path) of every string-valued option, for finding which one an error is about."""
    found = []
    for dest, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            # Only path-like values: a preset such as "180" must not match a number inside a message.
            if isinstance(v, str) and ("/" in v or Path(v).suffix or Path(v).exists()) and dest != "command":
                found.append(("--" + dest.replace("_", "-"), Path(v)))
    return found


def _flag_for_input_error(args, exc: InputError) -> str | None:
    if exc.argument is not None:
        return flag_of(args, exc.argument)
    # Unattributed: the argument whose path the message starts with (readers put the path first),
    # else one whose value the message quotes (e.g. "unknown preset 'spin'").
    message = exc.message
    hits = [(message.find(str(path)), -len(str(path)), flag) for flag, path in _path_args(args) if str(path) in message]
    if hits:
        return min(hits)[2]
    quoted = [("--" + dest.replace("_", "-")) for dest, value in vars(args).items()
              if isinstance(value, str) and dest != "command" and f"'{value}'" in message]
    return quoted[0] if len(quoted) == 1 else None


def _flag_for_os_error(args, exc: OSError) -> str | None:
    if exc.filename:
        target = Path(exc.filename)
        for flag, path in _path_args(args):
            if target == path or path in target.parents:  # the path itself or a file inside it
                return flag
        for flag, path in _path_args(args):
            # A folder on the way to an output (e.g. a parent that is a file): creating it failed.
            if flag[2:].replace("-", "_") in _OUTPUT_DESTS and target in path.parents:
                return flag
    if exc.errno in _WRITE_ERRNOS:  # e.g. a buffered write on a full disk: no file name attached
        outputs = [d for d in _OUTPUT_DESTS if getattr(args, d, None)]
        if len(outputs) == 1:
            return "--" + outputs[0].replace("_", "-")
    return None


def _os_error_text(exc: OSError) -> str:
    if exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


def _print_warning(message, category, filename, lineno, file=None, line=None, *, command="ex4d", verbose=False):
    # Input warnings (e.g. a huge video downscaled) are one line, like errors; others (the libraries' deprecation
    # notices and such) only with --verbose/--debug, in Python's format.
    if issubclass(category, InputWarning):
        print(f"ex4d {command}: note: {_one_line(message)}", file=sys.stderr)
    elif verbose:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


_SHOW_WARNING = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ex4d`` console script.

    Bad input: one line on stderr naming the argument, exit 2. Unwritable or full output: one line, exit 1.
    Anything else is a bug: one "internal error" line, exit 1 (``--debug`` prints the traceback for all of them).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug and --verbose are accepted anywhere on the line, not only before the subcommand.
    debug, verbose = "--debug" in argv, "--verbose" in argv
    argv = [f for f, on in (("--debug", debug), ("--verbose", verbose)) if on] + \
        [a for a in argv if a not in ("--debug", "--verbose")]
    if not (debug or verbose):
        quiet_third_party()
    args = build_parser().parse_args(argv)
    prefix = f"ex4d {args.command}"

    def fail(text: str, flag: str | None, code: int) -> int:
        if debug:
            traceback.print_exc()
        print(f"{prefix}: error: {flag + ': ' if flag else ''}{_one_line(text)}", file=sys.stderr)
        return code

    with warnings.catch_warnings():
        warnings.showwarning = functools.partial(_print_warning, command=args.command, verbose=debug or verbose)
        try:
            return args.func(args)
        except InputError as exc:
            return fail(exc.render(functools.partial(flag_of, args)), _flag_for_input_error(args, exc), 2)
        except OSError as exc:  # unwritable output folder, full disk, ...
            return fail(_os_error_text(exc), _flag_for_os_error(args, exc), 1)
        except KeyboardInterrupt:
            print(f"{prefix}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - a bug: one line, never a raw traceback (unless --debug)
            if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # host RAM or torch's GPU
                return fail(f"out of memory ({type(exc).__name__}: {_one_line(exc)[:200]}); try fewer frames "
                            "(--num-frames), a smaller size or a smaller --batch-size", None, 1)
            if debug:
                raise
            print(f"{prefix}: internal error: {type(exc).__name__}: {_one_line(exc)} "
                  "(run with --debug for the traceback)", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
