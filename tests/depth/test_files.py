"""The file backend round-trips every format; save_depth_npz writes what recon reads."""

import json

import numpy as np
import pytest

from ex4d.depth import estimate_depth, save_depth_npz
from ex4d.depth.convert import disparity_to_depth
from ex4d.depth.files import FileDepthBackend, load_depth_array, save_depth_frames
from ex4d.errors import InputError


def _depth(T=3, H=8, W=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 20.0, (T, H, W)).astype(np.float32)


def _frames(T=3, H=8, W=12):
    return np.zeros((T, H, W, 3), np.uint8)


def test_npz_with_intrinsics_round_trip(tmp_path):
    depth = _depth()
    K = np.array([[20, 0, 6], [0, 20, 4], [0, 0, 1]], np.float32)
    np.savez(tmp_path / "d.npz", depth=depth, intrinsics=K)
    r = estimate_depth(_frames(), "file", path=tmp_path / "d.npz")
    np.testing.assert_array_equal(r.depth, depth)
    assert r.kind == "given" and r.intrinsics.shape == (3, 3, 3)
    np.testing.assert_array_equal(r.intrinsics[2], K)  # auto: the file's intrinsics
    r = estimate_depth(_frames(), "file", path=tmp_path / "d.npz", intrinsics="reference")
    assert r.intrinsics[0, 0, 0] == 500.0


@pytest.mark.parametrize("shape", [(3, 8, 12), (3, 1, 8, 12)])
def test_npy_round_trip(tmp_path, shape):
    depth = _depth()
    np.save(tmp_path / "d.npy", depth.reshape(shape))
    r = estimate_depth(_frames(), "file", path=tmp_path / "d.npy")
    np.testing.assert_array_equal(r.depth, depth)
    assert r.intrinsics[0, 0, 0] == 500.0


def test_png16_folder_round_trip_millimetres(tmp_path):
    depth = np.round(_depth() * 1000) / 1000  # millimetre precision
    paths = save_depth_frames(tmp_path / "png", depth, "png", scale=0.001)
    assert [p.name for p in paths] == ["depth_0000.png", "depth_0001.png", "depth_0002.png"]
    maps, K = load_depth_array(tmp_path / "png")
    assert K is None and maps.shape == depth.shape
    np.testing.assert_array_equal(maps, np.round(depth * 1000))
    r = estimate_depth(_frames(), "file", path=tmp_path / "png", scale=0.001)
    np.testing.assert_allclose(r.depth, depth, rtol=1e-6)


def test_exr_folder_round_trip_and_natural_order(tmp_path):
    depth = _depth(T=11)
    save_depth_frames(tmp_path / "exr", depth, "exr", prefix="f")
    for p in sorted((tmp_path / "exr").iterdir()):  # rename to 0..10 without padding: natural order matters
        p.rename(p.with_name(f"frame{int(p.stem[1:])}.exr"))
    r = estimate_depth(_frames(T=11), "file", path=tmp_path / "exr")
    np.testing.assert_array_equal(r.depth, depth)


def test_disparity_units_use_the_reference_conversion(tmp_path):
    disparity = _depth()
    np.save(tmp_path / "disp.npy", disparity)
    r = estimate_depth(_frames(), "file", path=tmp_path / "disp.npy", units="disparity")
    np.testing.assert_allclose(r.depth, disparity_to_depth(disparity), rtol=1e-6)
    assert r.kind == "relative"


def test_resize_keeps_intrinsics_consistent(tmp_path):
    depth = np.full((2, 16, 24), 5.0, np.float32)
    K = np.array([[40, 0, 12], [0, 40, 8], [0, 0, 1]], np.float32)
    np.savez(tmp_path / "d.npz", depth=depth, intrinsics=K)
    r = estimate_depth(_frames(T=2), "file", path=tmp_path / "d.npz")
    assert r.depth.shape == (2, 8, 12)
    np.testing.assert_allclose(r.depth, 5.0)
    np.testing.assert_allclose(r.intrinsics[0], [[20, 0, 6], [0, 20, 4], [0, 0, 1]])


def test_clear_errors(tmp_path):
    np.save(tmp_path / "d.npy", _depth(T=2))
    with pytest.raises(InputError, match="depth has 2 maps but 3 video frames are used; pass num_frames=2"):
        estimate_depth(_frames(), "file", path=tmp_path / "d.npy")
    np.save(tmp_path / "flat.npy", np.ones((3, 12), np.float32))
    with pytest.raises(InputError, match=r"\(T, H, W\)"):
        estimate_depth(_frames(), "file", path=tmp_path / "flat.npy")
    np.save(tmp_path / "wide.npy", np.ones((3, 8, 30), np.float32))
    with pytest.raises(InputError, match="aspect ratios differ"):
        estimate_depth(_frames(), "file", path=tmp_path / "wide.npy")
    zero = _depth()
    zero[1, 2, 3] = 0
    np.save(tmp_path / "zero.npy", zero)
    with pytest.raises(InputError, match="zero.npy: expected positive z-depth, found 1 values ≤ 0"):
        estimate_depth(_frames(), "file", path=tmp_path / "zero.npy")
    with pytest.raises(InputError, match="not found"):
        FileDepthBackend(tmp_path / "missing.npz")
    np.savez(tmp_path / "two.npz", a=np.ones((3, 8, 12)), b=np.ones((3, 8, 12)))
    with pytest.raises(InputError, match="expected an array 'depth'"):
        FileDepthBackend(tmp_path / "two.npz")
    (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="unknown depth format"):
        FileDepthBackend(tmp_path / "d.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no depth frames"):
        FileDepthBackend(tmp_path / "empty")
    with pytest.raises(InputError, match="units"):
        FileDepthBackend(tmp_path / "d.npy", units="metres")


def test_longer_depth_gives_its_first_maps(tmp_path):
    # As frames are taken from the start of a clip, a depth file for more frames gives its first maps.
    depth = _depth(T=5)
    np.savez(tmp_path / "d.npz", depth=depth, intrinsics=np.tile(np.diag([20.0, 20.0, 1.0]), (5, 1, 1)))
    r = estimate_depth(_frames(), "file", path=tmp_path / "d.npz")
    np.testing.assert_array_equal(r.depth, depth[:3])
    assert r.intrinsics.shape == (3, 3, 3)


def test_disparity_array_defaults_to_disparity_units(tmp_path):
    # An npz array named 'disparity' is an inverse depth unless --depth-units says otherwise.
    disparity = _depth()
    np.savez(tmp_path / "d.npz", disparity=disparity)
    r = estimate_depth(_frames(), "file", path=tmp_path / "d.npz")
    np.testing.assert_allclose(r.depth, disparity_to_depth(disparity), rtol=1e-6)
    assert r.kind == "relative"
    r = estimate_depth(_frames(), "file", path=tmp_path / "d.npz", units="depth")
    np.testing.assert_array_equal(r.depth, disparity)


def test_saved_npz_is_what_recon_reads(tmp_path):
    from ex4d.reconstruction import check_depth, check_intrinsics, load_depth_file

    depth = _depth()
    np.save(tmp_path / "d.npy", depth)
    r = estimate_depth(_frames(), "file", path=tmp_path / "d.npy", fov_deg=60.0)
    out = save_depth_npz(tmp_path / "out" / "D.npz", r)
    assert out.is_file() and not list(out.parent.glob(".*tmp*"))
    d, K = load_depth_file(out)
    np.testing.assert_array_equal(check_depth(d, 3), depth)
    assert check_intrinsics(K, 3).shape == (3, 3, 3)
    with np.load(out) as data:
        assert str(data["kind"]) == "given" and str(data["backend"]) == "file"
        assert json.loads(str(data["info"]))["intrinsics_policy"] == "fov"
