"""DepthOptions: one checked set of depth options for ex4d depth, recon/run --depth-backend, --manifest and Python."""

import argparse

import pytest

from ex4d.depth.cli import add_depth_backend_arguments, depth_options_from_args
from ex4d.depth.options import DepthOptions
from ex4d.errors import InputError


def _parse(*flags):
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    add_depth_backend_arguments(p, "--depth-backend")
    return depth_options_from_args(p.parse_args(list(flags)))


def test_flags_become_the_backends_constructor_options():
    o = _parse("--depth-backend", "depthcrafter", "--depth-window", "64", "--depth-overlap", "16", "--depth-model", "u",
               "--depth-steps", "3", "--intrinsics", "reference", "--no-download")
    assert o.backend_kwargs() == {"window": 64, "overlap": 16, "unet": "u", "steps": 3, "device": "auto",
                                  "download": False}
    assert o.estimate_kwargs() == {**o.backend_kwargs(), "intrinsics": "reference", "focal_px": None, "fov_deg": None}
    f = _parse("--depth-backend", "file", "--depth-file", "d.npz", "--depth-scale", "0.001")
    assert f.backend_kwargs() == {"path": "d.npz", "scale": 0.001} and str(f.file_path) == "d.npz"
    with pytest.raises(Exception):
        f.__setattr__("backend", "depth-pro")  # frozen


@pytest.mark.parametrize("flags,message", [
    (("--depth-backend", "depth-pro", "--depth-window", "10"), "--depth-window does not apply to the depth-pro"),
    (("--depth-backend", "depthcrafter", "--depth-size", "small"), "--depth-size does not apply"),
    (("--depth-backend", "depth-anything-v2", "--depth-file", "x.npz"), "--depth-file does not apply"),
    (("--depth-backend", "file",), "needs --depth-file"),
])
def test_options_a_backend_does_not_take_are_refused_naming_the_flag(flags, message):
    with pytest.raises(InputError, match=message):
        _parse(*flags)


def test_the_older_dict_form_gives_the_same_options():
    typed = DepthOptions(backend="depthcrafter", window=64, seed=1, intrinsics="estimate")
    assert DepthOptions.from_backend("depthcrafter", {"window": 64, "seed": 1, "intrinsics": "estimate"}) == typed
    assert DepthOptions.from_backend(None, {"unet": "x"}).model == "x"
    with pytest.raises(InputError, match="svd not known to the depth-pro"):
        DepthOptions.from_backend("depth-pro", {"svd": "x"})
    with pytest.raises(InputError, match="--depth-backend"):
        DepthOptions(backend="midas")


def test_run_takes_typed_or_dict_depth_options_with_one_cache_key(tmp_path):
    import numpy as np

    from ex4d.io.video import save_video
    from ex4d.runner import run
    from tests.conftest import wall_and_box

    frames, depth = wall_and_box(num_frames=5, height=32, width=32)
    video = save_video(tmp_path / "clip.mp4", frames, fps=10)
    np.savez(tmp_path / "d.npz", depth=depth)
    kw = dict(cams=["30"], fill="none", num_frames=None, device="cpu", progress=False)
    first = run(video, tmp_path / "out", depth_options=DepthOptions(backend="file", file=tmp_path / "d.npz"), **kw)
    assert first.stages["depth"] == "ran"
    again = run(video, tmp_path / "out", depth_backend="file", depth_options={"path": str(tmp_path / "d.npz")}, **kw)
    assert set(again.stages.values()) == {"cached"}
    with pytest.raises(InputError, match="not both"):
        run(video, tmp_path / "out", depth=tmp_path / "d.npz", depth_options=DepthOptions(), **kw)
