"""The ``ex4d`` command line: a good run writes playable outputs; every bad input gets one line, no traceback,
a non-zero exit and no output files."""

import json
from pathlib import Path
import subprocess
import sys

import av
import numpy as np
import pytest
import trimesh

from ex4d.cli import main


def recon_args(video, depth, out, *extra):
    args = ["recon", "--input-video", str(video), "--output-dir", str(out), "--num-frames", "9", "--quiet",
            "--device", "cpu", *extra]
    if depth is not None:
        args += ["--depth", str(depth)]
    return args


def test_recon_writes_all_outputs(tiny_inputs, tmp_path, capsys):
    video, depth, frames, depth_arr = tiny_inputs
    out = tmp_path / "out"
    assert main(recon_args(video, depth, out, "--cam", "30", "--save-mesh", "--save-arrays")) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["DW-Mesh.ply", "camera_30.npz", "color_30.mp4", "mask_30.mp4", "render_30.npz"]
    for name in ("color_30.mp4", "mask_30.mp4"):
        with av.open(str(out / name)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(decoded) == 9 and decoded[0].shape == (64, 64, 3)
    cams = np.load(out / "camera_30.npz")
    assert cams["extrinsics"].shape == (9, 4, 4) and cams["intrinsics"].shape == (3, 3)
    assert np.allclose(cams["extrinsics"][0], np.diag([1.0, -1, -1, 1]))
    arrays = np.load(out / "render_30.npz")
    assert arrays["color"].dtype == np.uint8 and arrays["color"].shape == (9, 64, 64, 3)
    assert arrays["mask"].dtype == bool and arrays["depth"].dtype == np.float32
    # The mask video is the mask array (up to compression), 255 = seen.
    with av.open(str(out / "mask_30.mp4")) as container:
        mask_video = np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])
    assert ((mask_video > 127) == arrays["mask"]).mean() > 0.99
    mesh = trimesh.load(out / "DW-Mesh.ply", process=False, force="mesh")
    assert len(mesh.vertices) == 64 * 64 and len(mesh.faces) == 2 * 63 * 63 + 2
    assert not list(out.glob(".*"))  # no temporaries left behind


def test_trajectory_file_names_outputs_after_its_stem(tiny_inputs, tmp_path):
    video, depth, _, _ = tiny_inputs
    traj = tmp_path / "sweep.json"
    assert main(["trajectory", "--cam", "orbit:angle=40", "--num-frames", "9", "--radius", "4",
                 "--output", str(traj)]) == 0
    out = tmp_path / "out"
    assert main(recon_args(video, depth, out, "--cam", str(traj))) == 0
    assert (out / "color_sweep.mp4").exists() and (out / "camera_sweep.npz").exists()
    # The written cameras are themselves a valid trajectory file.
    assert main(recon_args(video, depth, tmp_path / "again", "--cam", str(out / "camera_sweep.npz"))) == 0


def _bad_inputs(tmp_path, video, depth_arr):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    cases = {
        "missing video": (tmp_path / "nope.mp4", "depth"),
        "not a video": (not_video, "depth"),
        "no depth": (video, None),
        "missing depth file": (video, tmp_path / "nope.npz"),
    }
    arrays = {
        "too few depth frames": {"depth": depth_arr[:5]},
        "other aspect ratio": {"depth": np.full((9, 32, 64), 5.0, np.float32)},
        "NaN depth": {"depth": np.where(np.arange(64)[None, None] == 3, np.nan, depth_arr)},
        "inf depth": {"depth": np.where(np.arange(64)[None, None] == 3, np.inf, depth_arr)},
        "zero depth": {"depth": np.where(np.arange(64)[None, None] == 3, 0.0, depth_arr)},
        "no depth key": {"disparity": depth_arr},
        "bad intrinsics": {"depth": depth_arr, "intrinsics": np.eye(2)},
    }
    for name, content in arrays.items():
        path = tmp_path / (name.replace(" ", "_") + ".npz")
        np.savez(path, **content)
        cases[name] = (video, path)
    return cases


@pytest.mark.parametrize("case", ["missing video", "not a video", "no depth", "missing depth file",
                                  "too few depth frames", "other aspect ratio", "NaN depth", "inf depth",
                                  "zero depth", "no depth key", "bad intrinsics"])
def test_bad_inputs_give_one_line_and_no_outputs(tiny_inputs, tmp_path, capsys, case):
    video, depth, _, depth_arr = tiny_inputs
    video_arg, depth_arg = _bad_inputs(tmp_path, video, depth_arr)[case]
    depth_arg = depth if depth_arg == "depth" else depth_arg
    out = tmp_path / "out"
    assert main(recon_args(video_arg, depth_arg, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ex4d recon: error: ")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("cam, content", [
    ("spin", None), ("orbit:speed=2", None),
    ("bad.json", "{oops"), ("short.json", {"w2c": np.tile(np.eye(4), (3, 1, 1)).tolist()}),
    ("skew.json", {"w2c": (2 * np.tile(np.eye(4), (9, 1, 1))).tolist()}), ("absent.npz", None),
])
def test_bad_trajectories(tiny_inputs, tmp_path, capsys, cam, content):
    video, depth, _, _ = tiny_inputs
    if content is not None:
        (tmp_path / cam).write_text(content if isinstance(content, str) else json.dumps(content))
        cam = str(tmp_path / cam)
    elif cam.endswith(".npz"):
        cam = str(tmp_path / cam)
    out = tmp_path / "out"
    assert main(recon_args(video, depth, out, "--cam", cam)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ex4d.cli", "recon", "--input-video", str(tmp_path / "x.mp4"),
                           "--depth", str(tmp_path / "d.npz"), "--output-dir", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_help_for_every_subcommand(capsys):
    for sub in ("demo", "depth", "recon", "generate", "run", "eval", "trajectory"):
        with pytest.raises(SystemExit) as exc:
            main([sub, "--help"])
        assert exc.value.code == 0
        assert "--" in capsys.readouterr().out


def test_recon_with_a_depth_backend_saves_the_depth_it_used(tiny_inputs, tmp_path):
    video, depth, _, depth_arr = tiny_inputs
    out = tmp_path / "out"
    assert main(["recon", "--input-video", str(video), "--output-dir", str(out), "--num-frames", "9", "--quiet",
                 "--device", "cpu", "--cam", "30", "--depth-backend", "file", "--depth-file", str(depth),
                 "--height", "64", "--width", "64"]) == 0
    saved = np.load(out / "depth.npz")
    assert np.allclose(saved["depth"], depth_arr) and saved["intrinsics"].shape == (9, 3, 3)
    assert (out / "color_30.mp4").exists() and (out / "mask_30.mp4").exists()


def test_recon_needs_exactly_one_depth_source(tiny_inputs, tmp_path, capsys):
    video, depth, _, _ = tiny_inputs
    assert main(recon_args(video, depth, tmp_path / "o", "--depth-backend", "file", "--depth-file", str(depth))) == 2
    assert "either --depth" in capsys.readouterr().err


def test_run_passes_the_generation_flags_to_the_model(tmp_path, monkeypatch):
    """``ex4d run --fill ex4d`` takes ex4d generate's sampler/memory/speed flags and hands them to the model."""
    import ex4d.runner

    seen = {}

    def fake_run(input_video, output_dir, **kwargs):
        seen["options"] = kwargs["generate_options"]
        return ex4d.runner.RunResult(output_dir=Path(output_dir))

    monkeypatch.setattr(ex4d.runner, "run", fake_run)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")  # only its existence is checked before run()
    wan, ckpt = tmp_path / "wan", tmp_path / "ex4d.ckpt"
    wan.mkdir()
    ckpt.write_bytes(b"")
    lora = tmp_path / "distill.safetensors"
    lora.write_bytes(b"")
    assert main(["run", "--input-video", str(video), "--output-dir", str(tmp_path / "o"), "--fill", "ex4d",
                 "--wan-dir", str(wan), "--ex4d-ckpt", str(ckpt), "--steps", "4", "--cfg", "1", "--seed", "7",
                 "--offload", "group", "--fp8", "--cache", "taylorseer:3", "--extra-lora", f"{lora}:0.5",
                 "--quiet"]) == 0
    model, sampling = seen["options"].model, seen["options"].sampling
    assert model.model_dir == wan and model.adapter == ckpt
    assert (sampling.steps, sampling.cfg, sampling.seed) == (4, 1.0, 7)
    assert model.offload == "group" and model.fp8 and model.cache == "taylorseer:3"
    assert model.extra_loras == ((lora, 0.5),)


def test_run_refuses_fp8_matmul_before_any_stage(tmp_path, tiny_inputs, capsys):
    """An --fp8-matmul run on a machine without fp8 tensor cores fails at once: no depth, no render, no folder."""
    video, depth, _, _ = tiny_inputs
    wan, ckpt = tmp_path / "wan", tmp_path / "ex4d.ckpt"
    wan.mkdir()
    ckpt.write_bytes(b"")
    out = tmp_path / "o"
    assert main(["run", "--input-video", str(video), "--depth", str(depth), "--output-dir", str(out),
                 "--fill", "ex4d", "--wan-dir", str(wan), "--ex4d-ckpt", str(ckpt), "--device", "cpu",
                 "--fp8-matmul", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "compute capability" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_batch_refuses_fp8_matmul_before_the_first_video(tmp_path, tiny_inputs, capsys):
    video, _, _, _ = tiny_inputs
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(video.read_bytes())
    wan, ckpt = tmp_path / "wan", tmp_path / "ex4d.ckpt"
    wan.mkdir()
    ckpt.write_bytes(b"")
    out = tmp_path / "o"
    assert main(["run", "--manifest", str(folder), "--output-dir", str(out), "--fill", "ex4d", "--wan-dir", str(wan),
                 "--ex4d-ckpt", str(ckpt), "--device", "cpu", "--fp8-matmul", "--quiet"]) == 2
    assert "compute capability" in capsys.readouterr().err
    assert not (out / "a").exists()


def test_the_ui_and_generation_flags_do_not_import_the_main_cli():
    """``ex4d.ui.cli`` and ``ex4d.generation_cli`` stand below ``ex4d.cli`` (no import cycle between them), and
    building the generation options needs neither torch nor diffusers."""
    import subprocess
    import sys

    code = ("import sys, ex4d.ui.cli, ex4d.generation_cli, ex4d.generation_options; "
            "print(sorted(m for m in ('ex4d.cli', 'torch', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("argv,needle", [
    (["recon", "--supersample", "0"], "ex4d recon: error: argument --supersample"),
    (["recon", "--input-video", "v.mp4"], "ex4d recon: error: the following arguments are required: --output-dir"),
    (["recon", "--input-video", "v.mp4", "--output-dir", "o", "--wat"], "ex4d: error: unrecognized arguments: --wat"),
    (["run", "--fill", "magic"], "ex4d run: error: argument --fill: invalid choice"),
    ([], "ex4d: error: the following arguments are required: <command>"),
])
def test_argument_errors_are_one_line_with_a_help_pointer(argv, needle, capsys):
    from ex4d.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith(needle), err
    assert err.rstrip().endswith("--help)") and "usage:" not in err
