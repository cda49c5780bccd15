"""The EX-4D conditioning encoder ("CamVidEncoder", spec §6.5) and its injection into the DiT.

Inputs are the VAE latents (normalised, as the I2V condition) of the masked colour video and of the mask video
(the latter encoded from 2·m′ − 1, see :func:`ex4d.inpaint.preprocess.encoder_mask_input`). They are concatenated
(colour first) to 2·C channels and mapped by

    latent_encoder: Conv3d(2C→D, 1) → SiLU → Conv3d(D→D, 1) → SiLU → Conv3d(D→D, 1)
    latent_patch_embedding: Conv3d(D→dim, kernel = stride = patch), zero-initialised

to ``[B, dim, F, H/2, W/2]`` — one vector per DiT patch token. The tokens are *added* to the output of the DiT's
``patch_embedding`` (before the time embedding and the blocks), which :func:`inject_condition_tokens` does with a
forward hook on ``transformer.patch_embedding``: adding on the ``[B, dim, F, H', W']`` conv output is the same as
adding ``tokens.flatten(2).transpose(1, 2)`` after diffusers' own flatten, since the token order (f, h, w) is kept.
No diffusers file is modified.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ex4d.errors import InputError

__all__ = ["CamVidEncoder", "ENCODER_KEYS", "inject_condition_tokens", "is_encoder_key"]

#: The 8 tensor names of the encoder in ``ex4d.ckpt`` (spec §7.2), which are also this module's state-dict keys.
ENCODER_KEYS = (
    "latent_encoder.0.weight",
    "latent_encoder.0.bias",
    "latent_encoder.2.weight",
    "latent_encoder.2.bias",
    "latent_encoder.4.weight",
    "latent_encoder.4.bias",
    "latent_patch_embedding.weight",
    "latent_patch_embedding.bias",
)


def is_encoder_key(key: str) -> bool:
    return key.startswith("latent_encoder.") or key.startswith("latent_patch_embedding.")


class CamVidEncoder(ModelMixin, ConfigMixin):
    """``CamVidEncoder(in_channels=16, hidden_channels=1024, out_channels=5120)`` of the reference.

    ``in_channels`` is the VAE latent width of *one* video; the first conv takes both (2·in_channels).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 16,
        hidden_channels: int = 1024,
        out_channels: int = 5120,
        patch_size: tuple[int, int, int] = (1, 2, 2),
    ):
        super().__init__()
        patch_size = tuple(int(p) for p in patch_size)
        self.latent_encoder = nn.Sequential(
            nn.Conv3d(2 * in_channels, hidden_channels, kernel_size=1),
            nn.SiLU(),
            nn.Conv3d(hidden_channels, hidden_channels, kernel_size=1),
            nn.SiLU(),
            nn.Conv3d(hidden_channels, hidden_channels, kernel_size=1),
        )
        self.latent_patch_embedding = nn.Conv3d(hidden_channels, out_channels, kernel_size=patch_size, stride=patch_size)
        nn.init.zeros_(self.latent_patch_embedding.weight)
        nn.init.zeros_(self.latent_patch_embedding.bias)

    def forward(self, video_latents: torch.Tensor, mask_latents: torch.Tensor) -> torch.Tensor:
        """``[B, C, F, h, w]`` × 2 → tokens ``[B, out_channels, F, h/2, w/2]``."""
        if video_latents.shape != mask_latents.shape:
            raise ValueError(f"latent shapes differ: {tuple(video_latents.shape)} vs {tuple(mask_latents.shape)}")
        h = torch.cat([video_latents, mask_latents], dim=1).to(self.dtype)
        return self.latent_patch_embedding(self.latent_encoder(h))

    @staticmethod
    def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict:
        """Sizes read from the tensors (nothing hard-coded): in/hidden/out channels and the patch size."""
        missing = [k for k in ENCODER_KEYS if k not in state_dict]
        if missing:
            raise InputError(f"condition-encoder weights incomplete: missing {', '.join(missing)}")
        w0 = state_dict["latent_encoder.0.weight"]
        wp = state_dict["latent_patch_embedding.weight"]
        if w0.ndim != 5 or wp.ndim != 5 or w0.shape[1] % 2:
            raise InputError(
                "condition-encoder weights have unexpected shapes: latent_encoder.0.weight "
                f"{tuple(w0.shape)}, latent_patch_embedding.weight {tuple(wp.shape)}"
            )
        return dict(
            in_channels=int(w0.shape[1]) // 2,
            hidden_channels=int(w0.shape[0]),
            out_channels=int(wp.shape[0]),
            patch_size=tuple(int(s) for s in wp.shape[2:]),
        )

    @classmethod
    def from_ex4d_state_dict(cls, state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None) -> "CamVidEncoder":
        """Build from the encoder part of an ``ex4d.ckpt``-style flat dict (other keys are ignored)."""
        sd = {k: v for k, v in state_dict.items() if is_encoder_key(k)}
        enc = cls(**cls.config_from_state_dict(sd))
        try:
            enc.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise InputError(f"condition-encoder weights do not fit: {exc}") from None
        if dtype is not None:
            enc.to(dtype)
        return enc


@contextlib.contextmanager
def inject_condition_tokens(transformer: nn.Module, tokens: torch.Tensor | None) -> Iterator[None]:
    """Within the block, ``transformer.patch_embedding(x)`` returns ``patch_embedding(x) + tokens``.

    ``tokens`` is ``[B, dim, F, H', W']`` (the encoder output); a batch of 1 broadcasts over a larger batch
    (e.g. batched CFG). ``None`` leaves the transformer untouched.
    """
    if tokens is None:
        yield
        return
    pe = transformer.patch_embedding

    def hook(module, args, output):
        if output.shape[2:] != tokens.shape[2:] or output.shape[1] != tokens.shape[1]:
            raise ValueError(
                f"condition tokens {tuple(tokens.shape)} do not fit the patch embedding output {tuple(output.shape)}"
            )
        return output + tokens.to(device=output.device, dtype=output.dtype)

    handle = pe.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
