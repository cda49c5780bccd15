"""One reader per input kind: ``ex4d recon``, ``ex4d run`` and the web app accept and refuse the same depth files,
with the same words, through :mod:`ex4d.io.depth_file` and :mod:`ex4d.io.source`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ex4d.depth.files import save_depth_frames
from ex4d.errors import InputError, option
from ex4d.io.source import working_size
from ex4d.io.video import save_video

T, H, W = 3, 48, 96  # 48×96: not a multiple of 64, the size `ex4d run` used to refuse while recon took it


def _scene(num_frames=T, height=H, width=W):
    """Frames (T, H, W, 3) uint8 and z-depth (T, H, W) float32: a near box in front of a wall."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (num_frames, height, width, 3), dtype=np.uint8)
    depth = np.full((num_frames, height, width), 8.0, np.float32)
    depth[:, height // 3: 2 * height // 3, width // 3: 2 * width // 3] = 3.0
    return frames, depth


GOOD = _scene()[1]
K = np.array([[60.0, 0, W / 2], [0, 60.0, H / 2], [0, 0, 1]], np.float32)


def _npz(**arrays):
    def write(d: Path) -> Path:
        np.savez(d / "depth.npz", **arrays)
        return d / "depth.npz"
    return write


def _npy(array):
    def write(d: Path) -> Path:
        np.save(d / "depth.npy", array)
        return d / "depth.npy"
    return write


def _text(content: str):
    def write(d: Path) -> Path:
        (d / "depth.npz").write_text(content)
        return d / "depth.npz"
    return write


def _frames_folder(fmt: str):
    def write(d: Path) -> Path:
        save_depth_frames(d / "frames", GOOD, fmt)  # 16-bit PNG stores whole numbers: 8 and 3 survive exactly
        return d / "frames"
    return write


def _with(value, at=(1, 2, 3)):
    depth = GOOD.copy()
    depth[at] = value
    return depth


# name -> (writer of the file into a folder, True or what the refusal says); the web app takes the single files
# (a folder is no upload)
CASES = {
    "npz": (_npz(depth=GOOD), True),
    "npz (T, 1, H, W)": (_npz(depth=GOOD[:, None]), True),
    "npz float64": (_npz(depth=GOOD.astype(np.float64)), True),
    "npz + intrinsics (3, 3)": (_npz(depth=GOOD, intrinsics=K), True),
    "npz + intrinsics (T, 3, 3)": (_npz(depth=GOOD, intrinsics=np.stack([K] * T)), True),
    "npz, the only array unnamed": (_npz(arr_0=GOOD), True),
    "npz, more maps than frames": (_npz(depth=np.concatenate([GOOD, GOOD])), True),
    "npy": (_npy(GOOD), True),
    "half size, same aspect": (_npz(depth=GOOD[:, ::2, ::2]), True),
    "16-bit png folder": (_frames_folder("png"), True),
    "exr folder": (_frames_folder("exr"), True),
    "NaN depth": (_npz(depth=_with(np.nan)), "expected finite z-depth, found 1 NaN or inf values"),
    "inf depth": (_npz(depth=_with(np.inf)), "expected finite z-depth, found 1 NaN or inf values"),
    "zero depth": (_npz(depth=_with(0.0)), "expected positive z-depth, found 1 values ≤ 0"),
    "negative depth": (_npz(depth=_with(-1.0)), "expected positive z-depth, found 1 values ≤ 0"),
    "float64 beyond float32": (_npz(depth=np.where(np.arange(W) == 3, 1e300, GOOD.astype(np.float64))),
                               "expected finite z-depth, found 144 NaN or inf values"),
    "too few maps": (_npz(depth=GOOD[:2]), "depth has 2 maps but 3 video frames are used; pass num_frames=2"),
    "2-D": (_npz(depth=GOOD[0]), "expected a (T, H, W) numeric depth array, found shape (48, 96)"),
    "(T, 2, H, W)": (_npz(depth=np.stack([GOOD, GOOD], 1)),
                     "expected a (T, H, W) numeric depth array, found shape (3, 2, 48, 96)"),
    "bool": (_npz(depth=GOOD > 0), "expected a (T, H, W) numeric depth array, found shape (3, 48, 96) bool"),
    "complex": (_npz(depth=GOOD.astype(np.complex64)),
                "expected a (T, H, W) numeric depth array, found shape (3, 48, 96) complex64"),
    "1×1 maps": (_npz(depth=np.ones((T, 1, 1), np.float32)), "expected depth maps of at least 2×2, found 1×1"),
    "odd size": (_npz(depth=np.full((T, 47, 95), 5.0, np.float32)),
                 "expected even height and width for the H.264 outputs, found depth maps of 47×95"),
    "other aspect ratio": (_npz(depth=np.full((T, 48, 48), 5.0, np.float32)),
                           "depth maps are 48×48 (H×W) but the video is 48×96: aspect ratios differ"),
    "intrinsics (2, 2)": (_npz(depth=GOOD, intrinsics=np.eye(2)),
                          "intrinsics must be (3, 3) or (3, 3, 3), got (2, 2)"),
    "intrinsics, negative focal": (_npz(depth=GOOD, intrinsics=-K),
                                   "intrinsics must be finite with positive focal lengths"),
    "intrinsics, NaN": (_npz(depth=GOOD, intrinsics=np.full((3, 3), np.nan)),
                        "intrinsics must be finite with positive focal lengths"),
    "intrinsics, fewer than frames": (_npz(depth=GOOD, intrinsics=np.stack([K] * (T - 1))),
                                      "intrinsics must be (3, 3) or (3, 3, 3), got (2, 3, 3)"),
    "disparity array": (_npz(disparity=GOOD), "holds a 'disparity' array, not z-depth"),
    "two unnamed arrays": (_npz(a=GOOD, b=GOOD), "expected an array 'depth' (found: a, b)"),
    "not numpy data": (_text("1 2 3"), "cannot read depth file (not an .npy/.npz file"),
}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    save_video(path, _scene()[0], fps=12)
    return path


def _outcome(call, depth_path: Path) -> str:
    """"ok", or the error message with the depth file named by its file name (the app names uploads so)."""
    try:
        call()
    except InputError as exc:
        assert exc.argument in (None, "depth"), exc.argument
        return exc.message.replace(str(depth_path), depth_path.name)
    return "ok"


def _recon(video, depth):
    from ex4d.reconstruction import recon

    return lambda: recon(video, depth, cam="30", device="cpu", progress=False)


def _run(video, depth, out):
    from ex4d.runner import run

    return lambda: run(video, out, cams=["30"], depth=depth, fill="none", device="cpu", progress=False)


def _ui(video, depth, root):
    from ex4d.ui.session import Workspace

    ws = Workspace(root)
    uploads = ws.gradio_dir / "upload"
    uploads.mkdir(parents=True)
    shutil.copy(video, uploads / video.name)
    shutil.copy(depth, uploads / depth.name)
    return lambda: ws.add_video(uploads / video.name, uploads / depth.name)


@pytest.mark.parametrize("name", list(CASES))
def test_recon_run_and_app_accept_and_refuse_the_same_depth_files(name, video, tmp_path):
    write, expected = CASES[name]
    accepted = expected is True
    (tmp_path / "in").mkdir()
    depth = write(tmp_path / "in")
    recon_said = _outcome(_recon(video, depth), depth)
    run_said = _outcome(_run(video, depth, tmp_path / "run"), depth)
    assert (recon_said == "ok") == accepted, recon_said
    assert accepted or recon_said.startswith(f"{depth.name}: {expected}"), recon_said
    assert run_said == recon_said
    if depth.is_file():  # the app takes single-file uploads
        assert _outcome(_ui(video, depth, tmp_path / "ui"), depth) == recon_said
    if not accepted:
        assert not (tmp_path / "run").exists()  # refused before the output folder is made
        assert "\n" not in recon_said


def test_accepted_depth_is_read_alike(video, tmp_path):
    """The three commands see the same maps and intrinsics: the file's first T maps, its K or the reference's."""
    from ex4d.reconstruction import recon

    (tmp_path / "in").mkdir()
    depth = _npz(depth=np.concatenate([GOOD, GOOD + 1]), intrinsics=K)(tmp_path / "in")
    result = recon(video, depth, cam="30", device="cpu", progress=False)
    np.testing.assert_array_equal(result.depth[0], GOOD[0])  # frame 0 starts at the source camera
    np.testing.assert_array_equal(result.source_K, np.stack([K] * T))
    assert result.color.shape == (T, H, W, 3)
    clip = _ui(video, depth, tmp_path / "ui")()
    np.testing.assert_array_equal(clip.depth, GOOD)
    np.testing.assert_array_equal(clip.K, K)
    np.testing.assert_array_equal(clip.frames, result.source.frames)


def test_size_options_follow_one_policy():
    # Depth given: its size is the working size (the video is resized to it), if the aspect ratios agree.
    assert working_size((H, W), (24, 48)) == (24, 48)
    assert working_size((480, 960), (H, W), H, W) == (H, W)
    # No depth: --height/--width, else the reference's multiples of 64.
    assert working_size((H, W)) == (64, 128)
    assert working_size((H, W), None, 32, 64) == (32, 64)
    with pytest.raises(InputError, match="depth maps are 48×96 but height/width ask for 24×48") as info:
        working_size((H, W), (H, W), 24, 48)
    assert info.value.argument == "depth"
    assert info.value.render({"height": "--height", "width": "--width"}.get).startswith(
        "depth maps are 48×96 but --height/--width ask for 24×48")
    with pytest.raises(InputError, match="give both height and width"):
        working_size((H, W), None, 32, None)
    with pytest.raises(InputError, match="aspect ratios differ"):
        working_size((H, W), (48, 90))  # 6 % off
    assert working_size((H, W), (52, 102)) == (52, 102)  # 1.9 % off: within the rule


def test_option_renders_as_python_name_or_cli_flag():
    exc = InputError(f"pass {option('num_frames', 9)} or depth with 49 maps; {option('height')} too", "depth")
    assert exc.message == "pass num_frames=9 or depth with 49 maps; height too"
    assert str(exc) == "depth: pass num_frames=9 or depth with 49 maps; height too"
    assert exc.render({"num_frames": "--num-frames"}.get) == "pass --num-frames 9 or depth with 49 maps; height too"


def test_one_natural_order_for_every_folder(tmp_path):
    """Image folders, depth folders, manifest folders and prepare's clip folders sort 2 before 10 alike."""
    from ex4d.batch import read_manifest
    from ex4d.io.depth_file import read_depth_file
    from ex4d.io.video import load_video
    from ex4d.train.pairs import find_clips
    from ex4d.utils.sorting import natural_key

    names = ["f10", "F2", "f1", "f2b"]
    expected = sorted(names, key=natural_key)
    assert expected == ["f1", "F2", "f2b", "f10"]
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    depth = np.zeros((4, 16, 16), np.float32)
    for i, name in enumerate(names):  # frame i is marked with value 10 * (i + 1)
        frames[i], depth[i] = 10 * (i + 1), 10 * (i + 1)
    (tmp_path / "img").mkdir()
    (tmp_path / "dep").mkdir()
    (tmp_path / "vids").mkdir()
    import av

    for i, name in enumerate(names):
        container = av.open(str(tmp_path / "img" / f"{name}.png"), "w", format="image2")
        stream = container.add_stream("png")
        stream.width = stream.height = 16
        stream.pix_fmt = "rgb24"
        frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
        container.close()
        save_depth_frames(tmp_path / "dep", depth[i:i + 1], "exr", prefix=name)
        (tmp_path / "dep" / f"{name}0000.exr").rename(tmp_path / "dep" / f"{name}.exr")
        save_video(tmp_path / "vids" / f"{name}.mp4", frames[i:i + 1].repeat(2, 0))
    order = [10 * (names.index(n) + 1) for n in expected]
    assert [int(f[0, 0, 0]) for f in load_video(tmp_path / "img", num_frames=None, height=16, width=16).frames] \
        == order
    assert [int(m[0, 0]) for m in read_depth_file(tmp_path / "dep").maps] == order
    assert [item.input_video.stem for item in read_manifest(tmp_path / "vids", tmp_path / "out")] == expected
    assert [clip.name for clip in find_clips(tmp_path / "vids")] == expected


def test_file_backend_sizes_frames_as_a_depth_file_does(tmp_path, capsys):
    """32×48 frames: the reference's rule would make them 64×64 (another aspect ratio). A depth file sets the size
    alike through --depth and through the file backend (ex4d depth, recon --depth-backend file, run)."""
    import json

    from ex4d.cli import main
    from ex4d.runner import run

    frames, depth = _scene(num_frames=3, height=32, width=48)
    video, depth_path = tmp_path / "clip.mp4", tmp_path / "d.npz"
    save_video(video, frames, fps=12)
    np.savez(depth_path, depth=depth)
    common = ["--input-video", str(video), "--device", "cpu", "--quiet"]
    assert main(["recon", *common, "--depth", str(depth_path), "--output-dir", str(tmp_path / "a")]) == 0
    assert main(["recon", *common, "--depth-backend", "file", "--depth-file", str(depth_path),
                 "--output-dir", str(tmp_path / "b")]) == 0
    assert main(["depth", *common, "--backend", "file", "--depth-file", str(depth_path),
                 "--output", str(tmp_path / "D.npz")]) == 0
    capsys.readouterr()
    for out in ("a", "b"):
        with np.load(tmp_path / out / "camera_180.npz") as cams:
            assert cams["intrinsics"].shape == (3, 3)
        assert load_shape(tmp_path / out / "color_180.mp4") == (3, 32, 48)
    for estimated in (tmp_path / "b" / "depth.npz", tmp_path / "D.npz"):
        with np.load(estimated) as data:
            np.testing.assert_array_equal(data["depth"], depth)
    run(video, tmp_path / "c", cams=["30"], depth_backend="file", depth_options={"path": depth_path}, fill="none",
        device="cpu", progress=False)
    assert json.loads((tmp_path / "c" / "run.json").read_text())["size"] == [32, 48]


def load_shape(path) -> tuple[int, int, int]:
    """(T, H, W) of a written video, as stored."""
    from ex4d.io.video import probe_video

    info = probe_video(path)
    return info["frames"], info["height"], info["width"]
