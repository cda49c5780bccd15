"""``Ex4dInpaintPipeline``: Wan2.1-I2V + the EX-4D LoRA + the condition encoder, with the reference's semantics.

Usable the diffusers way: ``from_pretrained`` / ``save_pretrained`` (the LoRA travels in ``ex4d_lora/``), ``.to``,
``enable_model_cpu_offload``, ``callback_on_step_end``. To start from the Wan2.1-I2V diffusers folder plus
``ex4d.ckpt`` (or our adapter), use :func:`ex4d.inpaint.loading.load_pipeline`.

The condition encoder's tokens enter the DiT through a forward hook on ``transformer.patch_embedding`` that is
registered only for the duration of each denoiser call (:func:`inject_condition_tokens`).
"""

from __future__ import annotations

import contextlib
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, DiffusionPipeline, WanTransformer3DModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput

from ex4d.errors import InputError
from ex4d.inpaint import adapter_io, lora
from ex4d.inpaint.condition_encoder import CamVidEncoder, inject_condition_tokens
from ex4d.inpaint.preprocess import check_size, encoder_mask_input, prepare_videos
from ex4d.inpaint.prompts import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_HEIGHT,
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_NUM_INFERENCE_STEPS,
    DEFAULT_PROMPT,
    DEFAULT_SEED,
    DEFAULT_WIDTH,
)
from ex4d.inpaint.schedule import Ex4dFlowMatchScheduler

__all__ = ["Ex4dInpaintPipeline", "Ex4dPipelineOutput", "CLIP_MEAN", "CLIP_STD", "LORA_SUBFOLDER"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Text context length of Wan2.1. diffusers' I2V cross-attention splits image from text tokens by assuming
#: exactly 512 text tokens, so the prompt features are always padded to this length.
TEXT_LEN = 512

#: Where ``save_pretrained`` puts the LoRA (our adapter format, LoRA part only).
LORA_SUBFOLDER = "ex4d_lora"


def _clean_prompt(text: str) -> str:
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:  # pragma: no cover - ftfy is a declared dependency of the extra
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class Ex4dPipelineOutput(BaseOutput):
    """``frames``: (T, H, W, 3) uint8 for ``output_type="np"``, (1, 3, T, H, W) float in [−1, 1] for ``"pt"``,
    or the latents (1, 16, F, H/8, W/8) for ``"latent"``."""

    frames: Any


class Ex4dInpaintPipeline(DiffusionPipeline):
    """EX-4D generation stage: fills the unseen parts of DW-Mesh renders with Wan2.1-I2V (spec §6).

    Components: ``tokenizer`` + ``text_encoder`` (umT5), ``image_encoder`` (CLIP vision), ``vae``
    (:class:`AutoencoderKLWan`), ``transformer`` (:class:`WanTransformer3DModel`, with the peft LoRA injected),
    ``condition_encoder`` (:class:`CamVidEncoder`) and ``scheduler`` (:class:`Ex4dFlowMatchScheduler`).
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->condition_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    _optional_components = ["condition_encoder", "image_processor"]

    def __init__(
        self,
        tokenizer,
        text_encoder,
        image_encoder,
        vae: AutoencoderKLWan,
        transformer: WanTransformer3DModel,
        scheduler: Ex4dFlowMatchScheduler,
        condition_encoder: CamVidEncoder | None = None,
        image_processor=None,
    ):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            image_encoder=image_encoder,
            vae=vae,
            transformer=transformer,
            scheduler=scheduler,
            condition_encoder=condition_encoder,
            image_processor=image_processor,
        )
        self.vae_scale_factor_temporal = vae.config.scale_factor_temporal if vae is not None else 4
        self.vae_scale_factor_spatial = vae.config.scale_factor_spatial if vae is not None else 8

    # ------------------------------------------------------------------ saving / loading
    def save_pretrained(self, save_directory, *args, **kwargs):
        """As diffusers', with the transformer saved without its LoRA and the LoRA in ``ex4d_lora/``."""
        t = self.transformer
        state = lora.get_lora(t) if t is not None and lora.has_lora(t) else None
        alpha = lora.lora_alpha(t) if state else None
        if state:
            t.unload_lora()
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if state:
                lora.apply_lora(t, lora.lora_rank(state), alpha, target_modules=sorted(state))
                lora.load_lora(t, state)
        if state:
            adapter_io.save_adapter(Path(save_directory) / LORA_SUBFOLDER, state, None, alpha=alpha)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As diffusers'; a local folder's ``ex4d_lora/`` (written by :meth:`save_pretrained`) is applied."""
        pipe = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        lora_dir = Path(os.fspath(pretrained_model_name_or_path)) / LORA_SUBFOLDER
        if lora_dir.is_dir():
            adapter_io.load_adapter(pipe, lora_dir)
        return pipe

    def load_ex4d_adapter(self, path) -> None:
        """Apply ``ex4d.ckpt`` or our adapter folder/file (LoRA + condition encoder)."""
        adapter_io.load_adapter(self, path)

    def save_ex4d_adapter(self, path) -> Path:
        """Write LoRA + condition encoder in our format (``adapter_config.json`` + ``adapter_model.safetensors``)."""
        return adapter_io.save_pipeline_adapter(self, path)

    def export_ex4d_ckpt(self, path) -> Path:
        """Write LoRA + condition encoder as the reference's flat ``ex4d.ckpt``."""
        return adapter_io.export_ex4d_ckpt(self, path)

    # ------------------------------------------------------------------ properties
    @property
    def guidance_scale(self):
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self):
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self):
        return self._num_timesteps

    @property
    def current_timestep(self):
        return self._current_timestep

    @property
    def interrupt(self):
        return self._interrupt

    @property
    def attention_kwargs(self):
        return self._attention_kwargs

    # ------------------------------------------------------------------ encoders
    @torch.no_grad()
    def encode_prompt(self, prompt: str, max_sequence_length: int = TEXT_LEN, device=None, dtype=None) -> torch.Tensor:
        """umT5 features (1, max_sequence_length, text_dim): truncated to the true token count, zero-padded back."""
        device = device or self._execution_device
        dtype = dtype or self.transformer.dtype
        inputs = self.tokenizer(
            [_clean_prompt(prompt)],
            padding="max_length",
            max_length=max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = inputs.input_ids, inputs.attention_mask
        n = int(mask.gt(0).sum())
        hidden = self.text_encoder(ids.to(device), mask.to(device)).last_hidden_state
        hidden = hidden.to(device=device, dtype=dtype)[:, :n]
        return torch.cat([hidden, hidden.new_zeros(1, max_sequence_length - n, hidden.shape[-1])], dim=1)

    @staticmethod
    def quantise_first_frame(video: torch.Tensor) -> torch.Tensor:
        """Frame 0 of the conditioning video through the reference's PIL round trip: (1, 3, H, W) in [−1, 1].

        The reference converts it with torchvision's ``to_pil_image(x·0.5 + 0.5)``, which *truncates*
        (``mul(255).byte()``: 63 of the 256 levels come back one lower), and reads the image back as
        ``float32(img)·(2/255) − 1`` in float32 (which differs in the last bit from ``img/255·2 − 1``).
        """
        x = video[:, :, 0].float() * 0.5 + 0.5
        levels = (x.clamp(0, 1) * 255).to(torch.uint8)  # float -> uint8 truncates toward zero, as .byte()
        return levels.float() * torch.tensor(2 / 255, dtype=torch.float32, device=levels.device) - 1

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, device=None) -> torch.Tensor:
        """CLIP tokens of the penultimate layer: bicubic squash to the CLIP size, CLIP mean/std (spec §6.4)."""
        device = device or self._execution_device
        size = int(self.image_encoder.config.image_size)
        mean, std = CLIP_MEAN, CLIP_STD
        if self.image_processor is not None:
            mean = tuple(getattr(self.image_processor, "image_mean", mean))
            std = tuple(getattr(self.image_processor, "image_std", std))
        x = F.interpolate(image.float(), size=(size, size), mode="bicubic", align_corners=False)
        x = x * 0.5 + 0.5
        x = (x - x.new_tensor(mean).view(1, 3, 1, 1)) / x.new_tensor(std).view(1, 3, 1, 1)  # on the image's device
        x = x.to(device=device, dtype=self.image_encoder.dtype)
        out = self.image_encoder(pixel_values=x, output_hidden_states=True)
        return out.hidden_states[-2]

    def _latent_stats(self, device, dtype):
        c = self.vae.config
        mean = torch.tensor(c.latents_mean).view(1, c.z_dim, 1, 1, 1).to(device, dtype)
        std = torch.tensor(c.latents_std).view(1, c.z_dim, 1, 1, 1).to(device, dtype)
        return mean, std

    @torch.no_grad()
    def vae_encode(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised posterior mean (z − mean)·(1/std) of a (B, 3, T, H, W) video in the VAE's value range.

        Multiplied by the reciprocal as the reference does (its scale is ``[mean, 1/std]``): the same bits.
        """
        x = video.to(device=self._execution_device, dtype=self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mode().float()
        mean, std = self._latent_stats(z.device, z.dtype)
        return (z - mean) * (1.0 / std)

    @torch.no_grad()
    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_stats(latents.device, torch.float32)
        z = (latents.float() / (1.0 / std) + mean).to(self.vae.dtype)  # the reference divides by its 1/std
        return self.vae.decode(z, return_dict=False)[0].float().clamp(-1, 1)

    def first_frame_condition(self, first_frame: torch.Tensor, num_frames: int) -> torch.Tensor:
        """y = [4 mask channels (1 on latent frame 0), VAE latent of (frame 0, zeros…)]: (1, 20, F, h, w)."""
        _, _, h, w = first_frame.shape
        clip = torch.cat([first_frame[:, :, None], first_frame.new_zeros(1, 3, num_frames - 1, h, w)], dim=2)
        lat = self.vae_encode(clip)
        f, lh, lw = lat.shape[2:]
        ind = torch.zeros(num_frames, dtype=lat.dtype, device=lat.device)
        ind[0] = 1
        ind = torch.cat([ind[:1].repeat(self.vae_scale_factor_temporal - 1), ind])  # frame 0 counted 4 times
        msk = ind.view(f, self.vae_scale_factor_temporal, 1, 1).expand(f, -1, lh, lw).transpose(0, 1)[None]
        return torch.cat([msk, lat], dim=1)

    def condition_tokens(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """CamVidEncoder(VAE(v), VAE(2·m′ − 1)): (1, dim, F, h/2, w/2), or None without an encoder."""
        if self.condition_encoder is None:
            return None
        z_v = self.vae_encode(video)
        z_m = self.vae_encode(encoder_mask_input(mask))
        with torch.no_grad():
            return self.condition_encoder(
                z_v.to(self.condition_encoder.dtype), z_m.to(self.condition_encoder.dtype)
            )

    def prepare_noise(self, num_frames: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """The reference's initial noise: randn((1, 16, (T−1)/4+1, H/8, W/8)), float32, on the generator's device."""
        shape = (
            1,
            self.transformer.config.out_channels,
            (num_frames - 1) // self.vae_scale_factor_temporal + 1,
            height // self.vae_scale_factor_spatial,
            width // self.vae_scale_factor_spatial,
        )
        return torch.randn(shape, generator=generator, dtype=torch.float32, device=generator.device)

    def predict_velocity(self, latents, y, t, prompt_embeds, negative_prompt_embeds, image_embeds, tokens):
        """One guided denoiser evaluation v̂ = v_neg + g·(v_pos − v_neg) (same tokens and image for both branches).

        ``t``: (1,) timestep on the device. With ``self.cfg_batch`` (the default) both branches run as one batch of
        2 (one DiT call per step instead of two; equal within floating-point rounding to two calls).
        """
        dtype = self.transformer.dtype
        x = torch.cat([latents, y], dim=1).to(dtype)
        img = image_embeds.to(dtype)
        guided = self.do_classifier_free_guidance
        cfg_parallel = getattr(self, "cfg_parallel", None)
        with inject_condition_tokens(self.transformer, tokens):
            if guided and cfg_parallel is not None:
                # one branch per rank (ex4d.inpaint.parallel), the two velocities exchanged
                import torch.distributed as dist

                mine = self._denoise(("cond", "uncond")[cfg_parallel.rank], x, t,
                                     (prompt_embeds, negative_prompt_embeds)[cfg_parallel.rank], img)
                both = [torch.empty_like(mine) for _ in range(2)]
                dist.all_gather(both, mine.contiguous())
                v, v_neg = both
            elif guided and getattr(self, "cfg_batch", True):
                v = self._denoise("cond_uncond", torch.cat([x, x]), t.expand(2),
                                  torch.cat([prompt_embeds, negative_prompt_embeds]), torch.cat([img, img]))
                v, v_neg = v.chunk(2)
            else:
                v = self._denoise("cond", x, t, prompt_embeds, img)
                v_neg = self._denoise("uncond", x, t, negative_prompt_embeds, img) if guided else None
        if guided:
            v = v_neg + self._guidance_scale * (v - v_neg)
        return v

    def _denoise(self, branch: str, x, t, text, img):
        # A named cache context per branch: step caches (speed.py's fast modes) keep one state per branch.
        context = getattr(self.transformer, "cache_context", None)
        with context(branch) if context is not None else contextlib.nullcontext():
            return self.transformer(
                hidden_states=x,
                timestep=t,
                encoder_hidden_states=text,
                encoder_hidden_states_image=img,
                attention_kwargs=self._attention_kwargs,
                return_dict=False,
            )[0].float()

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        color_video,
        mask_video,
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        height: int = DEFAULT_HEIGHT,
        width: int = DEFAULT_WIDTH,
        num_frames: int | None = None,
        num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        seed: int = DEFAULT_SEED,
        generator: torch.Generator | None = None,
        mask_erode: int | None = None,
        erode_seed: int | None = None,
        denoising_strength: float = 1.0,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ):
        """Generate the completed video.

        Args:
            color_video: masked colour render, (T, H, W, 3) uint8 RGB (any size; resized to ``height × width``).
            mask_video: mask render, (T, H, W[, 3]) uint8, 255 = seen; same T, H, W as ``color_video``.
            num_frames: frames to generate (4k+1); ``None`` = the input's length (which must be 4k+1). Inputs of
                another length are sampled as the reference does (⌊linspace⌋, or padded with the last frame).
            seed: seeds the initial noise (a CPU generator, as the reference) and, unless ``erode_seed`` is given,
                the per-frame erosion kernels. ``generator`` overrides the noise generator.
            mask_erode: fixed erosion kernel (0 = none); ``None`` = random in 2…8 per frame (seeded).
            output_type: ``"np"`` (uint8 frames), ``"pt"`` (float video in [−1, 1]) or ``"latent"``.
        """
        if output_type not in ("np", "pt", "latent"):
            raise InputError(f"output_type must be 'np', 'pt' or 'latent', got {output_type!r}")
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise InputError(f"callback_on_step_end_tensor_inputs must be in {self._callback_tensor_inputs}, got {bad}")
        if num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if not isinstance(self.scheduler, Ex4dFlowMatchScheduler):
            raise InputError(
                f"the scheduler must be Ex4dFlowMatchScheduler (the reference's schedule), got "
                f"{type(self.scheduler).__name__}; load the pipeline with ex4d.inpaint.load_pipeline"
            )
        self._guidance_scale = float(guidance_scale)
        self._attention_kwargs = attention_kwargs
        self._current_timestep = None
        self._interrupt = False
        device = self._execution_device

        # 1. preprocessing (resize, sample/pad, erode, binarise, scale): (1, 3, T, H, W) each
        video, mask = prepare_videos(
            color_video, mask_video, height, width, num_frames, mask_erode,
            seed if erode_seed is None else erode_seed, device=device,
        )
        num_frames = video.shape[2]
        check_size(num_frames, height, width)

        # 2. text
        dtype = self.transformer.dtype
        prompt_embeds = self.encode_prompt(prompt, TEXT_LEN, device, dtype)
        negative_prompt_embeds = None
        if self.do_classifier_free_guidance:
            negative_prompt_embeds = self.encode_prompt(negative_prompt, TEXT_LEN, device, dtype)

        # 3. first frame: CLIP tokens and the latent image condition y (20 channels)
        first = self.quantise_first_frame(video)
        image_embeds = self.encode_image(first, device)
        y = self.first_frame_condition(first, num_frames).to(device)

        # 4. EX-4D condition tokens from the masked colour video and the (doubly scaled) mask
        tokens = self.condition_tokens(video, mask)

        # 5. initial noise (CPU generator, float32) and the schedule
        if latents is None:
            if generator is None:
                generator = torch.Generator("cpu").manual_seed(int(seed))
            latents = self.prepare_noise(num_frames, height, width, generator)
        latents = latents.to(device=device, dtype=torch.float32)
        if latents.shape[2:] != y.shape[2:]:
            raise InputError(f"latents have shape {tuple(latents.shape)}, expected (1, 16, {', '.join(map(str, y.shape[2:]))})")
        self.scheduler.set_timesteps(num_inference_steps, device=device, denoising_strength=denoising_strength)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)

        # 6. denoising: CFG, Euler steps. The step index is read from host timesteps and the DiT's timestep is
        # sliced on the device, so the loop never waits for the GPU.
        timesteps_host = timesteps.detach().cpu()
        timesteps_dev = timesteps.to(device)
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps_host):
                if self.interrupt:
                    continue
                self._current_timestep = t
                v = self.predict_velocity(
                    latents, y, timesteps_dev[i : i + 1], prompt_embeds, negative_prompt_embeds, image_embeds, tokens
                )
                latents = self.scheduler.step(v, t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    local = {"latents": latents, "prompt_embeds": prompt_embeds,
                             "negative_prompt_embeds": negative_prompt_embeds}
                    cb = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs})
                    cb = cb or {}
                    latents = cb.pop("latents", latents)
                    prompt_embeds = cb.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = cb.pop("negative_prompt_embeds", negative_prompt_embeds)
                bar.update()
        self._current_timestep = None

        # 7. decode: clamp to [−1, 1], uint8((x + 1)·127.5)
        if output_type == "latent":
            frames = latents
        else:
            decoded = self.vae_decode(latents.to(device))
            if output_type == "pt":
                frames = decoded
            else:
                u8 = ((decoded[0] + 1) * 127.5).clamp(0, 255).to(torch.uint8)
                frames = u8.permute(1, 2, 3, 0).cpu().numpy()
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return Ex4dPipelineOutput(frames=frames)
