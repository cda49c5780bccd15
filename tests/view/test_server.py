"""The viewer's localhost server: page, metadata, gzip'd chunks, output frames, trajectory files written and read by
ex4d's own code; inputs from a video + depth file and from an ``ex4d run`` folder; the CLI's input errors."""

import gzip
import hashlib
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from ex4d.cli import main
from ex4d.errors import InputError
from ex4d.geometry.trajectory import make_trajectory, reference_radius
from ex4d.io.trajectory_file import load_trajectory
from ex4d.io.video import save_video
from ex4d.view.server import ViewApp, serve_in_thread
from ex4d.view.source import from_run, from_video
from ex4d.view.stream import unpack_chunk
from tests.conftest import wall_and_box
from tests.view.conftest import make_source


@pytest.fixture
def served(small_scene):
    frames, depth, K = small_scene
    w2c = make_trajectory("90", len(depth), reference_radius(depth[0])).w2c
    source = make_source(frames, depth, K, {"90": w2c})
    server, url = serve_in_thread(ViewApp(source, chunk_frames=2))
    yield url, source
    server.shutdown()
    server.server_close()


def _get(url, gz=False):
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gz else {})
    with urllib.request.urlopen(req, timeout=20) as r:
        body = r.read()
        return (gzip.decompress(body) if r.headers.get("Content-Encoding") == "gzip" else body), r.headers


def _post(url, body: bytes):
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=20) as r:
        return r.read(), r.headers


def _status(url, body=None) -> tuple[int, str]:
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=20)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]
    return 200, ""


def test_page_info_and_chunks(served):
    url, source = served
    page, headers = _get(url)
    assert b"/static/viewer.js" in page and headers["Content-Type"].startswith("text/html")
    js, _ = _get(url + "static/viewer.js")
    assert b"ex4dView" in js and b"http" not in js.replace(b"http://127", b"")  # nothing fetched from the network
    assert _status(url + "static/../server.py")[0] == 404 and _status(url + "static/nope.js")[0] == 404

    info = json.loads(_get(url + "api/info")[0])
    assert (info["frames"], info["height"], info["width"], info["chunk"]) == (5, 48, 48, 2)
    np.testing.assert_allclose(info["K"], source.K, rtol=1e-6)
    assert info["radius"] == pytest.approx(reference_radius(source.depth[0]))
    assert [p["name"] for p in info["paths"]] == ["90"] and not info["paths"][0]["output"]
    np.testing.assert_allclose(info["paths"][0]["w2c"], source.paths["90"].w2c)

    body, headers = _get(url + "api/chunk?start=2&count=2", gz=True)
    assert headers["Content-Encoding"] == "gzip"
    head, frames, depth = unpack_chunk(body)
    assert head["start"] == 2 and head["count"] == 2
    np.testing.assert_array_equal(frames, source.frames[2:4])
    np.testing.assert_allclose(depth, source.depth[2:4], rtol=7e-5)
    # the last chunk is clipped to the clip's end; bad ranges are a readable 400
    assert unpack_chunk(_get(url + "api/chunk?start=4&count=8")[0])[0]["count"] == 1
    assert _status(url + "api/chunk?start=5")[0] == 400
    assert _status(url + "api/chunk?start=x")[0] == 400
    code, message = _status(url + "api/output?name=90&start=0")
    assert code == 400 and "no output video" in message
    # a request for another host name (DNS rebinding) is refused
    foreign = urllib.request.Request(url + "api/info", headers={"Host": "evil.example:80"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(foreign, timeout=20)
    assert refused.value.code == 403


def test_trajectory_export_and_load_use_ex4d_files(served, tmp_path):
    url, source = served
    w2c = source.paths["90"].w2c
    K = np.repeat(np.array([[[60.0, 0, 24], [0, 60, 24], [0, 0, 1]]]), 5, 0)
    body, headers = _post(url + "api/trajectory/export?format=json", json.dumps({"w2c": w2c.tolist(),
                                                                                  "K": K.tolist()}).encode())
    assert 'filename="flight.json"' in headers["Content-Disposition"]
    (tmp_path / "flight.json").write_bytes(body)
    loaded = load_trajectory(tmp_path / "flight.json", 5)
    np.testing.assert_allclose(loaded.w2c, w2c, atol=1e-12)
    np.testing.assert_allclose(loaded.K, K)

    body, _ = _post(url + "api/trajectory/export?format=npz", json.dumps({"w2c": w2c.tolist()}).encode())
    (tmp_path / "flight.npz").write_bytes(body)
    np.testing.assert_allclose(load_trajectory(tmp_path / "flight.npz", 5).w2c, w2c, atol=1e-6)

    keys = {"keyframes": [{"frame": 4, "w2c": w2c[4].tolist()}, {"frame": 0, "w2c": w2c[0].tolist()}]}
    body, _ = _post(url + "api/trajectory/export?format=json", json.dumps(keys).encode())
    (tmp_path / "keys.json").write_bytes(body)
    interpolated = load_trajectory(tmp_path / "keys.json", 5).w2c
    np.testing.assert_allclose(interpolated[[0, 4]], w2c[[0, 4]], atol=1e-9)  # keyframes are reproduced
    assert [k["frame"] for k in json.loads(body)["keyframes"]] == [0, 4]
    from ex4d.ui.actions import keyframe_rows

    assert len(keyframe_rows(tmp_path / "keys.json")) == 2  # the web app's keyframe table reads them
    # a rolled camera (rotated about its optical axis) is rebuilt exactly too
    roll = np.eye(4)
    roll[:2, :2] = [[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]]
    rolled = {"keyframes": [{"frame": 2, "w2c": (roll @ w2c[2]).tolist()}]}
    (tmp_path / "rolled.json").write_bytes(_post(url + "api/trajectory/export?format=json",
                                                 json.dumps(rolled).encode())[0])
    np.testing.assert_allclose(load_trajectory(tmp_path / "rolled.json", 5).w2c, np.repeat((roll @ w2c[2])[None], 5, 0),
                               atol=1e-9)

    doc = json.loads(_post(url + "api/trajectory/load?name=mine.json", (tmp_path / "flight.json").read_bytes())[0])
    assert doc["name"] == "mine"
    np.testing.assert_allclose(doc["w2c"], w2c, atol=1e-12)
    np.testing.assert_allclose(doc["K"], K)

    code, message = _status(url + "api/trajectory/export?format=json", json.dumps({"w2c": w2c[:3].tolist()}).encode())
    assert code == 400 and "3 cameras but the video has 5 frames" in message
    code, message = _status(url + "api/trajectory/load?name=x.txt", b"{}")
    assert code == 400 and ".npz or .json" in message


def test_video_and_run_folder_inputs(tmp_path):
    from ex4d.runner import run

    frames, depth = wall_and_box(num_frames=5, height=32, width=32)
    video = save_video(tmp_path / "clip.mp4", frames, fps=10)
    np.savez(tmp_path / "depth.npz", depth=depth)
    source = from_video(video, tmp_path / "depth.npz", cams=["30"], num_frames=4)
    assert source.frames.shape == (4, 32, 32, 3) and source.K.shape == (4, 3, 3)
    assert source.K[0, 0, 0] == 500 and list(source.paths) == ["30"] and source.paths["30"].output is None

    out = tmp_path / "run"
    run(video, out, cams=["30"], depth=tmp_path / "depth.npz", num_frames=5, height=32, width=32, device="cpu",
        progress=False)
    assert from_run(out).num_frames == 5  # run.json names the depth file it was given
    moved = (tmp_path / "depth.npz").rename(tmp_path / "elsewhere.npz")
    with pytest.raises(InputError, match="pass that file with --depth"):
        from_run(out)  # a run given a depth file that is gone (or that its records do not name)
    source = from_run(out, depth=moved)
    assert source.num_frames == 5 and list(source.paths) == ["30"]
    path = source.paths["30"]
    with np.load(out / "camera_30.npz") as cam:
        np.testing.assert_allclose(path.w2c, cam["w2c"])
    assert path.output == out / "output_30.mp4"
    np.testing.assert_allclose(source.depth, depth)

    # a run whose records fingerprint its depth file refuses another one
    other = tmp_path / "other.npz"
    np.savez(other, depth=depth * 2)
    (out / "mesh.json").write_text(json.dumps({"inputs": {"files": {"depth": {
        "sha256": hashlib.sha256(moved.read_bytes()).hexdigest()}}}}))
    from_run(out, depth=moved)
    with pytest.raises(InputError, match="not the depth file this run used"):
        from_run(out, depth=other)

    server, url = serve_in_thread(ViewApp(source, chunk_frames=4))
    try:
        info = json.loads(_get(url + "api/info")[0])
        assert info["paths"][0]["output"] is True
        head, out_frames, no_depth = unpack_chunk(_get(url + "api/output?name=30&start=4", gz=True)[0])
        assert head["start"] == 4 and head["count"] == 1 and no_depth is None
        np.testing.assert_array_equal(out_frames[0], source.output_frames("30")[4])
    finally:
        server.shutdown()
        server.server_close()


def test_cli_input_errors(tmp_path, capsys):
    assert main(["view", "--no-browser"]) == 2
    assert "--run" in capsys.readouterr().err
    assert main(["view", "--run", str(tmp_path), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "--run" in err and "run.json" in err
    (tmp_path / "run.json").write_text("{not json")
    assert main(["view", "--run", str(tmp_path), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "--run" in err and "not a readable ex4d run record" in err and "internal error" not in err
    assert main(["view", "--input-video", str(tmp_path / "no.mp4"), "--depth", str(tmp_path / "no.npz"),
                 "--no-browser"]) == 2
    assert "--depth" in capsys.readouterr().err

    frames, depth = wall_and_box(num_frames=2, height=16, width=16)
    video = save_video(tmp_path / "clip.mp4", frames, fps=10)
    np.savez(tmp_path / "depth.npz", depth=depth)
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["view", "--input-video", str(video), "--depth", str(tmp_path / "depth.npz"), "--port",
                     str(busy.getsockname()[1]), "--no-browser"]) == 2
    assert "--port" in capsys.readouterr().err


def test_view_command_serves_until_stopped(tmp_path):
    """``ex4d view`` as a user runs it: a child process serving 127.0.0.1 until terminated."""
    import socket
    import subprocess
    import sys
    import time

    frames, depth = wall_and_box(num_frames=3, height=32, width=32)
    video = save_video(tmp_path / "clip.mp4", frames, fps=10)
    np.savez(tmp_path / "depth.npz", depth=depth)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ex4d.cli", "view", "--input-video", str(video), "--depth",
                             str(tmp_path / "depth.npz"), "--cam", "30", "--port", str(port), "--no-browser"],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                info = json.loads(_get(f"http://127.0.0.1:{port}/api/info")[0])
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.3)
        assert (info["frames"], info["width"]) == (3, 32) and [p["name"] for p in info["paths"]] == ["30"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert f"http://127.0.0.1:{port}/" in proc.stderr.read()
