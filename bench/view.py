"""Frame rate of ``ex4d view`` in Chromium (not a test).

Usage:
    python bench/view.py [--size 512] [--frames 24] [--seconds 6] [--encoding log16] [--viewport 1280x720]
                         [--chromium /usr/bin/chromium] [--gpu]

Serves the ground-truth demo scene (``ex4d.data.make_scene``, seen from its source camera, ``--size``² pixels,
``--frames`` frames) on localhost, opens the viewer in headless Chromium (software WebGL2 through SwiftShader, or
the machine's GPU with ``--gpu``) and measures, in the free-flying view:

* draw: milliseconds per frame for back-to-back draws of the resident geometry while the camera orbits, each one
  waited for (``gl.readPixels`` of one pixel): the renderer's throughput;
* playback: the page's own requestAnimationFrame rate while the clip plays and streams (chunks fetched, parsed and
  uploaded as it goes), and how many displayed frames had to wait for their geometry (``stalls``).
"""

from __future__ import annotations

import argparse
import json
import time

import _benchlib  # noqa: F401  (ex4d importable from a source checkout)
import numpy as np

from ex4d.data import default_intrinsics, make_scene, render_scene_video
from ex4d.view.server import ViewApp, serve_in_thread
from ex4d.view.source import ViewSource

SOFTWARE_GL = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def scene_source(size: int, frames: int) -> ViewSource:
    scene = make_scene(0, motion_frames=max(frames, 17))
    K = default_intrinsics(size, size).numpy()
    view = render_scene_video(scene, np.tile(np.eye(4), (frames, 1, 1)), K, size, size)
    depth = view["depth"].numpy()
    depth = np.where(depth > 0, depth, 1e4).astype(np.float32)
    return ViewSource(view["frames"].numpy(), depth, np.repeat(K[None], frames, 0), 30.0, title="demo scene")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--encoding", default="log16", choices=("log16", "f32"))
    parser.add_argument("--viewport", default="1280x720")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--gpu", action="store_true", help="use the machine's GPU instead of SwiftShader")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    start = time.perf_counter()
    source = scene_source(args.size, args.frames)
    print(f"scene {args.size}²×{args.frames} ray-cast in {time.perf_counter() - start:.1f} s")
    server, url = serve_in_thread(ViewApp(source, encoding=args.encoding))
    width, height = (int(v) for v in args.viewport.split("x"))
    flags = ["--headless", "--no-sandbox", "--no-first-run"] + ([] if args.gpu else SOFTWARE_GL)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=flags)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        page.evaluate("() => window.ex4dView.ready")
        renderer = page.evaluate("""() => { const gl = document.createElement('canvas').getContext('webgl2');
            const d = gl.getExtension('WEBGL_debug_renderer_info');
            return d ? gl.getParameter(d.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER); }""")
        canvas = page.evaluate("() => { const c = document.getElementById('gl'); return [c.width, c.height]; }")
        page.evaluate("() => window.ex4dView.timeDraws(3)")  # warm-up (shader compile, first uploads)
        draw_ms = page.evaluate("() => window.ex4dView.timeDraws(20)")
        before = page.evaluate("() => window.ex4dView.stats()")
        page.evaluate("() => window.ex4dView.play()")
        samples = []
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            page.wait_for_timeout(1000)
            samples.append(page.evaluate("() => window.ex4dView.stats()"))
        browser.close()
    server.shutdown()
    fps = [s["fps"] for s in samples[1:]] or [samples[-1]["fps"]]
    result = {
        "renderer": renderer, "clip": f"{args.size}x{args.size}x{args.frames}", "encoding": args.encoding,
        "canvas": canvas, "triangles": 2 * (args.size - 1) ** 2 + 2,
        "draw_ms": round(draw_ms, 1), "draws_per_s": round(1000 / draw_ms, 1),
        "playback_fps_median": float(np.median(fps)), "playback_fps_min": min(fps),
        "frames_drawn_while_playing": samples[-1]["drawn"] - before["drawn"],
        "stalls": samples[-1]["stalls"] - before["stalls"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
