"""``ex4d train``: the EX-4D adapter trainer on the command line (settings: defaults < --config file < flags)."""

from __future__ import annotations

import os

from ex4d.errors import InputError
from ex4d.utils.argtypes import non_negative_int, positive_float, positive_int

__all__ = ["add_train_parser"]

# flag -> (TrainConfig key, argparse kwargs); every default is None so that only given flags override the file
_FLAGS = {
    "--steps": ("steps", dict(type=positive_int, help="optimizer steps (default 2000)")),
    "--lr": ("lr", dict(type=positive_float, help="AdamW learning rate (default 1e-4)")),
    "--warmup-steps": ("warmup_steps", dict(type=non_negative_int, help="linear warm-up steps (default 100)")),
    "--batch-size": ("batch_size", dict(type=positive_int, help="clips per GPU per micro-step (default 1)")),
    "--grad-accum": ("grad_accum", dict(type=positive_int, help="micro-steps per optimizer step (default 1)")),
    "--lora-rank": ("lora_rank", dict(type=positive_int, help="LoRA rank (default 16, as the reference)")),
    "--ema-decay": ("ema_decay", dict(type=float, help="EMA of the adapter, e.g. 0.999 (default 0 = off)")),
    "--checkpoint-every": ("checkpoint_every", dict(type=non_negative_int, help="steps between checkpoints")),
    "--validate-every": ("validate_every", dict(type=non_negative_int, help="steps between validation videos")),
    "--validation-clip": ("validation_clip", dict(help="clip held out for the validation videos")),
    "--seed": ("seed", dict(type=int)),
    "--mixed-precision": ("mixed_precision", dict(choices=("no", "bf16", "fp16"), help="default bf16")),
    "--weight-dtype": ("weight_dtype", dict(choices=("bf16", "fp16", "fp32"),
                                            help="dtype of the frozen backbone (default bf16; use fp32 on a CPU)")),
    "--num-frames": ("num_frames", dict(type=positive_int, help="4k+1 frames per clip (default 49)")),
    "--height": ("height", dict(type=positive_int, help="default 512")),
    "--width": ("width", dict(type=positive_int, help="default 512")),
    "--init-adapter": ("init_adapter", dict(help="start from this ex4d.ckpt / adapter folder")),
    "--resume": ("resume", dict(help="'latest' (newest checkpoint of --output-dir) or a checkpoint folder")),
}


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train the EX-4D LoRA + condition encoder on prepared pairs (flow matching)",
        description="Trains the rank-16 LoRA and the condition encoder of a frozen Wan2.1-I2V on pairs from "
                    "'ex4d prepare'. Several GPUs / machines: accelerate launch -m ex4d.cli train ... (see "
                    "docs/training.md). Needs the 'diffusion' extra.")
    p.add_argument("--data", help="pair folder (DATA/index.jsonl, DATA/<clip>/target.mp4 + pair.npz)")
    p.add_argument("--wan-dir", help="Wan2.1-I2V folder (diffusers or original layout)")
    p.add_argument("--output-dir", help="run folder: checkpoints/, validation/, log.jsonl, adapter/, ex4d.ckpt")
    p.add_argument("--config", help="train.yaml / .json with any of the settings (flags win)")
    for flag, (_, kwargs) in _FLAGS.items():
        p.add_argument(flag, default=None, **kwargs)
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false", default=None,
                   help="faster, much more memory")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bar")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    try:
        from ex4d.train.config import make_config
        from ex4d.train.trainer import train
    except ImportError as exc:
        raise InputError(f"training needs the diffusion extra: pip install 'ex4d[diffusion]' ({exc})") from None
    overrides = {key: getattr(args, key) for key, _ in _FLAGS.values()}
    overrides.update(data=args.data, wan_dir=args.wan_dir, output_dir=args.output_dir,
                     gradient_checkpointing=args.gradient_checkpointing, quiet=args.quiet)
    config = make_config(args.config, **overrides)
    for key in ("data", "wan_dir", "output_dir"):
        if not getattr(config, key):
            raise InputError(f"--{key.replace('_', '-')} is required (on the command line or in --config)")
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:  # one line, also under accelerate launch
        print(result.run_dir / "ex4d.ckpt")
    return 0
