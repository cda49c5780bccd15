"""A clip shorter than the default ``--num-frames`` (49) is an ordinary input: taken whole by ``ex4d recon``,
``ex4d run``, ``ex4d depth`` and the web app; errors about frame counts name the flag a user types."""

from __future__ import annotations

import numpy as np
import pytest

from ex4d.cli import main
from ex4d.io.video import load_video, save_video

T, H, W = 9, 32, 48


def _scene():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8)
    depth = np.full((T, H, W), 6.0, np.float32)
    depth[:, 8:24, 16:32] = 2.5
    return frames, depth


@pytest.fixture
def short_clip(tmp_path):
    """(a 9-frame image folder, its 9-map depth.npz, frames, depth)."""
    import av

    frames, depth = _scene()
    folder = tmp_path / "clip"
    folder.mkdir()
    for t, frame in enumerate(frames):  # lossless PNG frames, named 0.png ... 8.png
        with av.open(str(folder / f"{t}.png"), "w", format="image2") as container:
            stream = container.add_stream("png")
            stream.width, stream.height, stream.pix_fmt = W, H, "rgb24"
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    np.savez(tmp_path / "depth.npz", depth=depth)
    return folder, tmp_path / "depth.npz", frames, depth


def _frames_of(path) -> int:
    return load_video(path, num_frames=None).num_frames


def test_recon_takes_a_short_clip_whole(short_clip, tmp_path, capsys):
    folder, depth, _, _ = short_clip
    out = tmp_path / "out"
    assert main(["recon", "--input-video", str(folder), "--depth", str(depth), "--output-dir", str(out),
                 "--cam", "30", "--device", "cpu", "--quiet"]) == 0
    assert capsys.readouterr().err == ""  # an ordinary input: not even a note
    assert _frames_of(out / "color_30.mp4") == T
    with np.load(out / "camera_30.npz") as cams:
        assert cams["extrinsics"].shape == (T, 4, 4)


def test_run_offline_takes_a_short_clip_whole(short_clip, tmp_path, capsys):
    folder, depth, _, _ = short_clip
    out = tmp_path / "out"
    assert main(["run", "--input-video", str(folder), "--depth", str(depth), "--output-dir", str(out),
                 "--cam", "30", "--fill", "offline", "--device", "cpu", "--quiet"]) == 0
    assert _frames_of(out / "output_30.mp4") == T
    assert _frames_of(out / "color_30.mp4") == T


def test_depth_file_backend_takes_a_short_clip_whole(short_clip, tmp_path):
    folder, depth, _, depth_arr = short_clip
    out = tmp_path / "D.npz"
    assert main(["depth", "--input-video", str(folder), "--output", str(out), "--backend", "file",
                 "--depth-file", str(depth), "--device", "cpu", "--quiet"]) == 0
    with np.load(out) as data:  # at the file's size, as recon and run would use it: the maps unchanged
        np.testing.assert_array_equal(data["depth"], depth_arr)


def test_web_app_takes_a_short_clip_whole(tmp_path):
    from ex4d.ui.session import Workspace

    frames, depth = _scene()
    ws = Workspace(tmp_path / "work", max_frames=49)
    upload = ws.gradio_dir / "upload"
    upload.mkdir(parents=True)
    save_video(upload / "clip.mp4", frames, fps=12)
    np.savez(upload / "depth.npz", depth=depth)
    clip = ws.add_video(upload / "clip.mp4", upload / "depth.npz")
    assert clip.num_frames == T
    np.testing.assert_array_equal(clip.depth, depth)


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_frame_count_errors_name_the_flag(short_clip, tmp_path, capsys):
    folder, _, _, depth = short_clip
    np.savez(tmp_path / "five.npz", depth=depth[:5])
    recon = ["recon", "--input-video", str(folder), "--output-dir", str(tmp_path / "out"), "--device", "cpu",
             "--quiet"]
    line = _error([*recon, "--depth", str(tmp_path / "five.npz")], capsys)
    assert line.startswith("ex4d recon: error: --depth: ") and "pass --num-frames 5 or depth with 9 maps" in line
    line = _error([*recon, "--depth", str(tmp_path / "five.npz"), "--num-frames", "-1"], capsys)
    assert line == "ex4d recon: error: --num-frames: must be a whole number ≥ 0 (0 = all frames), got -1"
    run = ["run", "--input-video", str(folder), "--depth", str(tmp_path / "five.npz"), "--output-dir",
           str(tmp_path / "run"), "--device", "cpu", "--quiet"]
    assert "pass --num-frames 5 or depth with 9 maps" in _error(run, capsys)
    line = _error(["depth", "--input-video", str(folder), "--output", str(tmp_path / "D.npz"), "--backend", "file",
                   "--depth-file", str(tmp_path / "five.npz"), "--height", "64"], capsys)
    assert line == "ex4d depth: error: give both --height and --width, or neither"


def test_prepare_refuses_a_short_clip_naming_the_flag(tmp_path, capsys):
    # Training pairs are whole-length (a short clip would be padded with repeated frames): refused, per clip.
    frames, depth = _scene()
    clips = tmp_path / "clips"
    clips.mkdir()
    save_video(clips / "short.mp4", frames, fps=12)
    np.savez(clips / "short.npz", depth=depth)
    assert main(["prepare", "--videos", str(clips), "--output-dir", str(tmp_path / "data"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "ex4d prepare: short: " in err and "has 9 frames, fewer than the --num-frames 49 of a training pair" in err
