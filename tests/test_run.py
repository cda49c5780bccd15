"""``ex4d run``: all stages end to end, cached stage by stage."""

import json
from pathlib import Path

import numpy as np
import pytest

from ex4d.cli import main
from ex4d.io.video import probe_video


def run_args(video, depth, out, *extra):
    return ["run", "--input-video", str(video), "--output-dir", str(out), "--num-frames", "9", "--quiet",
            "--device", "cpu", "--depth-backend", "file", "--depth-file", str(depth), "--height", "64",
            "--width", "64", *extra]


PER_CAM_STAGES = ("recon", "trajectory", "fill", "preview")


def stage_states(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if line.endswith((": ran", ": cached")))


def test_run_writes_everything_then_reuses_it(tiny_inputs, tmp_path, capsys):
    video, depth, _, depth_arr = tiny_inputs
    out = tmp_path / "out"
    assert main(run_args(video, depth, out, "--cam", "30", "--cam", "60", "--fill", "none")) == 0
    first = capsys.readouterr()
    assert first.err == ""  # --quiet: no progress bars at all
    assert stage_states(first.out) == {"depth": "ran", "mesh": "ran",
                                       **{f"{s}_{c}": "ran" for c in ("30", "60") for s in PER_CAM_STAGES}}
    looked_at = ["mesh.glb", "preview_30.mp4", "preview_30.gif", "trajectory_30.png", "preview_60.gif",
                 "trajectory_60.png"]
    for name in ["depth.npz", "color_30.mp4", "mask_60.mp4", "output_30.mp4", "output_60.mp4", "run.json",
                 *looked_at]:
        assert (out / name).is_file(), name
    assert probe_video(out / "output_60.mp4")["frames"] == 9
    assert np.allclose(np.load(out / "depth.npz")["depth"], depth_arr)
    record = json.loads((out / "run.json").read_text())
    assert record["cams"] == ["30", "60"] and record["frames"] == 9
    stamps = {name: (out / name).stat().st_mtime_ns for name in looked_at}

    # Same settings: every stage is reused and nothing is rewritten.
    assert main(run_args(video, depth, out, "--cam", "30", "--cam", "60", "--fill", "none")) == 0
    second = stage_states(capsys.readouterr().out)
    assert len(second) == 10 and set(second.values()) == {"cached"}
    assert stamps == {name: (out / name).stat().st_mtime_ns for name in looked_at}

    # A new camera only renders, draws, fills and previews that camera.
    assert main(run_args(video, depth, out, "--cam", "30", "--cam", "90", "--fill", "none")) == 0
    third = stage_states(capsys.readouterr().out)
    assert third == {"depth": "cached", "mesh": "cached", **{f"{s}_30": "cached" for s in PER_CAM_STAGES},
                     **{f"{s}_90": "ran" for s in PER_CAM_STAGES}}
    assert stamps["preview_30.gif"] == (out / "preview_30.gif").stat().st_mtime_ns
    assert (out / "trajectory_90.png").is_file() and (out / "preview_90.gif").is_file()
    assert not list(out.rglob("*.tmp*"))


def test_outputs_to_look_at_match_the_stages(tiny_inputs, tmp_path):
    """mesh.glb is frame 0's DW-Mesh, the gif shows the output video, the trajectory PNG marks frame 0."""
    import av
    import trimesh

    from ex4d.io.trajectory_plot import FIRST_CAMERA_COLOR
    from ex4d.io.video import load_video

    video, depth, _, depth_arr = tiny_inputs
    out = tmp_path / "out"
    assert main(run_args(video, depth, out, "--cam", "30", "--fill", "none")) == 0

    mesh = trimesh.load(out / "mesh.glb", process=False, force="mesh")
    vertices = np.asarray(mesh.vertices).reshape(64, 64, 3) * np.array([1, -1, -1])  # glTF -> OpenCV axes
    # Inner pixels: the pixel centre unprojected with the default f = 500 px (the border is the far wall).
    v, u = np.mgrid[0:64, 0:64] + 0.5
    z = depth_arr[0]
    expected = np.stack([(u - 32) / 500 * z, (v - 32) / 500 * z, z], -1)
    assert np.allclose(vertices[1:-1, 1:-1], expected[1:-1, 1:-1], atol=1e-4)
    assert np.allclose(vertices[0, :, 2], 100.0)

    with av.open(str(out / "preview_30.gif")) as container:
        gif = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    # 12 fps source: every frame kept; a 2×2 grid of 64-px panels (captions 11 px, rows padded to even heights).
    assert gif.shape == (9, 2 * 76, 64 + 4 + 64, 3)
    output = load_video(out / "output_30.mp4", num_frames=None).frames
    quadrant = gif[:, 76 + 11:76 + 11 + 64, 68:132].astype(int)
    assert np.abs(quadrant - output).mean() < 4

    with av.open(str(out / "trajectory_30.png")) as container:
        png = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert (png == FIRST_CAMERA_COLOR).all(-1).sum() > 20 and len(np.unique(png.reshape(-1, 3), axis=0)) > 20


def test_interrupted_stages_leave_no_partial_file_and_resume(tiny_inputs, tmp_path, capsys, monkeypatch):
    """Ctrl-C while a stage writes: no temporary or half-written file stays; the rerun redoes that stage only."""
    import ex4d.runner as run_module
    from ex4d.io.atomic import atomic_path

    video, depth, _, _ = tiny_inputs
    out = tmp_path / "out"
    args = run_args(video, depth, out, "--cam", "30", "--cam", "60", "--fill", "none")

    # 1. Killed while camera 60's render cache is being written (its mp4s are already there).
    real_save_npz = run_module.save_npz_atomic

    def killed_npz(path, **arrays):
        if path.name != "render_60.npz":
            return real_save_npz(path, **arrays)
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half an archive")
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "save_npz_atomic", killed_npz)
    assert main(args) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not list(out.rglob("*.tmp*")) and not (out / "cache" / "render_60.npz").exists()
    assert not (out / "recon_60.json").exists() and (out / "output_30.mp4").is_file()
    monkeypatch.undo()

    # 2. The rerun renders camera 60 again, then is killed half-way through writing its preview gif.
    import ex4d.io.preview as preview_module

    real_quantize = preview_module.quantize
    partial = []

    def killed_quantize(frames, palette):
        for i, indices in enumerate(real_quantize(frames, palette)):
            if i == 4:
                partial.extend(out.glob(".preview_60.tmp-*.gif"))  # 4 frames written (maybe still buffered)
                raise KeyboardInterrupt
            yield indices

    monkeypatch.setattr(preview_module, "quantize", killed_quantize)
    assert main(args) == 130
    states = stage_states(capsys.readouterr().out)
    assert partial, "the interruption did not hit a half-written file"
    assert not list(out.rglob("*.tmp*")) and not (out / "preview_60.gif").exists()
    assert not (out / "preview_60.json").exists() and (out / "recon_60.json").is_file()
    assert (out / "fill_60.json").is_file()
    monkeypatch.undo()

    # 3. Finished stages are reused; only the interrupted one runs.
    assert main(args) == 0
    states = stage_states(capsys.readouterr().out)
    assert states == {"depth": "cached", "mesh": "cached", **{f"{s}_30": "cached" for s in PER_CAM_STAGES},
                      **{f"{s}_60": "cached" for s in PER_CAM_STAGES[:-1]}, "preview_60": "ran"}
    assert (out / "preview_60.gif").is_file()
    assert not list(out.rglob("*.tmp*"))


def test_summary_json_and_progress(tiny_inputs, tmp_path, capsys):
    video, depth, _, _ = tiny_inputs
    out, summary = tmp_path / "out", tmp_path / "s.json"
    args = [a for a in run_args(video, depth, out, "--cam", "30", "--fill", "none") if a != "--quiet"]
    assert main(args + ["--summary-json", str(summary)]) == 0
    assert "DW-Mesh + render" in capsys.readouterr().err  # without --quiet: progress bars on stderr
    data = json.loads(summary.read_text())
    assert (data["total"], data["ok"], data["failed"]) == (1, 1, 0)
    item = data["items"][0]
    assert item["status"] == "ok" and item["cams"] == ["30"] and item["stages"]["fill_30"] == "ran"
    assert {k: Path(v).name for k, v in item["files"]["30"].items()} == {
        "color": "color_30.mp4", "mask": "mask_30.mp4", "camera": "camera_30.npz", "trajectory": "trajectory_30.png",
        "output": "output_30.mp4", "preview_mp4": "preview_30.mp4", "preview_gif": "preview_30.gif"}
    assert all(Path(v).is_file() for v in item["files"]["30"].values())
    assert not (out / "summary.json").exists()  # a single run writes only where asked

    # A failed run still leaves its summary (and fails with exit 2, one line).
    assert main(run_args(video, depth, out, "--cam", "nosuchpreset", "--summary-json", str(summary))) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    data = json.loads(summary.read_text())
    assert data["failed"] == 1 and "nosuchpreset" in data["items"][0]["error"]


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


def test_gif_is_downscaled_to_at_most_480_px_and_12_fps(tmp_path):
    import av

    from ex4d.io.preview import save_gif

    # 8 flat colour blocks of 120 px across a 960-px frame; 25 frames at 30 fps.
    colours = np.random.default_rng(0).integers(0, 256, (8, 3)).astype(np.uint8)
    frames = np.repeat(np.repeat(colours[None, None], 96, 1), 120, 2).repeat(25, 0)
    frames[::2, :8, :8] = 255  # frame-dependent corner, so frames differ
    save_gif(tmp_path / "p.gif", frames, fps=30.0)
    with av.open(str(tmp_path / "p.gif")) as container:
        rate = container.streams.video[0].average_rate
        gif = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    # Every 3rd frame (30 fps -> 10 fps) at half size; block interiors keep their colour exactly (few colours).
    assert gif.shape == (9, 48, 480, 3) and rate == 10
    for i, colour in enumerate(colours):
        assert (gif[:, 10:40, 60 * i + 5:60 * i + 55] == colour).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.gif"]


@pytest.mark.slow  # ~25 s on 2 CPU cores: writing, loading and running the tiny model
def test_ex4d_fill_with_a_tiny_model_loads_it_only_when_needed(tmp_path):
    """--fill ex4d through the real loading path (tiny random Wan2.1-I2V + ex4d.ckpt in the real layouts)."""
    from tests.inpaint.tiny import write_ex4d_ckpt, write_wan_dir

    from tests.conftest import wall_and_box

    from ex4d.io.video import load_video, save_video
    from ex4d.generation_options import GenerationOptions, ModelOptions, SamplingOptions
    from ex4d.runner import LazyPipeline, run

    frames, depth_arr = wall_and_box(num_frames=5, height=32, width=32)
    video, depth = tmp_path / "in.mp4", tmp_path / "depth.npz"
    save_video(video, frames, fps=12)
    np.savez(depth, depth=depth_arr)
    options = GenerationOptions(ModelOptions(write_wan_dir(tmp_path / "wan"), write_ex4d_ckpt(tmp_path / "ex4d.ckpt")),
                                SamplingOptions(steps=2))
    pipe = LazyPipeline(options.model, device="cpu", progress=False)
    out = tmp_path / "out"
    result = run(video, out, cams=["60"], depth=depth, fill="ex4d", num_frames=None, height=32, width=32,
                 device="cpu", generate_options=options, progress=False, pipe=pipe)
    assert pipe.loads == 1 and result.stages["fill_60"] == "ran"
    info = probe_video(out / "output_60.mp4")
    assert (info["frames"], info["height"], info["width"]) == (5, 32, 32)  # the render's geometry
    assert load_video(out / "output_60.mp4", num_frames=None, height=32, width=32).frames.std() > 1  # not blank
    assert (out / "preview_60.gif").is_file()
    again = LazyPipeline(options, device="cpu", progress=False)
    run(video, out, cams=["60"], depth=depth, fill="ex4d", num_frames=None, height=32, width=32, device="cpu",
        generate_options=options, progress=False, pipe=again)
    assert again.loads == 0  # all cached: the model is never loaded


def test_the_preview_is_written_in_chunks_with_the_frames_of_one_side_by_side(tmp_path, monkeypatch):
    """The preview stage lays out PREVIEW_CHUNK frames at a time: each chunk is exactly those frames of the whole
    clip's side-by-side (captions and layout do not depend on the frames around), and all frames come out."""
    import ex4d.runner as runner
    from ex4d.io.preview import side_by_side
    from ex4d.io.video import Video, save_video

    rng = np.random.default_rng(2)
    source = rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    color = rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    mask = rng.random((7, 16, 16)) < 0.5
    save_video(tmp_path / "out.mp4", source, fps=10, crf=0)
    chunks = []
    import ex4d.io.video as video_io

    original = video_io.save_video

    def spy(path, frames, **kw):  # the stage imports save_video from ex4d.io.video when it runs
        frames = [frames] if isinstance(frames, np.ndarray) else [np.array(c) for c in frames]
        if Path(path).suffix == ".mp4":
            chunks.extend(frames)
        return original(path, iter(frames), **kw)

    monkeypatch.setattr(video_io, "save_video", spy)
    monkeypatch.setattr(runner, "PREVIEW_CHUNK", 3)
    runner._write_previews(tmp_path / "p.mp4", tmp_path / "p.gif", Video(source, 10.0, (16, 16)), color, mask,
                           tmp_path / "out.mp4")
    assert [len(c) for c in chunks] == [3, 3, 1]
    filled = video_io.load_video(tmp_path / "out.mp4", num_frames=None, height=16, width=16).frames
    whole = side_by_side([source, color, mask, filled], ["input", "render", "mask", "output"])
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    assert probe_video(tmp_path / "p.mp4")["frames"] == 7
