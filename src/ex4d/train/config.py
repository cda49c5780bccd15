"""Trainer settings: one dataclass with defaults, loadable from YAML/JSON and overridable by CLI flags.

Precedence: defaults < ``--config train.yaml`` < explicit command-line flags. Unknown keys are an error (a typo in
a config file must not silently train with a default).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ex4d.errors import InputError

__all__ = ["TrainConfig", "load_config_file", "make_config"]

MIXED_PRECISION = ("no", "bf16", "fp16")
WEIGHT_DTYPES = ("bf16", "fp16", "fp32")


@dataclass
class TrainConfig:
    """All settings of ``ex4d train`` (spec §9.2; the reference's lr/steps are unknown, these are our defaults)."""

    # paths
    data: str | None = None  #: pair folder (DATA/index.jsonl + DATA/<clip>/...)
    wan_dir: str | None = None  #: Wan2.1-I2V folder (diffusers or original layout)
    output_dir: str | None = None  #: run folder (checkpoints/, validation/, log.jsonl, adapter/, ex4d.ckpt)
    init_adapter: str | None = None  #: start from ex4d.ckpt / our adapter instead of a fresh LoRA + encoder
    resume: str | None = None  #: "latest" or a checkpoint folder (RUN/checkpoints/step_N)

    # optimisation
    steps: int = 2000  #: optimizer steps
    lr: float = 1e-4
    weight_decay: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int = 100  #: linear warm-up from 0 to lr, then constant
    batch_size: int = 1  #: clips per process per micro-step
    grad_accum: int = 1  #: micro-steps per optimizer step
    max_grad_norm: float = 1.0  #: 0 = no clipping
    ema_decay: float = 0.0  #: 0 = no EMA; e.g. 0.999 (the exported adapter is then the EMA)
    seed: int = 0

    # model
    lora_rank: int = 16
    lora_alpha: float | None = None  #: None = rank (scale 1, as the reference)
    encoder_hidden: int = 1024  #: CamVidEncoder width (reference 1024)
    weight_dtype: str = "bf16"  #: dtype of the frozen backbone (VAE stays fp32); trainable weights are fp32
    mixed_precision: str = "bf16"  #: accelerate autocast: no | bf16 | fp16
    gradient_checkpointing: bool = True
    shift: float = 5.0  #: flow-matching shift of the training schedule

    # data
    num_frames: int = 49
    height: int = 512
    width: int = 512
    prompt: str = ""  #: text condition (the reference's validation loader uses "")
    mask_erode: int | None = None  #: None = the reference's random 2…8 per frame; K = fixed; 0 = none
    validation_clip: str | None = None  #: held out of training; None = the first clip of the index (not held out)

    # periodic work
    checkpoint_every: int = 500  #: 0 = only at the end
    keep_checkpoints: int = 3  #: newest checkpoints kept (0 = all)
    validate_every: int = 500  #: 0 = never
    validation_steps: int = 10  #: denoising steps of a validation video
    validation_guidance: float = 5.0
    log_every: int = 10
    fixed_noise: bool = False  #: debugging: the same noise and timestep at every step (an overfitting check)
    quiet: bool = False

    def validate(self) -> "TrainConfig":
        """Raise :class:`InputError` for values that cannot work (before anything slow happens)."""
        for name in ("steps", "batch_size", "grad_accum", "lora_rank", "encoder_hidden", "num_frames", "height",
                     "width", "validation_steps"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "validate_every", "keep_checkpoints", "log_every"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise InputError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        if self.weight_dtype not in WEIGHT_DTYPES:
            raise InputError(f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {self.weight_dtype!r}")
        if self.num_frames % 4 != 1:
            raise InputError(f"num_frames must be 4k+1 (e.g. 49), got {self.num_frames}")
        if self.height % 16 or self.width % 16:
            raise InputError(f"height and width must be multiples of 16, got {self.height}x{self.width}")
        if self.mask_erode is not None and int(self.mask_erode) < 0:
            raise InputError(f"mask_erode must be >= 0, got {self.mask_erode}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def load_config_file(path) -> dict:
    """A YAML (``.yaml``/``.yml``, needs PyYAML) or JSON file holding a mapping of :class:`TrainConfig` keys."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InputError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or give a .json file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: invalid JSON ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return dict(data)


def _coerce(name: str, value: Any) -> Any:
    # YAML gives lists for tuples and may give "1e-4" as a string (PyYAML reads 1e-4 without a dot as str)
    if value is None:
        return None
    default = _FIELDS[name].default
    if name == "adam_betas":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise InputError(f"adam_betas must be two numbers, got {value!r}")
        return (float(value[0]), float(value[1]))
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1"):
                    return True
                if value.lower() in ("false", "no", "0"):
                    return False
                raise ValueError
            return bool(value)
        if isinstance(default, int) or name == "mask_erode":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float) or name == "lora_alpha":
            return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: {value!r} is not a valid {type(default).__name__}") from None
    return str(value) if isinstance(value, (str, Path)) else value


def make_config(file: str | Path | None = None, **overrides) -> TrainConfig:
    """Defaults, then the file's keys, then ``overrides`` whose value is not None; validated."""
    values: dict[str, Any] = {}
    sources = [load_config_file(file)] if file else []
    sources.append({k: v for k, v in overrides.items() if v is not None})
    for src in sources:
        unknown = sorted(set(src) - set(_FIELDS))
        if unknown:
            raise InputError(f"unknown training settings: {', '.join(unknown)} (known: {', '.join(_FIELDS)})")
        values.update({k: _coerce(k, v) for k, v in src.items()})
    return TrainConfig(**values).validate()

