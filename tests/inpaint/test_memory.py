"""Memory options on the CPU (smoke tests of the diffusers hooks with our LoRA and condition-encoder hook)."""

import numpy as np
import pytest
import torch
from diffusers.models.attention_dispatch import attention_backend

from ex4d.errors import InputError
from ex4d.inpaint.generate import generate
from ex4d.inpaint.loading import load_pipeline
from ex4d.inpaint.lora import ADAPTER_NAME
from ex4d.inpaint.memory import configure_memory

from .tiny import tiny_videos

KW = dict(height=32, width=32, num_inference_steps=1, mask_erode=2, output_type="latent")


def _run(p, **kw):
    p.set_progress_bar_config(disable=True)
    with attention_backend("native"):
        return p(*tiny_videos(5, 32, 32), **{**KW, **kw}).frames


@pytest.fixture(scope="module")
def plain(wan_dir, ex4d_ckpt):
    return _run(load_pipeline(wan_dir, ex4d_ckpt))


@pytest.mark.parametrize("offload,level", [("model", "block_level"), ("group", "block_level"), ("group", "leaf_level")])
def test_offload_modes_give_the_plain_output(wan_dir, ex4d_ckpt, plain, offload, level):
    p = configure_memory(load_pipeline(wan_dir, ex4d_ckpt), "cpu", offload=offload, group_offload_type=level)
    torch.testing.assert_close(_run(p), plain, atol=1e-5, rtol=0)
    if offload == "group" and level == "block_level":
        torch.testing.assert_close(_run(p), plain, atol=1e-5, rtol=0)  # the hooks survive a second call
    assert not p.transformer.patch_embedding._forward_hooks  # the condition hook is removed after each call


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_fp8_storage_is_close_and_keeps_lora_and_condition_encoder(wan_dir, ex4d_ckpt, plain):
    p = configure_memory(load_pipeline(wan_dir, ex4d_ckpt), "cpu", offload="group", fp8=True)
    t = p.transformer
    q = t.blocks[0].attn1.to_q
    assert q.base_layer.weight.dtype == torch.float8_e4m3fn
    assert q.lora_A[ADAPTER_NAME].weight.dtype == torch.float32 and q.lora_B[ADAPTER_NAME].weight.dtype == torch.float32
    assert t.patch_embedding.weight.dtype == torch.float32 and t.blocks[0].norm2.weight.dtype == torch.float32
    assert t.dtype == torch.float32  # the compute dtype
    out = _run(p)
    err = _rel(out, plain)
    assert 0 < err < 0.1, err  # fp8 e4m3 weight rounding (~3 % per weight), no blow-up
    # the LoRA and the condition tokens still act (zeroing them moves the output much more than fp8 does)
    enc = p.condition_encoder.latent_patch_embedding
    saved = enc.weight.detach().clone()
    enc.weight.data.zero_()
    assert _rel(_run(p), out) > 2 * err
    enc.weight.data.copy_(saved)
    b = q.lora_B[ADAPTER_NAME].weight
    saved = b.detach().clone()
    for blk in t.blocks:
        for m in (blk.attn1.to_q, blk.attn1.to_k, blk.attn1.to_v, blk.attn2.to_q, blk.ffn.net[2]):
            m.lora_B[ADAPTER_NAME].weight.data.zero_()
    assert _rel(_run(p), out) > 2 * err


def test_generate_with_memory_options(wan_dir, ex4d_ckpt, tmp_path):
    from ex4d.io.video import save_video

    color, mask = tiny_videos(5, 32, 32)
    save_video(tmp_path / "color.mp4", color)
    save_video(tmp_path / "mask.mp4", mask)
    kw = dict(model_dir=wan_dir, adapter=ex4d_ckpt, height=32, width=32, num_frames=5, num_inference_steps=1,
              mask_erode=0, device="cpu")
    outs = {}
    for name, extra in (("plain", {}), ("group", dict(offload="group", group_offload_type="leaf_level")),
                        ("model", dict(cpu_offload=True)), ("fp8", dict(offload="model", fp8=True))):
        generate(tmp_path / "color.mp4", tmp_path / "mask.mp4", tmp_path / f"{name}.mp4", npz=tmp_path / f"{name}.npz",
                 **kw, **extra)
        outs[name] = np.load(tmp_path / f"{name}.npz")["frames"].astype(int)
    assert np.abs(outs["group"] - outs["plain"]).max() <= 1 and np.abs(outs["model"] - outs["plain"]).max() <= 1
    assert np.abs(outs["fp8"] - outs["plain"]).mean() < 8
    with pytest.raises(InputError, match="offload"):
        generate(tmp_path / "color.mp4", tmp_path / "mask.mp4", tmp_path / "x.mp4", offload="sequential", **kw)
    with pytest.raises(InputError, match="group_offload_type"):
        configure_memory(load_pipeline(wan_dir), "cpu", offload="group", group_offload_type="blocks")
