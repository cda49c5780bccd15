import logging

import numpy as np
import pytest

from ex4d.errors import InputError
from ex4d.inpaint.generate import generate
from ex4d.io.video import load_video, probe_video, save_video

from .tiny import tiny_videos


def test_generate_files_to_files(pipe, tmp_path, caplog):
    color, mask = tiny_videos(7, 40, 48)
    save_video(tmp_path / "color.mp4", color, fps=30)
    save_video(tmp_path / "mask.mp4", mask, fps=30)
    with caplog.at_level(logging.WARNING):
        out = generate(tmp_path / "color.mp4", tmp_path / "mask.mp4", tmp_path / "out.mp4", pipe=pipe,
                       height=30, width=48, num_frames=4, num_inference_steps=1, mask_erode=2,
                       npz=tmp_path / "out.npz")
    assert "using 5" in caplog.text and "32x48" in caplog.text
    info = probe_video(out)
    frames = np.load(tmp_path / "out.npz")["frames"]
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8
    assert (info["frames"], info["height"], info["width"]) == (5, 32, 48)
    assert info["fps"] == pytest.approx(30)  # the renders' own rate (fps=15 gives the reference's)
    assert load_video(out, num_frames=None, height=32, width=48).frames.shape == (5, 32, 48, 3)
    # The saved frames are exactly the pipeline's output, before encoding.
    direct = pipe(load_video(tmp_path / "color.mp4", num_frames=None, height=32, width=48).frames,
                  load_video(tmp_path / "mask.mp4", num_frames=None, height=32, width=48).frames,
                  height=32, width=48, num_frames=5, num_inference_steps=1, mask_erode=2, output_type="np").frames
    assert np.array_equal(frames, direct)


def test_generate_takes_every_frame_by_default_and_the_reference_selection_with_num_frames(pipe, tmp_path):
    """num_frames=None: a 7-frame render comes out with 7 frames (the model ran 9, padded); num_frames=5 is the
    reference's selection of 5 frames, one model call; fps=15 writes the reference's rate."""
    color, mask = tiny_videos(7, 32, 32)
    save_video(tmp_path / "color.mp4", color, fps=12)
    save_video(tmp_path / "mask.mp4", mask, fps=12)
    calls = []

    def spy(c, m, **kw):
        calls.append((len(c), kw["num_frames"], kw["seed"]))
        return pipe(c, m, **kw)

    kw = dict(pipe=spy, height=32, width=32, num_inference_steps=1, mask_erode=0)
    whole = generate(tmp_path / "color.mp4", tmp_path / "mask.mp4", tmp_path / "a.mp4", npz=tmp_path / "a.npz", **kw)
    assert calls == [(7, 9, 0)]
    assert probe_video(whole)["frames"] == 7 and round(probe_video(whole)["fps"]) == 12
    frames = np.load(tmp_path / "a.npz")["frames"]
    decoded = [load_video(tmp_path / f, num_frames=None, height=32, width=32).frames for f in ("color.mp4", "mask.mp4")]
    direct = pipe(*decoded, height=32, width=32, num_frames=9, num_inference_steps=1, mask_erode=0, seed=0,
                  output_type="np").frames
    np.testing.assert_array_equal(frames, direct[:7])  # the padded call, its padding dropped
    calls.clear()
    ref = generate(tmp_path / "color.mp4", tmp_path / "mask.mp4", tmp_path / "b.mp4", num_frames=5, fps=15, **kw)
    assert calls == [(7, 5, 0)] and probe_video(ref)["frames"] == 5 and round(probe_video(ref)["fps"]) == 15


def test_generate_rejects_mismatched_videos(pipe, tmp_path):
    color, mask = tiny_videos(5, 32, 32)
    save_video(tmp_path / "color.mp4", color)
    save_video(tmp_path / "mask.mp4", mask[:3])
    with pytest.raises(InputError, match="frames"):
        generate(tmp_path / "color.mp4", tmp_path / "mask.mp4", tmp_path / "out.mp4", pipe=pipe,
                 height=32, width=32, num_frames=5, num_inference_steps=1)
    assert not (tmp_path / "out.mp4").exists()
    with pytest.raises(InputError, match="no such"):
        generate(tmp_path / "nope.mp4", tmp_path / "mask.mp4", tmp_path / "out.mp4", pipe=pipe)


def test_cli_generate_with_local_weights_and_one_line_errors(wan_dir, ex4d_ckpt, tmp_path, capsys, monkeypatch):
    from ex4d.cli import main

    color, mask = tiny_videos(5, 32, 32)
    save_video(tmp_path / "color.mp4", color)
    save_video(tmp_path / "mask.mp4", mask)
    out = tmp_path / "out.mp4"
    args = ["generate", "--color-video", str(tmp_path / "color.mp4"), "--mask-video", str(tmp_path / "mask.mp4"),
            "--output-video", str(out), "--height", "32", "--width", "32", "--num-frames", "5", "--steps", "1",
            "--device", "cpu"]
    assert main(args + ["--wan-dir", str(wan_dir), "--ex4d-ckpt", str(ex4d_ckpt), "--save-arrays"]) == 0
    assert probe_video(out)["frames"] == 5 and np.load(tmp_path / "out.npz")["frames"].shape == (5, 32, 32, 3)
    capsys.readouterr()
    # Offline, with no local copy of the official weights: one line naming what to download, no output.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out.unlink()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers" in err[0] and "--wan-dir" in err[0]
    assert not out.exists()
    assert main(args + ["--wan-dir", str(wan_dir), "--ex4d-ckpt", str(tmp_path / "missing.ckpt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_generate_without_arrays_writes_no_npz(pipe, tmp_path):
    color, mask = tiny_videos(5, 32, 32)
    save_video(tmp_path / "color.mp4", color)
    save_video(tmp_path / "mask.mp4", mask)
    generate(tmp_path / "color.mp4", tmp_path / "mask.mp4", tmp_path / "out.mp4", pipe=pipe, height=32, width=32,
             num_frames=5, num_inference_steps=1)
    assert (tmp_path / "out.mp4").is_file() and not list(tmp_path.glob("*.npz"))
