"""``ex4d view``: play a clip as a 4D scene in the browser (see docs/view.md)."""

from __future__ import annotations

import sys

from ex4d.errors import InputError
from ex4d.utils.argtypes import non_negative_int, positive_int


def add_view_parser(sub) -> None:
    p = sub.add_parser("view", help="live 4D viewer: fly through the DW-Mesh of every frame in the browser",
                       description="Serves a local page (127.0.0.1 only, no network) that draws each frame's "
                                   "DW-Mesh with WebGL2 from the colour video and a depth stream, shows the "
                                   "planned camera paths and their output videos, and records a flight as a "
                                   "trajectory file for ex4d run --cam.")
    p.add_argument("--run", help="an ex4d run output folder (its video, depth, paths and output videos)")
    p.add_argument("--input-video", help="video file or image folder (with --depth), instead of --run")
    p.add_argument("--depth", help="D.npz z-depth (T,H,W) with optional 'intrinsics', with --input-video; with --run: "
                   "the depth file that run was given, where its records do not name it")
    p.add_argument("--cam", action="append", default=[],
                   help="also show this preset or trajectory .json/.npz as a path (repeatable)")
    p.add_argument("--num-frames", type=non_negative_int, default=0,
                   help="with --input-video: frames taken from the start (default 0 = all)")
    p.add_argument("--port", type=positive_int, default=7870, help="local port (default 7870)")
    p.add_argument("--depth-encoding", choices=("log16", "f32"), default="log16",
                   help="log16: 16-bit log-depth (half the bytes); f32: float32, lossless")
    p.add_argument("--chunk-frames", type=positive_int, default=8, help="frames per streamed chunk (default 8)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    p.add_argument("--quiet", action="store_true", help="no startup line")
    p.set_defaults(func=run_view)


def load_source(args):
    """The :class:`ex4d.view.source.ViewSource` the arguments name."""
    from ex4d.view.source import from_run, from_video

    if args.run and args.input_video:
        raise InputError("give either --run or --input-video with --depth, not both")
    if args.run:
        return from_run(args.run, args.cam, args.depth)
    if not (args.input_video and args.depth):
        raise InputError("give an ex4d run output folder (--run) or a video with its depth file "
                         "(--input-video and --depth)")
    return from_video(args.input_video, args.depth, args.cam, args.num_frames or None)


def run_view(args) -> int:
    from ex4d.view.server import ViewApp, make_server

    app = ViewApp(load_source(args), chunk_frames=args.chunk_frames, encoding=args.depth_encoding)
    try:
        server = make_server(app, args.port)
    except OSError as exc:
        raise InputError(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); pick another port",
                         "port") from None
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    if not args.quiet:
        print(f"ex4d view: {url} (Ctrl-C to stop)", file=sys.stderr)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
