"""Loading the generator: a Wan2.1-I2V folder (diffusers or original layout) + ``ex4d.ckpt`` or our adapter.

The adapter formats and their reading/writing live in :mod:`ex4d.inpaint.adapter_io` (shared with the pipeline's
own save/load methods); its public names are re-exported here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ex4d.errors import InputError, about
from ex4d.inpaint.adapter_io import (
    ADAPTER_CONFIG,
    ADAPTER_FORMAT,
    ADAPTER_WEIGHTS,
    apply_adapter_weights,
    export_ex4d_ckpt,
    load_adapter,
    read_adapter,
    read_adapter_weights,
    read_ex4d_ckpt,
    save_adapter,
    save_pipeline_adapter,
    split_ex4d_state_dict,
)
from ex4d.inpaint.schedule import Ex4dFlowMatchScheduler

__all__ = [
    "ADAPTER_FORMAT",
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "REQUIRED_SUBFOLDERS",
    "read_ex4d_ckpt",
    "split_ex4d_state_dict",
    "load_adapter",
    "save_adapter",
    "save_pipeline_adapter",
    "export_ex4d_ckpt",
    "read_adapter",
    "load_pipeline",
]

REQUIRED_SUBFOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder")


def load_pipeline(
    base,
    adapter=None,
    torch_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    shift: float = 5.0,
):
    """The EX-4D pipeline from a local Wan2.1-I2V folder plus ``ex4d.ckpt`` / our adapter.

    ``base`` is either the diffusers layout (``model_index.json`` and the subfolders transformer, vae,
    text_encoder, tokenizer and image_encoder, as ``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers``) or the original layout
    (``diffusion_pytorch_model-*-of-*.safetensors`` + index, ``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth``,
    ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``, ``google/umt5-xxl/``, as ``Wan-AI/Wan2.1-I2V-14B-480P``),
    which is converted on load (:mod:`ex4d.inpaint.original`); a partial folder raises one :class:`InputError`
    naming what is missing. The folder's own scheduler is replaced by the reference's
    (:class:`Ex4dFlowMatchScheduler` with ``shift``). The VAE is kept in float32 as diffusers' Wan examples do;
    other models take ``torch_dtype`` (default float32 for the original layout).
    """
    # The adapter file is read and checked first: a broken ex4d.ckpt is reported before the (slow) base loads.
    weights = None
    if adapter is not None:
        with about("adapter"):
            weights = read_adapter_weights(adapter)
    with about("model_dir"):
        pipe = _load_base(base, torch_dtype, shift)
    if weights is not None:
        with about("adapter"):
            apply_adapter_weights(pipe, weights, adapter)
    if device is not None:
        pipe.to(device)
    return pipe


def _load_base(base, torch_dtype, shift: float):
    from ex4d.inpaint.original import inspect_base, load_original_components
    from ex4d.inpaint.pipeline import Ex4dInpaintPipeline

    folder = inspect_base(base)
    base = folder.path
    if folder.layout == "diffusers":
        comps = _load_diffusers_components(base, torch_dtype)
    else:
        comps = load_original_components(folder, torch_dtype)
    transformer, vae = comps["transformer"], comps["vae"]
    if transformer.config.in_channels != 2 * vae.config.z_dim + vae.config.scale_factor_temporal:
        raise InputError(
            f"{base}: the transformer takes {transformer.config.in_channels} input channels; an I2V model needs "
            f"{2 * vae.config.z_dim + vae.config.scale_factor_temporal} (is this a text-to-video model?)"
        )
    if transformer.config.image_dim is None:
        raise InputError(f"{base}: the transformer has no image embedder (not an I2V model)")
    if transformer.config.image_dim != comps["image_encoder"].config.hidden_size:
        raise InputError(
            f"{base}: the transformer takes {transformer.config.image_dim}-wide image tokens, the image encoder "
            f"gives {comps['image_encoder'].config.hidden_size}"
        )
    if transformer.config.text_dim != comps["text_encoder"].config.d_model:
        raise InputError(
            f"{base}: the transformer takes {transformer.config.text_dim}-wide text features, the text encoder "
            f"gives {comps['text_encoder'].config.d_model}"
        )
    return Ex4dInpaintPipeline(
        tokenizer=comps["tokenizer"],
        text_encoder=comps["text_encoder"].eval(),
        image_encoder=comps["image_encoder"].eval(),
        vae=vae.eval(),
        transformer=transformer.eval(),
        scheduler=Ex4dFlowMatchScheduler(shift=shift),
    )


def _load_diffusers_components(base: Path, torch_dtype) -> dict:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, CLIPVisionModel, CLIPVisionModelWithProjection, UMT5EncoderModel

    kw = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    kw_t = {} if torch_dtype is None else {"dtype": torch_dtype}
    try:
        transformer = WanTransformer3DModel.from_pretrained(base, subfolder="transformer", **kw)
        vae = AutoencoderKLWan.from_pretrained(base, subfolder="vae", torch_dtype=torch.float32)
        text_encoder = UMT5EncoderModel.from_pretrained(base / "text_encoder", **kw_t)
        tokenizer = AutoTokenizer.from_pretrained(base / "tokenizer")
        enc_cfg = json.loads((base / "image_encoder" / "config.json").read_text())
        clip_cls = (CLIPVisionModelWithProjection if "CLIPVisionModelWithProjection" in enc_cfg.get("architectures", [])
                    else CLIPVisionModel)
        image_encoder = clip_cls.from_pretrained(base / "image_encoder", **kw_t)
    except Exception as exc:  # noqa: BLE001 - corrupt tensors raise library-specific types (SafetensorError, ...)
        raise InputError(f"{base}: cannot load the Wan components ({type(exc).__name__}: {exc})") from None
    return dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                image_encoder=image_encoder)
