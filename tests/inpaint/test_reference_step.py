"""One reference denoiser step, written independently from the spec (§6.4–§6.7, §7.1, §8), against the pipeline.

The DiT (``reference.ref_dit``, shared with the whole-run parity test) is a plain re-statement of Wan2.1
(complex-number RoPE, explicit attention, LoRA merged as W + B·A from the reference-named checkpoint keys, the
condition tokens added after the patch embedding), fed with the tiny model's diffusers weights read straight from
the safetensors file.
"""

import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import attention_backend
from safetensors.torch import load_file

from ex4d.inpaint.preprocess import prepare_videos

from .reference import ref_dit
from .tiny import tiny_videos

# diffusers module -> reference module (spec §8), for merging the LoRA
REF = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
       "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
       "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2"}


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
