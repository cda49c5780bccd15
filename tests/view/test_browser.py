"""The viewer in a real browser (Debian's headless Chromium with SwiftShader's software WebGL2, driven by Playwright).

* For fixed cameras set through the page's JS API, the canvas equals ex4d's own render (:func:`ex4d.reconstruction.
  recon`) of the same frame and camera on the ground-truth demo scene at 256²: mask IoU >= 0.98 and PSNR >= 30 dB on
  pixels both mark seen, for the 16-bit log-depth stream and the lossless float32 one.
* A flight recorded in the page, exported as a file, runs through ``ex4d run --cam`` with the same cameras (<= 1e-5);
  the run folder then opens in the viewer, whose "view from the path" mode shows the run's own render (same mask) and
  its output video under the holes; the file loads back into the view.
"""

import base64
from pathlib import Path

import numpy as np
import pytest

from ex4d.geometry.trajectory import Trajectory, look_at, make_trajectory, reference_radius
from ex4d.io.trajectory_file import load_trajectory
from ex4d.io.video import Video, save_video
from ex4d.reconstruction import recon
from ex4d.view.server import ViewApp, serve_in_thread
from ex4d.view.source import from_run
from tests.view.conftest import make_source, scene_clip

CHROMIUM = Path("/usr/bin/chromium")
# software WebGL2 (SwiftShader through ANGLE): what a CI machine without a GPU has
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
SIZE, FRAMES = 256, 4

sync_api = pytest.importorskip("playwright.sync_api", reason='needs playwright: pip install "ex4d[uitest]"')
if not CHROMIUM.is_file():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def scene():
    return scene_clip(num_frames=FRAMES, size=SIZE)


def open_view(browser, url):
    page = browser.new_page(viewport={"width": 900, "height": 600})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.evaluate("() => window.ex4dView.ready")
    assert not errors, errors
    return page


def decode(snap) -> np.ndarray:
    return np.frombuffer(base64.b64decode(snap["rgba"]), np.uint8).reshape(snap["height"], snap["width"], 4)


def snapshot(page, t, w2c, K, size):
    page.evaluate("(t) => window.ex4dView.setFrame(t)", t)
    page.evaluate("([w, K, W, H]) => window.ex4dView.setCamera(w, K, W, H)",
                  [np.asarray(w2c).tolist(), np.asarray(K).tolist(), size[1], size[0]])
    return decode(page.evaluate("() => window.ex4dView.snapshot()"))


def agreement(rgba, color, mask):
    seen = rgba[..., 3] > 127
    iou = (seen & mask).sum() / max((seen | mask).sum(), 1)
    both = seen & mask
    mse = np.mean((rgba[..., :3][both].astype(np.float64) - color[both]) ** 2)
    return iou, 10 * np.log10(255.0**2 / max(mse, 1e-12)), int(both.sum())


def cameras(depth, K):
    """Two paths: the reference's 180° preset, and a raised view from the left with a longer focal length."""
    radius = reference_radius(depth[0])
    preset = make_trajectory("180", FRAMES, radius)
    eyes = np.stack([np.array([-0.4 - 0.3 * t, -0.5, 0.3]) for t in range(FRAMES)])
    raised = look_at(eyes, np.array([0.0, 0.2, radius + 1.0]))
    zoomed = K.copy()
    zoomed[:2, :2] *= 1.3
    return {"180": (preset.w2c, K), "raised": (raised, zoomed)}


@pytest.mark.parametrize("encoding", ["log16", "f32"])
def test_canvas_equals_ex4d_render(browser, scene, encoding, capsys):
    frames, depth, K = scene
    source = make_source(frames, depth, K)
    server, url = serve_in_thread(ViewApp(source, encoding=encoding))
    try:
        page = open_view(browser, url)
        video = Video(frames=frames, fps=15.0, source_size=(SIZE, SIZE))
        worst = [1.0, np.inf]
        for name, (w2c, K_target) in cameras(depth, K).items():
            ref = recon(video, depth, cam=Trajectory(w2c=w2c, K=np.repeat(K_target[None], FRAMES, 0), name=name),
                        intrinsics=K, num_frames=None, device="cpu", progress=False)
            for t in range(1, FRAMES):  # frame 0 of a preset is the source frame itself, copied by recon
                rgba = snapshot(page, t, w2c[t], K_target, (SIZE, SIZE))
                iou, psnr, n = agreement(rgba, ref.color[t], ref.mask[t])
                assert n > 0.2 * SIZE * SIZE and 0 < (~ref.mask[t]).sum(), (name, t)  # views with holes
                assert iou >= 0.98 and psnr >= 30, (encoding, name, t, iou, psnr)
                worst = [min(worst[0], iou), min(worst[1], psnr)]
        page.close()
        with capsys.disabled():
            print(f"\nex4d view vs ex4d render ({encoding}, {SIZE}²): worst mask IoU {worst[0]:.4f}, "
                  f"worst PSNR on pixels both see {worst[1]:.1f} dB")
    finally:
        server.shutdown()
        server.server_close()


def test_recorded_flight_runs_through_ex4d_run(browser, tmp_path):
    from ex4d.runner import run

    frames, depth, K = scene_clip(num_frames=FRAMES, size=128)
    server, url = serve_in_thread(ViewApp(make_source(frames, depth, K)))
    try:
        page = open_view(browser, url)
        recorded = []
        for t in range(FRAMES):  # fly: orbit, pan and move forward a little each frame, recording as it goes
            page.evaluate("(t) => window.ex4dView.setFrame(t)", t)
            page.evaluate("(t) => { const v = window.ex4dView; v.orbit(0.08, 0.03); v.pan(20, -10); v.fly(2, 0.05); "
                          "v.recordNow(); }", t)
            recorded.append(np.asarray(page.evaluate("() => window.ex4dView.getCamera().working.w2c")))
        exported = page.evaluate("() => window.ex4dView.exportFlight('json')")
        page.close()
    finally:
        server.shutdown()
        server.server_close()
    recorded = np.stack(recorded)
    assert np.linalg.norm(recorded[-1, :3, 3] - recorded[0, :3, 3]) > 0.1  # the camera really moved
    flight = tmp_path / exported["name"]
    flight.write_bytes(base64.b64decode(exported["base64"]))
    np.testing.assert_allclose(load_trajectory(flight, FRAMES).w2c, recorded, atol=1e-9)

    video = save_video(tmp_path / "scene.mp4", frames, fps=15)
    np.savez(tmp_path / "depth.npz", depth=depth, intrinsics=K)
    out = tmp_path / "run"
    run(video, out, cams=[str(flight)], depth=tmp_path / "depth.npz", num_frames=FRAMES, device="cpu",
        progress=False)
    with np.load(out / "camera_flight.npz") as cam:
        assert np.abs(cam["w2c"] - recorded).max() <= 1e-5

    # The run folder in the viewer: following the flight path shows the run's render and its output video.
    source = from_run(out, depth=tmp_path / "depth.npz")
    server, url = serve_in_thread(ViewApp(source))
    try:
        page = open_view(browser, url)
        assert page.evaluate("() => window.ex4dView.info.paths.map(p => [p.name, p.output])") == [["flight", True]]
        page.evaluate("() => window.ex4dView.selectPath(0, true)")
        with np.load(out / "cache" / "render_flight.npz") as render:
            color, mask = render["color"], render["mask"]
        for t in (1, FRAMES - 1):
            page.evaluate("(t) => window.ex4dView.setFrame(t)", t)
            rgba = decode(page.evaluate("() => window.ex4dView.snapshot()"))
            iou, psnr, _ = agreement(rgba, color[t], mask[t])
            assert iou >= 0.98 and psnr >= 30, (t, iou, psnr)
            under = decode(page.evaluate("() => window.ex4dView.outputSnapshot()"))
            np.testing.assert_array_equal(under[..., :3], source.output_frames("flight")[t])
        # flying by hand from there starts at the path's camera: forward and back again leaves it unchanged
        page.keyboard.press("w")
        page.keyboard.press("s")
        took_over = page.evaluate("() => window.ex4dView.getCamera().working")
        assert not page.is_checked("#follow")
        np.testing.assert_allclose(took_over["w2c"], recorded[FRAMES - 1], atol=1e-6)
        np.testing.assert_allclose(took_over["K"], K, rtol=1e-6)
        # and the exported file loads back as a path of the view, with the same cameras
        doc = page.evaluate("(text) => window.ex4dView.loadTrajectoryText('again.json', text)", flight.read_text())
        np.testing.assert_allclose(doc["w2c"], recorded, atol=1e-9)
        assert page.evaluate("() => window.ex4dView.info.paths.length") == 1  # server info unchanged
        page.close()
    finally:
        server.shutdown()
        server.server_close()


class SlowApp(ViewApp):
    """A server whose chunks take 1 s each (a slow disk or network), recording which ranges were asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requested = []

    def chunk(self, query):
        import time

        self.requested.append(int(query["start"][0]))
        time.sleep(1.0)
        return super().chunk(query)


def test_streams_around_the_playhead_and_never_waits(browser):
    frames, depth, K = scene_clip(num_frames=40, size=32)
    # 10 chunks; 4 frames last 0.27 s at 15 fps: three chunks ahead (0.8 s) cannot hide a 1 s fetch
    app = SlowApp(make_source(frames, depth, K), chunk_frames=4)
    server, url = serve_in_thread(app)
    try:
        page = open_view(browser, url)
        page.wait_for_timeout(1500)
        # only the chunks around frame 0: the current one, three ahead and one behind (wrapping to the end)
        assert set(app.requested) <= {0, 4, 8, 12, 36}, app.requested
        page.evaluate("() => window.ex4dView.play()")
        seen_frames, stats = set(), []
        for _ in range(12):
            page.wait_for_timeout(250)
            stats.append(page.evaluate("() => window.ex4dView.stats()"))
            seen_frames.add(stats[-1]["frame"])
        page.close()
    finally:
        server.shutdown()
        server.server_close()
    assert max(s["chunks"] for s in stats) <= 5  # never the whole clip in the page
    # the clock kept going while geometry was late: frames advanced at the clip's rate, some shown late (stalls)
    assert len(seen_frames) >= 8 and stats[-1]["stalls"] > 0, (seen_frames, stats[-1])
    assert len(set(app.requested)) > 5  # and it streamed on as it played


def test_free_view_frame_is_the_recorded_camera(browser):
    """In the free view, the working frame (the dashed outline) shows exactly what the recorded camera renders."""
    frames, depth, K = scene_clip(num_frames=3, size=64)
    K[0, 2] += 3.0  # an off-centre principal point must stay where it is in the frame
    server, url = serve_in_thread(ViewApp(make_source(frames, depth, K)))
    try:
        page = open_view(browser, url)
        page.evaluate("() => { const s = document.getElementById('stage'); s.style.flex = 'none'; "
                      "s.style.width = '128px'; s.style.height = '64px'; }")  # twice as wide: scale 1, 32 px margins
        page.evaluate("() => window.ex4dView.setFrame(1)")
        page.evaluate("() => { const v = window.ex4dView; v.orbit(0.15, 0.05); v.fly(2, 0.2); }")
        free = decode(page.evaluate("() => window.ex4dView.snapshot()"))
        working = page.evaluate("() => window.ex4dView.getCamera().working")
        frame = page.evaluate("() => { const r = document.getElementById('frame').getBoundingClientRect(); "
                              "return [r.width, r.height]; }")
        exact = snapshot(page, 1, working["w2c"], working["K"], (64, 64))
        page.close()
    finally:
        server.shutdown()
        server.server_close()
    assert free.shape == (64, 128, 4) and frame == [64, 64]
    np.testing.assert_allclose(working["K"], [[K[0, 0], 0, K[0, 2]], [0, K[1, 1], K[1, 2]], [0, 0, 1]], rtol=1e-6)
    crop = free[:, 32:96]
    iou, psnr, n = agreement(crop, exact[..., :3], exact[..., 3] > 127)
    assert n > 1000 and iou >= 0.99 and psnr >= 40, (iou, psnr)
    assert (free[:, :32, 3] == 0).mean() < 1  # the view shows more than the frame on the sides


def gl_projection(K, width, height, near=1e-3, far=1e3):
    """OpenGL projection (column-major, as WebXR gives it) of OpenCV intrinsics, for eye axes x right, y up, -z ahead."""
    P = np.array([[2 * K[0, 0] / width, 0, 1 - 2 * K[0, 2] / width, 0],
                  [0, 2 * K[1, 1] / height, 2 * K[1, 2] / height - 1, 0],
                  [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                  [0, 0, -1, 0]])
    return P.T.reshape(-1)


def test_xr_projection_path_and_eye_cameras(browser):
    """What the WebXR mode draws with: a GL projection gives the same pixels as ex4d's K; XR eye poses map to OpenCV
    cameras (a right eye sits to the camera's right, a head tilted up looks towards -y)."""
    frames, depth, K = scene_clip(num_frames=2, size=64)
    server, url = serve_in_thread(ViewApp(make_source(frames, depth, K)))
    try:
        page = open_view(browser, url)
        page.evaluate("() => window.ex4dView.setFrame(1)")
        w2c = look_at(np.array([-0.5, -0.3, 0.2]), np.array([0.0, 0.2, 4.0]))
        by_K = snapshot(page, 1, w2c, K, (64, 64))
        by_P = decode(page.evaluate("([w, P]) => window.ex4dView.snapshotProjected(w, P, 64, 64)",
                                    [w2c.tolist(), gl_projection(K, 64, 64).tolist()]))
        start = np.eye(4)
        start[:3, 3] = [0.1, 0.2, 0.3]  # w2c of the free camera when the session starts
        right_eye = np.eye(4)
        right_eye[0, 3] = -0.032  # XR view matrix of an eye 32 mm to the right (x right in XR too)
        theta = 0.3
        up = np.eye(4)  # XR view matrix of a head pitched up by theta (rotation about x by -theta)
        up[1:3, 1:3] = [[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]]
        eyes = [np.asarray(page.evaluate("([V, s]) => window.ex4dView.xrEyeW2C(V, s)", [m.T.reshape(-1).tolist(),
                                                                                        start.tolist()]))
                for m in (np.eye(4), right_eye, up)]
        page.close()
    finally:
        server.shutdown()
        server.server_close()
    iou, psnr, n = agreement(by_P, by_K[..., :3], by_K[..., 3] > 127)
    assert n > 1000 and iou >= 0.99 and psnr >= 40, (iou, psnr)
    np.testing.assert_allclose(eyes[0], start, atol=1e-12)

    def centre(m):
        return -m[:3, :3].T @ m[:3, 3]

    np.testing.assert_allclose(centre(eyes[1]) - centre(start), [0.032, 0, 0], atol=1e-9)
    forward = eyes[2][2, :3]  # the eye camera's +z axis in the world
    np.testing.assert_allclose(forward, [0, -np.sin(theta), np.cos(theta)], atol=1e-9)
