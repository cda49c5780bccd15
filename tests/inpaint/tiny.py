"""Tiny random Wan2.1-I2V components in the real diffusers layout (and the same weights in the original Wan2.1
layout), and a tiny ``ex4d.ckpt`` in the reference's naming.

Sizes: DiT dim 32 (2 heads × 16), 2 blocks, FFN 64, text dim 32, CLIP hidden 160 (2 heads × 80, 32×32 images,
patch 8), VAE base_dim 8 with the real z_dim 16 and the spec's latent mean/std. Everything is fp32 and seeded.

:func:`write_original_wan_dir` writes the original layout with its own inverse mapping (diffusers -> original
names), written from the original modules' structure independently of ``ex4d.inpaint.convert``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from ex4d.inpaint.condition_encoder import CamVidEncoder
from ex4d.inpaint.lora import diffusers_to_reference, lora_target_modules

LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
               3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]

DIM, HEADS, LAYERS, FFN, TEXT_DIM, CLIP_DIM, CLIP_HEADS = 32, 2, 2, 64, 32, 160, 2
WORDS = (
    "4k ultra hd , surround motion realistic tone panoramic shot wide-angle view cinematic quality bright tones "
    "overexposed static blurred details subtitles style works paintings images overall gray worst low jpeg "
    "compression residue ugly incomplete extra fingers poorly drawn hands faces deformed disfigured misshapen "
    "limbs fused still picture messy background three legs many people in the walking backwards a cat"
).split()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_components(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=128, pad_token_id=0, eos_token_id=1,
    )).eval()
    # Wan's ViT-H/14 in miniature: exact GELU, head width 80 (what the original-layout loader assumes)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=CLIP_DIM, intermediate_size=64, num_hidden_layers=2, num_attention_heads=CLIP_HEADS,
        image_size=32, patch_size=8, projection_dim=16, hidden_act="gelu", layer_norm_eps=1e-5,
    )).eval()
    vae = AutoencoderKLWan(
        base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[False, True, True], latents_mean=LATENTS_MEAN, latents_std=LATENTS_STD,
    ).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=DIM // HEADS, in_channels=36,
        out_channels=16, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=FFN, num_layers=LAYERS, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=CLIP_DIM, added_kv_proj_dim=DIM, rope_max_seq_len=1024,
    ).eval()
    # random (not default-initialised) norms/tables so that every parameter matters
    with torch.no_grad():
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, image_encoder=image_encoder, vae=vae,
                transformer=transformer, scheduler=scheduler)


def write_wan_dir(path: Path, seed: int = 0) -> Path:
    """A tiny Wan2.1-I2V pipeline folder as ``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`` lays it out."""
    path = Path(path)
    comps = tiny_components(seed)
    for name in ("text_encoder", "image_encoder", "vae", "transformer", "scheduler", "tokenizer"):
        comps[name].save_pretrained(path / name)
    index = {
        "_class_name": "WanImageToVideoPipeline",
        "_diffusers_version": "0.33.0",
        "image_encoder": ["transformers", "CLIPVisionModel"],
        "image_processor": [None, None],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


def tiny_ex4d_state_dict(rank: int = 4, hidden: int = 8, seed: int = 1, num_layers: int = LAYERS) -> dict:
    """A flat dict with the reference's key names (spec §7.2), random non-zero LoRA B and encoder weights."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    shapes = {"ffn.net.0.proj": (FFN, DIM), "ffn.net.2": (DIM, FFN)}
    for i in range(num_layers):
        for sub in ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"):
            out_f, in_f = shapes.get(sub, (DIM, DIM))
            ref = diffusers_to_reference(f"blocks.{i}.{sub}")
            sd[f"{ref}.lora_A.default.weight"] = torch.randn(rank, in_f, generator=g) * 0.2
            sd[f"{ref}.lora_B.default.weight"] = torch.randn(out_f, rank, generator=g) * 0.2
    enc = CamVidEncoder(16, hidden, DIM)
    for k, v in enc.state_dict().items():
        sd[k] = torch.randn(v.shape, generator=g) * 0.1
    return sd


def write_ex4d_ckpt(path: Path, **kwargs) -> Path:
    path = Path(path)
    torch.save(tiny_ex4d_state_dict(**kwargs), path)
    return path


def tiny_videos(num_frames: int = 9, height: int = 40, width: int = 48, seed: int = 0):
    """(colour, mask) uint8 (T, H, W, 3): a random colour video masked by a moving hole; frame 0 fully seen."""
    g = torch.Generator().manual_seed(seed)
    color = torch.randint(0, 256, (num_frames, height, width, 3), generator=g, dtype=torch.uint8)
    mask = torch.full((num_frames, height, width, 3), 255, dtype=torch.uint8)
    for t in range(1, num_frames):
        x0 = (3 * t) % (width // 2)
        mask[t, height // 4: 3 * height // 4, x0: x0 + width // 3] = 0
    color = color * (mask > 127)
    return color.numpy(), mask.numpy()


def generate_cli_args(tmp_path, wan_dir, ex4d_ckpt, *extra) -> list[str]:
    """``ex4d generate`` arguments on a 5-frame 32×32 tiny render written under ``tmp_path`` (1 step, CPU);
    the caller adds ``--output-video``."""
    from ex4d.io.video import save_video

    color, mask = tiny_videos(5, 32, 32)
    save_video(tmp_path / "color.mp4", color)
    save_video(tmp_path / "mask.mp4", mask)
    return ["generate", "--color-video", str(tmp_path / "color.mp4"), "--mask-video", str(tmp_path / "mask.mp4"),
            "--height", "32", "--width", "32", "--num-frames", "5", "--steps", "1", "--device", "cpu",
            "--wan-dir", str(wan_dir), "--ex4d-ckpt", str(ex4d_ckpt), *extra]


# ---------------------------------------------------------------------------------------------- original layout
_DIT_TOP_INV = {
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.image_embedder.norm1": "img_emb.proj.0",
    "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
    "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
    "condition_embedder.image_embedder.norm2": "img_emb.proj.4",
    "proj_out": "head.head",
    "patch_embedding": "patch_embedding",
}
_DIT_BLOCK_INV = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v", "attn1.to_out.0": "self_attn.o",
    "attn1.norm_q": "self_attn.norm_q", "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o",
    "attn2.norm_q": "cross_attn.norm_q", "attn2.norm_k": "cross_attn.norm_k",
    "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img", "attn2.norm_added_k": "cross_attn.norm_k_img",
    "norm2": "norm3", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}


def dit_to_original(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k == "scale_shift_table":
            out["head.modulation"] = v
            continue
        parts = k.split(".")
        if parts[0] == "blocks":
            i, rest = parts[1], ".".join(parts[2:])
            if rest == "scale_shift_table":
                out[f"blocks.{i}.modulation"] = v
                continue
            module, p = rest.rsplit(".", 1)
            out[f"blocks.{i}.{_DIT_BLOCK_INV[module]}.{p}"] = v
        else:
            module, p = k.rsplit(".", 1)
            out[f"{_DIT_TOP_INV[module]}.{p}"] = v
    return out


_RES_INV = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
            "conv2": "residual.6", "conv_shortcut": "shortcut"}


def _res_inv(sub: str) -> str:
    for a, b in _RES_INV.items():
        if sub == a or sub.startswith(a + "."):
            return b + sub[len(a):]
    raise KeyError(sub)


def vae_to_original(vae) -> dict:
    """Flat WanVAE_ names: encoder/decoder.{conv1, downsamples.K / upsamples.K, middle.{0,1,2}, head.{0,2}}."""
    sd = vae.state_dict()
    # decoder: flat index of up_blocks.S.resnets.J and up_blocks.S.upsamplers.0
    flat, k = {}, 0
    for s, blk in enumerate(vae.decoder.up_blocks):
        for j in range(len(blk.resnets)):
            flat[f"{s}.resnets.{j}"] = k
            k += 1
        if blk.upsamplers is not None:
            flat[f"{s}.upsamplers.0"] = k
            k += 1
    out = {}
    for key, v in sd.items():
        part, rest = key.split(".", 1)
        if part in ("quant_conv", "post_quant_conv"):
            out[("conv1." if part == "quant_conv" else "conv2.") + rest] = v
            continue
        if rest.startswith("conv_in."):
            new = "conv1." + rest[len("conv_in."):]
        elif rest.startswith("norm_out."):
            new = "head.0." + rest[len("norm_out."):]
        elif rest.startswith("conv_out."):
            new = "head.2." + rest[len("conv_out."):]
        elif rest.startswith("mid_block."):
            m = rest[len("mid_block."):]
            idx = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}
            for pre, i in idx.items():
                if m.startswith(pre + "."):
                    sub = m[len(pre) + 1:]
                    new = f"middle.{i}." + (sub if pre.startswith("attentions") else _res_inv(sub))
        elif rest.startswith("down_blocks."):
            _, i, sub = rest.split(".", 2)
            new = f"downsamples.{i}." + (sub if sub.startswith(("resample", "time_conv")) else _res_inv(sub))
        elif rest.startswith("up_blocks."):
            _, s, kind, j, sub = rest.split(".", 4)
            i = flat[f"{s}.{kind}.{j}"]
            new = f"upsamples.{i}." + (sub if kind == "upsamplers" else _res_inv(sub))
        else:
            raise KeyError(key)
        out[f"{part}.{new}"] = v
    return out


def t5_to_original(text_encoder) -> dict:
    out = {}
    inv = {"layer.0.layer_norm.weight": "norm1.weight", "layer.0.SelfAttention.q.weight": "attn.q.weight",
           "layer.0.SelfAttention.k.weight": "attn.k.weight", "layer.0.SelfAttention.v.weight": "attn.v.weight",
           "layer.0.SelfAttention.o.weight": "attn.o.weight",
           "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
           "layer.1.layer_norm.weight": "norm2.weight", "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
           "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight", "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight"}
    for k, v in text_encoder.state_dict().items():
        if k == "shared.weight":
            out["token_embedding.weight"] = v
        elif k == "encoder.final_layer_norm.weight":
            out["norm.weight"] = v
        elif k.startswith("encoder.block."):
            _, _, i, rest = k.split(".", 3)
            out[f"blocks.{i}.{inv[rest]}"] = v
    return out


def clip_to_original(image_encoder, seed: int = 0) -> dict:
    """open-clip XLM-RoBERTa CLIP names: ``visual.*`` (fused qkv) plus a (random) text tower and ``log_scale``."""
    sd = {k.removeprefix("vision_model."): v for k, v in image_encoder.state_dict().items()}
    d = image_encoder.config.hidden_size
    out = {
        "visual.patch_embedding.weight": sd["embeddings.patch_embedding.weight"],
        "visual.cls_embedding": sd["embeddings.class_embedding"].reshape(1, 1, d),
        "visual.pos_embedding": sd["embeddings.position_embedding.weight"][None],
        "visual.pre_norm.weight": sd["pre_layrnorm.weight"], "visual.pre_norm.bias": sd["pre_layrnorm.bias"],
        "visual.post_norm.weight": sd["post_layernorm.weight"], "visual.post_norm.bias": sd["post_layernorm.bias"],
    }
    for i in range(image_encoder.config.num_hidden_layers):
        pre, new = f"encoder.layers.{i}.", f"visual.transformer.{i}."
        for p in ("weight", "bias"):
            out[new + f"attn.to_qkv.{p}"] = torch.cat([sd[pre + f"self_attn.{n}_proj.{p}"] for n in "qkv"])
            for a, b in (("layer_norm1", "norm1"), ("self_attn.out_proj", "attn.proj"), ("layer_norm2", "norm2"),
                         ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.2")):
                out[new + f"{b}.{p}"] = sd[pre + f"{a}.{p}"]
    g = torch.Generator().manual_seed(seed)
    out["visual.head"] = torch.randn(d, 16, generator=g)
    out["textual.token_embedding.weight"] = torch.randn(20, 8, generator=g)
    out["textual.head.0.weight"] = torch.randn(12, 8, generator=g)
    out["log_scale"] = torch.tensor(2.6592)
    return out


def write_original_wan_dir(path: Path, seed: int = 0, shards: int = 2) -> Path:
    """The weights of :func:`write_wan_dir` (same seed) as ``Wan-AI/Wan2.1-I2V-14B-480P`` lays them out."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    comps = tiny_components(seed)
    dit = dit_to_original(comps["transformer"].state_dict())
    keys = sorted(dit)
    weight_map = {}
    for n in range(shards):
        name = f"diffusion_pytorch_model-{n + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: dit[k].contiguous() for k in keys[n::shards]}
        save_file(part, str(path / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (path / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=2))
    (path / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "dim": DIM, "eps": 1e-06, "ffn_dim": FFN, "freq_dim": 32, "in_dim": 36,
        "model_type": "i2v", "num_heads": HEADS, "num_layers": LAYERS, "out_dim": 16, "text_len": 512}, indent=2))
    torch.save(vae_to_original(comps["vae"]), path / "Wan2.1_VAE.pth")
    torch.save(t5_to_original(comps["text_encoder"]), path / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(clip_to_original(comps["image_encoder"]), path / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    comps["tokenizer"].save_pretrained(path / "google" / "umt5-xxl")
    return path
