"""Names and shapes of the tensors in the files the Wan2.1 / EX-4D authors published, at full size.

Written from the module structure of the original Wan2.1 code as the EX-4D reference re-states it
(``diffsynth/models/wan_video_{dit,vae,text_encoder,image_encoder}.py``, ``diffsynth/models/camera.py``, the
peft ``LoraConfig`` of ``generate.py``) — parameter by parameter, *not* from ``ex4d.inpaint.convert``'s key maps,
so that the reference's identification hash (:func:`reference_keys_hash`) independently checks both.

Every function returns ``{name: shape}``; :func:`on_meta` turns that into a state dict of ``meta`` tensors (no
memory). Defaults are the released sizes: Wan2.1-I2V-14B DiT, umT5-XXL encoder, open-clip XLM-RoBERTa-large
ViT-H/14, the Wan2.1 VAE, EX-4D's rank-16 LoRA + ``CamVidEncoder(16, 1024, 5120)``.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import torch

Shapes = dict[str, tuple[int, ...]]


def reference_keys_hash(state_dict: Mapping) -> str:
    """DiffSynth's ``hash_state_dict_keys(sd, with_shape=True)``, re-stated.

    For every tensor the two strings ``"name:d0_d1_…"`` and ``"name"``; for a nested dict ``"name|" + the same string
    of the inner dict``; all sorted (plain string order), joined with ``","``, MD5 of the UTF-8 bytes.
    """
    return hashlib.md5(_keys_string(state_dict).encode("utf-8")).hexdigest()


def _keys_string(state_dict: Mapping) -> str:
    parts = []
    for name, value in state_dict.items():
        if not isinstance(name, str):
            continue
        if isinstance(value, torch.Tensor):
            parts.append(f"{name}:{'_'.join(str(int(s)) for s in value.shape)}")
            parts.append(name)
        elif isinstance(value, Mapping):
            parts.append(f"{name}|{_keys_string(value)}")
    return ",".join(sorted(parts))


def on_meta(shapes: Mapping[str, tuple[int, ...]], dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """``{name: empty meta tensor of that shape}`` (hashing and renaming need only names and shapes)."""
    return {k: torch.empty(s, dtype=dtype, device="meta") for k, s in shapes.items()}


def _linear(shapes: Shapes, name: str, n_in: int, n_out: int, bias: bool = True) -> None:
    shapes[f"{name}.weight"] = (n_out, n_in)
    if bias:
        shapes[f"{name}.bias"] = (n_out,)


def _layer_norm(shapes: Shapes, name: str, dim: int) -> None:
    shapes[f"{name}.weight"] = (dim,)
    shapes[f"{name}.bias"] = (dim,)


# ---------------------------------------------------------------------------------------------- DiT
def wan_dit(dim=5120, ffn_dim=13824, num_layers=40, in_dim=36, out_dim=16, text_dim=4096, freq_dim=256,
            image_dim=1280, patch=(1, 2, 2)) -> Shapes:
    """``WanModel(model_type='i2v', qk_norm=True, cross_attn_norm=True)``: all shards of
    ``diffusion_pytorch_model-0000N-of-00007.safetensors`` together. Non-affine LayerNorms (``blocks.N.norm1/2``,
    ``head.norm``) have no tensors; the RoPE table ``freqs`` is a plain attribute, not in the state dict."""
    s: Shapes = {}
    s["patch_embedding.weight"] = (dim, in_dim, *patch)
    s["patch_embedding.bias"] = (dim,)
    _linear(s, "text_embedding.0", text_dim, dim)  # Linear, GELU(tanh), Linear
    _linear(s, "text_embedding.2", dim, dim)
    _linear(s, "time_embedding.0", freq_dim, dim)  # Linear, SiLU, Linear
    _linear(s, "time_embedding.2", dim, dim)
    _linear(s, "time_projection.1", dim, 6 * dim)  # SiLU, Linear
    # MLPProj: LayerNorm, Linear, GELU, Linear, LayerNorm
    _layer_norm(s, "img_emb.proj.0", image_dim)
    _linear(s, "img_emb.proj.1", image_dim, image_dim)
    _linear(s, "img_emb.proj.3", image_dim, dim)
    _layer_norm(s, "img_emb.proj.4", dim)
    for i in range(num_layers):
        b = f"blocks.{i}"
        for attn in ("self_attn", "cross_attn"):
            for p in "qkvo":
                _linear(s, f"{b}.{attn}.{p}", dim, dim)
            s[f"{b}.{attn}.norm_q.weight"] = (dim,)  # WanRMSNorm over all heads
            s[f"{b}.{attn}.norm_k.weight"] = (dim,)
        _linear(s, f"{b}.cross_attn.k_img", dim, dim)  # I2V cross-attention: image keys/values
        _linear(s, f"{b}.cross_attn.v_img", dim, dim)
        s[f"{b}.cross_attn.norm_k_img.weight"] = (dim,)
        _layer_norm(s, f"{b}.norm3", dim)  # affine because cross_attn_norm=True
        _linear(s, f"{b}.ffn.0", dim, ffn_dim)  # Linear, GELU(tanh), Linear
        _linear(s, f"{b}.ffn.2", ffn_dim, dim)
        s[f"{b}.modulation"] = (1, 6, dim)
    _linear(s, "head.head", dim, out_dim * patch[0] * patch[1] * patch[2])
    s["head.modulation"] = (1, 2, dim)
    return s


# ---------------------------------------------------------------------------------------------- umT5
def umt5_encoder(vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64, num_layers=24,
                 num_buckets=32) -> Shapes:
    """``T5Encoder`` of ``models_t5_umt5-xxl-enc-bf16.pth`` (shared_pos=False: one position table per block;
    bias-free linears; T5LayerNorm has only a weight)."""
    s: Shapes = {"token_embedding.weight": (vocab, dim)}
    for i in range(num_layers):
        b = f"blocks.{i}"
        s[f"{b}.norm1.weight"] = (dim,)
        for p in "qkv":
            _linear(s, f"{b}.attn.{p}", dim, dim_attn, bias=False)
        _linear(s, f"{b}.attn.o", dim_attn, dim, bias=False)
        s[f"{b}.norm2.weight"] = (dim,)
        _linear(s, f"{b}.ffn.gate.0", dim, dim_ffn, bias=False)  # Sequential(Linear, GELU)
        _linear(s, f"{b}.ffn.fc1", dim, dim_ffn, bias=False)
        _linear(s, f"{b}.ffn.fc2", dim_ffn, dim, bias=False)
        s[f"{b}.pos_embedding.embedding.weight"] = (num_buckets, num_heads)
    s["norm.weight"] = (dim,)
    return s


# ---------------------------------------------------------------------------------------------- CLIP
def xlm_roberta_clip(image_size=224, patch=14, vision_dim=1280, vision_layers=32, mlp_ratio=4, embed_dim=1024,
                     vocab=250002, max_text_len=514, type_size=1, text_dim=1024, text_layers=24) -> Shapes:
    """``XLMRobertaCLIP`` (open-clip ``xlm-roberta-large-vit-huge-14``) of
    ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``: the vision tower (pool 'token', pre_norm → bias-free
    patch conv, fused qkv), the XLM-RoBERTa text tower with its 2-layer head, and the logit scale."""
    s: Shapes = {}
    v = "visual"
    s[f"{v}.patch_embedding.weight"] = (vision_dim, 3, patch, patch)
    s[f"{v}.cls_embedding"] = (1, 1, vision_dim)
    s[f"{v}.pos_embedding"] = (1, (image_size // patch) ** 2 + 1, vision_dim)
    _layer_norm(s, f"{v}.pre_norm", vision_dim)
    mlp = vision_dim * mlp_ratio
    for i in range(vision_layers):
        b = f"{v}.transformer.{i}"
        _layer_norm(s, f"{b}.norm1", vision_dim)
        _linear(s, f"{b}.attn.to_qkv", vision_dim, 3 * vision_dim)
        _linear(s, f"{b}.attn.proj", vision_dim, vision_dim)
        _layer_norm(s, f"{b}.norm2", vision_dim)
        _linear(s, f"{b}.mlp.0", vision_dim, mlp)  # Linear, GELU, Linear, Dropout
        _linear(s, f"{b}.mlp.2", mlp, vision_dim)
    _layer_norm(s, f"{v}.post_norm", vision_dim)
    s[f"{v}.head"] = (vision_dim, embed_dim)  # a bare Parameter for pool 'token'
    t = "textual"
    s[f"{t}.token_embedding.weight"] = (vocab, text_dim)
    s[f"{t}.type_embedding.weight"] = (type_size, text_dim)
    s[f"{t}.pos_embedding.weight"] = (max_text_len, text_dim)
    for i in range(text_layers):
        b = f"{t}.blocks.{i}"
        for p in "qkvo":
            _linear(s, f"{b}.attn.{p}", text_dim, text_dim)
        _layer_norm(s, f"{b}.norm1", text_dim)
        _linear(s, f"{b}.ffn.0", text_dim, 4 * text_dim)  # Linear, GELU, Linear, Dropout
        _linear(s, f"{b}.ffn.2", 4 * text_dim, text_dim)
        _layer_norm(s, f"{b}.norm2", text_dim)
    _layer_norm(s, f"{t}.norm", text_dim)
    mid = (text_dim + embed_dim) // 2
    _linear(s, f"{t}.head.0", text_dim, mid, bias=False)  # Linear, GELU, Linear (no biases)
    _linear(s, f"{t}.head.2", mid, embed_dim, bias=False)
    s["log_scale"] = ()
    return s


# ---------------------------------------------------------------------------------------------- VAE
def _causal_conv(s: Shapes, name: str, n_in: int, n_out: int, k: tuple[int, int, int]) -> None:
    s[f"{name}.weight"] = (n_out, n_in, *k)
    s[f"{name}.bias"] = (n_out,)


def _vae_residual(s: Shapes, name: str, n_in: int, n_out: int) -> None:
    # residual = RMS_norm, SiLU, CausalConv3d 3³, RMS_norm, SiLU, Dropout, CausalConv3d 3³;
    # shortcut = CausalConv3d 1³ when the widths differ
    s[f"{name}.residual.0.gamma"] = (n_in, 1, 1, 1)
    _causal_conv(s, f"{name}.residual.2", n_in, n_out, (3, 3, 3))
    s[f"{name}.residual.3.gamma"] = (n_out, 1, 1, 1)
    _causal_conv(s, f"{name}.residual.6", n_out, n_out, (3, 3, 3))
    if n_in != n_out:
        _causal_conv(s, f"{name}.shortcut", n_in, n_out, (1, 1, 1))


def _vae_attention(s: Shapes, name: str, dim: int) -> None:
    s[f"{name}.norm.gamma"] = (dim, 1, 1)  # RMS_norm over images
    s[f"{name}.to_qkv.weight"] = (3 * dim, dim, 1, 1)
    s[f"{name}.to_qkv.bias"] = (3 * dim,)
    s[f"{name}.proj.weight"] = (dim, dim, 1, 1)
    s[f"{name}.proj.bias"] = (dim,)


def _vae_resample(s: Shapes, name: str, dim: int, mode: str) -> None:
    # up: Sequential(Upsample, Conv2d(dim → dim/2, 3)); down: Sequential(ZeroPad2d, Conv2d(dim → dim, 3, stride 2))
    out = dim // 2 if mode.startswith("up") else dim
    s[f"{name}.resample.1.weight"] = (out, dim, 3, 3)
    s[f"{name}.resample.1.bias"] = (out,)
    if mode == "upsample3d":
        _causal_conv(s, f"{name}.time_conv", dim, 2 * dim, (3, 1, 1))
    elif mode == "downsample3d":
        _causal_conv(s, f"{name}.time_conv", dim, dim, (3, 1, 1))


def wan_vae(dim=96, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2, temporal_down=(False, True, True)) -> Shapes:
    """``WanVAE_`` of ``Wan2.1_VAE.pth``: flat ``encoder.downsamples.K`` / ``decoder.upsamples.K`` sequences
    (no attention inside the stages: attn_scales=[]), ``middle`` = residual, attention, residual."""
    s: Shapes = {}
    # encoder
    dims = [dim * u for u in (1, *dim_mult)]
    _causal_conv(s, "encoder.conv1", 3, dims[0], (3, 3, 3))
    k = 0
    for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(num_res_blocks):
            _vae_residual(s, f"encoder.downsamples.{k}", n_in, n_out)
            n_in, k = n_out, k + 1
        if i != len(dim_mult) - 1:
            _vae_resample(s, f"encoder.downsamples.{k}", n_out, "downsample3d" if temporal_down[i] else "downsample2d")
            k += 1
    top = dims[-1]
    _vae_residual(s, "encoder.middle.0", top, top)
    _vae_attention(s, "encoder.middle.1", top)
    _vae_residual(s, "encoder.middle.2", top, top)
    s["encoder.head.0.gamma"] = (top, 1, 1, 1)
    _causal_conv(s, "encoder.head.2", top, 2 * z_dim, (3, 3, 3))  # mean and log-variance
    _causal_conv(s, "conv1", 2 * z_dim, 2 * z_dim, (1, 1, 1))
    _causal_conv(s, "conv2", z_dim, z_dim, (1, 1, 1))
    # decoder: widths reversed; after each 2-D/3-D upsample (which halves the width) the next stage starts at half
    temporal_up = tuple(reversed(temporal_down))
    dims = [dim * u for u in (dim_mult[-1], *reversed(dim_mult))]
    _causal_conv(s, "decoder.conv1", z_dim, dims[0], (3, 3, 3))
    _vae_residual(s, "decoder.middle.0", dims[0], dims[0])
    _vae_attention(s, "decoder.middle.1", dims[0])
    _vae_residual(s, "decoder.middle.2", dims[0], dims[0])
    k = 0
    for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
        if i in (1, 2, 3):
            n_in //= 2
        for _ in range(num_res_blocks + 1):
            _vae_residual(s, f"decoder.upsamples.{k}", n_in, n_out)
            n_in, k = n_out, k + 1
        if i != len(dim_mult) - 1:
            _vae_resample(s, f"decoder.upsamples.{k}", n_out, "upsample3d" if temporal_up[i] else "upsample2d")
            k += 1
    s["decoder.head.0.gamma"] = (dims[-1], 1, 1, 1)
    _causal_conv(s, "decoder.head.2", dims[-1], 3, (3, 3, 3))
    return s


# ---------------------------------------------------------------------------------------------- ex4d.ckpt
def ex4d_ckpt(dim=5120, ffn_dim=13824, num_layers=40, rank=16, z_dim=16, hidden=1024, patch=(1, 2, 2)) -> Shapes:
    """EX-4D's trainable weights as ``generate.py`` builds them: peft ``LoraConfig(r=16, target_modules=[q, k, v, o,
    ffn.0, ffn.2])`` injected into ``WanModel`` (suffix match: ``self_attn``/``cross_attn`` ``q k v o`` and the two FFN
    linears of every block — ``k_img``/``v_img`` do not end in ``.k``/``.v``), adapter "default", plus
    ``CamVidEncoder(16, 1024, 5120)`` (3 point-wise Conv3d and a patch Conv3d)."""
    s: Shapes = {}
    sizes = {**{f"{a}.{p}": (dim, dim) for a in ("self_attn", "cross_attn") for p in "qkvo"},
             "ffn.0": (dim, ffn_dim), "ffn.2": (ffn_dim, dim)}
    for i in range(num_layers):
        for module, (n_in, n_out) in sizes.items():
            s[f"blocks.{i}.{module}.lora_A.default.weight"] = (rank, n_in)
            s[f"blocks.{i}.{module}.lora_B.default.weight"] = (n_out, rank)
    _causal_conv(s, "latent_encoder.0", 2 * z_dim, hidden, (1, 1, 1))
    _causal_conv(s, "latent_encoder.2", hidden, hidden, (1, 1, 1))
    _causal_conv(s, "latent_encoder.4", hidden, hidden, (1, 1, 1))
    _causal_conv(s, "latent_patch_embedding", hidden, dim, patch)
    return s
