"""Tiny random Wan2.1-I2V components in the real diffusers layout, and a tiny ``ex4d.ckpt`` in the reference's naming.

Sizes: DiT dim 32 (2 heads × 16), 2 blocks, FFN 64, text dim 32, CLIP hidden 16 (32×32 images, patch 8),
VAE base_dim 8 with the real z_dim 16 and the spec's latent mean/std. Everything is fp32 and seeded.
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

DIM, HEADS, LAYERS, FFN, TEXT_DIM, CLIP_DIM = 32, 2, 2, 64, 32, 16
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
        relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1,
    )).eval()
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=CLIP_DIM, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=16,
    )).eval()
    vae = AutoencoderKLWan(
        base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[False, True, True], latents_mean=LATENTS_MEAN, latents_std=LATENTS_STD,
    ).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=DIM // HEADS, in_channels=36,
        out_channels=16, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=FFN, num_layers=LAYERS, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=CLIP_DIM, added_kv_proj_dim=DIM, rope_max_seq_len=64,
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
