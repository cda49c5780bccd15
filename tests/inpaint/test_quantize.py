"""fp8 matmuls (torchao): which layers, the errors on unsupported set-ups, and closeness to bf16 on a tiny DiT.

torchao's float8 kernels refuse to start without fp8 tensor cores; on the CPU the tests lift that hardware check
(the product then runs through PyTorch's CPU ``_scaled_mm``), so the quantised model's numbers are real fp8 ones.
"""

from unittest import mock

import pytest
import torch

from ex4d.errors import InputError
from ex4d.inpaint.loading import load_pipeline
from ex4d.inpaint.quantize import enable_fp8_matmuls, fp8_matmul_supported, select_fp8_linears
from ex4d.inpaint.speed import SpeedSettings, configure_speed, fuse_lora

from .tiny import generate_cli_args, tiny_videos

torchao = pytest.importorskip("torchao")

KW = dict(height=32, width=32, num_inference_steps=2, mask_erode=2, output_type="latent", guidance_scale=5.0)


def _cpu_fp8():
    """Lift torchao's fp8 hardware check and our CUDA check (the CPU computes the same fp8 products)."""
    import torchao.quantization.quant_api as qa

    if not hasattr(qa, "_check_hardware_support"):
        pytest.skip("this torchao has no _check_hardware_support to lift")
    return (mock.patch.object(qa, "_check_hardware_support", lambda *a, **k: None),
            mock.patch("ex4d.inpaint.quantize.fp8_matmul_supported", lambda device: True))


def test_selected_layers(wan_dir, ex4d_ckpt):
    t = load_pipeline(wan_dir, ex4d_ckpt).transformer
    names = select_fp8_linears(t)
    assert names and all(n.startswith("blocks.") for n in names)
    assert not any(".lora_" in n for n in names)
    # every block's attention and FFN linears (peft wraps the LoRA targets: their base_layer is chosen)
    per_block = {n.split(".", 2)[2] for n in names if n.startswith("blocks.0.")}
    lora = {f"{a}.{p}.base_layer" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")}
    assert per_block == lora | {"attn2.add_k_proj", "attn2.add_v_proj", "ffn.net.0.proj.base_layer",
                                "ffn.net.2.base_layer"}, per_block
    assert len(names) == len(t.blocks) * len(per_block)
    # never the embedders or the output head
    assert not any(n.startswith(("patch_embedding", "condition_embedder", "proj_out")) for n in names)


def test_unsupported_device_is_one_clear_error(wan_dir, ex4d_ckpt):
    p = load_pipeline(wan_dir, ex4d_ckpt)
    assert not fp8_matmul_supported(torch.device("cpu"))
    with pytest.raises(InputError, match="compute capability"):
        configure_speed(p, SpeedSettings(fp8_matmul=True, compile=False), "cpu")


def test_unfused_lora_is_refused(wan_dir, ex4d_ckpt):
    p = load_pipeline(wan_dir, ex4d_ckpt, torch_dtype=torch.bfloat16)
    with pytest.raises(InputError, match="LoRA fused first"):
        with mock.patch("ex4d.inpaint.quantize.fp8_matmul_supported", lambda device: True):
            enable_fp8_matmuls(p.transformer, "cpu")
    with pytest.raises(InputError, match="LoRA fused"):
        configure_speed(p, SpeedSettings(fp8_matmul=True, fuse_lora=False, compile=False), "cpu")


def test_fp8_matmul_mode_runs_and_stays_close(wan_dir, ex4d_ckpt):
    videos = tiny_videos(5, 32, 32)
    ref = load_pipeline(wan_dir, ex4d_ckpt, torch_dtype=torch.bfloat16)
    ref.set_progress_bar_config(disable=True)
    configure_speed(ref, SpeedSettings(compile=False), "cpu")
    expected = ref(*videos, **KW).frames

    p = load_pipeline(wan_dir, ex4d_ckpt, torch_dtype=torch.bfloat16)
    p.set_progress_bar_config(disable=True)
    hw, ours = _cpu_fp8()
    with hw, ours:
        summary = configure_speed(p, SpeedSettings(fp8_matmul=True, compile=False), "cpu")
    assert summary["fp8_matmul"] == len(select_fp8_linears(p.transformer)) > 0
    from torchao.quantization import Float8Tensor

    w = p.transformer.blocks[0].ffn.net[2]
    w = getattr(w, "base_layer", w).weight
    assert isinstance(w, Float8Tensor) and w.qdata.dtype == torch.float8_e4m3fn
    out = p(*videos, **KW).frames
    assert torch.isfinite(out).all()
    rel = ((out - expected).norm() / expected.norm()).item()
    # e4m3 rounds each operand by ≤ 2⁻⁴ relative: the latents move, but by a few percent, not more
    print(f"fp8 vs bf16 latents: relative L2 {rel:.4f}")
    assert 1e-3 < rel < 0.1, rel


def test_fp8_matmul_needs_bf16(wan_dir, ex4d_ckpt):
    p = load_pipeline(wan_dir, ex4d_ckpt)  # float32 on the CPU
    hw, ours = _cpu_fp8()
    with hw, ours, pytest.raises(InputError, match="bf16"):
        configure_speed(p, SpeedSettings(fp8_matmul=True, compile=False), "cpu")


def test_fp8_matmul_needs_plain_weights(wan_dir, ex4d_ckpt):
    from ex4d.inpaint.memory import configure_memory

    p = load_pipeline(wan_dir, ex4d_ckpt, torch_dtype=torch.bfloat16)
    configure_memory(p, "cpu", offload="none", fp8=True)
    hw, ours = _cpu_fp8()
    with hw, ours, pytest.raises(InputError, match="cannot be combined"):
        configure_speed(p, SpeedSettings(fp8_matmul=True, compile=False), "cpu")


def test_a_zero_row_stays_finite(wan_dir, ex4d_ckpt):
    """Zero-padded tokens give all-zero activation rows: their fp8 scale must not be 0 (0/0 = NaN)."""
    p = load_pipeline(wan_dir, ex4d_ckpt, torch_dtype=torch.bfloat16)
    fuse_lora(p.transformer)
    hw, ours = _cpu_fp8()
    with hw, ours:
        enable_fp8_matmuls(p.transformer, "cpu")
    layer = p.transformer.blocks[0].attn2.to_k
    layer = getattr(layer, "base_layer", layer)
    x = torch.randn(4, layer.in_features, dtype=torch.bfloat16)
    x[2] = 0
    y = layer(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[2], layer.bias.expand_as(y[2]), atol=0, rtol=0)


def test_cli_fp8_matmul(wan_dir, ex4d_ckpt, tmp_path, capsys):
    """``--fp8-matmul`` reaches the pipeline: on the CPU one clear line (exit 2), nothing written; lifted, it runs."""
    import numpy as np

    from ex4d.cli import main

    base = generate_cli_args(tmp_path, wan_dir, ex4d_ckpt, "--fp8-matmul", "--dtype", "bf16")
    out = tmp_path / "out.mp4"
    assert main(base + ["--output-video", str(out)]) == 2
    err = capsys.readouterr().err
    assert "compute capability" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    hw, ours = _cpu_fp8()
    with hw, ours:
        assert main(base + ["--output-video", str(out), "--save-arrays"]) == 0
    frames = np.load(tmp_path / "out.npz")["frames"]
    assert frames.shape == (5, 32, 32, 3)


@pytest.mark.gpu
def test_fp8_matmuls_on_cuda(wan_dir, ex4d_ckpt):
    """On an fp8-capable GPU, no lifting: the real kernels, close to bf16, compiled or not."""
    if not torch.cuda.is_available() or not fp8_matmul_supported(torch.device("cuda")):
        pytest.skip("needs a CUDA GPU of compute capability >= 8.9")
    videos = tiny_videos(5, 32, 32)
    outs = []
    for fp8, compile_ in ((False, False), (True, False), (True, True)):
        p = load_pipeline(wan_dir, ex4d_ckpt, torch_dtype=torch.bfloat16, device="cuda")
        p.set_progress_bar_config(disable=True)
        summary = configure_speed(p, SpeedSettings(fp8_matmul=fp8, compile=compile_), "cuda")
        assert summary.get("fp8_matmul", 0) == (len(select_fp8_linears(p.transformer)) if fp8 else 0)
        outs.append(p(*videos, **KW).frames.float().cpu())
    ref = outs[0]
    for out in outs[1:]:
        assert torch.isfinite(out).all()
        rel = ((out - ref).norm() / ref.norm()).item()
        assert rel < 0.1, rel


def test_setup_is_checked_before_loading():
    from ex4d.inpaint.quantize import check_fp8_matmul_setup

    with pytest.raises(InputError, match="compute capability"):
        check_fp8_matmul_setup("cpu", torch.bfloat16)
    with mock.patch("ex4d.inpaint.quantize.fp8_matmul_supported", lambda device: True):
        check_fp8_matmul_setup("cpu", torch.bfloat16)  # fine
        with pytest.raises(InputError, match="bf16"):
            check_fp8_matmul_setup("cpu", torch.float16)
        for kw in (dict(offload="group"), dict(fp8_storage=True)):
            with pytest.raises(InputError, match="cannot be combined"):
                check_fp8_matmul_setup("cpu", torch.bfloat16, **kw)
        check_fp8_matmul_setup("cpu", torch.bfloat16, offload="model")  # the fp8 DiT moves as a whole
        with mock.patch("importlib.util.find_spec", lambda name: None), pytest.raises(InputError, match="ex4d.fp8"):
            check_fp8_matmul_setup("cpu", torch.bfloat16)


def test_blockwise_quantisation_equals_whole_model(wan_dir, ex4d_ckpt):
    """--offload model quantises block by block (each block to the GPU and back): same fp8 weights and scales."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    from ex4d.inpaint.quantize import quantize_blockwise

    models = []
    for _ in range(2):
        t = load_pipeline(wan_dir, ex4d_ckpt, torch_dtype=torch.bfloat16).transformer
        fuse_lora(t)
        models.append(t)
    chosen = set(select_fp8_linears(models[0]))
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), activation_value_lb=1e-12,
                                                       set_inductor_config=False)
    hw, _ = _cpu_fp8()
    with hw:
        quantize_(models[0], config, filter_fn=lambda m, n: n in chosen)
        quantize_blockwise(models[1], config, chosen, torch.device("cpu"))
    a, b = (dict(m.named_modules()) for m in models)
    for name in chosen:
        wa, wb = a[name].weight, b[name].weight
        assert type(wa) is type(wb) and wa.qdata.dtype == torch.float8_e4m3fn
        assert torch.equal(wa.qdata.view(torch.uint8), wb.qdata.view(torch.uint8)) and torch.equal(wa.scale, wb.scale)
    untouched = [n for n, m in b.items() if isinstance(m, torch.nn.Linear) and n not in chosen and
                 not type(m.weight).__name__.startswith("Float8")]
    assert untouched  # embedders, head, LoRA factors stay plain


def test_fp8_matmul_combines_with_a_step_cache(wan_dir, ex4d_ckpt):
    """Fast modes stack: fp8 products under TaylorSeer (uncompiled, as step caches run)."""
    p = load_pipeline(wan_dir, ex4d_ckpt, torch_dtype=torch.bfloat16)
    p.set_progress_bar_config(disable=True)
    hw, ours = _cpu_fp8()
    with hw, ours:
        summary = configure_speed(p, SpeedSettings(fp8_matmul=True, cache="taylorseer:2"), "cpu")
    assert summary["fp8_matmul"] > 0 and summary["cache"] == "taylorseer:2" and not summary["compile"]
    out = p(*tiny_videos(5, 32, 32), **{**KW, "num_inference_steps": 5}).frames
    assert torch.isfinite(out).all()
