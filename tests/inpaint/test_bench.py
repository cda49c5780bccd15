"""bench/generate.py --tiny: the benchmark's code path (random weights built on 'meta', every offload mode, fp8)."""

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "generate.py"


def test_bench_tiny_runs_offload_and_fp8_configurations(capsys):
    spec = importlib.util.spec_from_file_location("ex4d_bench_generate", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    rc = bench.main(["--tiny", "--quiet", "--steps", "1", "--offload", "model,group", "--fp8"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert rc == 0 and len(rows) == 4
    assert {(r["offload"], r["fp8"]) for r in rows} == {(o, f) for o in ("model", "group") for f in (False, True)}
    for r in rows:
        assert "error" not in r and r["output_shape"] == [5, 32, 32, 3]
        assert r["total_s"] >= r["encode_s"] + r["denoise_s"] > 0
    assert bench.REAL["transformer"]["num_layers"] == 40 and bench.REAL["t5"]["d_ff"] == 10240


def _load(name):
    path = BENCH.with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"ex4d_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_speed_tiny_runs_every_mode_in_order(capsys):
    speed = _load("speed")
    rc = speed.main(["--tiny", "--quiet", "--configs", "eager,quality,cudnn,taylorseer,distill4"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert rc == 0 and [r["config"] for r in rows] == ["eager", "quality", "cudnn", "taylorseer", "distill4"]
    assert rows.pop(2)["psnr_vs_quality"] > 60  # the same attention on the CPU: the same frames
    assert all("error" not in r for r in rows)
    assert rows[1]["speed"]["cfg_batch"] and rows[1]["speed"]["lora_fused"] > 0
    assert rows[1]["psnr_vs_eager"] > 40  # quality mode = eager within rounding (fp32 on the CPU)
    assert rows[3]["steps"] == 4 and rows[3]["cfg"] == 1.0 and rows[3]["forward_s"] == rows[3]["step_s"]
    # the FLOP count of one forward at the real size is the issue's ≈4.6·10^14
    assert 4.4e14 < speed.forward_flops(speed.load_sibling("generate").REAL["transformer"], 49, 512, 512) < 4.9e14
    assert speed.main(["--tiny", "--quiet", "--configs", "quality,eager"]) == 1  # eager after compile is refused


def test_bench_parallel_tiny_single_process(capsys):
    rc = _load("parallel").main(["--tiny", "--steps", "2"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert rc == 0 and len(rows) == 1 and rows[0]["gpus"] == 1 and "error" not in rows[0]
    assert rows[0]["projected_25_s"] > 0


def test_bench_speed_scene_inputs_measure_the_filled_pixels(tmp_path, capsys):
    import numpy as np

    speed = _load("speed")
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    mask = np.full((5, 64, 64), 255, np.uint8)
    mask[1:, :, 32:] = 0  # the right half of frames 1… to fill
    cache = tmp_path / "scene.npz"
    np.savez_compressed(cache, color=color, mask=mask)
    rc = speed.main(["--tiny", "--quiet", "--configs", "quality,taylorseer", "--steps", "5", "--scene", "0:90",
                     "--scene-cache", str(cache)])
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert rc == 0 and [r["config"] for r in rows] == ["quality", "taylorseer"]
    ts = rows[1]
    assert np.isfinite(ts["psnr_vs_quality"]) and np.isfinite(ts["psnr_vs_quality_filled"])  # 5 steps: 1 cached
    assert "| configuration |" in captured.err and "| taylorseer |" in captured.err


def test_bench_profile_forward_tiny_and_kernel_kinds(capsys):
    prof = _load("profile_forward")
    assert prof.main(["--tiny"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["variant"] for r in rows] == ["quality", "cudnn"] and rows[0]["speed"]["cfg_batch"]
    assert rows[1]["rel_l2_vs_quality"] < 1e-5  # same attention on the CPU: same forward
    # kernel names seen on an H200 (bench/profile_forward.py output, 2026-11-26)
    kinds = {"nvjet_sm90_tst_192x192_64x4_1x2_h_bz_coopB_bias_TNN": "matmul",
             "nvjet_sm90_qqtst_128x128_128x6_2x1_v_bz_ovscale_bias_TNT": "matmul",
             "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128": "attention",
             "flash_fwd_kernel": "attention",
             "triton_red_fused__fused_rms_norm__scaled_dot_product_cudnn_attention_add_clone": "elementwise",
             "triton_poi_fused_gelu_view_15": "elementwise",
             "Memcpy DtoD (Device -> Device)": "other"}
    assert {n: prof.kernel_kind(n) for n in kinds} == kinds
