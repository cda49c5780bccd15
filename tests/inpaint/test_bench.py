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
