"""ex4d's generation against the reference's own numbers (tests/inpaint/reference.py), on tiny random weights in
the official release layout (DiT shards + index, the three .pth files, the umT5 tokenizer folder) and ex4d.ckpt.

Settings as the reference runs them: 3 steps, CFG 5, seed 0, fp32 on the CPU; 5 frames of 32×48 (the CLIP input is
squashed to 32×32, so the bicubic resize is exercised). The tiny CLIP has 2 heads of width 80 (the reference's head
width for ViT-H/14, which ex4d's loader assumes: nothing in the file records the head count).
"""

import numpy as np
import pytest
import torch
from diffusers.models.attention_dispatch import attention_backend

from ex4d.inpaint.loading import load_pipeline
from ex4d.inpaint.pipeline import Ex4dInpaintPipeline
from ex4d.inpaint.preprocess import prepare_videos
from ex4d.inpaint.prompts import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT
from ex4d.io.video import load_video, save_video

from . import reference
from .tiny import tiny_videos

T, H, W, STEPS, SEED = 5, 32, 48, 3, 0
MIN_PSNR_DB = 75.0


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    d = tmp_path_factory.mktemp("parity_renders")
    color, mask = tiny_videos(T, H, W, seed=3)
    mask[0, 10:20, 30:40] = 0  # a hole in frame 0 too: erosion then reaches the CLIP image and y
    color[0, 10:20, 30:40] = 0
    save_video(d / "color.mp4", color)
    save_video(d / "mask.mp4", mask)
    return d / "color.mp4", d / "mask.mp4"


@pytest.fixture(scope="module")
def reference_runs(original_wan_dir, ex4d_ckpt, renders):
    """``runs(adapter, mask_erode)``: the reference's run of that case, computed once per module."""
    done = {}

    def run(adapter: bool, mask_erode=None):
        if (adapter, mask_erode) not in done:
            done[adapter, mask_erode] = reference.reference_run(
                original_wan_dir, ex4d_ckpt if adapter else None, *renders, height=H, width=W, num_frames=T,
                steps=STEPS, prompt=DEFAULT_PROMPT, negative_prompt=DEFAULT_NEGATIVE_PROMPT, seed=SEED,
                mask_erode=mask_erode)
        return done[adapter, mask_erode]

    return run


def _close(ours, ref, atol=1e-5, rtol=1e-4):
    torch.testing.assert_close(ours.float(), ref.float(), atol=atol, rtol=rtol)


def test_frame0_levels_truncate_as_the_reference():
    """All 256 levels of frame 0: ex4d's CLIP/y image equals the reference's PIL round trip, bit for bit."""
    levels = torch.arange(256, dtype=torch.float32).view(1, 1, 1, 16, 16).expand(1, 3, 1, 16, 16)
    video = (levels / 255.0) * 2 - 1  # as the conditioning video (fully seen)
    ref = reference.first_frame_image(video)
    assert torch.equal(Ex4dInpaintPipeline.quantise_first_frame(video), ref)
    back = ((ref + 1) * 127.5).round()[:, 0]
    assert int((back == levels[:, 0, 0] - 1).sum()) == 63 and int((back == levels[:, 0, 0]).sum()) == 256 - 63
    # generate.py casts the video to bf16 first: the same 63 levels come back one lower
    video_bf16 = ((levels / 255.0).to(torch.bfloat16) * 2 - 1).float()
    assert torch.equal(reference.first_frame_image(video_bf16), ref)
    # and float32(img)·(2/255) − 1 is not img/255·2 − 1 in the last bit
    assert not torch.equal(ref[:, 0], back / 255 * 2 - 1)


def test_vae_on_a_longer_clip(original_wan_dir):
    """9 frames (3 latent frames): every chunk case of the reference's cached VAE, encode and decode."""
    pipe = load_pipeline(original_wan_dir)
    sd = torch.load(original_wan_dir / "Wan2.1_VAE.pth", weights_only=True)
    video = torch.rand((1, 3, 9, 32, 48), generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = reference.vae_encode(sd, video)
    _close(pipe.vae_encode(video), z, atol=1e-5)
    _close(pipe.vae_decode(z), reference.vae_decode_frames(sd, z)[0], atol=1e-5)
    assert z.shape == (1, 16, 3, 4, 6)


def test_stage_by_stage(original_wan_dir, ex4d_ckpt, renders, reference_runs):
    ref = reference_runs(True)
    pipe = load_pipeline(original_wan_dir, ex4d_ckpt)
    pipe.set_progress_bar_config(disable=True)
    color = load_video(renders[0], num_frames=None, height=H, width=W).frames
    mask = load_video(renders[1], num_frames=None, height=H, width=W).frames

    # 1. decoded inputs (OpenCV's decode, resize and erosion in the reference)
    assert np.array_equal(color, ref.color)
    video, m = prepare_videos(color, mask, H, W, T, None, SEED)
    assert torch.equal(video, ref.video) and torch.equal(m, ref.mask)
    assert (ref.mask < 0).any() and (ref.mask > 0).any()
    # 2. frame 0 through PIL: truncated levels, not rounded ones
    first = pipe.quantise_first_frame(video)
    assert torch.equal(first, ref.first)
    rounded = ((video[:, :, 0] * 0.5 + 0.5) * 255).round()
    assert (rounded != ((ref.first + 1) * 127.5).round()).any()  # the truncation is live in this frame
    # 3-5. CLIP tokens, y, ray latent
    with torch.no_grad():
        _close(pipe.encode_image(first), ref.clip)
        _close(pipe.first_frame_condition(first, T), ref.y)
        _close(pipe.condition_tokens(video, m), ref.ray)
        # 6. text context: umT5 features of the true tokens, zeros to 512
        for prompt, ctx in ((DEFAULT_PROMPT, ref.context), (DEFAULT_NEGATIVE_PROMPT, ref.negative_context)):
            ours = pipe.encode_prompt(prompt)[0]
            n = ctx.shape[0]
            _close(ours[:n], ctx)
            assert ours.shape[0] == 512 and not ours[n:].any()
    assert ref.ray.abs().max() > 1e-3
    # 7-8. noise and schedule: bit for bit
    assert torch.equal(pipe.prepare_noise(T, H, W, torch.Generator("cpu").manual_seed(SEED)), ref.noise)
    pipe.scheduler.set_timesteps(STEPS)
    assert torch.equal(pipe.scheduler.timesteps, ref.timesteps)
    assert torch.equal(pipe.scheduler.sigmas, torch.cat([ref.sigmas, torch.zeros(1)]))

    # 9. per step: guided DiT output and latents; 10. frames
    velocities, latents = [], []
    predict = pipe.predict_velocity
    pipe.predict_velocity = lambda *a, **k: velocities.append(predict(*a, **k)) or velocities[-1]

    def keep(p, i, t, kw):
        latents.append(kw["latents"])
        return {}

    with attention_backend("native"):
        out = pipe(color, mask, height=H, width=W, num_frames=T, num_inference_steps=STEPS, seed=SEED,
                   output_type="pt", callback_on_step_end=keep).frames
    assert len(velocities) == len(latents) == STEPS
    for i in range(STEPS):
        _close(velocities[i], ref.velocities[i], atol=1e-4)
        _close(latents[i], ref.latents[i], atol=1e-5)
    _close(out, ref.decoded, atol=1e-4)
    frames = ((out[0] + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    assert reference.psnr(frames, ref.frames) >= MIN_PSNR_DB


@pytest.mark.parametrize("adapter", [True, False], ids=["adapter", "no-adapter"])
@pytest.mark.parametrize("mask_erode", [None, 0], ids=["erosion", "no-erosion"])
def test_generate_frames_match_the_reference(original_wan_dir, ex4d_ckpt, renders, reference_runs, tmp_path,
                                             adapter, mask_erode, capsys):
    """`ex4d generate --dtype fp32 --device cpu --save-arrays` (the plain Wan I2V via ``generate``'s pipe)."""
    out = tmp_path / "out.mp4"
    with attention_backend("native"):
        if adapter:
            from ex4d.cli import main

            args = ["generate", "--color-video", str(renders[0]), "--mask-video", str(renders[1]),
                    "--output-video", str(out), "--height", str(H), "--width", str(W), "--num-frames", str(T),
                    "--steps", str(STEPS), "--seed", str(SEED), "--dtype", "fp32", "--device", "cpu",
                    "--wan-dir", str(original_wan_dir), "--ex4d-ckpt", str(ex4d_ckpt), "--save-arrays"]
            assert main(args + ([] if mask_erode is None else ["--mask-erode", str(mask_erode)])) == 0
        else:
            from ex4d.inpaint.generate import generate

            pipe = load_pipeline(original_wan_dir, torch_dtype=torch.float32)
            pipe.set_progress_bar_config(disable=True)
            generate(*renders, out, pipe=pipe, height=H, width=W, num_frames=T, num_inference_steps=STEPS,
                     seed=SEED, mask_erode=mask_erode, npz=out.with_suffix(".npz"))
    ours = np.load(out.with_suffix(".npz"))["frames"]
    ref = reference_runs(adapter, mask_erode)
    value = reference.psnr(ours, ref.frames)
    with capsys.disabled():
        print(f"\nparity {'adapter' if adapter else 'no-adapter'} erosion={mask_erode}: PSNR {value:.1f} dB, "
              f"max |diff| {np.abs(ours.astype(int) - ref.frames.astype(int)).max()}")
    assert ours.shape == ref.frames.shape == (T, H, W, 3)
    assert value >= MIN_PSNR_DB
