"""bench/long_clip.py on a tiny clip: the script's code path (scene clip, child run, peak RSS) works."""

import importlib.util
import json
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench" / "long_clip.py"


def test_long_clip_bench_runs_and_reports_per_frame_numbers(capsys):
    spec = importlib.util.spec_from_file_location("bench_long_clip", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rgb, depth, K = bench.scene_clip(32, 100)
    assert rgb.shape == (100, 32, 32, 3) and depth.shape == (100, 32, 32) and (depth > 0).all()
    np.testing.assert_array_equal(rgb[97], rgb[1])  # played back and forth: 0..48..1, 0..
    assert bench.main(["--size", "32", "--frames", "5,9", "--fill", "none"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["frames"] for r in rows] == [5, 9] and all(r["peak_rss_gib"] > 0.05 for r in rows)
    assert "rss_bytes_per_frame_pixel" in rows[1] and rows[1]["s_per_frame_vs_first"] > 0
