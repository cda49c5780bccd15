"""Tests for ex4d.io.video: reading (files, gifs, image folders), size policy, sampling, writing."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ex4d.errors import InputError
from ex4d.io import video as video_mod
from ex4d.io.video import Video, load_video, probe_video, reference_size, save_video

T, H, W = 8, 64, 96


def gradient_frames(t=T, h=H, w=W):
    """(t, h, w, 3) uint8 smooth colour gradients that drift over time (compress well, easy to compare)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(t):
        r = 255 * (xx + 4 * i) / (w + 4 * t)
        g = 255 * yy / h
        b = 128 + 60 * np.sin((xx + yy) / 20 + i / 3)
        frames.append(np.stack([r, g, b], -1))
    return np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)


def index_frames(t=T, h=H, w=W, step=30):
    """Flat grey frames whose brightness is ``step * index``, to identify which frames were kept."""
    return np.repeat((np.arange(t, dtype=np.uint8) * step)[:, None, None, None], h * w * 3).reshape(t, h, w, 3)


def frame_indices(frames, step=30):
    return [int(round(f.mean() / step)) for f in frames]


def write_with_av(path, frames, codec, pix_fmt, rate=30, options=None, rotation=None):
    """Encode frames with PyAV directly, to make test inputs in formats save_video does not write."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if options:
            stream.options = options
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        container.mux(stream.encode())
    return path


def write_image(path, rgb):
    """One still image (format from the suffix) through PyAV's image2 encoders."""
    codec, pix_fmt = {".png": ("png", "rgb24"), ".jpg": ("mjpeg", "yuvj444p"), ".bmp": ("bmp", "bgr24")}[
        path.suffix
    ]
    return write_with_av(path, rgb[None], codec, pix_fmt)


@pytest.fixture(scope="module")
def index_mp4(tmp_path_factory):
    return save_video(tmp_path_factory.mktemp("v") / "index.mp4", index_frames())


# --- reference_size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "h0, w0, expected",
    [
        (512, 512, (512, 512)),
        (1080, 1920, (576, 1024)),
        (720, 1280, (576, 1024)),
        (1920, 1080, (1024, 576)),
        (480, 854, (512, 832)),
        # Python's round is half to even: 96/64 = 1.5 -> 2, 160/64 = 2.5 -> 2.
        (96, 160, (128, 128)),
        (64, 96, (64, 128)),
        # A side that would round to 0 becomes one multiple.
        (10, 20, (64, 64)),
        (2000, 30, (1024, 64)),
    ],
)
def test_reference_size(h0, w0, expected):
    assert reference_size(h0, w0) == expected


def test_reference_size_max_res_uses_original_size():
    # 1088x1920 rounds to 1088x1920 (> 1024), rescaled from the original: 1024/1920 * (1080, 1920).
    assert reference_size(1080, 1920, max_res=512) == (256, 512)
    assert reference_size(1080, 1920, max_res=4096) == (1088, 1920)


# --- save_video ----------------------------------------------------------------------------------


def test_save_video_stream_properties(tmp_path):
    path = save_video(tmp_path / "out.mp4", gradient_frames(), fps=24)
    assert path == tmp_path / "out.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert container.format.name.startswith("mov,mp4")
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.height, stream.width) == (H, W)
        assert stream.average_rate == 24
        assert stream.codec_context.colorspace == 1  # BT.709 tagged
        assert sum(1 for _ in container.decode(stream)) == T
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart: index first, playable while downloading
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_round_trip_keeps_count_size_fps_and_content(tmp_path):
    frames = gradient_frames()
    save_video(tmp_path / "a.mp4", frames, fps=30)
    v = load_video(tmp_path / "a.mp4", num_frames=None, height=H, width=W)
    assert isinstance(v, Video)
    assert v.frames.shape == (T, H, W, 3) and v.frames.dtype == np.uint8
    assert v.fps == 30.0
    assert v.source_size == (H, W)
    assert (v.num_frames, v.height, v.width) == (T, H, W)
    assert np.abs(v.frames.astype(int) - frames).mean() < 3


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), 29.97, 12.5, 8])
def test_fractional_fps_round_trip(tmp_path, fps):
    save_video(tmp_path / "a.mp4", gradient_frames(t=4), fps=fps)
    v = load_video(tmp_path / "a.mp4", num_frames=None)
    assert v.fps == pytest.approx(float(fps), rel=1e-6)
    assert probe_video(tmp_path / "a.mp4")["fps"] == pytest.approx(float(fps), rel=1e-6)


def test_grey_frames(tmp_path):
    grey = gradient_frames()[..., 0]
    save_video(tmp_path / "g.mp4", grey)
    v = load_video(tmp_path / "g.mp4", num_frames=None, height=H, width=W)
    assert v.frames.shape == (T, H, W, 3)
    assert np.abs(v.frames.astype(int) - grey[..., None]).mean() < 3
    # Replicated to RGB, so no colour cast.
    assert np.abs(v.frames[..., 0].astype(int) - v.frames[..., 2]).max() <= 3


@pytest.mark.parametrize(
    "frames, match",
    [
        (gradient_frames().astype(np.float32), "uint8"),
        (gradient_frames()[..., :2], "shape"),
        (gradient_frames()[0, 0], "shape"),
        (gradient_frames()[:0], "empty"),
        (gradient_frames()[:, :63], "even"),
        (gradient_frames()[:, :, :95], "even"),
    ],
)
def test_save_video_rejects_bad_frames(tmp_path, frames, match):
    with pytest.raises(ValueError, match=match) as info:
        save_video(tmp_path / "a.mp4", frames)
    assert not isinstance(info.value, InputError)  # a programming error, not a user-input one
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [({"fps": 0}, "fps"), ({"fps": float("nan")}, "fps"), ({"crf": 60}, "crf"), ({"crf": 1.5}, "crf")],
)
def test_save_video_rejects_bad_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        save_video(tmp_path / "a.mp4", gradient_frames(t=2), **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_save_video_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="mp4"):
        save_video(tmp_path / "a.avi", gradient_frames(t=2))


def test_save_video_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    final = tmp_path / "a.mp4"
    final.write_bytes(b"previous result")
    real = video_mod._rgb_to_video_frame
    calls = []

    def failing(rgb):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("encoder died")
        return real(rgb)

    monkeypatch.setattr(video_mod, "_rgb_to_video_frame", failing)
    with pytest.raises(RuntimeError, match="encoder died"):
        save_video(final, gradient_frames())
    assert len(calls) == 4  # the container was open and had frames in it
    assert final.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_save_video_creates_folders_and_overwrites(tmp_path):
    path = tmp_path / "deep" / "er" / "a.mp4"
    save_video(path, gradient_frames(t=2))
    save_video(path, gradient_frames(t=3))
    assert probe_video(path)["frames"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["a.mp4"]


# --- sampling ------------------------------------------------------------------------------------


def test_sampling_first(index_mp4):
    v = load_video(index_mp4, num_frames=3, height=H, width=W)
    assert frame_indices(v.frames) == [0, 1, 2]


def test_sampling_uniform(index_mp4):
    v = load_video(index_mp4, num_frames=4, sampling="uniform", height=H, width=W)
    # round(linspace(0, 7, 4)) = round([0, 2.33, 4.67, 7])
    assert frame_indices(v.frames) == [0, 2, 5, 7]
    v = load_video(index_mp4, num_frames=T, sampling="uniform", height=H, width=W)
    assert frame_indices(v.frames) == list(range(T))


@pytest.mark.parametrize("num_frames", [None, 0])
@pytest.mark.parametrize("sampling", ["first", "uniform"])
def test_all_frames(index_mp4, num_frames, sampling):
    v = load_video(index_mp4, num_frames=num_frames, sampling=sampling, height=H, width=W)
    assert frame_indices(v.frames) == list(range(T))


@pytest.mark.parametrize("sampling", ["first", "uniform"])
@pytest.mark.parametrize("num_frames", [T + 1, 49])
def test_short_clip_is_taken_whole(index_mp4, sampling, num_frames):
    # num_frames is at most that many: a clip shorter than asked is an ordinary input, all of its frames kept.
    v = load_video(index_mp4, num_frames=num_frames, sampling=sampling, height=H, width=W)
    assert frame_indices(v.frames) == list(range(T))


# --- resizing ------------------------------------------------------------------------------------


def test_default_size_follows_reference_policy(tmp_path):
    frames = gradient_frames()
    save_video(tmp_path / "a.mp4", frames)
    v = load_video(tmp_path / "a.mp4", num_frames=2)
    assert v.frames.shape == (2, *reference_size(H, W), 3) == (2, 64, 128, 3)
    assert v.source_size == (H, W)


def test_resize_matches_opencv_inter_linear(tmp_path):
    # The reference resizes decoded frames with cv2.resize(frame, (w, h)) (INTER_LINEAR on uint8).
    cv2 = pytest.importorskip("cv2")
    save_video(tmp_path / "a.mp4", gradient_frames())
    native = load_video(tmp_path / "a.mp4", num_frames=3, height=H, width=W).frames
    resized = load_video(tmp_path / "a.mp4", num_frames=3, height=32, width=40).frames
    assert resized.shape == (3, 32, 40, 3)
    expected = np.stack([cv2.resize(f, (40, 32), interpolation=cv2.INTER_LINEAR) for f in native])
    np.testing.assert_array_equal(resized, expected)


def test_no_resize_when_size_matches(tmp_path):
    save_video(tmp_path / "a.mp4", gradient_frames())
    with av.open(str(tmp_path / "a.mp4")) as c:
        direct = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    v = load_video(tmp_path / "a.mp4", num_frames=None, height=H, width=W)
    np.testing.assert_array_equal(v.frames, direct)


def test_rotation_metadata_is_applied(tmp_path):
    frames = np.zeros((2, H, W, 3), np.uint8)
    frames[:, :16, :16] = 255  # top-left corner
    # -90 (counter-clockwise) = what phones store for portrait clips: display turned 90 degrees clockwise.
    path = write_with_av(tmp_path / "r.mp4", frames, "libx264", "yuv420p", rotation=-90)
    v = load_video(path, num_frames=None, height=W, width=H)
    assert v.source_size == (W, H)
    grey = v.frames[0].mean(-1)
    assert grey[:8, -8:].mean() > 200  # top-left went to top-right
    assert grey[:8, :8].mean() < 50
    assert probe_video(path)["height"] == W


# --- other inputs --------------------------------------------------------------------------------


def test_gif(tmp_path):
    path = write_with_av(tmp_path / "a.gif", index_frames(), "gif", "rgb8", rate=10)
    v = load_video(path, num_frames=None, height=H, width=W)
    assert v.frames.shape == (T, H, W, 3)
    assert v.fps == 10.0
    assert frame_indices(v.frames) == list(range(T))  # rgb8 palette: coarse, but the right frames


@pytest.mark.parametrize(
    "name, codec, pix_fmt",
    [
        ("a.mkv", "libx264", "yuv420p"),
        ("a.mov", "libx264", "yuv420p"),
        ("a.avi", "mpeg4", "yuv420p"),
        ("a.webm", "libvpx", "yuv420p"),
    ],
)
def test_other_containers(tmp_path, name, codec, pix_fmt):
    frames = gradient_frames()
    path = write_with_av(tmp_path / name, frames, codec, pix_fmt, options={"qscale": "2"} if codec == "mpeg4" else None)
    v = load_video(path, num_frames=5, sampling="uniform", height=H, width=W)
    assert v.frames.shape == (5, H, W, 3)
    assert v.fps == pytest.approx(30.0)
    assert np.abs(v.frames.astype(int) - frames[[0, 2, 4, 5, 7]]).mean() < 6


def test_image_folder_natural_order(tmp_path):
    frames = index_frames(t=11, step=20)
    # 0..10 as plain numbers: natural order puts 2 before 10, plain sorting would not.
    for i, rgb in enumerate(frames):
        write_image(tmp_path / f"frame{i}.png", rgb)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    v = load_video(tmp_path, num_frames=None, height=H, width=W)
    assert v.fps == 30.0
    assert v.source_size == (H, W)
    np.testing.assert_array_equal(v.frames, frames)  # png is lossless
    v = load_video(tmp_path, num_frames=3, sampling="uniform", height=H, width=W)
    assert frame_indices(v.frames, step=20) == [0, 5, 10]
    assert probe_video(tmp_path) == {"frames": 11, "fps": 30.0, "height": H, "width": W}


def test_image_folder_mixed_formats(tmp_path):
    frames = index_frames(t=3)
    write_image(tmp_path / "0.png", frames[0])
    write_image(tmp_path / "1.jpg", frames[1])
    write_image(tmp_path / "2.bmp", frames[2]).rename(tmp_path / "2.BMP")  # extensions are case-insensitive
    v = load_video(tmp_path, num_frames=None)
    assert v.frames.shape == (3, 64, 128, 3)
    assert frame_indices(v.frames) == [0, 1, 2]


def test_image_folder_shorter_than_asked_is_taken_whole(tmp_path):
    for t, frame in enumerate(index_frames(t=3)):
        write_image(tmp_path / f"{t}.png", frame)
    assert frame_indices(load_video(tmp_path).frames) == [0, 1, 2]  # the default asks for 49
    assert frame_indices(load_video(tmp_path, num_frames=2, sampling="uniform").frames) == [0, 2]


# --- errors --------------------------------------------------------------------------------------


def _assert_input_error(path, match, **kwargs):
    with pytest.raises(InputError, match=match) as info:
        load_video(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_missing_path(tmp_path):
    _assert_input_error(tmp_path / "nope.mp4", "no such file")
    with pytest.raises(InputError, match="no such file"):
        probe_video(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_text("this is not a video")
    _assert_input_error(path, "not a readable video")
    with pytest.raises(InputError):
        probe_video(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    _assert_input_error(path, "not a readable video")


def test_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    _assert_input_error(path, "no video stream")


def test_truncated_video(tmp_path):
    data = save_video(tmp_path / "a.mp4", gradient_frames(t=30)).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])  # index intact (faststart), frame data cut off
    _assert_input_error(path, "cannot decode frame", num_frames=None)


def test_decode_error_becomes_input_error(index_mp4, monkeypatch):
    def broken(frame):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(video_mod, "_to_rgb", broken)
    message = _assert_input_error(index_mp4, "cannot decode frame 0")
    assert "Invalid data" in message


def test_empty_folder(tmp_path):
    _assert_input_error(tmp_path, "no images")
    (tmp_path / "readme.txt").write_text("x")
    _assert_input_error(tmp_path, "no images")


def test_folder_images_of_different_sizes(tmp_path):
    write_image(tmp_path / "0.png", index_frames(t=1)[0])
    write_image(tmp_path / "1.png", index_frames(t=1, h=32)[0])
    message = _assert_input_error(tmp_path, "differ in size", num_frames=None)
    assert "0.png is 64x96" in message and "1.png is 32x96" in message


def test_folder_with_broken_image(tmp_path):
    write_image(tmp_path / "0.png", index_frames(t=1)[0])
    (tmp_path / "1.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="1.png"):
        load_video(tmp_path, num_frames=None)


@pytest.mark.parametrize(
    "kwargs, argument, python, cli",
    [
        ({"height": 64}, None, "give both height and width, or neither", "give both --height and --width, or neither"),
        ({"width": 64}, None, "give both height and width", "give both --height and --width"),
        ({"height": 0, "width": 64}, "height", "must be a positive whole number, got 0", None),
        ({"height": 64, "width": -2}, "width", "must be a positive whole number, got -2", None),
        ({"height": 64.0, "width": 64}, "height", "must be a positive whole number, got 64.0", None),
        ({"height": 63, "width": 64}, "height", "must be even (H.264 yuv420p), got 63", None),
        ({"height": 64, "width": 65}, "width", "must be even", None),
        ({"sampling": "random"}, "sampling", "must be one of first, uniform, got 'random'", None),
        ({"num_frames": -1}, "num_frames", "must be a whole number ≥ 0 (0 = all frames), got -1", None),
    ],
)
def test_bad_options(index_mp4, kwargs, argument, python, cli):
    # An option error names the option (a Python caller reads its name, the CLI shows its flag), not the file.
    with pytest.raises(InputError) as info:
        load_video(index_mp4, **kwargs)
    exc = info.value
    assert exc.argument == argument
    assert exc.message.startswith(python)
    assert str(exc) == (f"{argument}: " if argument else "") + exc.message
    flags = {"height": "--height", "width": "--width", "num_frames": "--num-frames"}
    assert exc.render(flags.get).startswith(cli or python)


def test_numpy_integers_are_accepted(index_mp4):
    v = load_video(index_mp4, num_frames=np.int64(2), height=np.int32(32), width=np.int64(48))
    assert v.frames.shape == (2, 32, 48, 3)


def test_probe_video(index_mp4):
    assert probe_video(index_mp4) == {"frames": T, "fps": 30.0, "height": H, "width": W}


def test_save_video_encodes_chunks_of_frames_as_one_video(tmp_path):
    """An iterator of chunks is the same video as the whole array (a long clip need not be in memory at once);
    chunks must share the first one's frame shape, and no chunk at all is an error."""
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (11, 16, 24, 3), dtype=np.uint8)
    whole = save_video(tmp_path / "whole.mp4", frames, fps=12, crf=0)
    chunked = save_video(tmp_path / "chunked.mp4", (frames[lo:lo + 4] for lo in range(0, 11, 4)), fps=12, crf=0)
    a = load_video(whole, num_frames=None, height=16, width=24).frames
    b = load_video(chunked, num_frames=None, height=16, width=24).frames
    assert a.shape == b.shape == (11, 16, 24, 3)
    np.testing.assert_array_equal(a, b)
    assert probe_video(chunked)["frames"] == 11 and round(probe_video(chunked)["fps"]) == 12
    with pytest.raises(ValueError, match="first one's frame shape"):
        save_video(tmp_path / "bad.mp4", iter([frames[:2], frames[:2, :8]]), fps=12)
    with pytest.raises(ValueError, match="no frames"):
        save_video(tmp_path / "none.mp4", iter([]), fps=12)
    assert not (tmp_path / "bad.mp4").exists() and not (tmp_path / "none.mp4").exists()
