"""``ex4d depth`` (through a stand-alone parser until the lead wires it into ex4d.cli)."""

import argparse
import subprocess
import sys

import numpy as np
import pytest

from ex4d.depth.cli import add_depth_backend_arguments, add_depth_parser, backend_options_from_args
from ex4d.errors import InputError
from ex4d.io.video import save_video


def _parser():
    parser = argparse.ArgumentParser(prog="ex4d")
    add_depth_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv):
    args = _parser().parse_args(["depth", *argv])
    return args.func(args)


@pytest.fixture
def video(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    path = tmp_path / "in.mp4"
    save_video(path, frames, fps=12)
    return path


def test_parser_builds_without_torch():
    code = ("import sys, argparse; from ex4d.depth.cli import add_depth_parser; "
            "p = argparse.ArgumentParser(); add_depth_parser(p.add_subparsers()); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_file_backend_end_to_end(tmp_path, video, capsys):
    from ex4d.reconstruction import check_depth, load_depth_file

    depth = np.random.default_rng(1).uniform(1, 9, (4, 64, 64)).astype(np.float32)
    np.save(tmp_path / "mine.npy", depth)
    out = tmp_path / "D.npz"
    assert _run(["--input-video", str(video), "--backend", "file", "--depth-file", str(tmp_path / "mine.npy"),
                 "--output", str(out), "--num-frames", "4", "--fov", "90", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    d, K = load_depth_file(out)
    np.testing.assert_array_equal(check_depth(d, 4), depth)
    np.testing.assert_allclose(K[0], [[32, 0, 32], [0, 32, 32], [0, 0, 1]], atol=1e-4)


def test_depth_anything_end_to_end(tmp_path, video, da_dir):
    out = tmp_path / "D.npz"
    assert _run(["--input-video", str(video), "--backend", "depth-anything-v2", "--depth-model", str(da_dir),
                 "--output", str(out), "--num-frames", "3", "--device", "cpu", "--quiet"]) == 0
    with np.load(out) as data:
        assert data["depth"].shape == (3, 64, 64) and data["intrinsics"][0, 0, 0] == 500.0
        assert str(data["backend"]) == "depth-anything-v2"


def test_clear_cli_errors(tmp_path, video):
    base = ["--input-video", str(video), "--output", str(tmp_path / "D.npz"), "--num-frames", "4"]
    with pytest.raises(InputError, match="--depth-window does not apply to the depth-pro"):
        _run([*base, "--backend", "depth-pro", "--depth-window", "10"])
    with pytest.raises(InputError, match="needs --depth-file"):
        _run([*base, "--backend", "file"])
    with pytest.raises(InputError, match="input video not found"):
        _run(["--input-video", str(tmp_path / "nope.mp4"), "--output", str(tmp_path / "D.npz")])
    with pytest.raises(InputError, match="must be a .npz"):
        _run(["--input-video", str(video), "--output", str(tmp_path / "D.npy"), "--backend", "file",
              "--depth-file", "x.npy"])
    np.save(tmp_path / "short.npy", np.ones((2, 64, 64), np.float32))
    with pytest.raises(InputError, match="depth has 2 maps but 4 video frames"):
        _run([*base, "--backend", "file", "--depth-file", str(tmp_path / "short.npy")])
    with pytest.raises(InputError, match="not both"):
        _run([*base, "--backend", "file", "--depth-file", str(tmp_path / "short.npy"), "--focal", "500",
              "--fov", "60"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["depth", *base, "--backend", "midas"])


def test_backend_arguments_for_recon():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    add_depth_backend_arguments(parser, "--depth-backend", default=None)
    args = parser.parse_args([])
    assert args.depth_backend is None
    args = parser.parse_args(["--depth-backend", "depthcrafter", "--depth-window", "50", "--depth-model", "u",
                              "--device", "cpu", "--no-download"])
    assert backend_options_from_args(args) == {"window": 50, "unet": "u", "device": "cpu", "download": False}
