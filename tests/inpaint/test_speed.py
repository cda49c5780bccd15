"""Speed modes on the CPU: quality mode equals the eager reference order; fast modes run and are labelled."""

import pytest
import torch
from diffusers.models.attention_dispatch import _AttentionBackendRegistry

from ex4d.errors import InputError
from ex4d.inpaint.loading import load_pipeline
from ex4d.inpaint.memory import configure_memory
from ex4d.inpaint.speed import (SpeedSettings, configure_speed, fuse_lora, parse_cache, pick_attention_backend,
                                set_model_attention_backend, unfuse_lora)

from .tiny import generate_cli_args, tiny_videos

KW = dict(height=32, width=32, num_inference_steps=2, mask_erode=2, output_type="latent", guidance_scale=5.0)


def _run(p, **kw):
    p.set_progress_bar_config(disable=True)
    return p(*tiny_videos(5, 32, 32), **{**KW, **kw}).frames


@pytest.fixture(scope="module")
def eager(wan_dir, ex4d_ckpt):
    p = load_pipeline(wan_dir, ex4d_ckpt)
    summary = configure_speed(p, SpeedSettings(mode="eager"), "cpu")
    assert summary == {"mode": "eager", "cfg_batch": False, "attention": "native", "lora_fused": 0, "cache": None,
                       "compile": False}
    return _run(p)


def test_quality_mode_equals_eager(wan_dir, ex4d_ckpt, eager):
    p = load_pipeline(wan_dir, ex4d_ckpt)
    # compile with the "eager" backend: dynamo traces the blocks (fullgraph) without a C++ toolchain run
    summary = configure_speed(p, SpeedSettings(compile=True, compile_backend="eager"), "cpu")
    assert summary["cfg_batch"] and summary["compile"] and summary["lora_fused"] > 0
    out = _run(p)
    torch.testing.assert_close(out, eager, atol=2e-4, rtol=1e-4)


def test_batched_cfg_alone_equals_two_calls(wan_dir, ex4d_ckpt, eager):
    p = load_pipeline(wan_dir, ex4d_ckpt)
    p.cfg_batch = True
    torch.testing.assert_close(_run(p), eager, atol=2e-4, rtol=1e-4)
    p.cfg_batch = False
    torch.testing.assert_close(_run(p), eager, atol=0, rtol=0)  # the same calls as the eager fixture


def test_fuse_and_unfuse_lora(wan_dir, ex4d_ckpt):
    p = load_pipeline(wan_dir, ex4d_ckpt)
    t = p.transformer
    before = {k: v.clone() for k, v in t.state_dict().items() if "base_layer" in k}
    x = _run(p)
    n = fuse_lora(t)
    assert n > 0 and fuse_lora(t) == 0  # idempotent
    changed = [k for k, v in t.state_dict().items() if "base_layer" in k and not torch.equal(v, before[k])]
    assert changed  # the delta B·A·scale went into the base weights
    torch.testing.assert_close(_run(p), x, atol=2e-4, rtol=1e-4)
    assert unfuse_lora(t) == n
    for k, v in t.state_dict().items():
        if "base_layer" in k:
            torch.testing.assert_close(v, before[k], atol=1e-6, rtol=0)


def test_attention_backend_is_set_on_the_model_only(wan_dir, ex4d_ckpt):
    p = load_pipeline(wan_dir, ex4d_ckpt)
    active_before = _AttentionBackendRegistry.get_active_backend()[0]
    assert set_model_attention_backend(p.transformer, "_native_math") > 0
    assert _AttentionBackendRegistry.get_active_backend()[0] == active_before
    procs = [m.processor for m in p.transformer.modules() if hasattr(getattr(m, "processor", None), "_attention_backend")]
    assert {str(pr._attention_backend.value) for pr in procs} == {"_native_math"}
    with pytest.raises(InputError, match="attention backend"):
        set_model_attention_backend(p.transformer, "warp-speed")


def test_pick_attention_backend_cpu():
    assert pick_attention_backend(torch.device("cpu")) == "native"


def test_cache_modes(wan_dir, ex4d_ckpt, eager):
    assert parse_cache(None) is None and parse_cache("none") is None
    assert parse_cache("fbc:0.1").threshold == pytest.approx(0.1)
    assert parse_cache("taylorseer:3").cache_interval == 3
    for bad in ("magic", "fbc:x", "taylorseer:1.5"):
        with pytest.raises(InputError, match="--cache"):
            parse_cache(bad)
    # threshold 0: no step is ever skipped -> the exact output; a huge threshold skips steps -> a different one
    p = load_pipeline(wan_dir, ex4d_ckpt)
    configure_speed(p, SpeedSettings(cache="fbc:0"), "cpu")
    torch.testing.assert_close(_run(p), eager, atol=2e-4, rtol=1e-4)
    p = load_pipeline(wan_dir, ex4d_ckpt)
    configure_speed(p, SpeedSettings(cache="fbc:1e9"), "cpu")
    assert not torch.allclose(_run(p), eager, atol=1e-3)
    # TaylorSeer (lite): with 6 steps, interval 2, the blocks run on steps 0-2 and 4 only
    p = load_pipeline(wan_dir, ex4d_ckpt)
    configure_speed(p, SpeedSettings(cache="taylorseer:2"), "cpu")
    calls = []
    p.transformer.blocks[0].attn1.register_forward_hook(lambda *a: calls.append(1))
    _run(p, num_inference_steps=6)
    assert len(calls) == 4


def test_quality_mode_with_group_offload_keeps_lora_unfused(wan_dir, ex4d_ckpt, eager):
    p = configure_memory(load_pipeline(wan_dir, ex4d_ckpt), "cpu", offload="group")
    summary = configure_speed(p, SpeedSettings(), "cpu")
    assert summary["lora_fused"] == 0 and summary["cfg_batch"]
    torch.testing.assert_close(_run(p), eager, atol=2e-4, rtol=1e-4)


def test_unknown_mode():
    with pytest.raises(InputError, match="speed mode"):
        configure_speed(type("P", (), {"transformer": torch.nn.Linear(1, 1)})(), SpeedSettings(mode="turbo"), "cpu")


def test_cli_speed_flags(wan_dir, ex4d_ckpt, tmp_path, capsys):
    import numpy as np
    from safetensors.torch import save_file

    from ex4d.cli import main

    base = generate_cli_args(tmp_path, wan_dir, ex4d_ckpt, "--save-arrays")

    def frames(name, *extra):
        assert main(base + ["--output-video", str(tmp_path / f"{name}.mp4"), *extra]) == 0
        return np.load(tmp_path / f"{name}.npz")["frames"].astype(int)

    quality = frames("quality")
    assert np.abs(frames("eager", "--speed", "eager") - quality).max() <= 2  # fp32 rounding of the two orders
    zero = tmp_path / "zero.safetensors"  # a LoRA with B = 0 changes nothing
    save_file({"blocks.0.self_attn.q.lora_down.weight": torch.ones(2, 32),
               "blocks.0.self_attn.q.lora_up.weight": torch.zeros(32, 2)}, str(zero))
    assert np.array_equal(frames("zero", "--extra-lora", f"{zero}:2.0"), quality)
    capsys.readouterr()
    assert main(base + ["--output-video", str(tmp_path / "x.mp4"), "--cache", "warp"]) == 2
    assert "--cache" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()
