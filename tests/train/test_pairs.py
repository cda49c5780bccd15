"""Training pairs: rendering masks against exact scene visibility, tracking masks against known motion, and the
pair builder's layout, determinism, resume and failure handling."""

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation, gaussian_filter
from scipy.ndimage import shift as nd_shift

from ex4d.cli import main
from ex4d.data import Plane, Scene, Sphere, Texture, default_intrinsics, make_scene, observable, render_scene_video
from ex4d.data.synthetic import FLOOR_Y, WALL_Z
from ex4d.errors import InputError
from ex4d.geometry.conventions import project_points, transform_points
from ex4d.geometry.trajectory import make_trajectory, reference_radius
from ex4d.io.video import load_video, save_video
from ex4d.train import pairs
from ex4d.train.masks import random_hole, rendering_mask, tracking_mask
from ex4d.train.pairs import PairSettings, build_pairs, parse_mask_kinds, parse_trajectories

pytest.importorskip("cv2")

TEX = Texture("checker", (0.9, 0.9, 0.9), (0.1, 0.1, 0.1), (0.3, 0.3, 0.3))


def _sphere_scene():
    wall = Plane(normal_vec=(0.0, 0.0, -1.0), offset=-WALL_Z, texture=TEX, name="wall")
    floor = Plane(normal_vec=(0.0, -1.0, 0.0), offset=-FLOOR_Y, texture=TEX, name="floor")
    return Scene(objects=[wall, floor, Sphere(center=(0.0, 0.2, 4.0), radius=0.8, texture=TEX)])


# ------------------------------------------------------------------------------------------------------------
# Rendering masks
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cam", ["30", "-40"])
def test_rendering_mask_hides_what_the_novel_camera_cannot_see(cam):
    """Ground truth: a source pixel must be hidden iff its exact surface point is not visible from the novel
    camera (ray cast in the scene, independent of meshes)."""
    scene, H, W, T = _sphere_scene(), 64, 64, 2
    K = default_intrinsics(H, W)
    src = render_scene_video(scene, torch.eye(4).expand(T, 4, 4), K, H, W)
    depth = src["depth"].numpy()
    trajectory = make_trajectory(cam, T, reference_radius(depth[0]))
    mask = rendering_mask(depth, K.numpy(), trajectory.w2c)
    assert mask.shape == (T, H, W) and mask.dtype == bool
    assert mask[0].all()

    w2c = torch.as_tensor(trajectory.w2c[1])
    seen_by_novel = observable(scene, 1, src["points"][1], w2c, K, H, W).numpy()
    uv = project_points(transform_points(w2c.float(), src["points"][1].reshape(-1, 3)), K).reshape(H, W, 2).numpy()
    in_novel_frame = (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    inner = np.zeros((H, W), bool)
    inner[3:-3, 3:-3] = True  # the DW-Mesh always hides the 1-px border and its ring
    expected, hidden = ~seen_by_novel & inner, ~mask[1] & inner
    behind_sphere = expected & in_novel_frame  # disoccluded by the sphere (not merely out of the novel frame)
    assert behind_sphere.sum() > 100
    assert (hidden & behind_sphere).sum() >= 0.99 * behind_sphere.sum()
    assert (hidden & expected).sum() >= 0.99 * expected.sum()
    iou = (hidden & expected).sum() / (hidden | expected).sum()
    assert iou > 0.78
    # What is hidden beyond the truth is the DW-Mesh's 1-2 px bleed along depth edges.
    assert (hidden & binary_dilation(expected, iterations=2)).sum() >= 0.9 * hidden.sum()


def test_rendering_mask_of_the_source_camera_keeps_everything():
    depth = np.full((3, 16, 24), 5.0, np.float32)
    depth[:, 4:10, 6:14] = 2.0
    K = default_intrinsics(16, 24).numpy()
    assert rendering_mask(depth, K, np.tile(np.eye(4), (3, 1, 1))).all()
    # The same cameras with other intrinsics do hide something (the check is not on the pose alone).
    assert not rendering_mask(depth, K, np.tile(np.eye(4), (3, 1, 1)), target_K=K * [[2], [2], [1]]).all()


# ------------------------------------------------------------------------------------------------------------
# Tracking masks
# ------------------------------------------------------------------------------------------------------------

def test_tracking_mask_follows_a_known_translation():
    rng = np.random.default_rng(0)
    H, W, T, (du, dv) = 64, 64, 8, (1.5, -0.75)
    canvas = gaussian_filter(rng.uniform(0, 255, (H + 40, W + 40, 3)), (2, 2, 0))
    canvas = (canvas - canvas.min()) / np.ptp(canvas) * 255
    frames = np.stack([np.clip(nd_shift(canvas, (dv * t, du * t, 0), order=1)[20:20 + H, 20:20 + W], 0, 255)
                       for t in range(T)]).astype(np.uint8)
    v, u = np.mgrid[:H, :W] + 0.5
    disc = lambda t: (u - 30 - du * t) ** 2 + (v - 34 - dv * t) ** 2 <= 10 ** 2  # noqa: E731

    keep = tracking_mask(frames, disc(0))
    assert keep.shape == (T, H, W) and keep.dtype == bool
    assert keep[0].all()
    for t in range(1, T):
        hidden, expected = ~keep[t], disc(t)
        assert (hidden & expected).sum() / (hidden | expected).sum() > 0.85, t
    # A hole that did not move would be far off by the last frame: the check above is discriminating.
    assert (disc(0) & disc(T - 1)).sum() / (disc(0) | disc(T - 1)).sum() < 0.5


def test_random_hole_is_seeded_and_not_empty():
    a = random_hole(32, 48, np.random.default_rng(3))
    assert a.shape == (32, 48) and a.any() and not a.all()
    assert (a == random_hole(32, 48, np.random.default_rng(3))).all()
    assert not (a == random_hole(32, 48, np.random.default_rng(4))).all()


# ------------------------------------------------------------------------------------------------------------
# Pair builder
# ------------------------------------------------------------------------------------------------------------

T, H, W = 16, 32, 32


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A folder of two GT-scene clips (16×32×32) with exact depth and intrinsics as <stem>.npz beside them."""
    folder = tmp_path_factory.mktemp("videos")
    K = default_intrinsics(H, W)
    for i, name in enumerate(["alpha", "beta"]):
        out = render_scene_video(make_scene(seed=i, num_objects=3), torch.eye(4).expand(T, 4, 4), K, H, W)
        save_video(folder / f"{name}.mp4", out["frames"].numpy(), fps=10)
        np.savez(folder / f"{name}.npz", depth=out["depth"].numpy(), intrinsics=K.numpy())
    (folder / "notes.txt").write_text("not a clip")
    return folder


SMALL = dict(num_frames=T, height=H, width=W, trajectories=("30", "90"))


def _read(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def test_pairs_have_the_documented_layout(clips, tmp_path):
    settings = PairSettings(**SMALL, mask_kinds=(("both", 1.0),), save_frames=True)
    result = build_pairs(clips, tmp_path, settings, progress=False)
    assert result.names("done") == ["alpha", "beta"] and not result.failed
    for name in ("alpha", "beta"):
        folder = tmp_path / name
        assert sorted(p.name for p in folder.iterdir()) == sorted(pairs.PAIR_FILES)
        arrays = _read(folder / "pair.npz")
        mask, frames = arrays["mask"], arrays["frames"]
        assert mask.shape == (T, H, W) and mask.dtype == bool
        assert mask[0].all() and not mask[1:].all()
        assert frames.shape == (T, H, W, 3) and frames.dtype == np.uint8
        assert (frames == load_video(clips / f"{name}.mp4", num_frames=T, height=H, width=W).frames).all()
        assert arrays["w2c"].shape == (T, 4, 4) and arrays["K"].shape == (T, 3, 3)
        assert np.allclose(arrays["K"][0], default_intrinsics(H, W).numpy())  # the npz's intrinsics were used
        target, cond, mvid = (load_video(folder / f, num_frames=None, height=H, width=W).frames for f in
                              ("target.mp4", "cond.mp4", "mask.mp4"))
        assert target.shape == cond.shape == mvid.shape == (T, H, W, 3)
        assert np.abs(target.astype(int) - frames).mean() < 3  # H.264, near lossless
        grey = mvid[..., 0] > 127  # 255 = kept; H.264 rings a little at hole edges
        assert (grey == mask).mean() > 0.97
        assert cond[~mask].mean() < 8 and np.abs(cond[mask].astype(int) - frames[mask]).mean() < 6
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["mask_kind"] == "both" and meta["trajectory"]["spec"].lstrip("-") in ("30", "90")
        assert (meta["num_frames"], meta["height"], meta["width"], meta["fps"]) == (T, H, W, 10)
        assert meta["depth_source"] == f"file:{name}.npz" and meta["seed"] == 0
        assert meta["kept_fraction"] == pytest.approx(mask.mean(), abs=1e-6)
    index = [json.loads(line) for line in result.index.read_text().splitlines()]
    assert [e["clip"] for e in index] == ["alpha", "beta"]
    assert index[0]["mask"] == "alpha/mask.mp4" and index[0]["num_frames"] == T


def test_render_only_pair_matches_rendering_mask(clips, tmp_path):
    """The builder's mask is the library's rendering mask for the recorded trajectory (no tracking mixed in)."""
    result = build_pairs(clips, tmp_path, PairSettings(**SMALL, mask_kinds=(("render", 1.0),)), progress=False)
    assert not result.failed
    arrays = _read(tmp_path / "alpha" / "pair.npz")
    with np.load(clips / "alpha.npz") as d:
        expected = rendering_mask(d["depth"], d["intrinsics"], arrays["w2c"])
    assert (arrays["mask"] == expected).all()
    assert "frames" not in arrays  # only with save_frames


def test_resume_skips_finished_clips_and_redoes_changed_ones(clips, tmp_path):
    settings = PairSettings(**SMALL, mask_kinds=(("track", 1.0),))
    build_pairs(clips, tmp_path, settings, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = build_pairs(clips, tmp_path, settings, progress=False)
    assert again.names("skipped") == ["alpha", "beta"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != "index.jsonl"} == \
        {p: s for p, s in stamps.items() if p.name != "index.jsonl"}
    changed = build_pairs(clips, tmp_path, PairSettings(**SMALL, mask_kinds=(("track", 1.0),), seed=1),
                          progress=False)
    assert changed.names("done") == ["alpha", "beta"]
    assert json.loads((tmp_path / "alpha" / "meta.json").read_text())["seed"] == 1
    assert not list(tmp_path.glob(".*"))  # no temporary or replaced folders left


def test_interrupted_clip_leaves_nothing(clips, tmp_path, monkeypatch):
    real = pairs._write_clip

    def dies_half_way(folder, arrays, meta, save_frames):
        save_video(folder / "target.mp4", arrays["frames"], fps=10)
        raise KeyboardInterrupt

    monkeypatch.setattr(pairs, "_write_clip", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        build_pairs(clips, tmp_path, PairSettings(**SMALL, mask_kinds=(("track", 1.0),)), progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(pairs, "_write_clip", real)


def test_bad_clip_is_reported_and_the_others_finish(clips, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for f in clips.iterdir():
        (videos / f.name).write_bytes(f.read_bytes())
    (videos / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    np.savez(videos / "short.npz", depth=np.ones((4, H, W), np.float32))  # depth for 4 frames, clip has 16
    (videos / "short.mp4").write_bytes((clips / "alpha.mp4").read_bytes())
    # A clip shorter than a pair: recon and run take it whole, training refuses to pad it.
    save_video(videos / "brief.mp4", load_video(clips / "alpha.mp4", num_frames=5, height=H, width=W).frames)
    out = tmp_path / "data"
    result = build_pairs(videos, out, PairSettings(**SMALL, mask_kinds=(("render", 1.0),)), progress=False)
    assert result.names("done") == ["alpha", "beta"]
    assert set(result.failed) == {"brief", "broken", "short"}
    assert "broken.mp4" in result.failed["broken"] and "depth has 4 maps" in result.failed["short"]
    assert "has 5 frames, fewer than the num_frames=16 of a training pair" in result.failed["brief"]
    assert sorted(p.name for p in out.iterdir()) == ["alpha", "beta", "index.jsonl"]
    assert [json.loads(x)["clip"] for x in (out / "index.jsonl").read_text().splitlines()] == ["alpha", "beta"]


def test_two_workers_give_the_same_pairs_as_one(clips, tmp_path):
    settings = PairSettings(**SMALL, mask_kinds=(("render", 0.5), ("track", 0.5)))
    one = build_pairs(clips, tmp_path / "one", settings, workers=1, progress=False)
    two = build_pairs(clips, tmp_path / "two", settings, workers=2, progress=False)
    assert one.names("done") == two.names("done") == ["alpha", "beta"]
    for name in ("alpha", "beta"):
        a, b = _read(tmp_path / "one" / name / "pair.npz"), _read(tmp_path / "two" / name / "pair.npz")
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
        meta_one, meta_two = ((tmp_path / d / name / "meta.json").read_text() for d in ("one", "two"))
        assert meta_one == meta_two
    assert (tmp_path / "one" / "index.jsonl").read_text() == (tmp_path / "two" / "index.jsonl").read_text()
    kinds = [json.loads(line)["mask_kind"] for line in (tmp_path / "two" / "index.jsonl").read_text().splitlines()]
    assert sorted(kinds) == ["render", "track"]  # seed 0 draws one of each: both paths ran in the workers


# ------------------------------------------------------------------------------------------------------------
# Options and CLI
# ------------------------------------------------------------------------------------------------------------

def test_option_parsing():
    assert parse_trajectories("30, 60,orbit:angle=120,elevation=10,180") == \
        ("30", "60", "orbit:angle=120,elevation=10", "180")
    assert parse_mask_kinds("render,track") == (("render", 0.7), ("track", 0.3))
    assert parse_mask_kinds("render:1,both:3") == (("render", 0.25), ("both", 0.75))
    for bad in ("render,paint", "render:-1", "render:0", "render,render", "render:x"):
        with pytest.raises(InputError):
            parse_mask_kinds(bad)
    with pytest.raises(InputError):
        parse_trajectories("30,nowhere")


def test_cli_prepare(clips, tmp_path, capsys):
    args = ["prepare", "--videos", str(clips), "--output-dir", str(tmp_path), "--num-frames", str(T),
            "--height", str(H), "--width", str(W), "--mask-kinds", "track", "--quiet", "--depth-backend", "file"]
    assert main(args) == 0
    assert "2 clips prepared, 0 already there, 0 failed" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 clips prepared, 2 already there" in capsys.readouterr().out
    assert main([*args, "--mask-kinds", "paint"]) == 2
    assert "--mask-kinds: unknown mask kind 'paint'" in capsys.readouterr().err
    assert main([*args, "--videos", str(tmp_path / "nowhere")]) == 2
    assert "--videos:" in capsys.readouterr().err


def test_cli_prepare_reports_a_clip_without_depth(clips, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "nodepth.mp4").write_bytes((clips / "alpha.mp4").read_bytes())
    args = ["prepare", "--videos", str(videos), "--output-dir", str(tmp_path / "data"), "--num-frames", str(T),
            "--height", str(H), "--width", str(W), "--quiet", "--depth-backend", "file"]
    assert main([*args, "--mask-kinds", "render"]) == 1
    assert "ex4d prepare: nodepth: no depth file nodepth.npz" in capsys.readouterr().err
    # Tracking masks with random blobs need no depth at all.
    assert main([*args, "--mask-kinds", "track"]) == 0
    meta = json.loads((tmp_path / "data" / "nodepth" / "meta.json").read_text())
    assert meta["depth_source"] is None and meta["trajectory"] is None and meta["hole"]["kind"] == "ellipses"
    assert set(_read(tmp_path / "data" / "nodepth" / "pair.npz")) == {"mask"}


def test_tracking_hole_from_a_rendering_mask(tmp_path):
    """In a static scene the flow is zero, so the carried hole is the rendering mask's hidden region of frame k."""
    videos = tmp_path / "videos"
    K = default_intrinsics(H, W)
    out = render_scene_video(make_scene(seed=5, num_objects=3, moving=False), torch.eye(4).expand(T, 4, 4), K, H, W)
    save_video(videos / "still.mp4", out["frames"].numpy(), fps=10)
    np.savez(videos / "still.npz", depth=out["depth"].numpy(), intrinsics=K.numpy())
    settings = PairSettings(**SMALL, mask_kinds=(("track", 1.0),), track_hole="render")
    assert build_pairs(videos, tmp_path / "data", settings, progress=False).names("done") == ["still"]
    meta = json.loads((tmp_path / "data" / "still" / "meta.json").read_text())
    arrays = _read(tmp_path / "data" / "still" / "pair.npz")
    k = meta["hole"]["frame"]
    assert meta["hole"]["kind"] == "render" and 1 <= k < T
    expected = ~rendering_mask(out["depth"].numpy(), K.numpy(), arrays["w2c"])[k]
    assert arrays["mask"][0].all()
    for t in range(1, T):
        hidden = ~arrays["mask"][t]
        assert (hidden & expected).sum() / (hidden | expected).sum() > 0.9, t


def test_missing_opencv_says_what_to_install(clips, tmp_path, monkeypatch):
    import sys

    from ex4d.train.masks import require_cv2

    monkeypatch.setitem(sys.modules, "cv2", None)  # makes "import cv2" fail
    with pytest.raises(ImportError, match=r'pip install "ex4d\[train\]"'):
        require_cv2()
    with pytest.raises(InputError, match=r'pip install "ex4d\[train\]"'):
        build_pairs(clips, tmp_path, PairSettings(**SMALL), progress=False)
    # Rendering masks alone do not need OpenCV.
    result = build_pairs(clips, tmp_path, PairSettings(**SMALL, mask_kinds=(("render", 1.0),)), progress=False)
    assert result.names("done") == ["alpha", "beta"]


def test_prepare_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--help"])
    assert exc.value.code == 0 and "--trajectories" in capsys.readouterr().out
