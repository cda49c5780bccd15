"""The app's work dir: upload checks, confinement, one folder per video content, depth computed once."""

import hashlib
import os

import numpy as np
import pytest

from ex4d.depth.base import DepthResult
from ex4d.errors import InputError
from ex4d.io.video import load_video
from ex4d.ui.session import Workspace
from tests.ui.conftest import upload


def test_uploaded_depth_is_used_exactly_and_the_clip_is_keyed_by_content(ws, clip_inputs):
    video, depth_file, frames, depth = clip_inputs
    clip = ws.add_video(video, depth_file)
    assert clip.key == hashlib.sha256(video.read_bytes()).hexdigest()[:16]
    assert clip.folder == ws.root / "clips" / clip.key
    np.testing.assert_array_equal(clip.depth, depth)
    assert clip.frames.shape == frames.shape
    np.testing.assert_array_equal(clip.frames, load_video(video, num_frames=None).frames)  # the upload, decoded
    # No intrinsics in the file: the reference's f = 500 px, principal point at the centre.
    np.testing.assert_allclose(clip.K, [[500, 0, 32], [0, 500, 32], [0, 0, 1]])
    assert clip.radius == pytest.approx(depth[0, 1:-1, 1:-1].min() + 0.15)
    # The same bytes under another name are the same clip.
    again = ws.add_video(upload(ws, "renamed.mp4", video.read_bytes()), depth_file)
    assert again.key == clip.key


def test_depth_is_estimated_once_per_video(ws, clip_inputs, monkeypatch):
    import ex4d.depth.api as api

    calls = []

    def fake_estimate(video, backend, progress=True, **options):
        calls.append(backend)
        return DepthResult(depth=np.full((video.num_frames, video.height, video.width), 3.0, np.float32))

    monkeypatch.setattr(api, "estimate_depth", fake_estimate)
    first = ws.add_video(clip_inputs[0])
    second = ws.add_video(clip_inputs[0])
    assert calls == ["depthcrafter"]
    assert first.key == second.key and (second.depth == 3.0).all()
    # An uploaded depth file replaces the estimate; the estimate is not rerun for it.
    assert (ws.add_video(clip_inputs[0], clip_inputs[1]).depth == clip_inputs[3]).all()
    assert calls == ["depthcrafter"]


def test_depth_model_without_weights_says_what_to_do(ws, clip_inputs, monkeypatch):
    import ex4d.depth.api as api

    def no_weights(*args, **kwargs):
        raise OSError("We couldn't connect to the hub to load this file.\nCheck your connection")

    monkeypatch.setattr(api, "estimate_depth", no_weights)
    with pytest.raises(InputError) as err:
        ws.add_video(clip_inputs[0])
    message = str(err.value)
    assert "no weights for the depth model 'depthcrafter'" in message and "upload a depth .npz" in message
    assert "\n" not in message
    assert not list((ws.root / "clips").glob("*/depth.npz"))


@pytest.mark.slow  # imports the diffusion stack (~15 s)
def test_missing_depth_weights_is_a_readable_error(ws, clip_inputs, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(ws.root / "no-hub"))
    with pytest.raises(InputError) as err:
        ws.add_video(clip_inputs[0])
    message = str(err.value)
    assert "DepthCrafter" in message and "\n" not in message.strip()


def test_uploads_are_size_and_type_checked(ws, clip_inputs):
    big = upload(ws, "big.mp4", b"\0" * (ws.max_upload_bytes + 1))
    with pytest.raises(InputError, match="over the 1 MB upload limit"):
        ws.add_video(big)
    with pytest.raises(InputError, match="not a video"):
        ws.add_video(upload(ws, "notes.txt", b"hello"))
    with pytest.raises(InputError) as err:
        ws.add_video(upload(ws, "fake.mp4", b"not a video at all" * 20))
    assert "fake.mp4" in str(err.value) and str(ws.root) not in str(err.value)
    with pytest.raises(InputError, match="depth file"):
        ws.add_video(clip_inputs[0], upload(ws, "depth.txt", b"1 2 3"))
    with pytest.raises(InputError, match="no video uploaded"):
        ws.add_video(None)
    one_frame_short = upload(ws, "short.npz", depth=clip_inputs[3][:4])
    with pytest.raises(InputError, match="short.npz: depth has 4 maps but 9 video frames"):
        ws.add_video(clip_inputs[0], one_frame_short)


def test_nothing_outside_the_work_dir_is_read(ws, clip_inputs, tmp_path):
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(clip_inputs[0].read_bytes())
    for path in (outside, ws.root / ".." / "outside.mp4", ws.gradio_dir / ".." / ".." / "outside.mp4"):
        with pytest.raises(InputError, match="outside the app's working directory"):
            ws.add_video(path)
    link = ws.gradio_dir / "link.mp4"
    os.symlink(outside, link)
    with pytest.raises(InputError, match="outside"):
        ws.add_video(link)
    with pytest.raises(InputError, match="bad clip id"):
        ws.load_clip("../../etc")
    assert ws.inside(clip_inputs[0]) == clip_inputs[0].resolve()


def test_demo_scene_needs_no_upload_and_is_cached(tmp_path):
    ws = Workspace(tmp_path / "w")
    clip = ws.add_demo(num_frames=5, height=32, width=48)
    assert clip.frames.shape == (5, 32, 48, 3) and clip.depth.shape == (5, 32, 48)
    assert (clip.depth > 0).all() and clip.K[0, 0] != 500  # the scene's own intrinsics are kept
    record = (clip.folder / "depth.json").stat().st_mtime_ns
    assert ws.add_demo(num_frames=5, height=32, width=48).key == clip.key
    assert (clip.folder / "depth.json").stat().st_mtime_ns == record
    assert all(p.resolve().is_relative_to(ws.root) for p in ws.root.rglob("*"))
