"""``ex4d run``: all stages end to end, cached stage by stage."""

import json

import numpy as np

from ex4d.cli import main
from ex4d.io.video import probe_video


def run_args(video, depth, out, *extra):
    return ["run", "--input-video", str(video), "--output-dir", str(out), "--num-frames", "9", "--quiet",
            "--device", "cpu", "--depth-backend", "file", "--depth-file", str(depth), "--height", "64",
            "--width", "64", *extra]


def test_run_writes_everything_then_reuses_it(tiny_inputs, tmp_path, capsys):
    video, depth, _, depth_arr = tiny_inputs
    out = tmp_path / "out"
    assert main(run_args(video, depth, out, "--cam", "30", "--cam", "60", "--fill", "none")) == 0
    first = capsys.readouterr().out
    assert "depth: ran" in first and "recon_30: ran" in first and "fill_60: ran" in first
    for name in ("depth.npz", "color_30.mp4", "mask_60.mp4", "output_30.mp4", "output_60.mp4", "preview_30.mp4",
                 "run.json"):
        assert (out / name).is_file(), name
    assert probe_video(out / "output_60.mp4")["frames"] == 9
    assert np.allclose(np.load(out / "depth.npz")["depth"], depth_arr)
    record = json.loads((out / "run.json").read_text())
    assert record["cams"] == ["30", "60"] and record["frames"] == 9

    # Same settings: every stage is reused.
    assert main(run_args(video, depth, out, "--cam", "30", "--cam", "60", "--fill", "none")) == 0
    second = capsys.readouterr().out
    stage_lines = [line for line in second.splitlines() if ": " in line]
    assert len(stage_lines) == 5 and all(line.endswith(": cached") for line in stage_lines)

    # A new camera only renders and fills that camera.
    assert main(run_args(video, depth, out, "--cam", "30", "--cam", "90", "--fill", "none")) == 0
    third = capsys.readouterr().out
    assert "depth: cached" in third and "recon_30: cached" in third and "recon_90: ran" in third


def test_run_bad_input_is_one_line(tmp_path, capsys):
    assert main(["run", "--input-video", str(tmp_path / "none.mp4"), "--output-dir", str(tmp_path / "o")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_offline_fill_completes_the_video_and_saves_exact_frames(tiny_inputs, tmp_path, capsys):
    from ex4d.fill.offline import offline_fill
    from ex4d.io.video import load_video
    from ex4d.reconstruction import recon

    video, depth, _, depth_arr = tiny_inputs
    out = tmp_path / "out"
    assert main(run_args(video, depth, out, "--cam", "60", "--save-arrays")) == 0  # --fill offline: the default
    render = np.load(out / "render_60.npz")
    saved = np.load(out / "output_60.npz")["frames"]
    decoded = load_video(out / "output_60.mp4", num_frames=None).frames
    assert decoded.shape == saved.shape == (9, 64, 64, 3)
    holes = ~render["mask"][1:]
    assert holes.sum() > 100
    # Inside the holes the render is black; the filled output is not.
    assert saved[1:][holes].mean() > 40 and render["color"][1:][holes].max() == 0
    # The saved arrays are exactly what the stages produce (recomputed here through the Python API).
    frames = load_video(video, num_frames=9, height=64, width=64)
    again = recon(frames, depth_arr, cam="60", num_frames=None, device="cpu", progress=False)
    assert np.array_equal(render["color"], again.color) and np.array_equal(render["mask"], again.mask)
    assert np.array_equal(saved, offline_fill(again, depth_arr, device="cpu"))


def test_without_save_arrays_no_frame_arrays_are_written(tiny_inputs, tmp_path):
    video, depth, _, _ = tiny_inputs
    out = tmp_path / "out"
    assert main(run_args(video, depth, out, "--cam", "30", "--fill", "none")) == 0
    assert sorted(p.name for p in out.glob("*.npz")) == ["camera_30.npz", "depth.npz"]


def test_changing_only_the_fill_reuses_the_cached_render(tiny_inputs, tmp_path, capsys):
    from ex4d.io.video import load_video

    video, depth, _, _ = tiny_inputs
    cached, fresh = tmp_path / "cached", tmp_path / "fresh"
    assert main(run_args(video, depth, cached, "--cam", "60", "--fill", "none")) == 0
    capsys.readouterr()
    assert main(run_args(video, depth, cached, "--cam", "60", "--fill", "offline")) == 0
    out = capsys.readouterr().out
    assert "recon_60: cached" in out and "fill_60: ran" in out
    assert main(run_args(video, depth, fresh, "--cam", "60", "--fill", "offline")) == 0
    a = load_video(cached / "output_60.mp4", num_frames=None).frames
    b = load_video(fresh / "output_60.mp4", num_frames=None).frames
    assert np.array_equal(a, b)
