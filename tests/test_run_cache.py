"""``ex4d run``'s cache: every input kind changed under a cached OUT re-runs exactly the stages downstream of it.

Stages of one camera ``c``: ``mesh`` (video + depth), ``recon_c`` (video + depth + camera path), then
``trajectory_c`` (recon), ``fill_c`` (recon + fill settings + model files) and ``preview_c`` (recon + fill).
"""

import hashlib
import os
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from ex4d.generation_options import GenerationOptions, ModelOptions, SamplingOptions
from ex4d.io.video import load_video, probe_video, save_video
from ex4d.runner import run
from ex4d.stages import Stage, StageRunner, fingerprint, stable_hash

from tests.conftest import wall_and_box


def ran(result) -> set[str]:
    return {stage for stage, state in result.stages.items() if state == "ran"}


def per_cam(cam: str, *kinds: str) -> set[str]:
    return {f"{kind}_{cam}" for kind in kinds}


ALL_30 = {"mesh"} | per_cam("30", "recon", "trajectory", "fill", "preview")


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "run.json"}


def test_another_video_of_the_same_size_reruns_everything_it_feeds(tiny_inputs, tmp_path):
    """The issue's case: b.mp4 (a.mp4 with inverted colours) into the same OUT must not ship a.mp4's result."""
    video_a, depth, frames, _ = tiny_inputs
    video_b = tmp_path / "b.mp4"
    save_video(video_b, 255 - frames, fps=12)
    out = tmp_path / "out"
    first = run(video_a, out, cams=["30"], depth=depth, fill="none", num_frames=None, device="cpu", progress=False)
    assert ran(first) == ALL_30
    output_a = load_video(out / "output_30.mp4", num_frames=None).frames

    second = run(video_b, out, cams=["30"], depth=depth, fill="none", num_frames=None, device="cpu",
                 progress=False)
    assert ran(second) == ALL_30
    assert_output_is_a_fresh_runs(video_b, out, dict(depth=depth, fill="none"), output_a)


def assert_output_is_a_fresh_runs(video, out, kwargs, old_output):
    """``out`` holds what ``video`` run into an empty folder gives (the exact render; the output up to the video
    encoder, whose bytes vary from run to run), and its seen pixels are (up to the lossy codec) the negatives of
    ``old_output``'s."""
    fresh = out.parent / "fresh"
    run(video, fresh, cams=["30"], num_frames=None, device="cpu", progress=False, **kwargs)
    for key, array in np.load(fresh / "cache" / "render_30.npz").items():
        assert np.array_equal(np.load(out / "cache" / "render_30.npz")[key], array), key
    output = load_video(out / "output_30.mp4", num_frames=None).frames
    assert np.abs(output.astype(int) - load_video(fresh / "output_30.mp4", num_frames=None).frames).mean() < 1
    seen = np.load(out / "cache" / "render_30.npz")["mask"]
    assert np.median(np.abs(output[seen].astype(int) - (255 - old_output[seen].astype(int)))) < 6
    assert np.abs(output[seen].astype(int) - old_output[seen].astype(int)).mean() > 60


def test_a_video_overwritten_in_place_reruns_even_with_its_old_mtime(tiny_inputs, tmp_path):
    video, depth, frames, _ = tiny_inputs
    out = tmp_path / "out"
    kwargs = dict(cams=["30"], depth=depth, fill="none", num_frames=None, device="cpu", progress=False)
    run(video, out, **kwargs)
    before = load_video(out / "output_30.mp4", num_frames=None).frames
    stat = video.stat()
    save_video(video, 255 - frames, fps=12)
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # e.g. cp -p: only the contents tell
    again = run(video, out, **kwargs)
    assert ran(again) == ALL_30
    assert_output_is_a_fresh_runs(video, out, dict(depth=depth, fill="none"), before)


def test_an_unchanged_rerun_is_fully_cached_and_writes_nothing(tiny_inputs, tmp_path):
    video, depth, _, _ = tiny_inputs
    out = tmp_path / "out"
    kwargs = dict(cams=["30", "60"], depth_backend="file", depth_options={"path": str(depth)}, fill="offline",
                  num_frames=None, device="cpu", progress=False, save_arrays=True)
    run(video, out, **kwargs)
    before = digests(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "run.json"}
    again = run(video, out, **kwargs)
    assert set(again.stages.values()) == {"cached"} and len(again.stages) == 10
    assert digests(out) == before
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "run.json"}


def test_depth_changes_rerun_every_stage_after_them(tiny_inputs, tmp_path):
    video, depth, _, depth_arr = tiny_inputs
    out = tmp_path / "out"
    kwargs = dict(cams=["30"], fill="none", num_frames=None, device="cpu", progress=False)
    # A depth file given as is: its content is keyed (overwritten in place, same size).
    run(video, out, depth=depth, **kwargs)
    np.savez(depth, depth=depth_arr * 1.5)
    assert ran(run(video, out, depth=depth, **kwargs)) == ALL_30
    assert ran(run(video, out, depth=depth, **kwargs)) == set()

    # Estimated by the file backend: the file the backend reads is keyed, and the depth stage reruns first.
    estimated = tmp_path / "estimated"
    options = dict(depth_backend="file", depth_options={"path": str(depth)})
    assert ran(run(video, estimated, **options, **kwargs)) == {"depth"} | ALL_30
    np.savez(depth, depth=depth_arr * 2.0)
    assert ran(run(video, estimated, **options, **kwargs)) == {"depth"} | ALL_30
    assert np.allclose(np.load(estimated / "depth.npz")["depth"], depth_arr * 2.0)
    # A depth option that changes nothing in depth.npz still reruns what reads it (keys follow upstream keys).
    options["depth_options"] = {"path": str(depth), "scale": 1.0}
    assert ran(run(video, estimated, **options, **kwargs)) == {"depth"} | ALL_30


def test_a_trajectory_file_change_reruns_only_its_camera(tiny_inputs, tmp_path):
    from ex4d.geometry.trajectory import make_trajectory
    from ex4d.io.trajectory_file import save_trajectory

    video, depth, _, _ = tiny_inputs
    path_file = tmp_path / "crane.npz"
    save_trajectory(path_file, make_trajectory("30", 9, 4.15))
    out = tmp_path / "out"
    kwargs = dict(cams=["30", str(path_file)], depth=depth, fill="none", num_frames=None, device="cpu",
                  progress=False)
    run(video, out, **kwargs)
    before = np.load(out / "camera_crane.npz")["w2c"]
    save_trajectory(path_file, make_trajectory("60", 9, 4.15))  # same name, other cameras
    again = run(video, out, **kwargs)
    assert ran(again) == per_cam("crane", "recon", "trajectory", "fill", "preview")
    assert not np.allclose(np.load(out / "camera_crane.npz")["w2c"], before)


def test_a_new_result_version_reruns_that_stage_and_those_after_it(tiny_inputs, tmp_path, monkeypatch):
    import ex4d.runner as runner

    video, depth, _, _ = tiny_inputs
    out = tmp_path / "out"
    kwargs = dict(cams=["30"], depth=depth, fill="none", num_frames=None, device="cpu", progress=False)
    run(video, out, **kwargs)
    monkeypatch.setattr(runner, "PREVIEW_VERSION", runner.PREVIEW_VERSION + 1)
    assert ran(run(video, out, **kwargs)) == per_cam("30", "preview")
    monkeypatch.setattr(runner, "RENDER_VERSION", runner.RENDER_VERSION + 1)
    assert ran(run(video, out, **kwargs)) == per_cam("30", "recon", "trajectory", "fill", "preview")


class StandIn:
    """A loaded "model" that paints the holes grey; records every call's geometry."""

    def __init__(self):
        self.calls = []

    def __call__(self, color, mask, *, height, width, num_frames, output_type, **kwargs):
        self.calls.append(dict(height=height, width=width, num_frames=num_frames, source_frames=len(color),
                               steps=kwargs["num_inference_steps"]))
        idx = np.minimum(np.arange(num_frames), len(color) - 1)  # pad with the last frame, as the pipeline
        return types.SimpleNamespace(frames=np.where(mask[idx] >= 128, color[idx], 128).astype(np.uint8))


@pytest.fixture
def stand_in(monkeypatch):
    """The generation model replaced by :class:`StandIn`, loaded through ``ModelOptions.load``."""
    pytest.importorskip("diffusers")
    import ex4d.inpaint.generate as generate_module

    model, loads = StandIn(), []

    def load(model_dir, adapter, device, **kwargs):
        loads.append((Path(model_dir), Path(adapter)))
        return model

    monkeypatch.setattr(generate_module, "load_generation_pipeline", load)
    model.loads = loads
    return model


def test_model_files_options_and_fill_kind_rerun_only_the_fill_and_preview(tiny_inputs, tmp_path, stand_in):
    video, depth, _, _ = tiny_inputs
    wan = tmp_path / "wan"
    wan.mkdir()
    (wan / "model.safetensors").write_bytes(b"weights v1")
    adapter = tmp_path / "ex4d.ckpt"
    adapter.write_bytes(b"adapter v1")
    out = tmp_path / "out"
    options = GenerationOptions(ModelOptions(wan, adapter), SamplingOptions(steps=3))

    def go(fill="ex4d", generate_options=options):
        return ran(run(video, out, cams=["30"], depth=depth, fill=fill, num_frames=None, device="cpu",
                       generate_options=generate_options, progress=False))

    fill_and_preview = per_cam("30", "fill", "preview")
    assert go() == ALL_30 and len(stand_in.calls) == 1
    assert go() == set() and len(stand_in.calls) == 1
    adapter.write_bytes(b"adapter v2")  # same size, other contents
    assert go() == fill_and_preview
    (wan / "model.safetensors").write_bytes(b"weights v2")  # a file inside the model folder
    assert go() == fill_and_preview
    (wan / "extra.json").write_text("{}")  # a new file in the model folder
    assert go() == fill_and_preview
    assert go(generate_options=GenerationOptions(ModelOptions(wan, adapter), SamplingOptions(steps=4))) \
        == fill_and_preview and stand_in.calls[-1]["steps"] == 4
    assert go(generate_options=GenerationOptions(ModelOptions(wan, adapter, offload="model"),
                                                 SamplingOptions(steps=4))) == fill_and_preview
    assert go(fill="offline") == fill_and_preview
    assert go(fill="none") == fill_and_preview
    # The older dict form of the options is the same declaration: cached.
    assert go(fill="none", generate_options={"num_inference_steps": 7}) == set()
    # A copy of the model folder elsewhere has the same contents: nothing to redo.
    assert go() == fill_and_preview
    shutil.copytree(wan, tmp_path / "wan-copy")
    assert go(generate_options=GenerationOptions(ModelOptions(tmp_path / "wan-copy", adapter),
                                                 SamplingOptions(steps=3))) == set()


def clip_with_depth(tmp_path: Path, num_frames: int, height: int, width: int, fps: float) -> tuple[Path, Path]:
    """A wall-and-box clip written as ``clip.mp4`` at ``fps`` and its exact depth as ``d.npz``."""
    frames, depth = wall_and_box(num_frames=num_frames, height=height, width=width)
    video = save_video(tmp_path / "clip.mp4", frames, fps=fps)
    np.savez(tmp_path / "d.npz", depth=depth)
    return video, tmp_path / "d.npz"


def test_ex4d_fill_takes_the_renders_geometry(tmp_path, stand_in, recwarn):
    """A 9-frame 64×128 clip at 12 fps is generated as 9 frames of 64×128 at 12 fps, not at the defaults."""
    video, _ = clip_with_depth(tmp_path, 9, 64, 128, fps=12)
    options = GenerationOptions(ModelOptions(tmp_path / "wan", tmp_path / "c.ckpt"))
    run(video, tmp_path / "out", cams=["30"], depth=tmp_path / "d.npz", fill="ex4d", num_frames=None,
        device="cpu", generate_options=options, progress=False)
    assert stand_in.calls[0] | {"steps": 0} == dict(height=64, width=128, num_frames=9, source_frames=9, steps=0)
    info = probe_video(tmp_path / "out" / "output_30.mp4")
    assert (info["frames"], info["height"], info["width"], round(info["fps"])) == (9, 64, 128, 12)
    assert not [w for w in recwarn if "ex4d fill generates" in str(w.message)]


def test_ex4d_fill_rounds_an_odd_clip_as_the_model_needs_with_a_note(tmp_path, stand_in, capsys):
    """10 frames of 40×72 at 12 fps: the model runs 13 frames (4k+1, padded with the last), sides 48×80 (multiples
    of 16); the output has the clip's 10 frames at 12 fps; one note, about the size."""
    from ex4d.cli import main

    video, _ = clip_with_depth(tmp_path, 10, 40, 72, fps=12)
    wan, ckpt = tmp_path / "wan", tmp_path / "c.ckpt"
    wan.mkdir()
    ckpt.write_bytes(b"")
    assert main(["run", "--input-video", str(video), "--depth", str(tmp_path / "d.npz"), "--output-dir",
                 str(tmp_path / "out"), "--cam", "30", "--fill", "ex4d", "--wan-dir", str(wan), "--ex4d-ckpt",
                 str(ckpt), "--num-frames", "0", "--height", "40", "--width", "72", "--device", "cpu", "--steps", "2",
                 "--quiet"]) == 0
    assert stand_in.calls == [dict(height=48, width=80, num_frames=13, source_frames=10, steps=2)]
    info = probe_video(tmp_path / "out" / "output_30.mp4")
    assert (info["frames"], info["height"], info["width"], round(info["fps"])) == (10, 48, 80, 12)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ex4d run: note: the ex4d fill generates 48×80 frames for the 40×72 render "
                   "(the model takes sides that are multiples of 16)"]


def test_ex4d_fill_of_a_long_clip_runs_windows_and_resumes_after_a_kill(tmp_path, stand_in):
    """A 40-frame clip with 13-frame windows (overlap 4): 5 windows, each conditioned on the one before; the output
    has 40 frames. A run killed in its third window resumes there and ends with the same frames."""
    video, _ = clip_with_depth(tmp_path, 40, 32, 48, fps=10)
    wan, ckpt = tmp_path / "wan", tmp_path / "c.ckpt"
    wan.mkdir()
    ckpt.write_bytes(b"adapter")
    options = GenerationOptions(ModelOptions(wan, ckpt), SamplingOptions(steps=2, window=13, window_overlap=4))

    def go(out):
        return run(video, out, cams=["30"], depth=tmp_path / "d.npz", fill="ex4d", num_frames=None, height=32,
                   width=48, device="cpu", generate_options=options, progress=False, save_arrays=True)

    go(tmp_path / "whole")
    # windows at 0, 8, 16, 24, 32 (8 frames left: the model runs 9)
    assert [(c["source_frames"], c["num_frames"]) for c in stand_in.calls] == [(13, 13)] * 4 + [(8, 9)]
    whole = np.load(tmp_path / "whole" / "output_30.npz")["frames"]
    assert whole.shape == (40, 32, 48, 3)
    assert probe_video(tmp_path / "whole" / "output_30.mp4")["frames"] == 40
    assert not list((tmp_path / "whole").glob(".*.windows"))  # the windows are dropped once the output is written

    stand_in.calls.clear()
    original = StandIn.__call__

    def killed(self, *a, **k):
        if len(self.calls) == 2:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    StandIn.__call__ = killed
    try:
        with pytest.raises(KeyboardInterrupt):
            go(tmp_path / "again")
    finally:
        StandIn.__call__ = original
    assert not (tmp_path / "again" / "output_30.mp4").exists()
    stand_in.calls.clear()
    go(tmp_path / "again")
    assert len(stand_in.calls) == 3  # windows 2, 3 and 4 only
    resumed = np.load(tmp_path / "again" / "output_30.npz")["frames"]
    # the same renders filled again from scratch (H.264 renders differ between output folders, so "whole" is not
    # the reference here): the same frames as the resumed run
    (tmp_path / "again" / "fill_30.json").unlink()
    stand_in.calls.clear()
    go(tmp_path / "again")
    assert len(stand_in.calls) == 5
    np.testing.assert_array_equal(np.load(tmp_path / "again" / "output_30.npz")["frames"], resumed)


@pytest.mark.slow  # ~25 s on 2 CPU cores: writing, loading and running the tiny model
def test_ex4d_fill_with_tiny_models_produces_the_clips_geometry(tmp_path, capsys):
    """``ex4d run --fill ex4d`` through the real loading path on an odd-sized, short 12 fps clip."""
    pytest.importorskip("diffusers")
    from tests.inpaint.tiny import write_ex4d_ckpt, write_wan_dir

    from ex4d.cli import main

    video, _ = clip_with_depth(tmp_path, 6, 24, 40, fps=12)
    wan, ckpt = write_wan_dir(tmp_path / "wan"), write_ex4d_ckpt(tmp_path / "ex4d.ckpt")
    assert main(["run", "--input-video", str(video), "--depth", str(tmp_path / "d.npz"), "--output-dir",
                 str(tmp_path / "out"), "--cam", "30", "--fill", "ex4d", "--wan-dir", str(wan), "--ex4d-ckpt",
                 str(ckpt), "--num-frames", "0", "--height", "24", "--width", "40", "--device", "cpu", "--steps", "1",
                 "--quiet"]) == 0
    assert "generates 32×48 frames" in capsys.readouterr().err
    info = probe_video(tmp_path / "out" / "output_30.mp4")
    assert (info["frames"], info["height"], info["width"], round(info["fps"])) == (6, 32, 48, 12)
    assert load_video(tmp_path / "out" / "output_30.mp4", num_frames=None).frames.std() > 1


# The cache machinery on its own.

def test_keys_follow_contents_not_paths_or_timestamps(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 1000)
    shutil.copy(a, b)
    assert fingerprint(a) == fingerprint(b) == {"sha256": hashlib.sha256(b"x" * 1000).hexdigest()}
    os.utime(b, ns=(0, 0))
    assert fingerprint(a) == fingerprint(b)
    b.write_bytes(b"y" * 1000)
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(tmp_path / "none") == {"missing": True} and fingerprint(None) is None
    # Canonical JSON: key order, tuples vs lists and Path vs str do not matter; values do.
    assert stable_hash({"a": (1, 2), "b": Path("x")}) == stable_hash({"b": "x", "a": [1, 2]})
    assert stable_hash({"a": 1}) != stable_hash({"a": 1.5})


def test_large_files_are_keyed_by_size_mtime_and_their_ends(tmp_path, monkeypatch):
    import ex4d.stages as stages

    monkeypatch.setattr(stages, "HASH_WHOLE_BYTES", 100)
    big = tmp_path / "weights.bin"
    big.write_bytes(bytes(300))
    first = fingerprint(big)
    assert first["size"] == 300 and first["head_sha256"] == hashlib.sha256(bytes(300)).hexdigest()
    with open(big, "r+b") as f:
        f.seek(299)
        f.write(b"\x01")  # the last byte
    os.utime(big, ns=(0, first["mtime_ns"]))
    assert fingerprint(big)["tail_sha256"] != first["tail_sha256"]


def test_a_stage_reruns_iff_its_key_changed_or_an_output_is_missing_and_records_last(tmp_path):
    runner = StageRunner(tmp_path, "test")
    output, calls = tmp_path / "o.txt", []

    def write():
        calls.append(1)
        output.write_text("x")

    def stage(setting=1, compute=write):
        return Stage("s", compute, [output], settings={"n": setting})

    key, _ = runner.run(stage())
    assert runner.run(stage())[0] == key and len(calls) == 1 and runner.states["s"] == "cached"
    output.unlink()
    runner.run(stage())
    assert len(calls) == 2
    runner.run(stage(2))
    assert len(calls) == 3 and runner.recorded_key("s") != key

    def interrupted():
        output.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run(stage(1, interrupted))
    # No record: neither the new key nor the stale one, so going back to setting 2 does not take "half".
    assert not (tmp_path / "s.json").exists()
    runner.run(stage(2))
    assert len(calls) == 4 and output.read_text() == "x"
