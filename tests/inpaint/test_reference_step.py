"""One reference denoiser step, written independently from the spec (§6.4–§6.7, §7.1, §8), against the pipeline.

The DiT here is a plain re-statement of Wan2.1 (complex-number RoPE, explicit attention, LoRA merged as
W + B·A from the reference-named checkpoint keys, the condition tokens added after the patch embedding), fed with
the tiny model's diffusers weights read straight from the safetensors file.
"""

import math

import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import attention_backend
from safetensors.torch import load_file

from ex4d.inpaint.preprocess import prepare_videos

from .tiny import tiny_videos

# diffusers module -> reference module (spec §8), for merging the LoRA
REF = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
       "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
       "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2"}


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


def attn(q, k, v, heads):
    L, D = q.shape
    q, k, v = (t.reshape(t.shape[0], heads, -1).transpose(0, 1) for t in (q, k, v))
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // heads), -1) @ v
    return a.transpose(0, 1).reshape(L, D)


def ref_dit(W, cfg, x, t, txt, img, ray):
    heads, D = cfg["heads"], cfg["dim"]
    lin = lambda name, z: z @ W[name + ".weight"].T + W[name + ".bias"]  # noqa: E731
    # patch embedding + condition tokens
    h = F.conv3d(x, W["patch_embedding.weight"], W["patch_embedding.bias"], stride=(1, 2, 2))
    _, _, f, hh, ww = h.shape
    h = (h + ray).flatten(2).transpose(1, 2)[0]  # [L, D]
    # time: sinusoid [cos, sin] of t·10000^(−i/half)
    half = cfg["freq_dim"] // 2
    fr = t * 10000.0 ** (-torch.arange(half, dtype=torch.float32) / half)
    s = torch.cat([torch.cos(fr), torch.sin(fr)])
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
        h = h + g1 * lin(b + "attn1.to_out.0", attn(q, k, v, heads))
        n = ln(h, W[b + "norm2.weight"], W[b + "norm2.bias"])
        q = rms(lin(b + "attn2.to_q", n), W[b + "attn2.norm_q.weight"])
        k = rms(lin(b + "attn2.to_k", tx), W[b + "attn2.norm_k.weight"])
        v = lin(b + "attn2.to_v", tx)
        ki = rms(lin(b + "attn2.add_k_proj", im), W[b + "attn2.norm_added_k.weight"])
        vi = lin(b + "attn2.add_v_proj", im)
        h = h + lin(b + "attn2.to_out.0", attn(q, k, v, heads) + attn(q, ki, vi, heads))
        n = ln(h) * (1 + sc2) + sh2
        h = h + g2 * lin(b + "ffn.net.2", F.gelu(lin(b + "ffn.net.0.proj", n), approximate="tanh"))
    sh, sc = (W["scale_shift_table"][0] + e).unbind(0)
    out = lin("proj_out", ln(h) * (1 + sc) + sh)  # [L, 16·1·2·2]
    out = out.view(f, hh, ww, 1, 2, 2, -1).permute(6, 0, 3, 1, 4, 2, 5)
    return out.reshape(1, -1, f, hh * 2, ww * 2)


def test_one_step_matches_an_independent_reference(pipe, wan_dir, ex4d_ckpt):
    W = load_file(str(wan_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    ck = torch.load(ex4d_ckpt, weights_only=True)
    for i in range(2):
        for mod, ref in REF.items():
            A = ck[f"blocks.{i}.{ref}.lora_A.default.weight"]
            B = ck[f"blocks.{i}.{ref}.lora_B.default.weight"]
            W[f"blocks.{i}.{mod}.weight"] = W[f"blocks.{i}.{mod}.weight"] + B @ A  # α/r = 1
    tc = pipe.transformer.config
    cfg = dict(heads=tc.num_attention_heads, dim=tc.num_attention_heads * tc.attention_head_dim,
               freq_dim=tc.freq_dim, layers=tc.num_layers)

    color, mask = tiny_videos(9, 32, 32)
    captured = {}

    def stop_after_first(p, i, t, kw):
        captured.update(kw)
        p._interrupt = True
        return {}

    with attention_backend("native"):
        pipe(color, mask, height=32, width=32, mask_erode=4, output_type="latent",
             callback_on_step_end=stop_after_first,
             callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "negative_prompt_embeds"])

    # the reference's inputs, from the spec
    video, m = prepare_videos(color, mask, 32, 32, mask_erode=4)
    first = pipe.quantise_first_frame(video)
    img = pipe.encode_image(first)
    lat0 = pipe.vae_encode(torch.cat([first[:, :, None], torch.zeros(1, 3, 8, 32, 32)], 2))
    msk = torch.zeros(1, 4, 3, 4, 4)
    msk[:, :, 0] = 1  # frame 0 repeated 4 times then (13, 4) -> (4, 13): first latent frame all ones
    y = torch.cat([msk, lat0], 1)
    h = torch.cat([pipe.vae_encode(video), pipe.vae_encode(m * 2 - 1)], 1)
    for i in (0, 2, 4):
        h = F.conv3d(h, ck[f"latent_encoder.{i}.weight"], ck[f"latent_encoder.{i}.bias"])
        h = F.silu(h) if i < 4 else h
    ray = F.conv3d(h, ck["latent_patch_embedding.weight"], ck["latent_patch_embedding.bias"], stride=(1, 2, 2))
    noise = torch.randn((1, 16, 3, 4, 4), generator=torch.Generator("cpu").manual_seed(0), dtype=torch.float32)
    s = torch.tensor([1 - i / 25 for i in range(2)])
    sigma = 5 * s / (1 + 4 * s)
    t = 1000 * sigma[0]
    xin = torch.cat([noise, y], 1)
    v_pos = ref_dit(W, cfg, xin, t, captured["prompt_embeds"], img, ray)
    v_neg = ref_dit(W, cfg, xin, t, captured["negative_prompt_embeds"], img, ray)
    x1 = noise + (v_neg + 5.0 * (v_pos - v_neg)) * (sigma[1] - sigma[0])

    assert captured["prompt_embeds"].shape[1] == 512
    assert (captured["negative_prompt_embeds"] != captured["prompt_embeds"]).any()
    assert (v_pos - v_neg).abs().max() > 1e-3 and ray.abs().max() > 1e-3  # every part is live
    torch.testing.assert_close(captured["latents"], x1, atol=2e-5, rtol=1e-4)
