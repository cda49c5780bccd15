"""The web app's 4D viewer panel: ``Callbacks.open_viewer`` serves the loaded clip through ``ex4d view``'s server with
the path being designed, reusing one server per clip."""

import json
import re
import urllib.request
from html import unescape

import numpy as np
import pytest

from ex4d.io.video import save_video
from ex4d.ui import actions
from ex4d.ui.app import Callbacks
from ex4d.ui.session import Workspace
from ex4d.view import panel
from ex4d.view.stream import unpack_chunk
from tests.conftest import wall_and_box


@pytest.fixture
def loaded(tmp_path):
    ws = Workspace(tmp_path / "work", max_upload_mb=1)
    frames, depth = wall_and_box(num_frames=5, height=32, width=32)
    upload = ws.gradio_dir / "upload"
    upload.mkdir(parents=True)
    save_video(upload / "clip.mp4", frames, fps=12)
    np.savez(upload / "depth.npz", depth=depth)
    clip = ws.add_video(upload / "clip.mp4", upload / "depth.npz")
    yield Callbacks(ws, device="cpu"), clip
    for server, _, _ in panel._servers.values():
        server.shutdown()
        server.server_close()
    panel._servers.clear()


def _info(page_html: str) -> tuple[str, dict]:
    url = unescape(re.search(r'<iframe src="([^"]+)"', page_html).group(1)).split("?")[0]
    with urllib.request.urlopen(url + "api/info", timeout=20) as r:
        return url, json.loads(r.read())


def test_open_viewer_serves_the_clip_with_the_designed_path(loaded):
    cb, clip = loaded
    design = actions.PathDesign(preset="orbit", angle=40.0)
    args = [clip.key, design.preset, design.angle, design.elevation, design.radius_scale, design.zoom, [], None]
    url, info = _info(cb.open_viewer(*args))
    assert url.startswith("http://127.0.0.1:")
    assert (info["frames"], info["height"], info["width"]) == (5, 32, 32)
    assert [p["name"] for p in info["paths"]] == ["designed path"]
    np.testing.assert_allclose(info["paths"][0]["w2c"], actions.build_trajectory(clip, design).w2c)
    with urllib.request.urlopen(url + "api/chunk?start=0&count=5", timeout=20) as r:
        _, frames, depth = unpack_chunk(r.read())
    np.testing.assert_array_equal(frames, clip.frames)
    np.testing.assert_allclose(depth, clip.depth, rtol=7e-5)

    # a new design: same server, the path replaced
    args[2] = -60.0
    url2, info2 = _info(cb.open_viewer(*args))
    assert url2 == url and len(info2["paths"]) == 1
    np.testing.assert_allclose(info2["paths"][0]["w2c"], actions.build_trajectory(
        clip, actions.PathDesign(preset="orbit", angle=-60.0)).w2c)
