"""End to end in a real browser: Debian's headless Chromium, driven by Playwright, against ``ex4d ui`` on localhost.

Uploads a small video with its depth file, changes the path, sees the preview change, generates with the offline
fill and downloads the output, which must decode to the input's frame count. A bad upload first shows a readable
error in the page and the app keeps serving. The screenshot's path is printed.
"""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from ex4d.io.video import save_video
from tests.conftest import wall_and_box

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FRAMES = 9

pytest.importorskip("gradio", reason='the web app needs gradio: pip install "ex4d[ui]"')
sync_api = pytest.importorskip("playwright.sync_api", reason='needs playwright: pip install "ex4d[uitest]"')
if not CHROMIUM.is_file():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """``ex4d ui`` in a child process on a free localhost port; yields (url, work dir)."""
    port, work = _free_port(), tmp_path / "work"
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ex4d.cli", "ui", "--port", str(port), "--work-dir", str(work),
                             "--device", "cpu", "--max-upload-mb", "5", "--quiet"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"ex4d ui did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, work
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def _src(page, selector: str) -> str | None:
    img = page.locator(f"{selector} img")
    return img.first.get_attribute("src") if img.count() else None


def _wait_change(page, selector: str, old: str | None, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        src = _src(page, selector)
        if src and src != old:
            return src
        page.wait_for_timeout(200)
    raise AssertionError(f"{selector} did not update within {timeout_s} s")


def test_upload_design_preview_generate_download(server, tmp_path, capsys):
    url, work = server
    frames, depth = wall_and_box(num_frames=FRAMES, height=64, width=64)
    video = save_video(tmp_path / "clip.mp4", frames, fps=12)
    np.savez(tmp_path / "clip_depth.npz", depth=depth)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 10)

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
        page.goto(url)
        status = page.locator("#status").locator("input, textarea").first

        # A bad upload: one readable line in the page, no traceback.
        page.locator("#video_upload input[type=file]").set_input_files(str(bad))
        page.wait_for_selector("#video_upload :text('bad.mp4')")
        page.click("#load_btn")
        toast = page.locator(".toast-body").first
        toast.wait_for(timeout=30000)
        message = toast.inner_text()
        assert "bad.mp4" in message and "Traceback" not in message and "File \"" not in message
        page.locator(".toast-close").first.click()
        page.locator("#video_upload button[aria-label='Clear']").first.click()

        # The real upload, with its depth file; the preview appears.
        page.locator("#video_upload input[type=file]").set_input_files(str(video))
        page.locator("#depth_upload input[type=file]").set_input_files(str(tmp_path / "clip_depth.npz"))
        page.wait_for_selector("#depth_upload :text('clip_depth.npz')")
        page.click("#load_btn")
        first = _wait_change(page, "#preview_strip", None)
        assert "preview of" in status.input_value()
        first_path = _src(page, "#path_plot")

        # Change the path: the angle box; the preview and the path picture follow.
        angle = page.locator("#angle input[type=number]")
        angle.fill("-75")
        start = time.monotonic()
        angle.press("Enter")
        _wait_change(page, "#preview_strip", first)
        preview_seconds = time.monotonic() - start
        _wait_change(page, "#path_plot", first_path)

        # Generate with the offline fill and download the output video.
        page.click("#generate_btn")
        page.wait_for_function("document.querySelectorAll('#downloads a').length >= 4", timeout=90000)
        assert "generated" in status.input_value()
        links = [a.get_attribute("href") for a in page.locator("#downloads a").all()]
        for expected in ("/output_path-", "/mask_path-", "/path-", "/mesh.glb"):
            assert any(expected in link for link in links), links
        with page.expect_download() as info:
            page.locator("#downloads a[href*='output_path-']").first.click()
        downloaded = tmp_path / "downloaded.mp4"
        info.value.save_as(downloaded)
        shot = tmp_path / "ex4d-ui.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()

    with av.open(str(downloaded)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == FRAMES and decoded[0].shape == (64, 64, 3)
    # Uploads and results stayed inside the work dir.
    assert list(work.glob("gradio/**/clip.mp4")) and list(work.glob("clips/*/runs/output_*.mp4"))
    with capsys.disabled():
        print(f"\nex4d ui screenshot: {shot} (preview updated {preview_seconds:.1f} s after the path changed)")
