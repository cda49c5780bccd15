"""Loading the original Wan2.1 layout (converted on load) gives the same models and video as the diffusers layout."""

import shutil

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.models.attention_dispatch import attention_backend
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from ex4d.errors import InputError
from ex4d.inpaint import convert
from ex4d.inpaint.loading import load_pipeline
from ex4d.inpaint.original import CLIP_FILE, T5_FILE, VAE_FILE, inspect_base

from .test_condition_encoder_lora import I2V_14B
from .tiny import clip_to_original, dit_to_original, t5_to_original, tiny_videos, vae_to_original

COMPONENTS = ("transformer", "vae", "text_encoder", "image_encoder")
KW = dict(height=32, width=32, num_inference_steps=2, mask_erode=2)


def _run(p, **kw):
    p.set_progress_bar_config(disable=True)
    with attention_backend("native"):
        return p(*tiny_videos(5, 32, 32), **{**KW, **kw}).frames


def _assert_same_weights(a, b):
    for name in COMPONENTS:
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        for k in sa:
            assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), f"{name}.{k}"


@pytest.fixture(scope="module")
def both(wan_dir, original_wan_dir, ex4d_ckpt):
    return load_pipeline(wan_dir, ex4d_ckpt), load_pipeline(original_wan_dir, ex4d_ckpt)


def test_layouts_are_detected(wan_dir, original_wan_dir):
    assert inspect_base(wan_dir).layout == "diffusers"
    folder = inspect_base(original_wan_dir)
    assert folder.layout == "original" and all(kind == "original" for kind, _ in folder.parts.values())
    assert len(folder.parts["transformer"][1]) == 2  # the two shards of the index


def test_same_weights_sizes_and_video_from_both_layouts(both):
    diff, orig = both
    _assert_same_weights(diff, orig)
    ct, ot = dict(diff.transformer.config), dict(orig.transformer.config)
    for k in ("num_attention_heads", "attention_head_dim", "num_layers", "ffn_dim", "in_channels", "image_dim",
              "added_kv_proj_dim", "text_dim", "freq_dim", "qk_norm", "cross_attn_norm", "eps", "rope_max_seq_len"):
        assert ct[k] == ot[k], k
    assert diff.image_encoder.config.num_attention_heads == orig.image_encoder.config.num_attention_heads
    assert diff.text_encoder.config.num_heads == orig.text_encoder.config.num_heads
    a, b = _run(diff, output_type="pt"), _run(orig, output_type="pt")
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)  # bitwise here; CPU GEMMs may differ in the last bit
    assert (a - _run(diff, output_type="pt", seed=1)).abs().max() > 1e-3  # (the comparison is not vacuous)


def test_bf16_load_keeps_the_same_fp32_modules(wan_dir, original_wan_dir):
    a = load_pipeline(wan_dir, torch_dtype=torch.bfloat16)
    b = load_pipeline(original_wan_dir, torch_dtype=torch.bfloat16)
    _assert_same_weights(a, b)  # dtypes included: scale_shift_table, norms, time embedder stay fp32; VAE fp32
    assert b.transformer.blocks[0].scale_shift_table.dtype == torch.float32
    assert b.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16


def test_components_may_come_from_diffusers_subfolders(wan_dir, original_wan_dir, ex4d_ckpt, tmp_path, both):
    mixed = tmp_path / "mixed"
    shutil.copytree(original_wan_dir, mixed)
    for f, sub in ((T5_FILE, "text_encoder"), (CLIP_FILE, "image_encoder")):
        (mixed / f).unlink()
        shutil.copytree(wan_dir / sub, mixed / sub)
    folder = inspect_base(mixed)
    assert folder.layout == "original" and folder.parts["text_encoder"][0] == "diffusers"
    _assert_same_weights(both[0], load_pipeline(mixed, ex4d_ckpt))


def test_partial_folders_name_everything_missing(wan_dir, original_wan_dir, tmp_path):
    part = tmp_path / "partial"
    shutil.copytree(original_wan_dir, part)
    (part / VAE_FILE).unlink()
    (part / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    shutil.rmtree(part / "google")
    with pytest.raises(InputError) as err:
        load_pipeline(part)
    msg = str(err.value)
    assert "original layout" in msg
    for name in (VAE_FILE, "diffusion_pytorch_model-00002-of-00002.safetensors", "google/umt5-xxl"):
        assert name in msg
    assert T5_FILE not in msg and CLIP_FILE not in msg
    with pytest.raises(InputError, match="subfolder; pass the pipeline folder above"):
        load_pipeline(wan_dir / "transformer")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="diffusers layout .* or the original layout"):
        load_pipeline(empty)


def test_bad_original_files(original_wan_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(original_wan_dir, bad)
    (bad / T5_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="readable"):
        load_pipeline(bad)
    shutil.copy(original_wan_dir / T5_FILE, bad / T5_FILE)
    sd = torch.load(bad / VAE_FILE, weights_only=True)
    torch.save({**sd, "encoder.extra.weight": torch.zeros(1)}, bad / VAE_FILE)
    with pytest.raises(InputError, match="unexpected"):
        load_pipeline(bad)
    shutil.copy(original_wan_dir / VAE_FILE, bad / VAE_FILE)
    shard = bad / "diffusion_pytorch_model-00001-of-00002.safetensors"
    tensors = load_file(str(shard))
    save_file({**tensors, "freqs": torch.zeros(4, 2)}, str(shard))  # the original RoPE table: skipped
    load_pipeline(bad)
    save_file({**tensors, "blocks.0.self_attn.extra.weight": torch.zeros(4)}, str(shard))
    with pytest.raises(InputError, match="unexpected tensors"):
        load_pipeline(bad)
    shutil.copy(original_wan_dir / shard.name, shard)
    (bad / "config.json").unlink()  # 32 wide: no head count from the default head dim 128
    with pytest.raises(InputError, match="num_heads"):
        load_pipeline(bad)


def _meta_state(model):
    return {k: v for k, v in model.state_dict().items()}


def test_real_model_sizes_are_read_from_the_shapes():
    """The 14B I2V DiT, the Wan2.1 VAE, umT5-XXL and ViT-H/14, built on 'meta' and renamed to the original layout."""
    with init_empty_weights(include_buffers=True):
        dit = WanTransformer3DModel(**I2V_14B)
        vae = AutoencoderKLWan()
        t5 = UMT5EncoderModel(UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                                         num_heads=64, relative_attention_num_buckets=32))
        clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                                num_attention_heads=16, image_size=224, patch_size=14))
    cfg, sd = convert.convert_transformer(dit_to_original(_meta_state(dit)))
    assert cfg == {**I2V_14B, "patch_size": (1, 2, 2)} and sd.keys() == dit.state_dict().keys()
    assert sum(v.numel() for v in sd.values()) == pytest.approx(16.39e9, rel=1e-3)  # spec §6.1
    cfg, sd = convert.convert_vae(vae_to_original(vae))
    assert cfg == dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                       temperal_downsample=[False, True, True])
    assert sd.keys() == vae.state_dict().keys()
    cfg, sd = convert.convert_t5(t5_to_original(t5))
    assert (cfg["num_layers"], cfg["d_model"], cfg["d_ff"], cfg["num_heads"], cfg["d_kv"], cfg["vocab_size"],
            cfg["relative_attention_num_buckets"]) == (24, 4096, 10240, 64, 64, 256384, 32)
    cfg, sd = convert.convert_clip(clip_to_original(clip))
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"],
            cfg["image_size"], cfg["patch_size"]) == (32, 1280, 16, 5120, 224, 14)


def test_dit_key_mapping_follows_the_spec_table():
    pairs = {
        "text_embedding.2.bias": "condition_embedder.text_embedder.linear_2.bias",
        "time_projection.1.weight": "condition_embedder.time_proj.weight",
        "img_emb.proj.3.weight": "condition_embedder.image_embedder.ff.net.2.weight",
        "blocks.7.cross_attn.k_img.weight": "blocks.7.attn2.add_k_proj.weight",
        "blocks.7.cross_attn.norm_k_img.weight": "blocks.7.attn2.norm_added_k.weight",
        "blocks.3.norm3.bias": "blocks.3.norm2.bias",
        "blocks.3.self_attn.o.weight": "blocks.3.attn1.to_out.0.weight",
        "blocks.3.ffn.0.weight": "blocks.3.ffn.net.0.proj.weight",
        "blocks.3.modulation": "blocks.3.scale_shift_table",
        "head.head.weight": "proj_out.weight",
        "head.modulation": "scale_shift_table",
    }
    for k, v in pairs.items():
        assert convert.dit_key(k) == v
    assert convert.dit_key("blocks.3.norm1.weight") is None and convert.dit_key("freqs") is None
    assert convert.strip_prefix({"diffusion_model.a": 1, "diffusion_model.b": 2}) == {"a": 1, "b": 2}
