"""Adapter I/O: reading, checking, applying and writing the EX-4D adapter (LoRA + condition encoder).

Used by both the loader (:mod:`ex4d.inpaint.loading`) and the pipeline's own save/load methods
(:mod:`ex4d.inpaint.pipeline`); it works on any pipeline object with ``transformer``, ``vae``,
``condition_encoder`` and ``register_modules`` and imports neither.

Formats:

* **``ex4d.ckpt``** (the official adapter, spec §7.2): one flat ``{name: tensor}`` dict readable with
  ``torch.load(weights_only=True)``; LoRA keys ``blocks.N.{self_attn,cross_attn}.{q,k,v,o}|ffn.{0,2}.lora_{A,B}.default.weight``
  in the reference's naming, plus the 8 ``latent_encoder.*`` / ``latent_patch_embedding.*`` keys. Unlike the
  reference (which loads it twice with ``strict=False``), every tensor must find its place here, and every adapted
  module must receive weights, or an :class:`InputError` says what is wrong.
* **our adapter** (a folder): ``adapter_config.json`` (``{"format": "ex4d-adapter", "version": 1, "lora": {"rank",
  "alpha", "target_modules"}, "condition_encoder": {…sizes…} | null}``) and ``adapter_model.safetensors`` with keys
  ``transformer.<diffusers module>.lora_{A,B}.weight`` and ``condition_encoder.<name>``.

Model sizes (rank, encoder widths, patch) are read from the tensors.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Mapping

import torch

from ex4d.errors import InputError, load_failure
from ex4d.io.atomic import atomic_path
from ex4d.inpaint import lora as lora_mod
from ex4d.inpaint.condition_encoder import ENCODER_KEYS, CamVidEncoder, is_encoder_key

__all__ = [
    "ADAPTER_FORMAT",
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "read_ex4d_ckpt",
    "split_ex4d_state_dict",
    "read_adapter",
    "read_adapter_weights",
    "apply_adapter_weights",
    "load_adapter",
    "save_adapter",
    "save_pipeline_adapter",
    "export_ex4d_ckpt",
]

logger = logging.getLogger(__name__)

ADAPTER_FORMAT = "ex4d-adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


# ---------------------------------------------------------------------------------------------- ex4d.ckpt
def read_ex4d_ckpt(path) -> dict[str, torch.Tensor]:
    """The flat state dict of an ``ex4d.ckpt`` (``torch.load(weights_only=True)``, on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():
            # A foreign pickle (protocol 4/5) makes torch warn before refusing it; the refusal is the message.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # weights_only=True: only tensors and plain containers are rebuilt; a pickled call is refused, not run.
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad input
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({load_failure(exc)})") from None
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        nested = [k for k, v in sd.items() if isinstance(v, Mapping)] if isinstance(sd, Mapping) else []
        hint = f" (it nests dicts under {nested[:3]})" if nested else ""
        raise InputError(f"{path}: expected a flat {{name: tensor}} dict as ex4d.ckpt{hint}")
    return dict(sd)


def split_ex4d_state_dict(sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> tuple[dict, dict]:
    """``(lora {diffusers module: {lora_A, lora_B}}, encoder {name: tensor})``; unknown keys are an error."""
    lora, other = lora_mod.parse_reference_lora(sd)
    encoder = {k: sd[k] for k in other if is_encoder_key(k)}
    unknown = [k for k in other if not is_encoder_key(k)]
    if not lora and not encoder:
        raise InputError(
            f"{source}: no EX-4D weights found (expected keys like 'blocks.0.self_attn.q.lora_A.default.weight' "
            f"and 'latent_encoder.0.weight'; found e.g. {sorted(sd)[:3]})"
        )
    if unknown:
        raise InputError(
            f"{source}: {len(unknown)} keys are neither reference LoRA nor condition-encoder keys, e.g. "
            f"{unknown[:3]} (prefixed or renamed keys would silently not load in the reference)"
        )
    if not lora:
        raise InputError(f"{source}: has condition-encoder weights but no LoRA keys")
    if not encoder:
        raise InputError(f"{source}: has LoRA weights but no condition-encoder keys ({ENCODER_KEYS[0]}, …)")
    return lora, encoder


# ---------------------------------------------------------------------------------------------- our format
def save_adapter(path, lora: Mapping | None, encoder: CamVidEncoder | None, alpha: float | None = None) -> Path:
    """Write our adapter folder (see module doc) from a LoRA dict and/or a condition encoder."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors, config = {}, {"format": ADAPTER_FORMAT, "version": 1, "lora": None, "condition_encoder": None}
    if lora:
        rank = lora_mod.lora_rank(lora)
        config["lora"] = {"rank": rank, "alpha": float(rank if alpha is None else alpha),
                          "target_modules": sorted(lora)}
        for module, ab in lora.items():
            for which in ("lora_A", "lora_B"):
                tensors[f"transformer.{module}.{which}.weight"] = ab[which].detach().cpu().contiguous()
    if encoder is not None:
        config["condition_encoder"] = {k: (list(v) if isinstance(v, tuple) else v)
                                       for k, v in encoder.config.items() if not k.startswith("_")}
        for k, v in encoder.state_dict().items():
            tensors[f"condition_encoder.{k}"] = v.detach().cpu().contiguous()
    # Each file appears complete or not at all; the config, written last, marks a finished adapter.
    with atomic_path(path / ADAPTER_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": ADAPTER_FORMAT})
    with atomic_path(path / ADAPTER_CONFIG) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return path


def read_adapter(path) -> tuple[dict, dict, dict]:
    """``(lora, encoder state dict, config)`` of our adapter folder (or its ``.safetensors`` file)."""
    from safetensors.torch import load_file

    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    weights = path if path.suffix == ".safetensors" else folder / ADAPTER_WEIGHTS
    cfg_path = folder / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise InputError(f"{folder}: not an ex4d adapter ({ADAPTER_CONFIG} missing)")
    if not weights.is_file():
        raise InputError(f"{folder}: ex4d adapter has no {weights.name}")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{cfg_path}: invalid JSON ({exc})") from None
    if config.get("format") != ADAPTER_FORMAT:
        raise InputError(f"{cfg_path}: format is {config.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{weights}: unreadable safetensors file ({exc})") from None
    lora, encoder, unknown = {}, {}, []
    for key, value in tensors.items():
        if key.startswith("condition_encoder."):
            encoder[key[len("condition_encoder."):]] = value
        elif key.startswith("transformer.") and key.endswith((".lora_A.weight", ".lora_B.weight")):
            module, which = key[len("transformer."):-len(".weight")].rsplit(".", 1)
            lora.setdefault(module, {})[which] = value
        else:
            unknown.append(key)
    if unknown:
        raise InputError(f"{weights}: unexpected keys {unknown[:3]}")
    if lora:
        rank = lora_mod.lora_rank(lora)
        if config.get("lora") and int(config["lora"].get("rank", rank)) != rank:
            raise InputError(f"{cfg_path}: rank {config['lora']['rank']} but the tensors have rank {rank}")
    return lora, encoder, config


# ---------------------------------------------------------------------------------------------- pipeline level
def _check_lora_fits(transformer, lora: Mapping) -> None:
    """Every reference module of the transformer gets A and B of the right shapes, and nothing else."""
    expected = set(lora_mod.lora_target_modules(transformer))
    unknown, missing = sorted(set(lora) - expected), sorted(expected - set(lora))
    if unknown:
        raise InputError(f"LoRA weights for modules the transformer does not have: {', '.join(unknown[:3])}")
    if missing:
        raise InputError(
            f"LoRA weights missing for {len(missing)} of {len(expected)} modules, e.g. "
            f"{lora_mod.diffusers_to_reference(missing[0])} ({missing[0]})"
        )
    rank = lora_mod.lora_rank(lora)
    modules = dict(transformer.named_modules())
    for name, ab in lora.items():
        layer = modules[name]
        layer = getattr(layer, "base_layer", layer)
        want_a, want_b = (rank, layer.in_features), (layer.out_features, rank)
        if tuple(ab["lora_A"].shape) != want_a or tuple(ab["lora_B"].shape) != want_b:
            raise InputError(
                f"LoRA tensors of {lora_mod.diffusers_to_reference(name)} have shapes A {tuple(ab['lora_A'].shape)}, "
                f"B {tuple(ab['lora_B'].shape)}; the transformer needs {want_a} and {want_b}"
            )


def _apply(pipe, lora: Mapping, alpha: float | None, encoder_sd: Mapping | None) -> None:
    """Validate everything first, then modify the pipeline (a bad adapter leaves it untouched)."""
    transformer = pipe.transformer
    enc = None
    if encoder_sd:
        enc = CamVidEncoder.from_ex4d_state_dict(encoder_sd)
        inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        if enc.config.out_channels != inner or tuple(enc.config.patch_size) != tuple(transformer.config.patch_size):
            raise InputError(
                f"condition encoder outputs {enc.config.out_channels} channels with patch "
                f"{tuple(enc.config.patch_size)}; the transformer has width {inner} and patch "
                f"{tuple(transformer.config.patch_size)}"
            )
        z = pipe.vae.config.z_dim if pipe.vae is not None else enc.config.in_channels
        if enc.config.in_channels != z:
            raise InputError(f"condition encoder expects {enc.config.in_channels}-channel latents, the VAE has {z}")
    if lora:
        _check_lora_fits(transformer, lora)
        if lora_mod.has_lora(transformer):
            transformer.delete_adapters(lora_mod.ADAPTER_NAME)
        lora_mod.apply_lora(transformer, lora_mod.lora_rank(lora), alpha)
        lora_mod.load_lora(transformer, lora)
    if enc is not None:
        device = next(transformer.parameters()).device
        torch.nn.Module.to(enc, device=device, dtype=transformer.dtype)  # (ModelMixin.to warns on any dtype)
        pipe.register_modules(condition_encoder=enc)


def read_adapter_weights(path) -> tuple[dict, dict, float | None]:
    """``(lora, encoder state dict, alpha)`` of ``ex4d.ckpt`` (any non-folder, non-safetensors file) or our folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such adapter file or folder (ex4d.ckpt or an ex4d adapter folder)")
    if path.is_dir() or path.suffix == ".safetensors":
        lora, encoder, config = read_adapter(path)
        return lora, encoder, (config.get("lora") or {}).get("alpha")
    lora, encoder = split_ex4d_state_dict(read_ex4d_ckpt(path), str(path))
    return lora, encoder, None


def apply_adapter_weights(pipe, weights: tuple[dict, dict, float | None], path) -> None:
    """Apply ``(lora, encoder state dict, alpha)`` read by :func:`read_adapter_weights` from ``path`` to ``pipe``."""
    lora, encoder, alpha = weights
    _apply(pipe, lora, alpha, encoder)
    logger.info("loaded %d LoRA tensors and %d condition-encoder tensors from %s", 2 * len(lora), len(encoder), path)


def load_adapter(pipe, path) -> None:
    """Apply ``ex4d.ckpt`` (any non-folder, non-safetensors file) or our adapter folder to ``pipe``."""
    apply_adapter_weights(pipe, read_adapter_weights(path), path)


def save_pipeline_adapter(pipe, path) -> Path:
    t = pipe.transformer
    lora = lora_mod.get_lora(t) if lora_mod.has_lora(t) else None
    return save_adapter(path, lora, pipe.condition_encoder, lora_mod.lora_alpha(t) if lora else None)


def export_ex4d_ckpt(pipe, path) -> Path:
    """Write the pipeline's LoRA + encoder as the reference's flat ``ex4d.ckpt`` (requires α = r)."""
    t = pipe.transformer
    if not lora_mod.has_lora(t) or pipe.condition_encoder is None:
        raise InputError("the pipeline has no EX-4D LoRA and condition encoder to export")
    lora = lora_mod.get_lora(t)
    rank, alpha = lora_mod.lora_rank(lora), lora_mod.lora_alpha(t)
    if alpha is not None and alpha != rank:
        # the reference format has no alpha: fold the scale into B
        lora = {m: {"lora_A": ab["lora_A"], "lora_B": ab["lora_B"] * (alpha / rank)} for m, ab in lora.items()}
    sd = lora_mod.lora_to_reference_state_dict(lora)
    sd.update({k: v.detach().cpu().clone() for k, v in pipe.condition_encoder.state_dict().items()})
    path = Path(path)
    with atomic_path(path) as tmp:  # no half-written checkpoint, and no temporary left on failure
        torch.save(sd, tmp)
    return path
