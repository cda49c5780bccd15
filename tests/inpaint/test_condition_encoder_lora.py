import pytest
import torch
from diffusers import WanTransformer3DModel

from ex4d.errors import InputError
from ex4d.inpaint.condition_encoder import ENCODER_KEYS, CamVidEncoder, inject_condition_tokens
from ex4d.inpaint.lora import (
    REFERENCE_TO_DIFFUSERS,
    apply_lora,
    diffusers_to_reference,
    get_lora,
    load_lora,
    lora_rank,
    lora_to_reference_state_dict,
    parse_reference_lora,
    reference_to_diffusers,
)

from .tiny import DIM, tiny_components, tiny_ex4d_state_dict

I2V_14B = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024,
)


def test_encoder_sizes_and_zero_init():
    with torch.device("meta"):
        enc = CamVidEncoder(16, 1024, 5120)
    assert sum(p.numel() for p in enc.parameters()) == 23_109_632  # spec §6.5
    assert sorted(enc.state_dict()) == sorted(ENCODER_KEYS)
    small = CamVidEncoder(16, 8, 32)
    z = torch.randn(1, 16, 3, 4, 6)
    out = small(z, z)
    assert out.shape == (1, 32, 3, 2, 3) and (out == 0).all()


def test_encoder_from_state_dict_reads_sizes():
    sd = tiny_ex4d_state_dict(hidden=12)
    enc = CamVidEncoder.from_ex4d_state_dict(sd)
    assert (enc.config.in_channels, enc.config.hidden_channels, enc.config.out_channels) == (16, 12, DIM)
    assert tuple(enc.config.patch_size) == (1, 2, 2)
    zv, zm = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 16, 2, 4, 4)
    # straightforward re-statement of spec §6.5
    h = torch.cat([zv, zm], 1)
    for i in (0, 2, 4):
        h = torch.nn.functional.conv3d(h, sd[f"latent_encoder.{i}.weight"], sd[f"latent_encoder.{i}.bias"])
        h = torch.nn.functional.silu(h) if i < 4 else h
    want = torch.nn.functional.conv3d(h, sd["latent_patch_embedding.weight"], sd["latent_patch_embedding.bias"],
                                      stride=(1, 2, 2))
    assert torch.allclose(enc(zv, zm), want, atol=1e-5)
    with pytest.raises(InputError, match="missing"):
        CamVidEncoder.from_ex4d_state_dict({k: v for k, v in sd.items() if k != "latent_encoder.2.bias"})


def test_token_injection_adds_after_patch_embedding():
    t = tiny_components()["transformer"]
    x = torch.randn(1, 36, 2, 4, 4)
    tokens = torch.randn(1, DIM, 2, 2, 2)
    with inject_condition_tokens(t, tokens):
        got = t.patch_embedding(x)
    assert torch.allclose(got, t.patch_embedding(x) + tokens)
    assert not t.patch_embedding._forward_hooks  # removed on exit
    flat = got.flatten(2).transpose(1, 2)
    assert torch.allclose(flat, t.patch_embedding(x).flatten(2).transpose(1, 2) + tokens.flatten(2).transpose(1, 2))


def test_key_mapping_both_ways():
    for ref, dif in REFERENCE_TO_DIFFUSERS.items():
        assert reference_to_diffusers(f"blocks.7.{ref}") == f"blocks.7.{dif}"
        assert diffusers_to_reference(f"blocks.7.{dif}") == f"blocks.7.{ref}"
    assert reference_to_diffusers("blocks.0.self_attn.o") == "blocks.0.attn1.to_out.0"
    assert reference_to_diffusers("blocks.1.ffn.0") == "blocks.1.ffn.net.0.proj"
    sd = tiny_ex4d_state_dict()
    lora, other = parse_reference_lora(sd)
    assert len(lora) == 20 and sorted(other) == sorted(ENCODER_KEYS)
    back = lora_to_reference_state_dict(lora)
    assert back.keys() == {k for k in sd if "lora" in k}
    assert all(torch.equal(back[k], sd[k]) for k in back)
    assert lora_rank(lora) == 4


def test_lora_targets_exactly_the_reference_modules_14b():
    with torch.device("meta"):
        t = WanTransformer3DModel(**I2V_14B)
        apply_lora(t, rank=16)
    lora_params = sum(p.numel() for n, p in t.named_parameters() if "lora_" in n)
    assert lora_params == 76_677_120  # spec §7.3
    adapted = {n for n, m in t.named_modules() if "ex4d" in getattr(m, "lora_A", {})}
    assert len(adapted) == 400
    assert not any("add_k_proj" in n or "add_v_proj" in n or "condition_embedder" in n for n in adapted)


def test_lora_load_checks_and_forward_math():
    t = tiny_components()["transformer"]
    base = t.blocks[0].attn1.to_q.weight.detach().clone()
    lora, _ = parse_reference_lora(tiny_ex4d_state_dict(rank=3))
    apply_lora(t, rank=lora_rank(lora))
    load_lora(t, lora)
    layer = t.blocks[0].attn1.to_q
    x = torch.randn(5, DIM)
    ab = lora["blocks.0.attn1.to_q"]
    want = x @ base.T + layer.base_layer.bias + x @ ab["lora_A"].T @ ab["lora_B"].T
    assert torch.allclose(layer(x), want, atol=1e-5)
    got = get_lora(t)
    assert all(torch.equal(got[m][w], lora[m][w]) for m in lora for w in ("lora_A", "lora_B"))
    with pytest.raises(InputError, match="missing"):
        load_lora(t, {k: v for k, v in lora.items() if k != "blocks.1.ffn.net.2"})
    with pytest.raises(InputError, match="shape"):
        bad = dict(lora)
        bad["blocks.0.attn1.to_q"] = {"lora_A": torch.zeros(3, DIM + 1), "lora_B": torch.zeros(DIM, 3)}
        load_lora(t, bad)


def test_mixed_or_half_lora_is_rejected():
    sd = tiny_ex4d_state_dict()
    del sd["blocks.0.self_attn.q.lora_B.default.weight"]
    with pytest.raises(InputError, match="only one"):
        parse_reference_lora(sd)
    lora, _ = parse_reference_lora(tiny_ex4d_state_dict())
    lora["blocks.0.attn1.to_q"] = {"lora_A": torch.zeros(2, DIM), "lora_B": torch.zeros(DIM, 2)}
    with pytest.raises(InputError, match="mixed ranks"):
        lora_rank(lora)
