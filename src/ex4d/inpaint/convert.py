"""Original Wan2.1 checkpoints (the files of ``Wan-AI/Wan2.1-I2V-14B-480P``) -> diffusers / transformers models.

Pure state-dict functions: key mapping and model sizes read from the tensors' shapes. File handling is in
:mod:`ex4d.inpaint.original`. Each ``convert_*`` returns ``(config, state_dict)`` where ``config`` holds the
constructor arguments of the target class and ``state_dict`` uses the target's key names (without any
``vision_model.``-style wrapper prefix; see :func:`ex4d.inpaint.original.build_model`).

DiT (``diffusion_pytorch_model*.safetensors``, the original ``WanModel``, same names in DiffSynth), spec §8:

=====================================  ==================================================
original                               diffusers ``WanTransformer3DModel``
=====================================  ==================================================
``patch_embedding``                    ``patch_embedding``
``text_embedding.{0,2}``               ``condition_embedder.text_embedder.linear_{1,2}``
``time_embedding.{0,2}``               ``condition_embedder.time_embedder.linear_{1,2}``
``time_projection.1``                  ``condition_embedder.time_proj``
``img_emb.proj.{0,1,3,4}``             ``condition_embedder.image_embedder.{norm1, ff.net.0.proj, ff.net.2, norm2}``
``blocks.N.self_attn.{q,k,v,o}``       ``blocks.N.attn1.{to_q,to_k,to_v,to_out.0}``
``blocks.N.self_attn.norm_{q,k}``      ``blocks.N.attn1.norm_{q,k}``
``blocks.N.cross_attn.*``              ``blocks.N.attn2.*`` (as self_attn), ``k_img``/``v_img`` -> ``add_k_proj``/``add_v_proj``,
                                       ``norm_k_img`` -> ``norm_added_k``
``blocks.N.norm3`` (affine LN)         ``blocks.N.norm2``
``blocks.N.ffn.{0,2}``                 ``blocks.N.ffn.net.0.proj``, ``blocks.N.ffn.net.2``
``blocks.N.modulation`` (1, 6, dim)    ``blocks.N.scale_shift_table``
``head.head`` / ``head.modulation``    ``proj_out`` / ``scale_shift_table``
=====================================  ==================================================

Sizes: layers = number of ``blocks.N``; dim, in_channels, patch from ``patch_embedding``; ffn from ``ffn.0``;
text/freq/image dims from the embedders; out_channels = rows of ``head.head`` / prod(patch). The head count is not
in any shape (the q/k norms span all heads): it comes from the folder's ``config.json`` (``num_heads``) when given,
else head dim 128 (every Wan2.1 model: 1.3B 1536/12, 14B 5120/40).

VAE (``Wan2.1_VAE.pth``, ``WanVAE_``) -> ``AutoencoderKLWan``: ``encoder.conv1``/``head.{0,2}`` -> ``conv_in``/
``norm_out``/``conv_out``; the flat ``encoder.downsamples.K`` keep their index as ``down_blocks.K``; the flat
``decoder.upsamples.K`` are regrouped into ``up_blocks.S.resnets.J`` / ``up_blocks.S.upsamplers.0`` (stage S ends
at each resample); ``middle.{0,1,2}`` -> ``mid_block.{resnets.0, attentions.0, resnets.1}``; inside a residual block
``residual.{0,2,3,6}`` -> ``norm1, conv1, norm2, conv2`` and ``shortcut`` -> ``conv_shortcut``; ``conv1``/``conv2``
-> ``quant_conv``/``post_quant_conv``. base_dim, z_dim, dim_mult, num_res_blocks and the temporal downsampling
flags are read from the shapes and the presence of ``time_conv``.

umT5 (``models_t5_umt5-xxl-enc-bf16.pth``, ``T5Encoder`` with per-layer position tables) -> ``UMT5EncoderModel``:
``token_embedding`` -> ``shared`` (= ``encoder.embed_tokens``); ``blocks.N.norm1``/``attn.{q,k,v,o}``/
``pos_embedding.embedding`` -> ``encoder.block.N.layer.0.{layer_norm, SelfAttention.{q,k,v,o},
SelfAttention.relative_attention_bias}``; ``norm2``/``ffn.{gate.0, fc1, fc2}`` -> ``layer.1.{layer_norm,
DenseReluDense.{wi_0, wi_1, wo}}`` (gelu(gate)·fc1 = gelu(wi_0)·wi_1); ``norm`` -> ``encoder.final_layer_norm``.
Heads and buckets come from the position table [buckets, heads]; max distance 128 (fixed in Wan's T5).

CLIP (``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``, ``XLMRobertaCLIP``; only ``visual.*`` is used)
-> ``CLIPVisionModel``: ``visual.{patch_embedding, cls_embedding[1,1,D], pos_embedding[1,N,D], pre_norm,
post_norm}`` -> ``embeddings.{patch_embedding, class_embedding[D], position_embedding[N,D]}``, ``pre_layrnorm``,
``post_layernorm``; ``visual.transformer.N.{norm1, attn.to_qkv (split in 3 along rows: q, k, v), attn.proj,
norm2, mlp.0, mlp.2}`` -> ``encoder.layers.N.{layer_norm1, self_attn.{q,k,v}_proj, self_attn.out_proj,
layer_norm2, mlp.fc1, mlp.fc2}``. Activation: exact GELU, LayerNorm eps 1e-5 (as Wan's). The head count is not in
any shape: head width 80 (ViT-H/14, 1280 = 16×80, the encoder every Wan2.1 I2V model uses), else 64.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import torch

from ex4d.errors import InputError

__all__ = [
    "WAN_HEAD_DIM",
    "CLIP_HEAD_DIM",
    "T5_MAX_DISTANCE",
    "VAE_LATENTS_MEAN",
    "VAE_LATENTS_STD",
    "DIT_IGNORED",
    "strip_prefix",
    "dit_key",
    "convert_transformer",
    "convert_vae",
    "convert_t5",
    "convert_clip",
]

#: Head width of every Wan2.1 DiT (used when the folder has no config.json).
WAN_HEAD_DIM = 128
#: Head width of the ViT-H/14 image encoder of Wan2.1 (1280 = 16 heads × 80).
CLIP_HEAD_DIM = 80
#: Maximum relative distance of Wan's umT5 position buckets (not stored in the checkpoint).
T5_MAX_DISTANCE = 128
#: Per-channel latent statistics of the Wan2.1 VAE (spec §6.4; not stored in Wan2.1_VAE.pth).
VAE_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
VAE_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                   3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

_DIT_TOP = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "head.head": "proj_out",
}
_DIT_BLOCK = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
#: Non-weights some exports carry (the RoPE table of the original ``WanModel``): skipped.
DIT_IGNORED = frozenset({"freqs"})
_PARAM = re.compile(r"^(.+)\.(weight|bias)$")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def strip_prefix(sd: Mapping[str, torch.Tensor], prefixes=("model.diffusion_model.", "diffusion_model.", "model.")) -> dict:
    """Drop a wrapper prefix that *every* key carries (ComfyUI/DiffSynth-style exports)."""
    for p in prefixes:
        if sd and all(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items()}
    return dict(sd)


def _shape(sd, key) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in sd[key].shape)
    except KeyError:
        raise InputError(f"checkpoint has no tensor {key!r}") from None


def _layer_indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    idx = sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})
    if idx != list(range(len(idx))):
        raise InputError(f"layer numbers are not contiguous: {idx[:8]}…")
    return idx


def _unknown(source: str, keys: list[str]) -> InputError:
    return InputError(f"{source}: {len(keys)} unexpected tensors, e.g. {sorted(keys)[:3]}")


# ---------------------------------------------------------------------------------------------- DiT
def dit_key(key: str) -> str | None:
    """Original/DiffSynth DiT name -> diffusers name (``None`` = not a DiT tensor)."""
    if key == "head.modulation":
        return "scale_shift_table"
    b = _BLOCK.match(key)
    if b:
        i, rest = b.groups()
        if rest == "modulation":
            return f"blocks.{i}.scale_shift_table"
        p = _PARAM.match(rest)
        if p and p.group(1) in _DIT_BLOCK:
            return f"blocks.{i}.{_DIT_BLOCK[p.group(1)]}.{p.group(2)}"
        return None
    p = _PARAM.match(key)
    if p and p.group(1) in _DIT_TOP:
        return f"{_DIT_TOP[p.group(1)]}.{p.group(2)}"
    return None


def transformer_config_from_shapes(shapes: Mapping[str, tuple], num_heads: int | None = None,
                                   eps: float | None = None) -> dict:
    """``WanTransformer3DModel`` arguments from original-name tensor shapes (see module doc)."""
    pe = shapes.get("patch_embedding.weight")
    if pe is None or len(pe) != 5:
        raise InputError("not a Wan DiT checkpoint: no 5-D patch_embedding.weight")
    dim, in_channels, patch = int(pe[0]), int(pe[1]), tuple(int(p) for p in pe[2:])
    layers = _layer_indices(shapes, r"^blocks\.(\d+)\.")
    if not layers:
        raise InputError("not a Wan DiT checkpoint: no blocks.N tensors")
    heads = int(num_heads) if num_heads else dim // WAN_HEAD_DIM
    if heads < 1 or dim % heads:
        raise InputError(f"DiT width {dim} is not divisible into {heads} heads (give num_heads in config.json)")
    head = shapes.get("head.head.weight")
    if head is None:
        raise InputError("DiT checkpoint has no head.head.weight")
    if head[0] % math.prod(patch):
        raise InputError(f"head.head.weight rows {head[0]} are not a multiple of the patch volume {math.prod(patch)}")
    img = shapes.get("img_emb.proj.0.weight")
    kimg = shapes.get("blocks.0.cross_attn.k_img.weight")

    def need(key):
        if key not in shapes:
            raise InputError(f"DiT checkpoint has no {key}")
        return shapes[key]

    return dict(
        patch_size=patch,
        num_attention_heads=heads,
        attention_head_dim=dim // heads,
        in_channels=in_channels,
        out_channels=int(head[0]) // math.prod(patch),
        text_dim=int(need("text_embedding.0.weight")[1]),
        freq_dim=int(need("time_embedding.0.weight")[1]),
        ffn_dim=int(need("blocks.0.ffn.0.weight")[0]),
        num_layers=len(layers),
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
        qk_norm="rms_norm_across_heads" if "blocks.0.self_attn.norm_q.weight" in shapes else None,
        eps=1e-6 if eps is None else float(eps),
        image_dim=None if img is None else int(img[0]),
        added_kv_proj_dim=None if kimg is None else int(kimg[1]),
        rope_max_seq_len=1024,
    )


def convert_transformer(sd: Mapping[str, torch.Tensor], num_heads: int | None = None, eps: float | None = None,
                        source: str = "DiT") -> tuple[dict, dict]:
    """``(WanTransformer3DModel config, diffusers state dict)`` of an original-layout DiT state dict."""
    sd = strip_prefix(sd)
    out, unknown = {}, []
    for k, v in sd.items():
        new = dit_key(k)
        if new is None:
            if k not in DIT_IGNORED:
                unknown.append(k)
        else:
            out[new] = v
    if unknown:
        raise _unknown(source, unknown)
    shapes = {k: tuple(v.shape) for k, v in sd.items() if k not in DIT_IGNORED}
    config = transformer_config_from_shapes(shapes, num_heads, eps)
    return config, out


# ---------------------------------------------------------------------------------------------- VAE
_RES = {"residual.0.gamma": "norm1.gamma", "residual.2.weight": "conv1.weight", "residual.2.bias": "conv1.bias",
        "residual.3.gamma": "norm2.gamma", "residual.6.weight": "conv2.weight", "residual.6.bias": "conv2.bias",
        "shortcut.weight": "conv_shortcut.weight", "shortcut.bias": "conv_shortcut.bias"}
_ATTN = {k: k for k in ("norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight", "proj.bias")}
_RESAMPLE = {k: k for k in ("resample.1.weight", "resample.1.bias", "time_conv.weight", "time_conv.bias")}


def _vae_kinds(sd, prefix: str, used: set) -> list[tuple[int, str, dict]]:
    """``[(index, kind, {diffusers subkey: tensor})]`` of the flat ``prefix.K.*`` sequence; kind res | attn | resample."""
    groups: dict[int, dict] = {}
    rx = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.+)$")
    for k, v in sd.items():
        m = rx.match(k)
        if m:
            groups.setdefault(int(m.group(1)), {})[m.group(2)] = v
            used.add(k)
    out = []
    for i in sorted(groups):
        sub = groups[i]
        if "residual.0.gamma" in sub:
            kind, table = "res", _RES
        elif "to_qkv.weight" in sub:
            kind, table = "attn", _ATTN
        elif "resample.1.weight" in sub:
            kind, table = "resample", _RESAMPLE
        else:
            raise InputError(f"VAE: cannot tell what {prefix}.{i} is (keys {sorted(sub)[:3]})")
        bad = [s for s in sub if s not in table]
        if bad:
            raise InputError(f"VAE: unexpected tensors in {prefix}.{i}: {bad[:3]}")
        out.append((i, kind, {table[s]: v for s, v in sub.items()}))
    if [i for i, _, _ in out] != list(range(len(out))):
        raise InputError(f"VAE: {prefix} indices are not contiguous")
    return out


def _mid(sd, prefix: str, target: str, out: dict, used: set) -> None:
    for j, (kind, tgt, table) in enumerate((("res", "resnets.0", _RES), ("attn", "attentions.0", _ATTN),
                                            ("res", "resnets.1", _RES))):
        for s, t in table.items():
            k = f"{prefix}.middle.{j}.{s}"
            if k in sd:
                out[f"{target}.mid_block.{tgt}.{t}"] = sd[k]
                used.add(k)


def convert_vae(sd: Mapping[str, torch.Tensor], source: str = "VAE") -> tuple[dict, dict]:
    """``(AutoencoderKLWan config, diffusers state dict)`` of ``Wan2.1_VAE.pth``'s state dict."""
    sd = strip_prefix(sd)
    if "encoder.conv1.weight" not in sd or "conv2.weight" not in sd:
        raise InputError(f"{source}: not a Wan VAE checkpoint (no encoder.conv1.weight / conv2.weight)")
    base_dim = int(sd["encoder.conv1.weight"].shape[0])
    z_dim = int(sd["conv2.weight"].shape[0])
    out, used = {}, set()

    # encoder: same flat order
    down = _vae_kinds(sd, "encoder.downsamples", used)
    if any(kind == "attn" for _, kind, _ in down):
        raise InputError(f"{source}: attention blocks inside the encoder stages are not supported (Wan2.1 has none)")
    stages, cur, temporal = [], [], []
    for i, kind, sub in down:
        for s, t in sub.items():
            out[f"encoder.down_blocks.{i}.{s}"] = t
        if kind == "res":
            cur.append(int(sub["conv1.weight"].shape[0]))
        else:
            stages.append(cur)
            cur = []
            temporal.append("time_conv.weight" in sub)
    stages.append(cur)
    if not all(stages) or len({len(s) for s in stages}) != 1:
        raise InputError(f"{source}: encoder stages have unequal numbers of residual blocks {[len(s) for s in stages]}")
    num_res_blocks = len(stages[0])
    if any(s[-1] % base_dim for s in stages):
        raise InputError(f"{source}: encoder widths {[s[-1] for s in stages]} are not multiples of {base_dim}")
    dim_mult = [s[-1] // base_dim for s in stages]

    # decoder: regroup the flat sequence into stages
    up = _vae_kinds(sd, "decoder.upsamples", used)
    stage, j = 0, 0
    for i, kind, sub in up:
        if kind == "attn":
            raise InputError(f"{source}: attention blocks inside the decoder stages are not supported (Wan2.1 has none)")
        target = f"decoder.up_blocks.{stage}.resnets.{j}" if kind == "res" else f"decoder.up_blocks.{stage}.upsamplers.0"
        for s, t in sub.items():
            out[f"{target}.{s}"] = t
        if kind == "res":
            j += 1
        else:
            stage, j = stage + 1, 0
    for part in ("encoder", "decoder"):
        _mid(sd, part, part, out, used)
        for s, t in (("conv1.weight", "conv_in.weight"), ("conv1.bias", "conv_in.bias"), ("head.0.gamma", "norm_out.gamma"),
                     ("head.2.weight", "conv_out.weight"), ("head.2.bias", "conv_out.bias")):
            k = f"{part}.{s}"
            if k in sd:
                out[f"{part}.{t}"] = sd[k]
                used.add(k)
    for s, t in (("conv1", "quant_conv"), ("conv2", "post_quant_conv")):
        for p in ("weight", "bias"):
            if f"{s}.{p}" in sd:
                out[f"{t}.{p}"] = sd[f"{s}.{p}"]
                used.add(f"{s}.{p}")
    unknown = [k for k in sd if k not in used]
    if unknown:
        raise _unknown(source, unknown)
    config = dict(base_dim=base_dim, z_dim=z_dim, dim_mult=dim_mult, num_res_blocks=num_res_blocks,
                  attn_scales=[], temperal_downsample=temporal)
    dec_out = sd.get("decoder.head.0.gamma")
    if dec_out is not None and int(dec_out.shape[0]) != base_dim * dim_mult[0]:
        config["decoder_base_dim"] = int(dec_out.shape[0]) // dim_mult[0]
    return config, out


# ---------------------------------------------------------------------------------------------- umT5
_T5_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def convert_t5(sd: Mapping[str, torch.Tensor], source: str = "umT5") -> tuple[dict, dict]:
    """``(UMT5Config kwargs, UMT5EncoderModel state dict)`` of ``models_t5_umt5-xxl-enc-bf16.pth``."""
    sd = strip_prefix(sd)
    if "token_embedding.weight" not in sd:
        raise InputError(f"{source}: not a Wan T5 encoder checkpoint (no token_embedding.weight)")
    if "pos_embedding.embedding.weight" in sd:
        raise InputError(f"{source}: a T5 with one shared position table is not supported (umT5 has one per layer)")
    layers = _layer_indices(sd, r"^blocks\.(\d+)\.")
    if not layers:
        raise InputError(f"{source}: no blocks.N tensors")
    emb = sd["token_embedding.weight"]
    out = {"shared.weight": emb, "encoder.embed_tokens.weight": emb}
    used = {"token_embedding.weight"}
    for k, v in sd.items():
        m = _BLOCK.match(k)
        if m and m.group(2) in _T5_BLOCK:
            out[f"encoder.block.{m.group(1)}.{_T5_BLOCK[m.group(2)]}"] = v
            used.add(k)
    if "norm.weight" in sd:
        out["encoder.final_layer_norm.weight"] = sd["norm.weight"]
        used.add("norm.weight")
    unknown = [k for k in sd if k not in used]
    if unknown:
        raise _unknown(source, unknown)
    buckets, heads = _shape(sd, "blocks.0.pos_embedding.embedding.weight")
    q = _shape(sd, "blocks.0.attn.q.weight")
    if q[0] % heads:
        raise InputError(f"{source}: attention width {q[0]} is not divisible by {heads} heads")
    config = dict(
        vocab_size=int(emb.shape[0]), d_model=int(emb.shape[1]), d_kv=q[0] // heads,
        d_ff=_shape(sd, "blocks.0.ffn.fc1.weight")[0], num_layers=len(layers), num_decoder_layers=len(layers),
        num_heads=heads, relative_attention_num_buckets=buckets, relative_attention_max_distance=T5_MAX_DISTANCE,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    )
    return config, out


# ---------------------------------------------------------------------------------------------- CLIP
_CLIP_LAYER = {
    "norm1": "layer_norm1", "attn.proj": "self_attn.out_proj", "norm2": "layer_norm2",
    "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2",
}


def convert_clip(sd: Mapping[str, torch.Tensor], source: str = "CLIP") -> tuple[dict, dict]:
    """``(CLIPVisionConfig kwargs, CLIPVisionModel state dict without 'vision_model.')`` of the open-clip file.

    The text tower (``textual.*``), ``log_scale`` and the projection ``visual.head`` are not used by Wan and dropped.
    """
    sd = strip_prefix(sd)
    vis = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    if "patch_embedding.weight" not in vis:
        raise InputError(f"{source}: not an open-clip checkpoint (no visual.patch_embedding.weight)")
    layers = _layer_indices(vis, r"^transformer\.(\d+)\.")
    hidden, _, patch, _ = (int(s) for s in vis["patch_embedding.weight"].shape)
    out, used = {}, {"head"}
    out["embeddings.patch_embedding.weight"] = vis["patch_embedding.weight"]
    out["embeddings.class_embedding"] = vis["cls_embedding"].reshape(hidden)
    pos = vis["pos_embedding"]
    out["embeddings.position_embedding.weight"] = pos.reshape(pos.shape[-2], hidden)
    used |= {"patch_embedding.weight", "cls_embedding", "pos_embedding"}
    for a, b in (("pre_norm", "pre_layrnorm"), ("post_norm", "post_layernorm")):
        for p in ("weight", "bias"):
            if f"{a}.{p}" in vis:
                out[f"{b}.{p}"] = vis[f"{a}.{p}"]
                used.add(f"{a}.{p}")
    for i in layers:
        pre = f"transformer.{i}."
        for p in ("weight", "bias"):
            qkv = vis.get(f"{pre}attn.to_qkv.{p}")
            if qkv is not None:
                if qkv.shape[0] != 3 * hidden:
                    raise InputError(f"{source}: {pre}attn.to_qkv.{p} has {qkv.shape[0]} rows, expected {3 * hidden}")
                for name, part in zip(("q_proj", "k_proj", "v_proj"), qkv.chunk(3, dim=0)):
                    out[f"encoder.layers.{i}.self_attn.{name}.{p}"] = part
                used.add(f"{pre}attn.to_qkv.{p}")
            for a, b in _CLIP_LAYER.items():
                k = f"{pre}{a}.{p}"
                if k in vis:
                    out[f"encoder.layers.{i}.{b}.{p}"] = vis[k]
                    used.add(k)
    unknown = [f"visual.{k}" for k in vis if k not in used]
    unknown += [k for k in sd if not (k.startswith("visual.") or k.startswith("textual.") or k == "log_scale")]
    if unknown:
        raise _unknown(source, unknown)
    head_dim = CLIP_HEAD_DIM if hidden % CLIP_HEAD_DIM == 0 else 64
    if hidden % head_dim:
        raise InputError(f"{source}: vision width {hidden} is divisible by neither 80 nor 64 (unknown head count)")
    n_pos = int(pos.shape[-2]) - 1
    grid = math.isqrt(n_pos)
    if grid * grid != n_pos:
        raise InputError(f"{source}: {n_pos} position embeddings do not form a square grid")
    mlp = _shape(vis, "transformer.0.mlp.0.weight")[0]
    config = dict(
        hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=len(layers), num_attention_heads=hidden // head_dim,
        image_size=grid * patch, patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-5,
        projection_dim=int(vis["head"].shape[1]) if "head" in vis and vis["head"].ndim == 2 else 512,
    )
    return config, out
