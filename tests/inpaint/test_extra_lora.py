"""Third-party LoRAs (original/lightx2v and diffusers names) fused into the DiT: exact deltas, clear errors."""

import pytest
import torch
from safetensors.torch import save_file

from ex4d.errors import InputError
from ex4d.inpaint.extra_lora import fuse_extra_lora, parse_extra_lora_arg
from ex4d.inpaint.loading import load_pipeline


def _weights(pipe):
    return {k: v.detach().clone() for k, v in pipe.transformer.state_dict().items()}


def test_original_names_with_alpha_and_diffs(wan_dir, ex4d_ckpt, tmp_path):
    pipe = load_pipeline(wan_dir, ex4d_ckpt)
    t = pipe.transformer
    dim = t.config.num_attention_heads * t.config.attention_head_dim
    g = torch.Generator().manual_seed(0)
    down, up = torch.randn(4, dim, generator=g), torch.randn(dim, 4, generator=g)
    diff_b = torch.randn(dim, generator=g)
    path = tmp_path / "distill.safetensors"
    save_file({"diffusion_model.blocks.1.self_attn.q.lora_down.weight": down,
               "diffusion_model.blocks.1.self_attn.q.lora_up.weight": up,
               "diffusion_model.blocks.1.self_attn.q.alpha": torch.tensor(2.0),
               "diffusion_model.blocks.0.cross_attn.o.diff_b": diff_b}, str(path))
    before = _weights(pipe)
    assert fuse_extra_lora(t, path, scale=0.5) == 2
    after = _weights(pipe)
    # peft wraps the adapted layers: the base weight lives under .base_layer
    q = "blocks.1.attn1.to_q.base_layer.weight"
    torch.testing.assert_close(after[q] - before[q], 0.5 * (2.0 / 4) * up @ down, atol=1e-5, rtol=1e-5)
    o = "blocks.0.attn2.to_out.0.base_layer.bias"
    torch.testing.assert_close(after[o] - before[o], 0.5 * diff_b, atol=1e-6, rtol=1e-6)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {q, o}


def test_diffusers_names(wan_dir, ex4d_ckpt, tmp_path):
    pipe = load_pipeline(wan_dir, ex4d_ckpt)
    t = pipe.transformer
    ffn_in = t.blocks[0].ffn.net[2].base_layer.weight.shape[1]
    dim = t.blocks[0].ffn.net[2].base_layer.weight.shape[0]
    a, b = torch.ones(2, ffn_in), torch.full((dim, 2), 0.25)
    path = tmp_path / "l.safetensors"
    save_file({"transformer.blocks.0.ffn.net.2.lora_A.weight": a, "transformer.blocks.0.ffn.net.2.lora_B.weight": b},
              str(path))
    before = t.blocks[0].ffn.net[2].base_layer.weight.detach().clone()
    fuse_extra_lora(t, path)
    torch.testing.assert_close(t.blocks[0].ffn.net[2].base_layer.weight - before, b @ a)  # alpha = rank: factor 1


@pytest.mark.parametrize("tensors,match", [
    ({"blocks.0.self_attn.q.lora_down.weight": torch.ones(2, 3)}, "only lora_down"),
    ({"blocks.0.self_attn.q.lora_down.weight": torch.ones(2, 3), "blocks.0.self_attn.q.lora_up.weight": torch.ones(3, 2)},
     "another model"),
    ({"vae.decoder.conv.weight": torch.ones(1)}, "expected LoRA tensors"),
    ({"blocks.0.nonexistent.lora_A.weight": torch.ones(1, 1), "blocks.0.nonexistent.lora_B.weight": torch.ones(1, 1)},
     "DiT module names"),
])
def test_bad_loras(wan_dir, ex4d_ckpt, tmp_path, tensors, match):
    pipe = load_pipeline(wan_dir, ex4d_ckpt)
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(InputError, match=match):
        fuse_extra_lora(pipe.transformer, path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(InputError, match="readable"):
        fuse_extra_lora(pipe.transformer, tmp_path / "junk.safetensors")


def test_parse_arg(tmp_path):
    f = tmp_path / "a b.safetensors"
    f.write_bytes(b"")
    assert parse_extra_lora_arg(str(f)) == (f, 1.0)
    assert parse_extra_lora_arg(f"{f}:0.75") == (f, 0.75)
    with pytest.raises(InputError, match="--extra-lora"):
        parse_extra_lora_arg(str(tmp_path / "missing.safetensors"))
