"""A corpus of hostile inputs, generated on the fly (nothing downloaded), each with the outcome ``ex4d`` must give.

Every :class:`Case` writes its inputs into a folder and returns the command line to run. The expected outcome is
either a clear error (exit 2 for bad input, 1 for an unwritable/full output; exactly one stderr line that names
the argument) or a success (exit 0, optionally with a one-line note, e.g. for a very large video).

Videos are made with PyAV in the formats users actually bring: 10-bit (FFV1 yuv420p10le, ProRes yuv422p10le),
alpha (PNG rgba in .mov, VP9 yuva420p in .webm), grey, variable frame rate, odd sizes, > 4K.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

T, H, W = 5, 32, 32  # the base clip: small enough that a successful recon takes a fraction of a second


@dataclass(frozen=True)
class Case:
    """One hostile input.

    Attributes:
        name: short id (the pytest parameter id).
        group: what is hostile (video, depth, trajectory, model, checkpoint, output, path).
        make: writes the inputs into a folder; returns (argv, output path that must stay clean on failure).
        code: expected exit status (0, 1 or 2).
        flag: the argument the error line must name (None for a success).
        expect: the outcome in words (documentation only; what is checked is code, flag and check).
        check: substring that stderr must contain (e.g. "note:" for the large-video message).
        models: needs the tiny Wan2.1-I2V folder (``ex4d generate`` cases).
    """

    name: str
    group: str
    make: Callable[..., tuple[list[str], Path]]
    code: int
    flag: str | None
    expect: str
    check: str | None = None
    models: bool = False

    @property
    def bad(self) -> bool:
        return self.code != 0


# ---------------------------------------------------------------------------------------------- base inputs
def scene(num_frames: int = T, height: int = H, width: int = W) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, H, W, 3) uint8, depth (T, H, W) float32): a textured wall at 8 with a box at 3 moving right."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 100 * np.sin(xx / 3.0), 128 + 100 * np.cos(yy / 4.0), 60 + 0 * xx], -1)
    frames = np.repeat(base[None], num_frames, 0).astype(np.uint8)
    depth = np.full((num_frames, height, width), 8.0, np.float32)
    for t in range(num_frames):
        x0 = width // 4 + t
        depth[t, height // 4: 3 * height // 4, x0: x0 + width // 3] = 3.0
        frames[t][depth[t] == 3.0] = (220, 40, 40)
    return frames, depth


def write_video(path: Path, frames: np.ndarray, codec: str = "libx264", pix_fmt: str = "yuv420p",
                in_format: str = "rgb24", fmt: str | None = None, pts: list[int] | None = None,
                options: dict | None = None) -> Path:
    """Encode ``frames`` (T, H, W, C) uint8 with PyAV; ``pts`` in milliseconds gives a variable frame rate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=12, options=options or {})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if pts is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=in_format)
            frame.pts = pts[i] if pts is not None else i
            if pts is not None:
                frame.time_base = Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def good_video(folder: Path, name: str = "in.mp4", num_frames: int = T) -> Path:
    return write_video(folder / name, scene(num_frames)[0])


def good_depth(folder: Path, name: str = "depth.npz", **arrays) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **(arrays or {"depth": scene()[1]}))
    return path


def recon_argv(video, depth, out, *extra, num_frames: int = T) -> list[str]:
    return ["recon", "--input-video", str(video), "--depth", str(depth), "--output-dir", str(out), "--cam", "30",
            "--num-frames", str(num_frames), "--device", "cpu", "--quiet", *extra]


def _recon_with_option(flag: str, value: str):
    """make(): recon of the good clip with one option set (the later --cam wins over recon_argv's)."""
    def make(d: Path):
        return recon_argv(good_video(d), good_depth(d), d / "out", flag, value), d / "out"
    return make


def _recon_with_video(write: Callable[[Path], Path], depth_size=(H, W), num_frames: int = T):
    """make(): recon of the video ``write`` produces, with a matching good depth file."""
    def make(d: Path):
        video = write(d)
        depth = np.full((num_frames, *depth_size), 5.0, np.float32)
        return recon_argv(video, good_depth(d, depth=depth), d / "out", num_frames=num_frames), d / "out"
    return make


def _recon_with_depth(**arrays):
    def make(d: Path):
        return recon_argv(good_video(d), good_depth(d, **arrays), d / "out"), d / "out"
    return make


def _recon_with_depth_file(write: Callable[[Path], Path]):
    def make(d: Path):
        return recon_argv(good_video(d), write(d), d / "out"), d / "out"
    return make


def _trajectory_argv(cam: Path, d: Path, num_frames: int = T):
    out = d / "out" / "traj.json"
    return ["trajectory", "--cam", str(cam), "--num-frames", str(num_frames), "--output", str(out)], d / "out"


def _trajectory_json(content, suffix: str = ".json"):
    def make(d: Path):
        path = d / f"cam{suffix}"
        if isinstance(content, (str, bytes)):
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        elif suffix == ".npz":
            np.savez(path, **content)
        else:
            path.write_text(json.dumps(content))
        return _trajectory_argv(path, d)
    return make


def _eye(n: int = T) -> np.ndarray:
    return np.tile(np.eye(4), (n, 1, 1))


# ---------------------------------------------------------------------------------------------- video files
def _text_as_mp4(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "in.mp4").write_text("this is a text file, not a video\n")
    return d / "in.mp4"


def _empty_mp4(d: Path) -> Path:
    (d / "in.mp4").write_bytes(b"")
    return d / "in.mp4"


def _image_as_mp4(d: Path) -> Path:
    # A real PNG image under a video name: ffmpeg probes it as a one-frame clip.
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = W, H, "rgb24"
    packets = codec.encode(av.VideoFrame.from_ndarray(scene(1)[0][0], format="rgb24")) + codec.encode(None)
    (d / "in.mp4").write_bytes(b"".join(bytes(p) for p in packets))
    return d / "in.mp4"


def _truncated_mp4(d: Path) -> Path:
    path = good_video(d)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _zero_frames(suffix: str, fmt: str, codec: str):
    def write(d: Path) -> Path:
        # A container with a video stream and its header but not one frame (PyAV writes the header on demand).
        with av.open(str(d / f"in{suffix}"), "w", format=fmt) as container:
            stream = container.add_stream(codec, rate=12)
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            container.start_encoding()
        return d / f"in{suffix}"
    return write


def _one_frame(d: Path) -> Path:
    return write_video(d / "in.mp4", scene(1)[0])


def _ten_bit_ffv1(d: Path) -> Path:
    return write_video(d / "in.mkv", scene()[0], codec="ffv1", pix_fmt="yuv420p10le")


def _ten_bit_prores(d: Path) -> Path:
    return write_video(d / "in.mov", scene()[0], codec="prores_ks", pix_fmt="yuv422p10le")


def _alpha_png_mov(d: Path) -> Path:
    frames = scene()[0]
    rgba = np.concatenate([frames, np.full(frames.shape[:3] + (1,), 128, np.uint8)], -1)
    return write_video(d / "in.mov", rgba, codec="png", pix_fmt="rgba", in_format="rgba")


def _alpha_vp9(d: Path) -> Path:
    frames = scene()[0]
    rgba = np.concatenate([frames, np.full(frames.shape[:3] + (1,), 200, np.uint8)], -1)
    return write_video(d / "in.webm", rgba, codec="libvpx-vp9", pix_fmt="yuva420p", in_format="rgba",
                       options={"deadline": "realtime", "cpu-used": "8"})


def _alpha_gif(d: Path) -> Path:
    # A GIF whose palette entry 0 is transparent (a cut-out sticker): palettised frames with alpha.
    index = np.zeros((H, W), np.uint8)
    index[H // 4: 3 * H // 4, W // 4: 3 * W // 4] = 1
    palette = np.zeros((256, 4), np.uint8)
    palette[1] = (200, 30, 30, 255)
    with av.open(str(d / "in.gif"), "w") as container:
        stream = container.add_stream("gif", rate=12)
        stream.width, stream.height, stream.pix_fmt = W, H, "pal8"
        for i in range(T):
            frame = av.VideoFrame.from_ndarray((np.roll(index, i, 1), palette), format="pal8")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return d / "in.gif"


def _gray(d: Path) -> Path:
    gray = scene()[0][..., 0]
    return write_video(d / "in.mkv", gray, codec="ffv1", pix_fmt="gray", in_format="gray")


def _vfr(d: Path) -> Path:
    return write_video(d / "in.mp4", scene()[0], pts=[0, 40, 200, 230, 600])


def _odd_size(d: Path) -> Path:
    frames = np.zeros((T, 333, 517, 3), np.uint8)
    frames[..., 0] = np.arange(517)[None, None] % 256
    return write_video(d / "in.mkv", frames, codec="ffv1", pix_fmt="yuv444p")


def _very_large(d: Path) -> Path:
    # 4000×2400 (9.6 MP, above 4K): constant colour and x264's fastest preset keep it cheap to make.
    frames = np.full((2, 2400, 4000, 3), (90, 140, 200), np.uint8)
    return write_video(d / "in.mp4", frames, options={"preset": "ultrafast"})


def _image_folder_mixed_sizes(d: Path) -> Path:
    folder = d / "frames"
    folder.mkdir()
    for i, size in enumerate([(H, W), (H, W), (H + 2, W)]):
        codec = av.CodecContext.create("png", "w")
        codec.width, codec.height, codec.pix_fmt = size[1], size[0], "rgb24"
        img = np.zeros(size + (3,), np.uint8)
        data = b"".join(bytes(p) for p in codec.encode(av.VideoFrame.from_ndarray(img, format="rgb24")) + codec.encode(None))
        (folder / f"{i}.png").write_bytes(data)
    return folder


# ---------------------------------------------------------------------------------------------- depth files
def _depth_with(value, where=(0, 3, 3), dtype=np.float32):
    depth = scene()[1].astype(dtype)
    depth[where] = value
    return depth


def _depth_text(d: Path) -> Path:
    (d / "depth.npz").write_text("not an archive")
    return d / "depth.npz"


def _depth_npy(d: Path) -> Path:
    np.save(d / "depth.npy", scene()[1])
    return d / "depth.npy"


def _depth_truncated(d: Path) -> Path:
    path = good_depth(d)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _depth_pickled(d: Path) -> Path:
    # An object array inside the npz needs pickle to load: refused (allow_pickle=False), nothing runs.
    path = d / "depth.npz"
    np.savez(path, depth=np.array([Exploit(d / PWNED)], dtype=object))
    return path


#: The file an :class:`Exploit` creates when unpickled; the tests check that it never appears.
PWNED = "PWNED"


class Exploit:
    """Unpickling this runs ``touch <marker>``: proof that a loader executed code. A safe loader never does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch '{self.marker}'",))


# ---------------------------------------------------------------------------------------------- models
def _generate_argv(d: Path, wan_dir: Path, ckpt: Path) -> tuple[list[str], Path]:
    from ex4d.io.video import save_video

    color = scene(T, H, W)[0]
    save_video(d / "color.mp4", color)
    save_video(d / "mask.mp4", np.full_like(color, 255))
    out = d / "out"
    return (["generate", "--color-video", str(d / "color.mp4"), "--mask-video", str(d / "mask.mp4"),
             "--output-video", str(out / "output.mp4"), "--wan-dir", str(wan_dir), "--ex4d-ckpt", str(ckpt),
             "--height", str(H), "--width", str(W), "--num-frames", str(T), "--steps", "1", "--device", "cpu"], out)


def _model_case(prepare: Callable[[Path, Path], Path]):
    """make(d, wan_dir, ckpt): ``prepare(d, wan_dir)`` returns the (broken) model folder to pass as --wan-dir."""
    def make(d: Path, wan_dir: Path, ckpt: Path):
        return _generate_argv(d, prepare(d, wan_dir), ckpt)
    return make


def _ckpt_case(prepare: Callable[[Path], Path]):
    def make(d: Path, wan_dir: Path, ckpt: Path):
        return _generate_argv(d, wan_dir, prepare(d))
    return make


def _empty_dir(d: Path, wan: Path) -> Path:
    (d / "wan").mkdir()
    return d / "wan"


def _partial(d: Path, wan: Path) -> Path:
    shutil.copytree(wan, d / "wan")
    shutil.rmtree(d / "wan" / "transformer")
    return d / "wan"


def _subfolder(d: Path, wan: Path) -> Path:
    return wan / "transformer"


def _depth_model(d: Path, wan: Path) -> Path:
    # The folder of another model (a tiny Depth Anything V2), given where Wan2.1-I2V is expected.
    from tests.depth.tiny import save_depth_anything  # tests/depth/tiny.py
    return save_depth_anything(d / "depth-anything")


def _text_to_video(d: Path, wan: Path) -> Path:
    # A Wan2.1 *text*-to-video transformer (16 input channels, no image embedder) in an otherwise good folder.
    from diffusers import WanTransformer3DModel

    shutil.copytree(wan, d / "wan")
    cfg = json.loads((wan / "transformer" / "config.json").read_text())
    keep = {k: v for k, v in cfg.items() if not k.startswith("_")}
    keep.update(in_channels=16, image_dim=None, added_kv_proj_dim=None)
    shutil.rmtree(d / "wan" / "transformer")
    WanTransformer3DModel(**keep).save_pretrained(d / "wan" / "transformer")
    return d / "wan"


def _corrupt_tensors(d: Path, wan: Path) -> Path:
    shutil.copytree(wan, d / "wan")
    (weights,) = (d / "wan" / "transformer").glob("*.safetensors")
    data = bytearray(weights.read_bytes())
    weights.write_bytes(bytes(data[: len(data) // 2]))  # truncated mid-tensor, as an interrupted download
    return d / "wan"


def _garbled_header(d: Path, wan: Path) -> Path:
    shutil.copytree(wan, d / "wan")
    (weights,) = (d / "wan" / "vae").glob("*.safetensors")
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\xff" * 32  # the JSON header of a safetensors file
    weights.write_bytes(bytes(data))
    return d / "wan"


def _ckpt_from(transform: Callable[[dict], object]):
    def prepare(d: Path) -> Path:
        from tests.inpaint.tiny import tiny_ex4d_state_dict  # tests/inpaint/tiny.py

        torch.save(transform(tiny_ex4d_state_dict()), d / "ex4d.ckpt")
        return d / "ex4d.ckpt"
    return prepare


def _ckpt_bytes(content: bytes):
    def prepare(d: Path) -> Path:
        (d / "ex4d.ckpt").write_bytes(content)
        return d / "ex4d.ckpt"
    return prepare


def _ckpt_pickle_exploit(d: Path) -> Path:
    import pickle

    with open(d / "ex4d.ckpt", "wb") as f:
        pickle.dump({"blocks.0.self_attn.q.lora_A.default.weight": Exploit(d / PWNED)}, f)
    return d / "ex4d.ckpt"


# ---------------------------------------------------------------------------------------------- output / paths
def _output_under_a_file(d: Path):
    (d / "file.txt").write_text("x")
    return recon_argv(good_video(d), good_depth(d), d / "file.txt" / "out"), d / "file.txt" / "out"


def _output_is_a_file(d: Path):
    (d / "out").write_text("x")
    return recon_argv(good_video(d), good_depth(d), d / "out"), d / "out"


def _unicode_paths(d: Path):
    video = good_video(d / "vidéo d'entrée ñ", "clip 入力 ü.mp4")
    depth = good_depth(d / "profondeur é", "深度 map.npz")
    out = d / "sortie ø ÿ" / "résultat 1"
    return recon_argv(video, depth, out), out


def _unicode_trajectory(d: Path):
    path = d / "chemin é" / "caméra 軌跡.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"w2c": _eye().tolist()}))
    video, depth = good_video(d), good_depth(d)
    return recon_argv(video, depth, d / "out", "--cam", str(path)), d / "out"


def _depth_cmd(d: Path, video: Path, depth: Path, output: str = "d.npz"):
    out = d / "out"
    return (["depth", "--input-video", str(video), "--backend", "file", "--depth-file", str(depth),
             "--output", str(out / output), "--num-frames", str(T), "--device", "cpu", "--quiet"], out)


def _eval_cmd(d: Path, pred: Path, ref: Path, json_under_file: bool = False):
    argv = ["eval", "--pred", str(pred), "--ref", str(ref), "--metrics", "psnr,ssim", "--device", "cpu", "--quiet"]
    if json_under_file:
        (d / "file.txt").write_text("x")
        return argv + ["--json", str(d / "file.txt" / "out.json")], d / "file.txt" / "out.json"
    return argv, d / "out"


def _demo_under_a_file(d: Path):
    (d / "file.txt").write_text("x")
    out = d / "file.txt" / "demo"
    return (["demo", "--output-dir", str(out), "--num-frames", "2", "--height", "32", "--width", "32",
             "--device", "cpu", "--quiet"], out)


# ---------------------------------------------------------------------------------------------- the table
def _orbit_w2c() -> np.ndarray:
    from ex4d.geometry.trajectory import make_trajectory

    return make_trajectory("orbit:angle=40", T, 4.0).w2c


def _skewed() -> np.ndarray:
    w2c = _orbit_w2c()
    w2c[2, :3, :3] *= 1.1  # a scaled rotation
    return w2c


def _reflected() -> np.ndarray:
    w2c = _eye()
    w2c[:, 0, 0] = -1  # orthonormal but det = -1: a mirror, not a camera
    return w2c


def _nan_w2c() -> np.ndarray:
    w2c = _orbit_w2c()
    w2c[3, 0, 3] = np.nan
    return w2c


CASES: list[Case] = [
    # --- videos -------------------------------------------------------------------------------------------
    Case("missing-video", "video", lambda d: (recon_argv(d / "nope.mp4", good_depth(d), d / "out"), d / "out"),
         2, "--input-video", "error: input video not found"),
    Case("empty-file", "video", _recon_with_video(_empty_mp4), 2, "--input-video",
         "error: not a readable video or image"),
    Case("text-as-mp4", "video", _recon_with_video(_text_as_mp4), 2, "--input-video",
         "error: not a readable video or image"),
    Case("png-as-mp4", "video", _recon_with_video(_image_as_mp4), 0, None,
         "success: a 1-frame render (a clip shorter than --num-frames is taken whole)"),
    Case("truncated-mp4", "video", _recon_with_video(_truncated_mp4), 2, "--input-video",
         "error: fewer frames than asked, or undecodable"),
    Case("zero-frames-mkv", "video", _recon_with_video(_zero_frames(".mkv", "matroska", "ffv1")), 2,
         "--input-video", "error: cannot read (End of file)"),
    Case("zero-frames-mp4", "video", _recon_with_video(_zero_frames(".mp4", "mp4", "libx264")), 2,
         "--input-video", "error: has no video stream / no frames"),
    Case("one-frame-but-5-asked", "video", _recon_with_video(_one_frame), 0, None,
         "success: a 1-frame render (a clip shorter than --num-frames is taken whole)"),
    Case("image-folder-mixed-sizes", "video", _recon_with_video(_image_folder_mixed_sizes, num_frames=3), 2,
         "--input-video", "error: images differ in size"),
    Case("one-frame", "video", _recon_with_video(_one_frame, num_frames=1), 0, None,
         "success: a 1-frame render"),
    Case("10-bit-ffv1", "video", _recon_with_video(_ten_bit_ffv1), 0, None, "success (converted to 8-bit RGB)"),
    Case("10-bit-prores", "video", _recon_with_video(_ten_bit_prores), 0, None, "success (converted to 8-bit RGB)"),
    Case("alpha-png-mov", "video", _recon_with_video(_alpha_png_mov), 0, None, "success (alpha dropped)"),
    Case("alpha-vp9-webm", "video", _recon_with_video(_alpha_vp9), 0, None, "success (alpha dropped)"),
    Case("alpha-gif-transparent", "video", _recon_with_video(_alpha_gif), 0, None,
         "success (transparent pixels become a colour)"),
    Case("grayscale", "video", _recon_with_video(_gray), 0, None, "success (grey repeated to RGB)"),
    Case("variable-frame-rate", "video", _recon_with_video(_vfr), 0, None, "success (frames in decode order)"),
    Case("odd-size-333x517", "video", _recon_with_video(_odd_size, depth_size=(36, 56)), 0, None,
         "success: resized to the depth maps' 36×56"),
    Case("very-large-4000x2400", "video", _recon_with_video(_very_large, depth_size=(30, 50), num_frames=2), 0,
         None, "success + one line `note: ... larger than 4K; each is downscaled to 30×50 as it is decoded`",
         check="note: "),
    # --- depth files --------------------------------------------------------------------------------------
    Case("depth-missing", "depth", lambda d: (recon_argv(good_video(d), d / "nope.npz", d / "out"), d / "out"),
         2, "--depth", "error: depth file not found"),
    Case("depth-text-file", "depth", _recon_with_depth_file(_depth_text), 2, "--depth",
         "error: cannot read depth file (not an .npy/.npz file ...)"),
    Case("depth-npy-not-npz", "depth", _recon_with_depth_file(_depth_npy), 0, None,
         "success: a .npy of (T, H, W) z-depth is a depth file as for ex4d depth --backend file"),
    Case("depth-truncated", "depth", _recon_with_depth_file(_depth_truncated), 2, "--depth",
         "error: cannot read depth file"),
    Case("depth-pickled-object", "depth", _recon_with_depth_file(_depth_pickled), 2, "--depth",
         "error: cannot read depth file (Object arrays cannot be loaded when allow_pickle=False)"),
    Case("depth-no-depth-key", "depth", _recon_with_depth(disparity=scene()[1]), 2, "--depth",
         "error: holds a 'disparity' array, not z-depth; convert it with ex4d depth --backend file ..."),
    Case("depth-nan", "depth", _recon_with_depth(depth=_depth_with(np.nan)), 2, "--depth",
         "error: expected finite z-depth, found 1 NaN or inf values"),
    Case("depth-inf", "depth", _recon_with_depth(depth=_depth_with(np.inf)), 2, "--depth",
         "error: expected finite z-depth, found 1 NaN or inf values"),
    Case("depth-float64-overflow", "depth", _recon_with_depth(depth=_depth_with(1e300, dtype=np.float64)), 2,
         "--depth", "error: expected finite z-depth (1e300 does not fit float32)"),
    Case("depth-zeros", "depth", _recon_with_depth(depth=np.zeros((T, H, W), np.float32)), 2, "--depth",
         "error: expected positive z-depth, found 5120 values ≤ 0"),
    Case("depth-negative", "depth", _recon_with_depth(depth=_depth_with(-2.0)), 2, "--depth",
         "error: expected positive z-depth, found 1 values ≤ 0"),
    Case("depth-2d", "depth", _recon_with_depth(depth=scene()[1][0]), 2, "--depth",
         "error: expected a (T, H, W) depth array, found shape (32, 32)"),
    Case("depth-5d", "depth", _recon_with_depth(depth=scene()[1][:, None, None]), 2, "--depth",
         "error: expected a (T, H, W) depth array"),
    Case("depth-T2HW", "depth", _recon_with_depth(depth=np.stack([scene()[1]] * 2, 1)), 2, "--depth",
         "error: expected a (T, H, W) numeric depth array, found shape (5, 2, 32, 32)"),
    Case("depth-strings", "depth", _recon_with_depth(depth=np.full((T, H, W), "a")), 2, "--depth",
         "error: expected a (T, H, W) numeric depth array, found ... <U1"),
    Case("depth-bool", "depth", _recon_with_depth(depth=np.ones((T, H, W), bool)), 2, "--depth",
         "error: expected a (T, H, W) numeric depth array, found ... bool"),
    Case("depth-complex", "depth", _recon_with_depth(depth=scene()[1].astype(np.complex64)), 2, "--depth",
         "error: expected a (T, H, W) numeric depth array, found ... complex64"),
    Case("depth-too-few-frames", "depth", _recon_with_depth(depth=scene()[1][:3]), 2, "--depth",
         "error: depth has 3 maps but 5 video frames are used; pass --num-frames 3 ..."),
    Case("depth-too-many-frames", "depth", _recon_with_depth(depth=np.concatenate([scene()[1]] * 2)), 0, None,
         "success: the first 5 of 10 maps (frames and depth are both taken from the start)"),
    Case("depth-1x1", "depth", _recon_with_depth(depth=np.ones((T, 1, 1), np.float32)), 2, "--depth",
         "error: expected depth maps of at least 2×2, found 1×1"),
    Case("depth-2x2", "depth", _recon_with_depth(depth=np.ones((T, 2, 2), np.float32)), 0, None,
         "success: a 2×2 render"),
    Case("depth-other-aspect", "depth", _recon_with_depth(depth=np.full((T, 16, 32), 5.0, np.float32)), 2,
         "--depth", "error: depth maps are 16×32 (H×W) but the video is 32×32: aspect ratios differ"),
    Case("depth-odd-size", "depth", _recon_with_video(_odd_size, depth_size=(37, 57)), 2, "--depth",
         "error: expected even height and width for the H.264 outputs, found depth maps of 37×57"),
    Case("depth-bad-intrinsics-shape", "depth", _recon_with_depth(depth=scene()[1], intrinsics=np.eye(2)), 2,
         "--depth", "error: intrinsics must be (3, 3) or (5, 3, 3), got (2, 2)"),
    Case("depth-negative-focal", "depth", _recon_with_depth(depth=scene()[1], intrinsics=-np.eye(3)), 2,
         "--depth", "error: intrinsics must be finite with positive focal lengths"),
    # --- trajectory files ---------------------------------------------------------------------------------
    Case("traj-missing", "trajectory", lambda d: _trajectory_argv(d / "nope.json", d), 2, "--cam",
         "error: trajectory file not found"),
    Case("traj-empty-file", "trajectory", _trajectory_json(""), 2, "--cam", "error: cannot read trajectory file"),
    Case("traj-bad-json", "trajectory", _trajectory_json("{oops"), 2, "--cam", "error: cannot read trajectory file"),
    Case("traj-json-list", "trajectory", _trajectory_json([1, 2, 3]), 2, "--cam",
         "error: a trajectory file must hold a JSON object"),
    Case("traj-non-orthonormal", "trajectory", _trajectory_json({"w2c": _skewed().tolist()}), 2, "--cam",
         "error: not rigid transforms: expected orthonormal rotations with det +1, found matrix 2 has |R Rᵀ − I| = 0.21"),
    Case("traj-reflection", "trajectory", _trajectory_json({"w2c": _reflected().tolist()}), 2, "--cam",
         "error: not rigid transforms ... det R = -1"),
    Case("traj-nan", "trajectory", _trajectory_json({"w2c": _nan_w2c()}, ".npz"), 2, "--cam",
         "error: 'w2c' contains NaN or inf"),
    Case("traj-json-NaN-literal", "trajectory", _trajectory_json('{"w2c": [[[NaN, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]]}'),
         2, "--cam", "error: 'w2c' contains NaN or inf"),
    Case("traj-too-few", "trajectory", _trajectory_json({"w2c": _eye(3).tolist()}), 2, "--cam",
         "error: has 3 cameras but the video has 5 frames"),
    Case("traj-too-many", "trajectory", _trajectory_json({"w2c": _eye(9).tolist()}), 2, "--cam",
         "error: has 9 cameras but the video has 5 frames"),
    Case("traj-unknown-key", "trajectory", _trajectory_json({"w2c": _eye().tolist(), "intrinsic": np.eye(3).tolist()}),
         2, "--cam", "error: expected keys among w2c, extrinsics, intrinsics, K, keyframes, found unknown 'intrinsic'"),
    Case("traj-no-cameras", "trajectory", _trajectory_json({"cameras": []}), 2, "--cam",
         "error: no 'w2c', 'extrinsics' or 'keyframes' entry"),
    Case("traj-strings", "trajectory", _trajectory_json({"w2c": [["a"]]}), 2, "--cam",
         "error: 'w2c' is not a numeric array"),
    Case("traj-huge-int", "trajectory", _trajectory_json('{"w2c": [[[1' + "0" * 400 + ', 0, 0, 0]]]}'), 2, "--cam",
         "error: 'w2c' is not a numeric array"),
    Case("traj-pickled-npz", "trajectory", lambda d: _trajectory_json(
        {"w2c": np.array([Exploit(d / PWNED)], dtype=object)}, ".npz")(d), 2,
         "--cam", "error: cannot read ... allow_pickle=False (nothing executed)"),
    Case("traj-keyframe-string-time", "trajectory",
         _trajectory_json({"keyframes": [{"t": "zero", "eye": [0, 0, 0], "look_at": [0, 0, 1]}]}), 2, "--cam",
         "error: keyframe 0: expected 't' as a finite number, found 'zero'"),
    Case("traj-keyframe-unknown-key", "trajectory",
         _trajectory_json({"keyframes": [{"t": 0, "eye": [0, 0, 0], "lookat": [0, 0, 1]}]}), 2, "--cam",
         "error: keyframe 0: expected keys among ..., found unknown 'lookat'"),
    Case("traj-keyframe-up-along-view", "trajectory",
         _trajectory_json({"keyframes": [{"t": 0, "eye": [0, 0, 0], "look_at": [0, 1, 0]}]}), 2, "--cam",
         "error: keyframe 0: 'eye' and 'look_at' must be distinct 3-vectors, with 'up' not along the viewing direction"),
    Case("traj-bad-intrinsics", "trajectory", _trajectory_json({"w2c": _eye().tolist(), "K": [[0, 0], [0, 0]]}), 2,
         "--cam", "error: 'K' must be (3, 3) or (5, 3, 3) with positive focal lengths"),
    Case("traj-unknown-preset", "trajectory", lambda d: (["trajectory", "--cam", "spin", "--num-frames", "5",
                                                         "--radius", "3", "--output", str(d / "out" / "t.json")],
                                                        d / "out"), 2, "--cam", "error: unknown camera preset 'spin'"),
    # --- model folders (ex4d generate, tiny random models in the real layout) -----------------------------
    Case("model-empty-folder", "model", _model_case(_empty_dir), 2, "--wan-dir",
         "error: not a Wan2.1-I2V folder: expected the diffusers layout ... or the original layout", models=True),
    Case("model-partial", "model", _model_case(_partial), 2, "--wan-dir",
         "error: not a complete Wan2.1-I2V diffusers folder, missing transformer", models=True),
    Case("model-subfolder", "model", _model_case(_subfolder), 2, "--wan-dir",
         "error: a diffusers WanTransformer3DModel subfolder; pass the pipeline folder above it", models=True),
    Case("model-wrong-model", "model", _model_case(_depth_model), 2, "--wan-dir",
         "error: not a Wan2.1-I2V folder (a Depth Anything folder)", models=True),
    Case("model-text-to-video", "model", _model_case(_text_to_video), 2, "--wan-dir",
         "error: the transformer takes 16 input channels; an I2V model needs 36 (is this a text-to-video model?)",
         models=True),
    Case("model-truncated-tensors", "model", _model_case(_corrupt_tensors), 2, "--wan-dir",
         "error: cannot load the Wan components (...)", models=True),
    Case("model-garbled-header", "model", _model_case(_garbled_header), 2, "--wan-dir",
         "error: cannot load the Wan components (...)", models=True),
    # --- ex4d.ckpt ----------------------------------------------------------------------------------------
    Case("ckpt-missing", "checkpoint", _ckpt_case(lambda d: d / "nope.ckpt"), 2, "--ex4d-ckpt",
         "error: --ex4d-ckpt not found", models=True),
    Case("ckpt-empty-file", "checkpoint", _ckpt_case(_ckpt_bytes(b"")), 2, "--ex4d-ckpt",
         "error: not a readable PyTorch checkpoint", models=True),
    Case("ckpt-text", "checkpoint", _ckpt_case(_ckpt_bytes(b"hello")), 2, "--ex4d-ckpt",
         "error: not a readable PyTorch checkpoint", models=True),
    Case("ckpt-pickle-exploit", "checkpoint", _ckpt_case(_ckpt_pickle_exploit), 2, "--ex4d-ckpt",
         "error: not a readable PyTorch checkpoint (weights_only refuses the pickled call; nothing executed)",
         models=True),
    Case("ckpt-missing-encoder-keys", "checkpoint",
         _ckpt_case(_ckpt_from(lambda sd: {k: v for k, v in sd.items() if "lora" in k})), 2, "--ex4d-ckpt",
         "error: has LoRA weights but no condition-encoder keys", models=True),
    Case("ckpt-missing-lora-module", "checkpoint",
         _ckpt_case(_ckpt_from(lambda sd: {k: v for k, v in sd.items() if "blocks.1.ffn.2." not in k})), 2,
         "--ex4d-ckpt", "error: LoRA weights missing for 1 of 20 modules", models=True),
    Case("ckpt-extra-keys", "checkpoint",
         _ckpt_case(_ckpt_from(lambda sd: {**sd, "model.extra.weight": torch.zeros(2)})), 2, "--ex4d-ckpt",
         "error: 1 keys are neither reference LoRA nor condition-encoder keys", models=True),
    Case("ckpt-nested", "checkpoint", _ckpt_case(_ckpt_from(lambda sd: {"state_dict": sd})), 2, "--ex4d-ckpt",
         "error: expected a flat {name: tensor} dict as ex4d.ckpt (it nests dicts under ['state_dict'])",
         models=True),
    Case("ckpt-wrong-shapes", "checkpoint",
         _ckpt_case(_ckpt_from(lambda sd: {k: (v[:, :3] if k.endswith("lora_B.default.weight") else v)
                                           for k, v in sd.items()})), 2, "--ex4d-ckpt",
         "error: LoRA tensors of ... have shapes ...; the transformer needs ...", models=True),
    # --- the other commands: ex4d depth, eval, demo --------------------------------------------------------
    Case("depth-cmd-text-video", "video", lambda d: _depth_cmd(d, _text_as_mp4(d), good_depth(d)), 2,
         "--input-video", "error: not a readable video or image"),
    Case("depth-cmd-nan-depth-file", "depth", lambda d: _depth_cmd(d, good_video(d), good_depth(
        d, depth=_depth_with(np.nan))), 2, "--depth-file", "error: depth contains NaN or inf values"),
    Case("depth-cmd-pickled-depth-file", "depth", lambda d: _depth_cmd(d, good_video(d), _depth_pickled(d)), 2,
         "--depth-file", "error: cannot read depth file (... allow_pickle=False)"),
    Case("depth-cmd-output-not-npz", "output", lambda d: _depth_cmd(d, good_video(d), good_depth(d), "d.txt"), 2,
         "--output", "error: --output must be a .npz file"),
    Case("eval-truncated-pred", "video", lambda d: _eval_cmd(d, _truncated_mp4(d), good_video(d, "ref.mp4")), 2,
         "--pred", "error: cannot decode / too few frames"),
    Case("eval-text-ref", "video", lambda d: _eval_cmd(d, good_video(d), _text_as_mp4(d / "r")), 2, "--ref",
         "error: not a readable video or image"),
    Case("eval-json-under-a-file", "output", lambda d: _eval_cmd(d, good_video(d), good_video(d, "ref.mp4"),
                                                                 json_under_file=True), 1, "--json",
         "error: --json: Not a directory"),
    Case("demo-output-under-a-file", "output", _demo_under_a_file, 1, "--output-dir",
         "error: --output-dir: Not a directory"),
    # --- documented options at their extremes (issue 19): a result or one line naming the flag --------------
    *[Case(f"option-{flag[2:]}-{value}", "option", _recon_with_option(flag, value), 2, flag, expect)
      for flag, value, expect in (
          ("--min-angle", "90", "error: --min-angle: expected an angle in degrees in (0, 60), got 90.0"),
          ("--min-angle", "nan", "error: --min-angle: expected an angle in degrees in (0, 60), got nan"),
          ("--border-depth", "inf", "error: --border-depth: expected a finite depth > 0, got inf"),
          ("--border-depth", "0", "error: --border-depth: expected a finite depth > 0, got 0.0"),
          ("--pixel-offset", "nan", "error: --pixel-offset: expected a position in the pixel in [0, 1], got nan"),
          ("--pixel-offset", "1e9", "error: --pixel-offset: expected a position in the pixel in [0, 1], ..."))],
    *[Case(f"option-{flag[2:]}-{value}", "option", _recon_with_option(flag, value), 0, None, "success")
      for flag, value in (("--render-backend", "torch"), ("--supersample", "8"), ("--batch-size", "100000"),
                          ("--border-depth", "1e-9"), ("--border-depth", "1e30"), ("--pixel-offset", "1"),
                          ("--cam", "orbit:angle=1e9"), ("--cam", "-360"), ("--cam", "spiral:turns=1e6"),
                          ("--cam", "dolly:distance=-1e9"), ("--mesh", "plain"))],
    # --- outputs and paths --------------------------------------------------------------------------------
    Case("output-under-a-file", "output", _output_under_a_file, 1, "--output-dir",
         "error: --output-dir: Not a directory"),
    Case("output-is-a-file", "output", _output_is_a_file, 1, "--output-dir", "error: --output-dir: File exists"),
    Case("unicode-and-space-paths", "path", _unicode_paths, 0, None, "success"),
    Case("unicode-trajectory-path", "path", _unicode_trajectory, 0, None, "success (outputs named after the stem)"),
]
