"""The base-model folder: detecting its layout and loading the original Wan2.1 layout, converted on load.

Two layouts are accepted for ``load_pipeline(base, …)``:

* **diffusers** (``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers``): ``model_index.json`` and the subfolders
  ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``image_encoder/``.
* **original** (``Wan-AI/Wan2.1-I2V-14B-480P``, what the EX-4D README downloads):

  ==================  ===============================================================================
  DiT                 ``diffusion_pytorch_model-0000N-of-0000M.safetensors`` + ``diffusion_pytorch_model.safetensors.index.json``
                      (or one ``diffusion_pytorch_model.safetensors``); ``config.json`` (``num_heads``, ``eps``) if present
  VAE                 ``Wan2.1_VAE.pth``
  text encoder        ``models_t5_umt5-xxl-enc-bf16.pth``
  image encoder       ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``
  tokenizer           ``google/umt5-xxl/``
  ==================  ===============================================================================

  In an original-layout folder each component may instead be the diffusers subfolder (``vae/``,
  ``text_encoder/``, ``image_encoder/``, ``tokenizer/``, ``transformer/``), e.g. to reuse converted encoders.

The folder counts as diffusers when it has ``model_index.json``, as original when it has any of the original files;
a partial folder gives one :class:`InputError` naming everything that is missing. Tensors are converted
(:mod:`ex4d.inpaint.convert`) and cast tensor by tensor while reading, and the models are built on the ``meta``
device and take the tensors without a copy, so the peak memory is about one copy of the model in ``torch_dtype``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch

from ex4d.errors import InputError
from ex4d.inpaint import convert

__all__ = [
    "DIT_INDEX",
    "DIT_SINGLE",
    "VAE_FILE",
    "T5_FILE",
    "CLIP_FILE",
    "TOKENIZER_DIR",
    "BaseFolder",
    "inspect_base",
    "build_model",
    "load_original_components",
]

logger = logging.getLogger(__name__)

DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DIT_SINGLE = "diffusion_pytorch_model.safetensors"
VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
TOKENIZER_DIR = "google/umt5-xxl"
DIFFUSERS_SUBFOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder")
_SHARD = re.compile(r"^diffusion_pytorch_model-(\d+)-of-(\d+)\.safetensors$")


@dataclass
class BaseFolder:
    """What :func:`inspect_base` found. ``parts[name]`` is ``("diffusers", folder)`` or ``("original", [files])``."""

    path: Path
    layout: str
    parts: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)


def _dit_files(base: Path) -> tuple[list[Path] | None, list[str]]:
    """``(shard files, missing names)`` of the original DiT; ``(None, [])`` when there is no trace of it."""
    index = base / DIT_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{index}: not a safetensors index ({type(exc).__name__}: {exc})") from None
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (base / n).is_file()]
        return [base / n for n in names], missing
    if (base / DIT_SINGLE).is_file():
        return [base / DIT_SINGLE], []
    shards = sorted(p for p in base.glob("diffusion_pytorch_model-*-of-*.safetensors") if _SHARD.match(p.name))
    if shards:
        total = int(_SHARD.match(shards[0].name).group(2))
        width = len(_SHARD.match(shards[0].name).group(1))
        names = [f"diffusion_pytorch_model-{i:0{width}d}-of-{total:0{width}d}.safetensors" for i in range(1, total + 1)]
        missing = [n for n in names if not (base / n).is_file()]
        return [base / n for n in names], missing
    return None, []


def _one(base: Path, name: str, pattern: str) -> Path | None:
    if (base / name).is_file():
        return base / name
    found = sorted(base.glob(pattern))
    return found[0] if found else None


def inspect_base(base) -> BaseFolder:
    """Detect the layout of ``base`` and where each component is; raises :class:`InputError` if incomplete."""
    base = Path(base)
    if not base.is_dir():
        raise InputError(f"{base}: no such model folder (expected a Wan2.1-I2V folder, diffusers or original layout)")
    cfg = base / "config.json"
    if cfg.is_file() and not (base / "model_index.json").is_file():
        try:
            cls = json.loads(cfg.read_text()).get("_class_name")
        except (json.JSONDecodeError, AttributeError):
            cls = None
        if cls in ("WanTransformer3DModel", "AutoencoderKLWan", "WanImageToVideoPipeline"):
            raise InputError(f"{base}: a diffusers {cls} subfolder; pass the pipeline folder above it ({base.parent})")
    sub = {s: base / s for s in DIFFUSERS_SUBFOLDERS if (base / s).is_dir()}
    dit, dit_missing = _dit_files(base)
    originals = {
        "transformer": dit,
        "vae": _one(base, VAE_FILE, "Wan2.1_VAE*.pth"),
        "text_encoder": _one(base, T5_FILE, "models_t5_*.pth"),
        "image_encoder": _one(base, CLIP_FILE, "models_clip_*.pth"),
        "tokenizer": base / TOKENIZER_DIR if (base / TOKENIZER_DIR).is_dir() else None,
    }
    if (base / "model_index.json").is_file() or (sub and not any(v is not None for v in originals.values())):
        folder = BaseFolder(base, "diffusers", {s: ("diffusers", p) for s, p in sub.items()})
        folder.missing = ([] if (base / "model_index.json").is_file() else ["model_index.json"]) + [
            s for s in DIFFUSERS_SUBFOLDERS if s not in sub]
        if folder.missing:
            raise InputError(
                f"{base}: not a complete Wan2.1-I2V diffusers folder, missing {', '.join(folder.missing)}")
        return folder
    if not any(v is not None for v in originals.values()):
        raise InputError(
            f"{base}: not a Wan2.1-I2V folder: expected the diffusers layout (model_index.json, "
            f"{', '.join(s + '/' for s in DIFFUSERS_SUBFOLDERS)}) or the original layout "
            f"({DIT_INDEX} + shards, {VAE_FILE}, {T5_FILE}, {CLIP_FILE}, {TOKENIZER_DIR}/)"
        )
    names = {"transformer": f"{DIT_INDEX} + diffusion_pytorch_model-*-of-*.safetensors", "vae": VAE_FILE,
             "text_encoder": T5_FILE, "image_encoder": CLIP_FILE, "tokenizer": TOKENIZER_DIR + "/"}
    folder = BaseFolder(base, "original")
    for part in DIFFUSERS_SUBFOLDERS:
        if part in sub:
            folder.parts[part] = ("diffusers", sub[part])
        elif part == "transformer" and dit is not None:
            if dit_missing:
                folder.missing.append(f"DiT shard{'s' if len(dit_missing) > 1 else ''} {', '.join(dit_missing)}")
            folder.parts[part] = ("original", dit)
        elif originals[part] is not None:
            folder.parts[part] = ("original", originals[part])
        else:
            folder.missing.append(names[part])
    if folder.missing:
        raise InputError(f"{base}: incomplete Wan2.1-I2V folder (original layout), missing {'; '.join(folder.missing)}")
    return folder


# ---------------------------------------------------------------------------------------------- reading
def _read_pth(path: Path) -> dict:
    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # older serialisation: no mmap
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad input
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"{path}: expected a flat {{name: tensor}} state dict")
    return dict(sd)


def _read_dit(files: list[Path], cast: Callable[[str, torch.Tensor], torch.Tensor]) -> dict:
    """All shards, renamed and cast one tensor at a time (the fp32 originals are never all in memory)."""
    from safetensors import safe_open

    out, unknown = {}, []
    for f in files:
        try:
            with safe_open(str(f), framework="pt", device="cpu") as fh:
                keys = list(fh.keys())
                prefix = next((p for p in ("model.diffusion_model.", "diffusion_model.")
                               if keys and all(k.startswith(p) for k in keys)), "")
                for k in keys:
                    new = convert.dit_key(k[len(prefix):])
                    if new is None:
                        if k[len(prefix):] not in convert.DIT_IGNORED:
                            unknown.append(k)
                        continue
                    out[new] = (k[len(prefix):], cast(new, fh.get_tensor(k)))
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{f}: unreadable safetensors file ({type(exc).__name__}: {exc})") from None
    if unknown:
        hint = ""
        if any(".attn1." in k or k.startswith("condition_embedder.") for k in unknown):
            hint = " (these are diffusers names: pass the diffusers folder itself, the one with model_index.json)"
        raise InputError(
            f"{files[0].parent}: the DiT shards hold {len(unknown)} unexpected tensors, e.g. {unknown[:3]}{hint}")
    return out


def _caster(dtype: torch.dtype | None, keep_fp32=()) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """Cast to ``dtype`` (float32 when None), keeping the model's fp32 modules in fp32 as ``from_pretrained`` does."""
    target = torch.float32 if dtype is None else dtype
    keep = tuple(keep_fp32 or ())

    def cast(name: str, t: torch.Tensor) -> torch.Tensor:
        # Always a fresh, allocator-aligned copy: tensors read from a file (mmap, safetensors buffers) can sit at
        # odd offsets, which makes CPU matmuls round differently from the same weights loaded by diffusers, and
        # would keep the whole file mapped.
        if not t.is_floating_point():
            return t.clone(memory_format=torch.contiguous_format)
        want = torch.float32 if keep and any(m in name.split(".") for m in keep) else target
        return t.to(dtype=want, copy=True, memory_format=torch.contiguous_format)

    return cast


def build_model(factory: Callable[[], torch.nn.Module], state_dict: Mapping[str, torch.Tensor], source: str):
    """``factory()`` on the meta device, then its parameters *are* ``state_dict``'s tensors (no copy, strict).

    A wrapper prefix of the model's own names (``vision_model.`` in some transformers versions) is added to the
    keys when needed.
    """
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = factory()
    expected = model.state_dict().keys()
    sd = dict(state_dict)
    if sd and not set(sd) <= set(expected):
        s0 = next(iter(sd))
        prefixes = {k[: -len(s0)] for k in expected if k.endswith("." + s0)}
        prefixes = [p for p in prefixes if all(p + s in expected for s in sd)]
        if len(prefixes) == 1:
            sd = {prefixes[0] + k: v for k, v in sd.items()}
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise InputError(
            f"{source}: the converted weights do not fit {type(model).__name__}"
            + (f"; missing {len(missing)}, e.g. {missing[:3]}" if missing else "")
            + (f"; unexpected {len(unexpected)}, e.g. {unexpected[:3]}" if unexpected else "")
        )
    own = model.state_dict()
    bad = [k for k in sd if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise InputError(f"{source}: tensor {k} has shape {tuple(sd[k].shape)}, the model needs {tuple(own[k].shape)}")
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------- components
def load_transformer(files: list[Path], torch_dtype=None):
    from diffusers import WanTransformer3DModel

    base = files[0].parent
    num_heads = eps = None
    cfg_path = base / "config.json"
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text())
            num_heads, eps = cfg.get("num_heads"), cfg.get("eps")
        except json.JSONDecodeError as exc:
            raise InputError(f"{cfg_path}: invalid JSON ({exc})") from None
    keep = WanTransformer3DModel._keep_in_fp32_modules
    named = _read_dit(files, _caster(torch_dtype, keep))
    shapes = {orig: tuple(t.shape) for orig, t in named.values()}
    config = convert.transformer_config_from_shapes(shapes, num_heads, eps)
    if num_heads is None:
        logger.info("%s: no config.json; assuming head dim %d (%d heads)", base, convert.WAN_HEAD_DIM,
                    config["num_attention_heads"])
    sd = {k: t for k, (_, t) in named.items()}
    return build_model(lambda: WanTransformer3DModel(**config), sd, f"{base} (DiT)")


def load_vae(path: Path):
    from diffusers import AutoencoderKLWan

    from ex4d.inpaint.convert import VAE_LATENTS_MEAN, VAE_LATENTS_STD

    config, sd = convert.convert_vae(_read_pth(path), str(path))
    cast = _caster(torch.float32)
    sd = {k: cast(k, v) for k, v in sd.items()}
    z = config["z_dim"]
    if z != len(VAE_LATENTS_MEAN):
        raise InputError(f"{path}: latent width {z}; only the 16-channel Wan2.1 VAE (with its latent statistics) is supported")
    config.update(latents_mean=list(VAE_LATENTS_MEAN), latents_std=list(VAE_LATENTS_STD))
    return build_model(lambda: AutoencoderKLWan(**config), sd, str(path))


def load_text_encoder(path: Path, torch_dtype=None):
    from transformers import UMT5Config, UMT5EncoderModel

    config, sd = convert.convert_t5(_read_pth(path), str(path))
    cast = _caster(torch_dtype)
    sd = {k: cast(k, v) for k, v in sd.items()}
    sd["encoder.embed_tokens.weight"] = sd["shared.weight"]  # tied, one tensor
    return build_model(lambda: UMT5EncoderModel(UMT5Config(**config)), sd, str(path))


def load_image_encoder(path: Path, torch_dtype=None):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config, sd = convert.convert_clip(_read_pth(path), str(path))
    cast = _caster(torch_dtype)
    sd = {k: cast(k, v) for k, v in sd.items()}
    return build_model(lambda: CLIPVisionModel(CLIPVisionConfig(**config)), sd, str(path))


def load_original_components(folder: BaseFolder, torch_dtype=None) -> dict:
    """tokenizer, text_encoder, image_encoder, vae, transformer of an original-layout folder (VAE in float32)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, CLIPVisionModel, UMT5EncoderModel

    kw_t = {} if torch_dtype is None else {"dtype": torch_dtype}
    out = {}
    for part, (kind, where) in folder.parts.items():
        try:
            if kind == "diffusers":
                if part == "transformer":
                    out[part] = WanTransformer3DModel.from_pretrained(
                        where, **({} if torch_dtype is None else {"torch_dtype": torch_dtype}))
                elif part == "vae":
                    out[part] = AutoencoderKLWan.from_pretrained(where, torch_dtype=torch.float32)
                elif part == "text_encoder":
                    out[part] = UMT5EncoderModel.from_pretrained(where, **kw_t)
                elif part == "image_encoder":
                    out[part] = CLIPVisionModel.from_pretrained(where, **kw_t)
                else:
                    out[part] = AutoTokenizer.from_pretrained(where)
            elif part == "transformer":
                out[part] = load_transformer(where, torch_dtype)
            elif part == "vae":
                out[part] = load_vae(where)
            elif part == "text_encoder":
                out[part] = load_text_encoder(where, torch_dtype)
            elif part == "image_encoder":
                out[part] = load_image_encoder(where, torch_dtype)
            else:
                out[part] = AutoTokenizer.from_pretrained(where)
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{where}: cannot load the {part} ({type(exc).__name__}: {exc})") from None
    return out
