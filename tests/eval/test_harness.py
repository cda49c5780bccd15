"""evaluate_pair / evaluate_dirs / `ex4d eval` on tiny videos written with save_video."""

import argparse
import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ex4d.errors import InputError
from ex4d.eval.cli import add_eval_parser, to_json
from ex4d.eval.features import MissingWeightsError
from ex4d.eval.harness import angle_bucket, evaluate_dirs, evaluate_pair, format_table, load_mask, parse_metrics
from ex4d.io.video import save_video


@pytest.fixture(autouse=True)
def no_local_weights(monkeypatch, tmp_path):
    for var in ("EX4D_LPIPS_WEIGHTS", "EX4D_LPIPS_BACKBONE", "EX4D_INCEPTION_WEIGHTS", "EX4D_I3D_WEIGHTS",
                "EX4D_WEIGHTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def frames(t=5, h=32, w=48, seed=0):
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.normal(size=(t, h, w, 3)), sigma=(0, 2, 2, 0))
    x = (x - x.min()) / (x.max() - x.min())
    return np.round(30 + 180 * x).astype(np.uint8)


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="ex4d")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


def test_identical_videos_score_perfectly(tmp_path):
    f = frames()
    save_video(tmp_path / "a.mp4", f, fps=10)
    save_video(tmp_path / "b.mp4", f, fps=10)  # same encoder, same input: same decoded frames
    res = evaluate_pair(tmp_path / "a.mp4", tmp_path / "b.mp4", device="cpu")
    assert res["psnr"] == np.inf and res["ssim"] == pytest.approx(1.0) and res["flicker"] == 0.0
    assert (res["frames"], res["height"], res["width"]) == (5, 32, 48)
    assert res["flicker_static"] == res["flicker_static_ref"]
    assert len(res["per_frame"]["psnr"]) == 5 and np.isnan(res["per_frame"]["flicker"][0])
    assert "psnr_seen" not in res and "lpips" not in res


def test_known_perturbation_and_mask(tmp_path):
    ref = frames()
    pred = ref + np.uint8(10)  # constant offset: PSNR 10 log10(255² / 100), no flicker
    np.savez(tmp_path / "ref.npz", frames=ref)
    np.savez(tmp_path / "pred.npz", color=pred)  # the "color" key (ex4d's render_<cam>.npz) is accepted too
    res = evaluate_pair(tmp_path / "pred.npz", tmp_path / "ref.npz", device="cpu")
    assert res["psnr"] == pytest.approx(10 * np.log10(255**2 / 100))
    assert res["flicker"] == 0.0 and res["ssim"] < 1

    # Masked: the seen part (left 16 columns) is exact, the unseen part garbage.
    mask = np.zeros(ref.shape[:3], bool)
    mask[:, :, :16] = True
    pred = ref.copy()
    pred[:, :, 28:] = np.random.default_rng(1).integers(0, 256, pred[:, :, 28:].shape)
    save_video(tmp_path / "mask.mp4", mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(load_mask(tmp_path / "mask.mp4"), mask)  # a 0/255 video survives H.264
    np.savez(tmp_path / "pred2.npz", frames=pred)
    res = evaluate_pair(tmp_path / "pred2.npz", tmp_path / "ref.npz", tmp_path / "mask.mp4", device="cpu")
    assert res["psnr_seen"] == np.inf and res["ssim_seen"] == pytest.approx(1.0) and res["flicker_seen"] == 0
    assert res["psnr_unseen"] < res["psnr"] < 30 and res["ssim_unseen"] < 0.9 and res["flicker_unseen"] > 0
    # The same mask as .npz (bool, or 0/255) and as an array.
    np.savez(tmp_path / "m.npz", mask=mask)
    np.savez(tmp_path / "m255.npz", mask=mask.astype(np.uint8) * 255)
    for m in (tmp_path / "m.npz", tmp_path / "m255.npz", mask[0]):
        again = evaluate_pair(pred, ref, m, device="cpu")
        assert again["psnr_unseen"] == pytest.approx(res["psnr_unseen"]) and again["psnr_seen"] == np.inf


def test_mismatches_and_bad_inputs_raise_one_line_input_errors(tmp_path):
    f = frames()
    np.savez(tmp_path / "a.npz", frames=f)
    np.savez(tmp_path / "short.npz", frames=f[:4])
    np.savez(tmp_path / "small.npz", frames=f[:, :30])
    np.savez(tmp_path / "nothing.npz", depth=np.zeros((2, 2)))
    np.savez(tmp_path / "float.npz", frames=f / 255.0)
    cases = [(("short.npz", "a.npz"), "has 4 frames of 32x48 but .*a.npz has 5 frames of 32x48"),
             (("a.npz", "small.npz"), "has 5 frames of 32x48 but .*small.npz has 5 frames of 30x48"),
             (("nothing.npz", "a.npz"), "no 'frames' or 'color' array"),
             (("float.npz", "a.npz"), "must be .* uint8"),
             (("missing.mp4", "a.npz"), "no such file")]
    for (p, r), pattern in cases:
        with pytest.raises(InputError, match=pattern) as info:
            evaluate_pair(tmp_path / p, tmp_path / r, device="cpu")
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="has 4 frames"):
        evaluate_pair(f, f, np.zeros((4, 32, 48), bool), device="cpu")
    with pytest.raises(InputError, match="unknown metric.*psnrr"):
        evaluate_pair(f, f, metrics="psnrr")
    with pytest.raises(InputError, match="too small"):
        evaluate_pair(f[:, :8, :8], f[:, :8, :8], device="cpu")


def test_feature_metrics_without_weights_fail_before_decoding(tmp_path):
    f = frames()
    for metric, name, env in (("fid", "pt_inception-2015-12-05-6726825d.pth", "EX4D_INCEPTION_WEIGHTS"),
                              ("lpips", "alex.pth", "EX4D_LPIPS_WEIGHTS"),
                              ("fvd", "i3d_torchscript.pt", "EX4D_I3D_WEIGHTS")):
        with pytest.raises(MissingWeightsError, match=f"{name}.*{env}"):
            evaluate_pair(tmp_path / "never-read.mp4", f, metrics=f"psnr,{metric}", device="cpu")


def test_angle_buckets_and_metric_names():
    assert angle_bucket("output_30.mp4") == "small"
    assert angle_bucket("x/output_60.npz") == "large"
    assert angle_bucket("color_90.mp4") == "extreme"
    assert angle_bucket("output_180.mp4") == angle_bucket("scene-180_outer.mp4") == "full"
    assert angle_bucket("output_190.mp4") is None and angle_bucket("clip300.mp4") is None
    assert parse_metrics("ssim, PSNR") == ("psnr", "ssim")
    assert parse_metrics(None) == ("psnr", "ssim", "flicker")


def make_dataset(root):
    """pred/ref/mask folders: three cameras of one scene, one nested file, and stray files."""
    ref = {"output_30": frames(seed=1), "output_90": frames(seed=2), "scene2/output_180_outer": frames(seed=3),
           "plain": frames(seed=4)}
    offsets = {"output_30": 5, "output_90": 20, "scene2/output_180_outer": 0, "plain": 10}
    for name, f in ref.items():
        (root / "ref" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "pred" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "mask" / name).parent.mkdir(parents=True, exist_ok=True)
        np.savez(root / "ref" / f"{name}.npz", frames=f)
        np.savez(root / "pred" / f"{name}.npz", frames=f + np.uint8(offsets[name]))
    mask = np.ones((5, 32, 48), bool)
    mask[:, :, 24:] = False
    save_video(root / "mask" / "mask_30.mp4", mask.astype(np.uint8) * 255)  # found by camera name
    np.savez(root / "mask" / "output_90.npz", mask=mask)  # found by the same name
    np.savez(root / "mask" / "scene2" / "render_180_outer.npz", mask=mask, color=frames())  # ex4d's arrays file
    np.savez(root / "mask" / "plain.npz", mask=mask)
    np.savez(root / "pred" / "extra_60.npz", frames=frames())  # no reference: reported, not evaluated
    np.savez(root / "ref" / "unused.npz", frames=frames())
    return offsets


def test_evaluate_dirs_aggregates_and_buckets(tmp_path):
    offsets = make_dataset(tmp_path)
    res = evaluate_dirs(tmp_path / "pred", tmp_path / "ref", tmp_path / "mask", device="cpu")
    assert res["count"] == 4
    assert res["unmatched_pred"] == ["extra_60"] and res["unmatched_ref"] == ["unused"]
    by_name = {v["name"]: v for v in res["videos"]}
    for name, off in offsets.items():
        expected = np.inf if off == 0 else 10 * np.log10(255**2 / off**2)
        assert by_name[name]["psnr"] == pytest.approx(expected)
        assert by_name[name]["psnr_seen"] == pytest.approx(expected)
    assert by_name["output_30"]["mask"].endswith("mask_30.mp4")
    assert by_name["scene2/output_180_outer"]["mask"].endswith("render_180_outer.npz")
    assert res["mean"]["psnr"] == np.inf  # one perfect video
    assert res["mean"]["ssim"] == pytest.approx(np.mean([v["ssim"] for v in res["videos"]]))
    assert list(res["buckets"]) == ["small", "extreme", "full"]
    assert res["buckets"]["small"]["count"] == 1
    assert res["buckets"]["small"]["mean"]["psnr"] == pytest.approx(10 * np.log10(255**2 / 25))
    assert res["buckets"]["extreme"]["mean"]["flicker"] == 0.0
    table = format_table(res)
    assert "all (4)" in table and "extreme (1)" in table and "psnr_unseen" in table

    # A mask folder lacking one mask is an error naming what was looked for.
    (tmp_path / "mask" / "plain.npz").unlink()
    with pytest.raises(InputError, match="no mask for plain"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "ref", tmp_path / "mask", device="cpu")
    with pytest.raises(InputError, match="has a namesake"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "mask" / "scene2", device="cpu")


def test_cli_pair_and_dirs(tmp_path, capsys):
    offsets = make_dataset(tmp_path)
    out = tmp_path / "res" / "pair.json"
    assert run_cli(["--pred", str(tmp_path / "pred" / "output_90.npz"),
                    "--ref", str(tmp_path / "ref" / "output_90.npz"), "--metrics", "psnr,ssim", "--json", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "psnr [dB]" in text and "ssim" in text and "flicker" not in text
    data = json.loads(out.read_text())
    assert data["psnr"] == pytest.approx(10 * np.log10(255**2 / offsets["output_90"] ** 2))
    assert len(data["per_frame"]["ssim"]) == 5

    out = tmp_path / "res" / "dirs.json"
    assert run_cli(["--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--mask", str(tmp_path / "mask"),
                    "--json", str(out), "--device", "cpu", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "4 video pairs" in captured.out and "full (1)" in captured.out
    assert "1 predictions without a reference skipped (extra_60)" in captured.err
    data = json.loads(out.read_text())  # strict JSON: inf as a string, NaN as null
    assert data["mean"]["psnr"] == "inf" and data["count"] == 4

    with pytest.raises(InputError, match="unknown metric"):
        run_cli(["--pred", "a", "--ref", "b", "--metrics", "psnr,foo"])
    with pytest.raises(InputError, match="--pred .*no such file"):
        run_cli(["--pred", str(tmp_path / "nope.mp4"), "--ref", str(tmp_path / "ref")])
    with pytest.raises(InputError, match="--ref must be a folder"):
        run_cli(["--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref" / "plain.npz")])
    with pytest.raises(MissingWeightsError, match="pt_inception"):
        run_cli(["--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--metrics", "fid"])


def test_to_json_is_strict():
    text = to_json({"a": float("nan"), "b": [float("inf"), np.float64(1.5)], "c": np.int64(3)})
    assert json.loads(text) == {"a": None, "b": ["inf", 1.5], "c": 3}


def test_parser_constants_match_the_harness():
    from ex4d.eval import cli, features, harness

    assert cli.ALL_METRICS == harness.ALL_METRICS and cli.DEFAULT_METRICS == harness.DEFAULT_METRICS
    assert cli.LPIPS_NETS == features.LPIPS_NETS and cli.FVD_CLIP_FRAMES == features.FVD_CLIP_FRAMES


def test_seam_finds_a_step_at_window_boundaries_only():
    """A prediction whose error jumps at each window boundary (window 13, overlap 4: windows start at 0, 8, 16;
    cross-fades over frames 8-12 and 16-20) has seam_ratio >> 1; one whose error drifts smoothly has ≈ 1."""
    from ex4d.eval.harness import evaluate_pair

    rng = np.random.default_rng(0)
    T = 26
    ref = rng.integers(40, 200, (T, 16, 16, 3)).astype(np.uint8)
    stepped, smooth = ref.astype(int).copy(), ref.astype(int).copy()
    for t in range(T):
        stepped[t] += 12 * (t >= 8) + 12 * (t >= 13) + 12 * (t >= 16) + 12 * (t >= 21)  # steps entering/leaving fades
        smooth[t] += 2 * t
    mask = np.zeros((T, 16, 16), bool)  # nothing seen: every pixel is filled
    kw = dict(metrics="seam", windows=(13, 4), per_frame=False)
    step = evaluate_pair(stepped.clip(0, 255).astype(np.uint8), ref, mask, **kw)
    assert step["seam_boundary"] == pytest.approx(12, abs=0.5) and step["seam_inside"] < 0.5
    assert step["seam_ratio"] > 20
    flat = evaluate_pair(smooth.clip(0, 255).astype(np.uint8), ref, mask, **kw)
    assert flat["seam_ratio"] == pytest.approx(1.0, abs=0.05)
    # a clip of one window has no boundary
    assert np.isnan(evaluate_pair(ref[:13], ref[:13], **kw)["seam_ratio"])
    # the seen pixels (mask 1) are left out: a step only there is not a seam of the fill
    seen_only = ref.astype(int).copy()
    seen_only[8:, :8] += 30
    half = np.zeros((T, 16, 16), bool)
    half[:, :8] = True
    assert evaluate_pair(seen_only.clip(0, 255).astype(np.uint8), ref, half, **kw)["seam_boundary"] == 0
