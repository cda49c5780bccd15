"""Backend registry, intrinsics policy and estimate_depth's handling of both."""

import math

import numpy as np
import pytest

from ex4d.depth import BACKENDS, DepthResult, estimate_depth, registry
from ex4d.depth.intrinsics import IntrinsicsPolicy, focal_from_fov, fov_from_focal, make_policy, resize_intrinsics
from ex4d.errors import InputError
from ex4d.io.video import Video


def test_registry_names_and_lazy_classes():
    assert list(BACKENDS) == ["depthcrafter", "depth-anything-v2", "depth-pro", "file"]
    assert registry.DEFAULT_BACKEND == "depthcrafter"
    assert registry.backend_class("file").name == "file"
    assert "path" in registry.backend_options("file")


def test_unknown_backend_lists_names():
    with pytest.raises(InputError, match="depthcrafter, depth-anything-v2, depth-pro, file"):
        registry.create_backend("midas")


def test_unknown_option_lists_accepted(tmp_path):
    np.save(tmp_path / "d.npy", np.ones((2, 4, 4), np.float32))
    with pytest.raises(InputError, match="does not take option.*window.*it takes: path, units, scale"):
        registry.create_backend("file", path=tmp_path / "d.npy", window=3)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "file", "ex4d_no_such_module_xyz:Backend")
    with pytest.raises(ImportError, match=r"pip install 'ex4d\[diffusion\]'"):
        registry.backend_class("file")


def test_fov_focal_round_trip():
    assert focal_from_fov(fov_from_focal(500.0, 512), 512) == pytest.approx(500.0)
    assert fov_from_focal(500.0, 512) == pytest.approx(54.2, abs=0.05)  # spec §2.4 example
    assert focal_from_fov(90.0, 640) == pytest.approx(320.0)


def test_policies():
    assert IntrinsicsPolicy("reference").known_focal(576, 1024) == (500.0, 500.0)
    assert IntrinsicsPolicy("auto").known_focal(576, 1024) == (500.0, 500.0)
    assert IntrinsicsPolicy("auto").known_focal(576, 1024, backend_estimates=True) is None
    assert IntrinsicsPolicy("estimate").known_focal(576, 1024) is None
    fx, fy = IntrinsicsPolicy("fov", 90.0).known_focal(576, 1024)
    assert fx == fy == pytest.approx(512.0)
    # a focal in pixels of the 1080x1920 source, scaled to the 576x1024 working size
    fx, fy = IntrinsicsPolicy("focal", 1500.0).known_focal(576, 1024, source_size=(1080, 1920))
    assert fx == pytest.approx(800.0) and fy == pytest.approx(800.0)
    with pytest.raises(InputError):
        IntrinsicsPolicy("fov", 180.0)
    with pytest.raises(InputError):
        IntrinsicsPolicy("focal", -1.0)
    with pytest.raises(InputError, match="not both"):
        make_policy(focal_px=500, fov_deg=60)
    with pytest.raises(InputError, match="contradicts"):
        make_policy("reference", focal_px=500)
    assert make_policy(None, fov_deg=60) == IntrinsicsPolicy("fov", 60.0)


def test_resize_intrinsics_pixel_centres():
    K = np.array([[500, 0, 256], [0, 500, 128], [0, 0, 1]], np.float32)
    K2 = resize_intrinsics(K, (256, 512), (128, 256))
    np.testing.assert_allclose(K2, [[250, 0, 128], [0, 250, 64], [0, 0, 1]])


class _Fake:
    """A backend that estimates a 100 px focal and records the focal it is given."""

    name = "fake"

    def __init__(self, estimates=True):
        self.estimates_intrinsics = estimates
        self.seen = "unset"

    def estimate(self, frames, focal_px=None, progress=True):
        self.seen = focal_px
        T, H, W = frames.shape[:3]
        K = np.array([[100, 0, W / 2], [0, 100, H / 2], [0, 0, 1]], np.float32) if self.estimates else None
        return DepthResult(np.full((T, H, W), 3.0, np.float32), K, kind="metric", backend="fake")

    @property
    def estimates(self):
        return self.estimates_intrinsics


def test_estimate_depth_intrinsics_policy_flow():
    video = Video(frames=np.zeros((2, 8, 12, 3), np.uint8), fps=30.0, source_size=(16, 24))
    fake = _Fake()
    r = estimate_depth(video, fake)
    assert fake.seen is None and r.intrinsics.shape == (2, 3, 3) and r.intrinsics[0, 0, 0] == 100
    r = estimate_depth(video, fake, intrinsics="reference")
    assert fake.seen == 500.0 and r.intrinsics[1, 0, 0] == 500 and r.intrinsics[1, 0, 2] == 6.0
    r = estimate_depth(video, fake, focal_px=40.0)  # source pixels: working size is half
    assert fake.seen == 20.0 and r.intrinsics[0, 1, 1] == 20.0
    r = estimate_depth(video, fake, fov_deg=90.0)
    assert r.intrinsics[0, 0, 0] == pytest.approx(6.0) and r.info["intrinsics_policy"] == "fov"
    with pytest.raises(InputError, match="makes no intrinsics estimate"):
        estimate_depth(video, _Fake(estimates=False), intrinsics="estimate")
    r = estimate_depth(video, _Fake(estimates=False))
    assert r.intrinsics[0, 0, 0] == 500


def test_estimate_depth_rejects_bad_frames():
    with pytest.raises(InputError, match="uint8"):
        estimate_depth(np.zeros((2, 8, 8, 3), np.float32), _Fake())
    with pytest.raises(InputError, match="unknown intrinsics policy"):
        estimate_depth(np.zeros((2, 8, 8, 3), np.uint8), _Fake(), intrinsics="exif")
    assert math.isfinite(estimate_depth(np.zeros((2, 8, 8, 3), np.uint8), _Fake()).depth.sum())
