"""``ex4d ui``: start the web app (see docs/ui.md)."""

from __future__ import annotations

import os
from pathlib import Path

from ex4d.errors import InputError
from ex4d.generation_cli import add_generation_args, generation_options_from_args
from ex4d.utils.argtypes import positive_int


def add_ui_parser(sub) -> None:
    from ex4d.ui.session import default_work_dir

    p = sub.add_parser("ui", help="web app: upload a video, design the camera path with a live preview, generate",
                       description="A local Gradio page (needs the ui extra: pip install \"ex4d[ui]\"). Uploads, "
                                   "depth, previews and results live in --work-dir; nothing outside it is read or "
                                   "written.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive_int, default=7860)
    p.add_argument("--work-dir", default=str(default_work_dir()), help=f"default {default_work_dir()}")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="size limit of one uploaded file")
    p.add_argument("--num-frames", type=positive_int, default=49, help="frames taken from the start of a video")
    p.add_argument("--depth-backend", default="depthcrafter",
                   help="depth model for videos uploaded without a depth .npz (its weights must be on disk)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no startup banner")
    # The ex4d fill's options, as ex4d generate's; --wan-dir and --ex4d-ckpt together offer that fill.
    add_generation_args(p, weights_help="(with the other of --wan-dir / --ex4d-ckpt: offers the ex4d fill)")
    p.set_defaults(func=run_ui)


def run_ui(args) -> int:
    from ex4d.ui.session import Workspace

    if not args.max_upload_mb > 0:
        raise InputError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    generate_options = None
    if args.wan_dir or args.ex4d_ckpt:
        wan, ckpt = Path(args.wan_dir or ""), Path(args.ex4d_ckpt or "")
        if not (args.wan_dir and wan.is_dir()):
            raise InputError(f"{args.wan_dir}: --wan-dir is not a folder (both --wan-dir and --ex4d-ckpt are needed)")
        if not (args.ex4d_ckpt and ckpt.exists()):
            raise InputError(f"{args.ex4d_ckpt}: --ex4d-ckpt not found (both --wan-dir and --ex4d-ckpt are needed)")
        from ex4d.runner import check_generation_options

        generate_options = generation_options_from_args(args, resolve_weights=False)
        check_generation_options(generate_options, args.device)  # e.g. --fp8-matmul without an fp8 GPU
    workspace = Workspace(args.work_dir, max_upload_mb=args.max_upload_mb, max_frames=args.num_frames,
                          depth_backend=args.depth_backend)
    # Gradio keeps uploads and served copies in GRADIO_TEMP_DIR: inside the work dir. Set before importing it.
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.gradio_dir)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InputError('the web app needs gradio: pip install "ex4d[ui]"') from None
    from ex4d.ui.app import build_app, launch

    app = build_app(workspace, device=args.device, generate_options=generate_options)
    if not args.quiet:
        print(f"ex4d ui: work dir {workspace.root}")
    launch(app, workspace, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, quiet=args.quiet)
    return 0
