import numpy as np
import pytest
import torch
from diffusers.models.attention_dispatch import attention_backend

from ex4d.errors import InputError
from ex4d.inpaint.lora import ADAPTER_NAME
from ex4d.inpaint.pipeline import Ex4dInpaintPipeline

from .tiny import tiny_videos

KW = dict(height=32, width=48, num_inference_steps=2, mask_erode=3)


@pytest.fixture(scope="module")
def videos():
    return tiny_videos(9, 40, 48)


@pytest.fixture(scope="module")
def baseline(pipe, videos):
    with attention_backend("native"):
        return pipe(*videos, **KW).frames


def run(pipe, videos, **kw):
    with attention_backend("native"):
        return pipe(*videos, **{**KW, **kw}).frames


def test_output_size_and_dtype(baseline):
    assert baseline.shape == (9, 32, 48, 3) and baseline.dtype == np.uint8


def test_same_seed_same_video_other_seed_differs(pipe, videos, baseline):
    assert np.array_equal(run(pipe, videos), baseline)
    assert not np.array_equal(run(pipe, videos, seed=1), baseline)


def test_initial_noise_is_the_reference_draw(pipe, videos):
    expected = torch.randn((1, 16, 3, 4, 6), generator=torch.Generator("cpu").manual_seed(0), dtype=torch.float32)
    a = run(pipe, videos, output_type="latent")
    b = run(pipe, videos, output_type="latent", latents=expected)
    assert torch.equal(a, b)
    assert torch.equal(pipe.prepare_noise(9, 32, 48, torch.Generator("cpu").manual_seed(0)), expected)


def test_lora_weights_are_applied(pipe, videos):
    ref = run(pipe, videos, output_type="latent")
    saved = {}
    for name, m in pipe.transformer.named_modules():
        if ADAPTER_NAME in getattr(m, "lora_B", {}):
            saved[name] = m.lora_B[ADAPTER_NAME].weight.detach().clone()
            m.lora_B[ADAPTER_NAME].weight.data.zero_()
    try:
        off = run(pipe, videos, output_type="latent")
    finally:
        mods = dict(pipe.transformer.named_modules())
        for name, w in saved.items():
            mods[name].lora_B[ADAPTER_NAME].weight.data.copy_(w)
    assert len(saved) == 20
    assert (ref - off).abs().max() > 1e-4
    assert torch.equal(run(pipe, videos, output_type="latent"), ref)


def test_condition_encoder_is_applied(pipe, videos):
    ref = run(pipe, videos, output_type="latent")
    w = pipe.condition_encoder.latent_patch_embedding
    saved = w.weight.detach().clone(), w.bias.detach().clone()
    w.weight.data.zero_(), w.bias.data.zero_()
    try:
        off = run(pipe, videos, output_type="latent")
    finally:
        w.weight.data.copy_(saved[0]), w.bias.data.copy_(saved[1])
    assert (ref - off).abs().max() > 1e-4
    assert not pipe.transformer.patch_embedding._forward_hooks


def test_mask_changes_the_output(pipe, videos):
    color, mask = videos
    ref = run(pipe, videos, output_type="latent")
    other = run(pipe, (color, np.full_like(mask, 255)), output_type="latent")
    assert (ref - other).abs().max() > 1e-4


def test_callback_sees_every_step(pipe, videos):
    seen = []

    def cb(p, i, t, kw):
        seen.append((i, float(t), tuple(kw["latents"].shape)))
        return kw

    run(pipe, videos, num_inference_steps=3, output_type="latent", callback_on_step_end=cb,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    assert [s[0] for s in seen] == [0, 1, 2]
    assert seen[0][1] == pytest.approx(1000.0) and seen[0][2] == (1, 16, 3, 4, 6)


def test_no_cfg_path_and_pt_output(pipe, videos):
    out = run(pipe, videos, guidance_scale=1.0, output_type="pt", num_inference_steps=1)
    assert out.shape == (1, 3, 9, 32, 48) and out.min() >= -1 and out.max() <= 1


def test_square_and_frame_sampling(pipe, videos):
    color, mask = videos
    out = run(pipe, (color[:7], mask[:7]), height=32, width=32, num_frames=5, num_inference_steps=1)
    assert out.shape == (5, 32, 32, 3)


def test_bad_inputs(pipe, videos):
    color, mask = videos
    with pytest.raises(InputError, match="4k\\+1"):
        run(pipe, (color[:8], mask[:8]))
    with pytest.raises(InputError, match="length"):
        run(pipe, (color, mask[:5]))
    with pytest.raises(InputError, match="size"):
        run(pipe, (color, mask[:, :20]))
    with pytest.raises(InputError, match="multiples of 16"):
        run(pipe, videos, height=40)


def test_save_and_from_pretrained_round_trip(pipe, videos, tmp_path):
    ref = run(pipe, videos, output_type="latent")
    pipe.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "ex4d_lora" / "adapter_model.safetensors").is_file()
    again = Ex4dInpaintPipeline.from_pretrained(tmp_path / "saved")
    again.set_progress_bar_config(disable=True)
    assert torch.equal(run(again, videos, output_type="latent"), ref)
    assert torch.equal(run(pipe, videos, output_type="latent"), ref)  # the original still has its LoRA
