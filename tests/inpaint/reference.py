"""What the reference (EX-4D ``generate.py`` + its DiffSynth ``WanVideoPipeline``) computes, re-stated stage by stage.

Written from a reading of the reference's code, independently of ``ex4d.inpaint`` and of diffusers' models: weights
are read straight from the *official* files (``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth``,
``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``, the DiT shards + index, ``ex4d.ckpt``) by their official
names (the DiT's are renamed with the test's own table, tiny.py); every network is plain torch here.

"The reference" here is its program read in float32: every explicit bf16 cast and bf16 autocast of
``generate.py`` / ``wan_video.py`` is taken as float32 (the explicit ``.to(bfloat16)`` of the conditioning video
is a listed difference, docs/conventions.md). Stages, as :class:`ReferenceRun` holds them:

1. decoded inputs: ``cv2.VideoCapture`` frame by frame, ``cv2.resize`` (INTER_LINEAR) of the BGR frame, RGB; mask
   frames eroded with ``cv2.erode(np.ones((k, k)))`` (k drawn per frame; the reference's draw is unseeded, here
   ``random.Random(seed).randint(2, 8)`` as ex4d documents, or a fixed k), binarised ``m/255 > 0.5``;
   v = (colour/255·m)·2 − 1, m′ = m·2 − 1.
2. frame 0: ``to_pil_image(v₀·0.5 + 0.5)`` truncates (``mul(255).byte()``), read back as
   ``float32(img)·(2/255) − 1``.
3. CLIP tokens: bicubic squash to the CLIP size, ·0.5 + 0.5, CLIP mean/std, the ViT without its last block.
   The head count is not in the file: 80-wide heads as the reference's ViT-H/14 (16 × 80 = 1280).
4. y: 4 mask channels (1 on latent frame 0) + VAE latent of (frame 0, zeros), latent = (μ − mean)·(1/std).
5. ray latent: CamVidEncoder(VAE(v), VAE(2·m′ − 1)).
6. text: umT5 of the cleaned prompt, padded to 512 tokens with the tokenizer, cut to the true length; the DiT pads
   it back with zeros before its text embedding.
7. noise: ``randn((1, 16, F, H/8, W/8))`` from a CPU generator seeded with ``seed``, float32.
8. sigmas: ``linspace(1, 0, N+1)[:N]`` shifted by 5, t = 1000σ.
9. per step: DiT(x ⊕ y, t, text, CLIP, ray) for both prompts, v = v₋ + g·(v₊ − v₋), x ← x + v·(σ_{i+1} − σ_i).
10. frames: z = x / (1/std) + mean, VAE decode, clamp [−1, 1], uint8 of (x + 1)·127.5 (truncating).
"""

from __future__ import annotations

import html
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
               3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]
CLIP_HEAD_WIDTH = 80  # ViT-H/14: 16 heads of 80; nothing in the file records it
TEXT_LEN = 512


# ---------------------------------------------------------------------------------------------- 1. inputs
def read_frames(path, num_frames: int, height: int, width: int, kernels=None) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB as the reference's loaders; ``kernels`` (one per read frame) erodes (mask video)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    idx = np.linspace(0, count - 1, num_frames, dtype=int) if count >= num_frames else np.arange(count)
    frames = []
    for n, i in enumerate(idx):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
        ok, bgr = cap.read()
        assert ok
        bgr = cv2.resize(bgr, (width, height))
        if kernels is None:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        else:  # the mask loader erodes the BGR frame and never converts it (a grey mask: same channels)
            k = kernels[n]
            frames.append(cv2.erode(bgr, np.ones((k, k), np.uint8), iterations=1) if k > 0 else bgr)
    cap.release()
    frames += [frames[-1]] * (num_frames - len(frames))
    return np.stack(frames)


def reference_kernels(n: int, seed: int = 0, fixed: int | None = None) -> list[int]:
    if fixed is not None:
        return [fixed] * n
    rng = random.Random(seed)
    return [rng.randint(2, 8) for _ in range(n)]


def condition_videos(color_u8: np.ndarray, mask_u8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(v, m′), each (1, 3, T, H, W) float32: v = (colour/255·m)·2 − 1, m′ = m·2 − 1, m = 1[mask/255 > 0.5]."""
    c = torch.from_numpy(color_u8).permute(3, 0, 1, 2).float() / 255.0
    m = (torch.from_numpy(mask_u8).permute(3, 0, 1, 2).float() / 255.0 > 0.5).float()
    return ((c * m) * 2 - 1)[None], (m * 2 - 1)[None]


# ---------------------------------------------------------------------------------------------- 2. frame 0
def first_frame_image(video: torch.Tensor) -> torch.Tensor:
    """to_pil_image(v₀·0.5+0.5) (truncating ``mul(255).byte()``), then float32(img)·(2/255) − 1: (1, 3, H, W)."""
    from PIL import Image

    x = video[0, :, 0].float() * 0.5 + 0.5
    img = Image.fromarray(x.mul(255).byte().permute(1, 2, 0).numpy())
    arr = np.array(img, dtype=np.float32) * (2 / 255) - 1
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


# ---------------------------------------------------------------------------------------------- 3. CLIP
def clip_tokens(sd: dict, image: torch.Tensor) -> torch.Tensor:
    """open-clip ViT (``visual.*`` of the CLIP file) on the image, output of all blocks but the last: (1, L, D)."""
    w = sd["visual.patch_embedding.weight"]
    dim, patch = w.shape[0], w.shape[-1]
    n_pos = sd["visual.pos_embedding"].shape[1] - 1
    size = int(round(math.sqrt(n_pos))) * patch
    x = F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False)
    x = x * 0.5 + 0.5
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    x = F.conv2d(x, w, stride=patch).flatten(2).transpose(1, 2)  # no bias (open-clip with a pre-norm)
    x = torch.cat([sd["visual.cls_embedding"], x], 1) + sd["visual.pos_embedding"]
    x = F.layer_norm(x, (dim,), sd["visual.pre_norm.weight"], sd["visual.pre_norm.bias"], 1e-5)
    heads = dim // CLIP_HEAD_WIDTH
    blocks = sorted({int(k.split(".")[2]) for k in sd if k.startswith("visual.transformer.")})
    for i in blocks[:-1]:
        p = lambda n: sd[f"visual.transformer.{i}.{n}"]  # noqa: E731
        h = F.layer_norm(x, (dim,), p("norm1.weight"), p("norm1.bias"), 1e-5)
        q, k, v = F.linear(h, p("attn.to_qkv.weight"), p("attn.to_qkv.bias")).chunk(3, -1)
        a = _attention(q[0], k[0], v[0], heads)[None]
        x = x + F.linear(a, p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, (dim,), p("norm2.weight"), p("norm2.bias"), 1e-5)
        x = x + F.linear(F.gelu(F.linear(h, p("mlp.0.weight"), p("mlp.0.bias"))), p("mlp.2.weight"), p("mlp.2.bias"))
    return x


def _attention(q, k, v, heads):
    """Softmax attention of (L, D) inputs split in ``heads`` heads, scale 1/√(D/heads)."""
    L, D = q.shape
    q, k, v = (t.reshape(t.shape[0], heads, -1).transpose(0, 1) for t in (q, k, v))
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // heads), -1) @ v
    return a.transpose(0, 1).reshape(L, D)


# ---------------------------------------------------------------------------------------------- 4-5, 10. VAE
# The Wan VAE (``Wan2.1_VAE.pth`` names) over the whole clip at once. The reference runs it chunk by chunk (encoder:
# frame 0, then 4 frames at a time; decoder: one latent frame at a time) with caches of each causal convolution's
# last inputs; that equals these full-length convolutions, except for the temporal resampling that the chunks
# shape: frame 0 skips the temporal convolution of every down/up-sampling stage.
def _causal(x, sd, name, time_pad=True):
    """Causal 3-D convolution: 2·p_t zero frames in front, p_h/p_w zeros on the sides (padding from the kernel)."""
    w, b = sd[name + ".weight"], sd[name + ".bias"]
    kt, kh, kw = w.shape[2:]
    x = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2, 2 * (kt // 2) if time_pad else 0, 0))
    return F.conv3d(x, w, b)


def _rms(x, gamma):
    return F.normalize(x, dim=1) * math.sqrt(x.shape[1]) * gamma


def _per_frame(x, fn):
    b, c, t = x.shape[:3]
    y = fn(x.transpose(1, 2).reshape(b * t, c, *x.shape[3:]))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


def _residual(x, sd, p):
    h = _causal(x, sd, p + "shortcut") if p + "shortcut.weight" in sd else x
    y = _causal(F.silu(_rms(x, sd[p + "residual.0.gamma"])), sd, p + "residual.2")
    y = _causal(F.silu(_rms(y, sd[p + "residual.3.gamma"])), sd, p + "residual.6")
    return y + h


def _attention_block(x, sd, p):
    """Single-head spatial self-attention of each frame, RMS-normalised, residual."""
    def frame(z):
        n, c, hh, ww = z.shape
        qkv = F.conv2d(_rms(z, sd[p + "norm.gamma"]), sd[p + "to_qkv.weight"], sd[p + "to_qkv.bias"])
        q, k, v = qkv.reshape(n, 3 * c, hh * ww).transpose(1, 2).chunk(3, -1)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), -1) @ v
        return F.conv2d(a.transpose(1, 2).reshape(n, c, hh, ww), sd[p + "proj.weight"], sd[p + "proj.bias"])
    return x + _per_frame(x, frame)


def _stage(x, sd, p, down: bool):
    """One block of ``downsamples.i`` / ``upsamples.i`` / ``middle.i``, told apart by its tensors."""
    if p + "residual.0.gamma" in sd:
        return _residual(x, sd, p)
    if p + "to_qkv.weight" in sd:
        return _attention_block(x, sd, p)
    w, b = sd[p + "resample.1.weight"], sd[p + "resample.1.bias"]
    if down:  # zero pad right/bottom, 3×3 stride 2; then (3d) frame 0 + a valid stride-2 temporal conv over all
        x = _per_frame(x, lambda z: F.conv2d(F.pad(z, (0, 1, 0, 1)), w, b, stride=2))
        if p + "time_conv.weight" in sd:
            t = F.conv3d(x, sd[p + "time_conv.weight"], sd[p + "time_conv.bias"], stride=(2, 1, 1))
            x = torch.cat([x[:, :, :1], t], 2)
        return x
    if p + "time_conv.weight" in sd:  # frame 0 kept; the others each become two (the conv's two channel halves)
        t = _causal(x[:, :, 1:], sd, p + "time_conv")
        bsz, c2, n, hh, ww = t.shape
        t = t.reshape(bsz, 2, c2 // 2, n, hh, ww).permute(0, 2, 3, 1, 4, 5).reshape(bsz, c2 // 2, 2 * n, hh, ww)
        x = torch.cat([x[:, :, :1], t], 2)
    return _per_frame(x, lambda z: F.conv2d(F.interpolate(z, scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                            w, b, padding=1))


def _blocks(sd, prefix):
    n = 0
    while any(k.startswith(f"{prefix}.{n}.") for k in sd):
        n += 1
    return [f"{prefix}.{i}." for i in range(n)]


def vae_mean(sd: dict, video: torch.Tensor) -> torch.Tensor:
    """Posterior mean μ of a (1, 3, T, H, W) video in [−1, 1]: (1, 16, (T−1)/4+1, H/8, W/8)."""
    x = _causal(video, sd, "encoder.conv1")
    for p in _blocks(sd, "encoder.downsamples"):
        x = _stage(x, sd, p, down=True)
    for p in _blocks(sd, "encoder.middle"):
        x = _stage(x, sd, p, down=True)
    x = _causal(F.silu(_rms(x, sd["encoder.head.0.gamma"])), sd, "encoder.head.2")
    return _causal(x, sd, "conv1").chunk(2, dim=1)[0]


def vae_decode(sd: dict, z: torch.Tensor) -> torch.Tensor:
    """Decoded video (1, 3, T, H, W), not clamped, of un-normalised latents z."""
    x = _causal(_causal(z, sd, "conv2"), sd, "decoder.conv1")
    for p in _blocks(sd, "decoder.middle") + _blocks(sd, "decoder.upsamples"):
        x = _stage(x, sd, p, down=False)
    return _causal(F.silu(_rms(x, sd["decoder.head.0.gamma"])), sd, "decoder.head.2")


def _latent_scale() -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's VAE scale ``[mean, 1/std]``, as (1, 16, 1, 1, 1) float32 tensors."""
    return torch.tensor(LATENTS_MEAN).view(1, 16, 1, 1, 1), (1.0 / torch.tensor(LATENTS_STD)).view(1, 16, 1, 1, 1)


def vae_encode(vae_sd, video: torch.Tensor) -> torch.Tensor:
    """Posterior mean of (1, 3, T, H, W), normalised as the reference: (μ − mean) · (1/std)."""
    mean, inv_std = _latent_scale()
    return (vae_mean(vae_sd, video) - mean) * inv_std


def vae_decode_frames(vae_sd, latents: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """(decoded (1, 3, T, H, W) in [−1, 1], frames (T, H, W, 3) uint8): z = x / (1/std) + mean, clamp, truncate."""
    mean, inv_std = _latent_scale()
    out = vae_decode(vae_sd, latents / inv_std + mean).float().clamp(-1, 1)
    frames = ((out[0].permute(1, 2, 3, 0) + 1) * 127.5).clip(0, 255).numpy().astype(np.uint8)
    return out, frames


def first_frame_y(vae_sd, image: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(1, 20, F, h, w): 4 mask channels, then the latent of (frame 0, T−1 black frames)."""
    _, _, H, W = image.shape
    msk = torch.ones(1, num_frames, H // 8, W // 8)
    msk[:, 1:] = 0
    msk = torch.cat([msk[:, :1].repeat_interleave(4, dim=1), msk[:, 1:]], dim=1)
    msk = msk.view(1, msk.shape[1] // 4, 4, H // 8, W // 8).transpose(1, 2)[0]
    clip = torch.cat([image.transpose(0, 1), torch.zeros(3, num_frames - 1, H, W)], dim=1)
    return torch.cat([msk, vae_encode(vae_sd, clip[None])[0]])[None]


def ray_latent(ck: dict, vae_sd, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    h = torch.cat([vae_encode(vae_sd, video), vae_encode(vae_sd, mask * 2 - 1)], dim=1)
    for i in (0, 2, 4):
        h = F.conv3d(h, ck[f"latent_encoder.{i}.weight"], ck[f"latent_encoder.{i}.bias"])
        h = F.silu(h) if i < 4 else h
    return F.conv3d(h, ck["latent_patch_embedding.weight"], ck["latent_patch_embedding.bias"], stride=(1, 2, 2))


# ---------------------------------------------------------------------------------------------- 6. text
def clean_prompt(text: str) -> str:
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def t5_context(sd: dict, tokenizer, prompt: str) -> torch.Tensor:
    """Wan's umT5 encoder (official names) on the prompt padded to 512 tokens, cut to its length: (n, D)."""
    enc = tokenizer([clean_prompt(prompt)], padding="max_length", truncation=True, max_length=TEXT_LEN,
                    add_special_tokens=True, return_tensors="pt")
    ids, mask = enc.input_ids, enc.attention_mask
    x = sd["token_embedding.weight"][ids]  # (1, L, D)
    L = ids.shape[1]
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("blocks.")})
    for i in blocks:
        p = lambda n: sd[f"blocks.{i}.{n}"]  # noqa: E731
        table = p("pos_embedding.embedding.weight")  # (buckets, heads)
        heads = table.shape[1]
        bias = table[_t5_buckets(L, table.shape[0])].permute(2, 0, 1)[None]  # (1, heads, L, L)
        bias = bias.masked_fill(mask.view(1, 1, 1, L) == 0, torch.finfo(x.dtype).min)
        h = _t5_norm(x, p("norm1.weight"))
        q, k, v = (F.linear(h, p(f"attn.{n}.weight")).view(1, L, heads, -1) for n in "qkv")
        a = torch.softmax(torch.einsum("binc,bjnc->bnij", q, k) + bias, -1)  # T5: no 1/√d
        x = x + F.linear(torch.einsum("bnij,bjnc->binc", a, v).reshape(1, L, -1), p("attn.o.weight"))
        h = _t5_norm(x, p("norm2.weight"))
        g = F.linear(h, p("ffn.gate.0.weight"))
        g = 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g ** 3)))
        x = x + F.linear(F.linear(h, p("ffn.fc1.weight")) * g, p("ffn.fc2.weight"))
    x = _t5_norm(x, sd["norm.weight"])
    return x[0, : int(mask.sum())]


def _t5_norm(x, w, eps=1e-6):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _t5_buckets(L: int, num_buckets: int, max_dist: int = 128) -> torch.Tensor:
    """Bidirectional T5 relative-position buckets of key j − query i: half the buckets per sign, log-spaced far."""
    rel = torch.arange(L)[None] - torch.arange(L)[:, None]
    half = num_buckets // 2
    out = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    far = exact + (torch.log(rel.float() / exact) / math.log(max_dist / exact) * (half - exact)).long()
    return out + torch.where(rel < exact, rel, far.clamp(max=half - 1))


# ---------------------------------------------------------------------------------------------- 8. schedule
def sigmas(num_steps: int, shift: float = 5.0) -> torch.Tensor:
    s = torch.linspace(1.0, 0.0, num_steps + 1)[:-1]
    return shift * s / (1 + (shift - 1) * s)


# ---------------------------------------------------------------------------------------------- 9. DiT
def ln(x, w=None, b=None, eps=1e-6):
    x = F.layer_norm(x.float(), x.shape[-1:], eps=eps)
    return x if w is None else x * w + b


def rms(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, f, h, w):
    """x [L, heads, d]; adjacent pairs rotate by pos·θ^(−2j/dim_axis), axes (f, h, w) with 2(d//6) dims for h, w."""
    d = x.shape[-1]
    dh = 2 * (d // 6)
    dt = d - 2 * dh
    parts = []
    for n, dim, pos in ((f, dt, 0), (h, dh, 1), (w, dh, 2)):
        inv = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        grid = torch.stack(torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij"), -1)
        ang = grid[..., pos].reshape(-1, 1).double() * inv
        parts.append(torch.polar(torch.ones_like(ang), ang))
    freqs = torch.cat(parts, -1)[:, None]  # [L, 1, d/2]
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs).flatten(-2).float()


def time_sinusoid(t: torch.Tensor, freq_dim: int) -> torch.Tensor:
    """[cos, sin] of t·10000^(−i/half), computed in float64 as the reference, then float32."""
    half = freq_dim // 2
    fr = t.double().reshape(-1, 1) * torch.pow(10000, -torch.arange(half, dtype=torch.float64) / half)
    return torch.cat([torch.cos(fr), torch.sin(fr)], 1).float()[0]


def ref_dit(W, cfg, x, t, txt, img, ray, sinusoid=None):
    """One Wan2.1-I2V DiT evaluation (diffusers names in ``W``): x (1, 36, F, H, W) -> velocity (1, 16, F, H, W).

    ``txt`` (1, 512, text_dim) zero-padded text features, ``img`` (1, L_img, clip_dim) CLIP tokens (the reference
    splits the context at 257 = ViT-H/14's token count; here at the CLIP's own count), ``ray`` the condition
    tokens (1, D, F, H/2, W/2) or 0. ``sinusoid``: the time embedding's input (default the float64 one).
    """
    heads, D = cfg["heads"], cfg["dim"]
    lin = lambda name, z: z @ W[name + ".weight"].T + W[name + ".bias"]  # noqa: E731
    # patch embedding + condition tokens
    h = F.conv3d(x, W["patch_embedding.weight"], W["patch_embedding.bias"], stride=(1, 2, 2))
    _, _, f, hh, ww = h.shape
    h = (h + ray).flatten(2).transpose(1, 2)[0]  # [L, D]
    s = time_sinusoid(torch.as_tensor(t), cfg["freq_dim"]) if sinusoid is None else sinusoid
    e = lin("condition_embedder.time_embedder.linear_2", F.silu(lin("condition_embedder.time_embedder.linear_1", s)))
    e0 = lin("condition_embedder.time_proj", F.silu(e)).view(6, D)
    # text and image context
    tx = lin("condition_embedder.text_embedder.linear_2",
             F.gelu(lin("condition_embedder.text_embedder.linear_1", txt[0]), approximate="tanh"))
    pre = "condition_embedder.image_embedder."
    im = ln(img[0], W[pre + "norm1.weight"], W[pre + "norm1.bias"], eps=1e-5)
    im = lin(pre + "ff.net.2", F.gelu(lin(pre + "ff.net.0.proj", im)))
    im = ln(im, W[pre + "norm2.weight"], W[pre + "norm2.bias"], eps=1e-5)
    for i in range(cfg["layers"]):
        b = f"blocks.{i}."
        sh1, sc1, g1, sh2, sc2, g2 = (W[b + "scale_shift_table"][0] + e0).unbind(0)
        n = ln(h) * (1 + sc1) + sh1
        q = rms(lin(b + "attn1.to_q", n), W[b + "attn1.norm_q.weight"])
        k = rms(lin(b + "attn1.to_k", n), W[b + "attn1.norm_k.weight"])
        v = lin(b + "attn1.to_v", n)
        q = rope(q.view(q.shape[0], heads, -1), f, hh, ww).reshape(q.shape)
        k = rope(k.view(k.shape[0], heads, -1), f, hh, ww).reshape(k.shape)
        h = h + g1 * lin(b + "attn1.to_out.0", _attention(q, k, v, heads))
        n = ln(h, W[b + "norm2.weight"], W[b + "norm2.bias"])
        q = rms(lin(b + "attn2.to_q", n), W[b + "attn2.norm_q.weight"])
        k = rms(lin(b + "attn2.to_k", tx), W[b + "attn2.norm_k.weight"])
        v = lin(b + "attn2.to_v", tx)
        ki = rms(lin(b + "attn2.add_k_proj", im), W[b + "attn2.norm_added_k.weight"])
        vi = lin(b + "attn2.add_v_proj", im)
        h = h + lin(b + "attn2.to_out.0", _attention(q, k, v, heads) + _attention(q, ki, vi, heads))
        n = ln(h) * (1 + sc2) + sh2
        h = h + g2 * lin(b + "ffn.net.2", F.gelu(lin(b + "ffn.net.0.proj", n), approximate="tanh"))
    sh, sc = (W["scale_shift_table"][0] + e).unbind(0)
    out = lin("proj_out", ln(h) * (1 + sc) + sh)  # [L, 16·1·2·2]
    out = out.view(f, hh, ww, 1, 2, 2, -1).permute(6, 0, 3, 1, 4, 2, 5)
    return out.reshape(1, -1, f, hh * 2, ww * 2)


# official DiT names -> the diffusers names ref_dit reads (the inverse of tiny.py's tables)
def official_dit_weights(folder: Path, ck: dict | None) -> dict:
    """The DiT shards of an official folder (index json), the LoRA of ``ck`` merged as W + B·A (α = r)."""
    from safetensors.torch import load_file

    from .tiny import _DIT_BLOCK_INV, _DIT_TOP_INV

    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())["weight_map"]
    sd = {}
    for name in sorted(set(index.values())):
        sd.update(load_file(str(folder / name)))
    for k in [k for k in (ck or {}) if ".lora_A." in k]:
        module = k.split(".lora_A.")[0]
        sd[module + ".weight"] = sd[module + ".weight"] + ck[k.replace("lora_A", "lora_B")] @ ck[k]
    top = {v: k for k, v in _DIT_TOP_INV.items()}
    blk = {v: k for k, v in _DIT_BLOCK_INV.items()}
    out = {}
    for k, v in sd.items():
        if k == "head.modulation":
            out["scale_shift_table"] = v
        elif k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            if rest == "modulation":
                out[f"blocks.{i}.scale_shift_table"] = v
            else:
                module, p = rest.rsplit(".", 1)
                out[f"blocks.{i}.{blk[module]}.{p}"] = v
        else:
            module, p = k.rsplit(".", 1)
            out[f"{top[module]}.{p}"] = v
    return out


def dit_config(folder: Path) -> dict:
    c = json.loads((folder / "config.json").read_text())
    return dict(heads=c["num_heads"], dim=c["dim"], freq_dim=c["freq_dim"], layers=c["num_layers"])


# ---------------------------------------------------------------------------------------------- the whole run
@dataclass
class ReferenceRun:
    color: np.ndarray = None
    mask_frames: np.ndarray = None
    video: torch.Tensor = None
    mask: torch.Tensor = None
    first: torch.Tensor = None
    clip: torch.Tensor = None
    y: torch.Tensor = None
    ray: torch.Tensor = None
    context: torch.Tensor = None
    negative_context: torch.Tensor = None
    noise: torch.Tensor = None
    sigmas: torch.Tensor = None
    timesteps: torch.Tensor = None
    velocities: list = field(default_factory=list)
    latents: list = field(default_factory=list)
    decoded: torch.Tensor = None
    frames: np.ndarray = None


@torch.no_grad()
def reference_run(folder: Path, ckpt_path: Path | None, color_path, mask_path, *, height: int, width: int,
                  num_frames: int, steps: int, prompt: str, negative_prompt: str, cfg: float = 5.0, seed: int = 0,
                  mask_erode: int | None = None) -> ReferenceRun:
    """The reference's ``generate.py`` on the official-layout ``folder`` (+ ``ex4d.ckpt``; None = plain Wan I2V)."""
    from transformers import AutoTokenizer

    r = ReferenceRun()
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path is not None else None
    kernels = reference_kernels(num_frames, seed, mask_erode)
    r.mask_frames = read_frames(mask_path, num_frames, height, width, kernels)
    r.color = read_frames(color_path, num_frames, height, width)
    r.video, r.mask = condition_videos(r.color, r.mask_frames)

    tok = AutoTokenizer.from_pretrained(folder / "google" / "umt5-xxl")
    t5 = torch.load(folder / "models_t5_umt5-xxl-enc-bf16.pth", map_location="cpu", weights_only=True)
    r.context = t5_context(t5, tok, prompt)
    r.negative_context = t5_context(t5, tok, negative_prompt) if cfg != 1.0 else None

    vae_sd = torch.load(folder / "Wan2.1_VAE.pth", map_location="cpu", weights_only=True)
    r.first = first_frame_image(r.video)
    clip_sd = torch.load(folder / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth", map_location="cpu",
                         weights_only=True)
    r.clip = clip_tokens(clip_sd, r.first)
    r.y = first_frame_y(vae_sd, r.first, num_frames)
    r.ray = ray_latent(ck, vae_sd, r.video, r.mask) if ck is not None else torch.zeros(())

    g = torch.Generator("cpu").manual_seed(seed)
    r.noise = torch.randn((1, 16, (num_frames - 1) // 4 + 1, height // 8, width // 8), generator=g,
                          dtype=torch.float32)
    r.sigmas = sigmas(steps)
    r.timesteps = r.sigmas * 1000

    W, c = official_dit_weights(folder, ck), dit_config(folder)
    pad = lambda u: torch.cat([u, u.new_zeros(TEXT_LEN - u.shape[0], u.shape[1])])[None]  # noqa: E731
    x = r.noise
    for i, t in enumerate(r.timesteps):
        xin = torch.cat([x, r.y], 1)
        v = ref_dit(W, c, xin, t, pad(r.context), r.clip, r.ray)
        if cfg != 1.0:
            v_neg = ref_dit(W, c, xin, t, pad(r.negative_context), r.clip, r.ray)
            v = v_neg + cfg * (v - v_neg)
        sigma_next = r.sigmas[i + 1] if i + 1 < len(r.sigmas) else 0
        x = x + v * (sigma_next - r.sigmas[i])
        r.velocities.append(v)
        r.latents.append(x)
    r.decoded, r.frames = vae_decode_frames(vae_sd, x)
    return r


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
