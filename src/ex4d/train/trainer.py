"""The EX-4D trainer: rank-16 LoRA + condition encoder on a frozen Wan2.1-I2V, flow matching (spec §6.7, §7, §9.2).

What is trained: the peft LoRA of the DiT (the reference's 10 linears per block) and the CamVidEncoder, as float32
parameters; everything else (DiT, VAE, umT5, CLIP) is frozen in ``weight_dtype`` (the VAE stays float32).

One step (per clip): x0 = VAE(target), z_c = VAE(cond), z_m = VAE(2·mask − 1); CLIP tokens and y from frame 0 of the
target (what the pipeline derives from frame 0 of its conditioning video, which is the source frame); t drawn from the
1000-step shift-5 schedule; x_t = (1−σ)x0 + σε; loss = w(t)·MSE(DiT(x_t, y, t, text, clip, tokens), ε − x0).
The conditioning uses the generation pipeline's own methods (``encode_prompt``, ``quantise_first_frame``,
``encode_image``, ``first_frame_condition``, ``vae_encode``), so training sees what inference sees.

Scale-out is accelerate's: the trainable graph (encoder + DiT) is one ``nn.Module`` handed to
``accelerator.prepare``, so ``accelerate launch`` with a DDP or FSDP config (``configs/accelerate/``) works unchanged.
Randomness (clip order, erosion kernels, noise, timesteps) is derived from (seed, step, micro-step, rank), so a resumed
run continues exactly where the interrupted one stopped.

Outputs in ``RUN``: ``config.json``, ``log.jsonl`` (+ TensorBoard events if installed), ``checkpoints/step_N/``
(accelerate state without the frozen backbone, plus ``adapter/`` in our format and ``trainer_state.json``),
``validation/step_N.mp4`` (cond | output | target), and at the end ``adapter/`` and ``ex4d.ckpt``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ex4d.errors import InputError
from ex4d.inpaint import lora as lora_mod
from ex4d.inpaint.condition_encoder import CamVidEncoder, inject_condition_tokens
from ex4d.inpaint.preprocess import encoder_mask_input
from ex4d.train.config import TrainConfig
from ex4d.train.dataset import PairDataset, PairItem
from ex4d.train.objective import FlowMatchingObjective, add_noise

__all__ = ["AdapterModel", "EMA", "Trainer", "TrainResult", "freeze_and_add_adapter", "train"]

logger = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TEXT_LEN = 512  # Wan2.1's text context (the pipeline pads prompts to it)
_STEP_DIR = re.compile(r"^step_(\d+)$")
_WRAPPER_SEGMENT = re.compile(r"(?:^|(?<=\.))(?:_checkpoint_wrapped_module|_fsdp_wrapped_module|_orig_mod)\.")


# ---------------------------------------------------------------------------------------------- model
class AdapterModel(nn.Module):
    """The trainable graph: condition encoder → tokens added after the DiT's patch embedding → DiT velocity."""

    def __init__(self, transformer: nn.Module, condition_encoder: CamVidEncoder, input_dtype: torch.dtype):
        super().__init__()
        self.transformer = transformer
        self.condition_encoder = condition_encoder
        self.input_dtype = input_dtype

    def forward(self, noisy, y, timestep, text, image, z_cond, z_mask) -> torch.Tensor:
        """noisy (B, 16, F, h, w), y (B, 20, F, h, w), timestep (B,) = 1000σ, text (B, 512, D_text),
        image (B, 257, D_clip), z_cond / z_mask (B, 16, F, h, w) → velocity (B, 16, F, h, w) float32."""
        tokens = self.condition_encoder(z_cond, z_mask)
        x = torch.cat([noisy, y], dim=1).to(self.input_dtype)
        with inject_condition_tokens(self.transformer, tokens):
            out = self.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=text.to(self.input_dtype),
                                   encoder_hidden_states_image=image.to(self.input_dtype), return_dict=False)[0]
        return out.float()


def freeze_and_add_adapter(pipe, rank: int = 16, alpha: float | None = None, encoder_hidden: int = 1024,
                           seed: int = 0) -> list[nn.Parameter]:
    """Freeze every backbone model, add the LoRA / condition encoder if absent; returns the trainable (fp32) params.

    The LoRA and encoder are created from a fixed seed (the same on every process) and cast to float32, as the
    reference upcasts its trainable parameters.
    """
    for name in ("text_encoder", "image_encoder", "vae", "transformer", "condition_encoder"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
            module.eval()
    t = pipe.transformer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if not lora_mod.has_lora(t):
            lora_mod.apply_lora(t, rank, alpha)
        if pipe.condition_encoder is None:
            c = t.config
            enc = CamVidEncoder(pipe.vae.config.z_dim, encoder_hidden, c.num_attention_heads * c.attention_head_dim,
                                tuple(c.patch_size))
            pipe.register_modules(condition_encoder=enc.to(next(t.parameters()).device))
    params = []
    for name, p in t.named_parameters():
        if f".{lora_mod.ADAPTER_NAME}." in name and ".lora_" in name:
            p.data = p.data.float()
            p.requires_grad_(True)
            params.append(p)
    pipe.condition_encoder.float().requires_grad_(True)
    params += list(pipe.condition_encoder.parameters())
    return params


# ---------------------------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of the trainable parameters (fp32 shadow, warm-up decay min(d, (1+n)/(10+n)))."""

    def __init__(self, params: list[nn.Parameter], decay: float):
        self.params, self.decay, self.updates = params, float(decay), 0
        self.shadow = [p.detach().float().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach().float(), 1 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s.to(p.dtype))

    @contextlib.contextmanager
    def applied(self):
        """Within the block the parameters hold the EMA weights."""
        saved = [p.detach().clone() for p in self.params]
        self.copy_to_params()
        try:
            yield
        finally:
            with torch.no_grad():
                for s, p in zip(saved, self.params):
                    p.copy_(s)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": [s.cpu() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for s, v in zip(self.shadow, state["shadow"]):
            s.copy_(v)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: dict[int, float] = field(default_factory=dict)  #: optimizer step -> mean loss of that step


# ---------------------------------------------------------------------------------------------- trainer
class Trainer:
    """``Trainer(config).train()``; ``pipe`` may be given (tests, notebooks) instead of ``config.wan_dir``."""

    def __init__(self, config: TrainConfig, pipe=None, accelerator=None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        self.cfg = config.validate()
        if not self.cfg.output_dir:
            raise InputError("--output-dir: an output folder is needed")
        if not self.cfg.data:
            raise InputError("--data: a training data folder is needed")
        self.run_dir = Path(self.cfg.output_dir)
        self.dtype = DTYPES[self.cfg.weight_dtype]

        # data first: a bad folder fails before the (slow) model load
        self.dataset = PairDataset(self.cfg.data, self.cfg.num_frames, self.cfg.height, self.cfg.width,
                                   self.cfg.mask_erode)
        val = self.cfg.validation_clip
        if val is not None and val not in self.dataset.clips:
            raise InputError(f"validation_clip {val!r} is not in {self.cfg.data}/index.jsonl")
        self.val_index = self.dataset.clips.index(val) if val is not None else 0
        self.train_indices = [i for i, c in enumerate(self.dataset.clips) if val is None or c != val]
        if not self.train_indices:
            raise InputError(f"{self.cfg.data}: no training clips left after holding out the validation clip")

        self.accelerator = accelerator or Accelerator(mixed_precision=self.cfg.mixed_precision)
        self.fsdp = self.accelerator.distributed_type == DistributedType.FSDP

        if pipe is None:
            pipe = self._load_pipeline()
        self.pipe = pipe
        pipe.set_progress_bar_config(disable=True)
        self.params = freeze_and_add_adapter(pipe, self.cfg.lora_rank, self.cfg.lora_alpha, self.cfg.encoder_hidden,
                                             self.cfg.seed)
        # Under FSDP2 the DiT's own (non-reentrant) checkpointing fails in recomputation (measured on 4 GPUs);
        # accelerate's fsdp_activation_checkpointing wraps the blocks instead (configs/accelerate/fsdp.yaml).
        fsdp_ac = self.fsdp and getattr(self.accelerator.state.fsdp_plugin, "activation_checkpointing", False)
        if self.cfg.gradient_checkpointing and not fsdp_ac:
            pipe.transformer.enable_gradient_checkpointing()
        self.device = self.accelerator.device
        pipe.to(self.device)
        self.objective = FlowMatchingObjective(shift=self.cfg.shift)
        with torch.no_grad():  # the text condition is fixed: encoded once
            self.text = pipe.encode_prompt(self.cfg.prompt, TEXT_LEN, self.device, self.dtype)

        model = AdapterModel(pipe.transformer, pipe.condition_encoder, self.dtype)
        optimizer = torch.optim.AdamW(self.params, lr=self.cfg.lr, betas=tuple(self.cfg.adam_betas),
                                      eps=self.cfg.adam_eps, weight_decay=self.cfg.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if self.fsdp:  # FSDP replaced the parameters by sharded ones
            self.params = [p for p in self.model.parameters() if p.requires_grad]
        warm = self.cfg.warmup_steps
        # linear warm-up to lr, then constant; stepped once per optimizer step (not prepared: accelerate would step
        # it once per process)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        self.accelerator.register_for_checkpointing(self.lr_scheduler)
        self.ema = EMA(self.params, self.cfg.ema_decay) if self.cfg.ema_decay > 0 else None
        if self.ema is not None:
            self.accelerator.register_for_checkpointing(self.ema)
        self.accelerator.register_save_state_pre_hook(self._save_hook)
        self.accelerator.register_load_state_pre_hook(self._load_hook)
        self.step = 0
        self._fixed_batches: dict[int, dict] = {}

    # ------------------------------------------------------------------ setup helpers
    def _load_pipeline(self):
        from ex4d.inpaint.loading import load_pipeline

        if not self.cfg.wan_dir:
            raise InputError("--wan-dir: a Wan2.1-I2V folder is needed")
        return load_pipeline(self.cfg.wan_dir, self.cfg.init_adapter, torch_dtype=self.dtype)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _unwrapped(self) -> AdapterModel:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------ sampling (deterministic in the step)
    def _sample_number(self, step: int, micro: int, b: int) -> int:
        """Global index of one clip draw: distinct for every (step, micro-step, process, batch slot)."""
        acc = self.accelerator
        return ((step * self.cfg.grad_accum + micro) * acc.num_processes + acc.process_index) * self.cfg.batch_size + b

    def _clip_for(self, n: int) -> int:
        """Draw n walks through per-epoch permutations of the training clips."""
        epoch, pos = divmod(n, len(self.train_indices))
        perm = torch.randperm(len(self.train_indices), generator=torch.Generator().manual_seed(self.cfg.seed + 7919 * epoch))
        return self.train_indices[int(perm[pos])]

    def _generator(self, step: int, micro: int) -> torch.Generator:
        acc = self.accelerator
        if self.cfg.fixed_noise:
            step, micro = 0, 0
        key = ((self.cfg.seed * 1_000_003 + step) * max(self.cfg.grad_accum, 1) + micro) * acc.num_processes + acc.process_index
        return torch.Generator().manual_seed(key % (2**63))

    # ------------------------------------------------------------------ encoding
    @torch.no_grad()
    def encode(self, items: list[PairItem]) -> dict:
        """Latents and conditions of a batch (all on the device): x0, z_cond, z_mask, y, image."""
        p = self.pipe
        out = {k: [] for k in ("x0", "z_cond", "z_mask", "y", "image")}
        for it in items:
            target = it.target[None].to(self.device)
            out["x0"].append(p.vae_encode(target))
            out["z_cond"].append(p.vae_encode(it.cond[None].to(self.device)))
            out["z_mask"].append(p.vae_encode(encoder_mask_input(it.mask[None].to(self.device))))
            first = p.quantise_first_frame(target)
            out["image"].append(p.encode_image(first, self.device))
            out["y"].append(p.first_frame_condition(first, target.shape[2]).to(self.device))
        return {k: torch.cat(v) for k, v in out.items()}

    def _items(self, step: int, micro: int) -> list[PairItem]:
        items = []
        for b in range(self.cfg.batch_size):
            n = self._sample_number(0 if self.cfg.fixed_noise else step, micro, b)
            items.append(self.dataset.item(self._clip_for(n), erode_seed=self.cfg.seed * 7_919 + n))
        return items

    def micro_step(self, step: int, micro: int) -> torch.Tensor:
        """Forward + backward of one micro-batch; returns the (unscaled) loss."""
        if self.cfg.fixed_noise:  # the same batch every step: encoded once
            if micro not in self._fixed_batches:
                self._fixed_batches[micro] = self.encode(self._items(step, micro))
            batch = self._fixed_batches[micro]
        else:
            batch = self.encode(self._items(step, micro))
        x0 = batch["x0"]
        gen = self._generator(step, micro)
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float32).to(self.device)
        draw = self.objective.draw(x0.shape[0], gen)
        noisy = add_noise(x0, noise, draw.sigma.to(self.device))
        text = self.text.expand(x0.shape[0], -1, -1)
        pred = self.model(noisy, batch["y"], draw.timestep.to(self.device), text, batch["image"], batch["z_cond"],
                          batch["z_mask"])
        loss = self.objective.loss(pred, x0, noise, draw)
        self.accelerator.backward(loss / self.cfg.grad_accum)
        return loss.detach()

    def train_step(self) -> float:
        """One optimizer step (grad_accum micro-steps); returns the loss averaged over micro-steps and processes."""
        self.model.train()
        losses = []
        for micro in range(self.cfg.grad_accum):
            last = micro == self.cfg.grad_accum - 1
            ctx = contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)
            with ctx:
                losses.append(self.micro_step(self.step, micro))
        if self.cfg.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        loss = self.accelerator.reduce(torch.stack(losses).mean(), reduction="mean")
        return float(loss)

    # ------------------------------------------------------------------ adapter state
    def trainable_state(self) -> tuple[dict, dict]:
        """``(lora {module: {lora_A, lora_B}}, encoder state dict)`` as full CPU tensors (collective under FSDP)."""
        lora, enc = {}, {}
        for name, p in self._unwrapped().named_parameters():
            if not p.requires_grad:
                continue
            name = _WRAPPER_SEGMENT.sub("", name)  # FSDP/activation-checkpoint wrappers insert path segments
            t = p.full_tensor() if hasattr(p, "full_tensor") else p
            t = t.detach().cpu().float().clone()
            if name.startswith("condition_encoder."):
                enc[name[len("condition_encoder."):]] = t
            else:
                m = re.match(rf"^transformer\.(.+)\.(lora_[AB])\.{lora_mod.ADAPTER_NAME}\.weight$", name)
                if m is None:
                    raise RuntimeError(f"unexpected trainable parameter {name}")
                lora.setdefault(m.group(1), {})[m.group(2)] = t
        return lora, enc

    def _alpha(self) -> float | None:
        return lora_mod.lora_alpha(self.pipe.transformer)

    def _encoder_like(self, enc_state: dict) -> CamVidEncoder:
        return CamVidEncoder.from_ex4d_state_dict(enc_state)

    def save_adapter(self, path) -> Path:
        """Our adapter format from the current trainable weights (call on all processes; main writes)."""
        from ex4d.inpaint.loading import save_adapter

        lora, enc = self.trainable_state()
        if self.is_main:
            save_adapter(path, lora, self._encoder_like(enc), self._alpha())
        return Path(path)

    # ------------------------------------------------------------------ checkpoints
    def _save_hook(self, models, weights, output_dir):
        # The frozen backbone is not saved (tens of GB); the trainable weights go to adapter/ (see checkpoint()).
        if not self.fsdp:
            weights.clear()

    def _load_hook(self, models, input_dir):
        if self.fsdp:
            return
        from ex4d.inpaint.loading import read_adapter

        models.clear()
        lora, enc, _ = read_adapter(Path(input_dir) / "adapter")
        m = self._unwrapped()
        lora_mod.load_lora(m.transformer, lora)
        with torch.no_grad():
            m.condition_encoder.load_state_dict(enc, strict=True)

    def checkpoint(self) -> Path:
        folder = self.run_dir / "checkpoints" / f"step_{self.step}"
        tmp = folder.with_name(folder.name + ".tmp")
        if self.is_main and tmp.exists():
            shutil.rmtree(tmp)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        self.save_adapter(tmp / "adapter")
        if self.is_main:
            (tmp / "trainer_state.json").write_text(json.dumps({"step": self.step}) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            tmp.replace(folder)  # a checkpoint folder exists complete or not at all
            self._prune_checkpoints()
        self.accelerator.wait_for_everyone()
        return folder

    def _prune_checkpoints(self) -> None:
        keep = self.cfg.keep_checkpoints
        if keep <= 0:
            return
        for old in list_checkpoints(self.run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def resume(self, which: str) -> int:
        folder = resolve_checkpoint(self.run_dir, which)
        self.accelerator.load_state(str(folder))
        self.step = int(json.loads((folder / "trainer_state.json").read_text())["step"])
        return self.step

    # ------------------------------------------------------------------ validation
    def _to_uint8(self, video: torch.Tensor) -> np.ndarray:
        """(3, T, H, W) in [−1, 1] → (T, H, W, 3) uint8."""
        return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()

    @torch.no_grad()
    def validate(self) -> Path | None:
        """Generate the validation pair with the current (EMA) adapter; writes validation/step_N.mp4 (main only)."""
        if self.fsdp:
            logger.warning("validation videos are not made under FSDP (the DiT is sharded)")
            return None
        if not self.is_main:
            return None
        from ex4d.inpaint.prompts import DEFAULT_NEGATIVE_PROMPT
        from ex4d.io.video import save_video

        c = self.cfg
        color, mask = self.dataset.validation_inputs(self.val_index)
        ref = self.dataset.item(self.val_index, erode_seed=c.seed)
        ctx = self.ema.applied() if self.ema is not None else contextlib.nullcontext()
        with ctx:
            out = self.pipe(color, mask, prompt=c.prompt, negative_prompt=DEFAULT_NEGATIVE_PROMPT, height=c.height,
                            width=c.width, num_frames=c.num_frames, num_inference_steps=c.validation_steps,
                            guidance_scale=c.validation_guidance, seed=c.seed, output_type="np").frames
        panel = np.concatenate([self._to_uint8(ref.cond), out, self._to_uint8(ref.target)], axis=2)
        return save_video(self.run_dir / "validation" / f"step_{self.step}.mp4", panel, fps=15)

    # ------------------------------------------------------------------ export
    def export(self) -> tuple[Path, Path]:
        """``RUN/adapter/`` (our format) and ``RUN/ex4d.ckpt`` (the reference's flat dict) of the final weights."""
        from ex4d.inpaint.loading import export_ex4d_ckpt, save_adapter, save_pipeline_adapter

        adapter, ckpt = self.run_dir / "adapter", self.run_dir / "ex4d.ckpt"
        if self.fsdp:
            lora, enc = self.trainable_state()
            if self.is_main:
                alpha = self._alpha()
                save_adapter(adapter, lora, self._encoder_like(enc), alpha)
                export_reference_ckpt(lora, enc, alpha, ckpt)
        elif self.is_main:
            save_pipeline_adapter(self.pipe, adapter)
            export_ex4d_ckpt(self.pipe, ckpt)
        self.accelerator.wait_for_everyone()
        return adapter, ckpt

    # ------------------------------------------------------------------ loop
    def _write_config(self) -> None:
        from ex4d.io.atomic import atomic_path

        with atomic_path(self.run_dir / "config.json") as tmp:
            tmp.write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")

    def train(self) -> TrainResult:
        from tqdm.auto import tqdm

        c = self.cfg
        if c.resume:
            self.resume(c.resume)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_config()
        log = RunLog(self.run_dir) if self.is_main else None
        result = TrainResult(self.run_dir, self.step)
        bar = tqdm(total=c.steps, initial=self.step, desc="train", disable=c.quiet or not self.is_main)
        start = time.perf_counter()
        try:
            while self.step < c.steps:
                t0 = time.perf_counter()
                loss = self.train_step()
                if not math.isfinite(loss):
                    raise RuntimeError(f"the loss is {loss} at step {self.step} (lower lr, or check the data)")
                result.losses[self.step] = loss
                bar.update()
                bar.set_postfix(loss=f"{loss:.4f}")
                if log is not None and (self.step == 1 or (c.log_every and self.step % c.log_every == 0)
                                        or self.step == c.steps):
                    log.write(self.step, loss=loss, lr=self.lr_scheduler.get_last_lr()[0],
                              step_s=time.perf_counter() - t0, elapsed_s=time.perf_counter() - start)
                if c.validate_every and self.step % c.validate_every == 0:
                    self.validate()
                if c.checkpoint_every and self.step % c.checkpoint_every == 0 and self.step < c.steps:
                    self.checkpoint()
            self.checkpoint()
            if self.ema is not None:
                self.ema.copy_to_params()  # the exported adapter is the EMA
            self.export()
        finally:
            bar.close()
            if log is not None:
                log.close()
        result.step = self.step
        return result


# ---------------------------------------------------------------------------------------------- helpers
def export_reference_ckpt(lora: dict, encoder_state: dict, alpha: float | None, path) -> Path:
    """The reference's flat ``ex4d.ckpt`` from plain tensors (the FSDP path; α ≠ r is folded into B)."""
    rank = lora_mod.lora_rank(lora)
    if alpha is not None and alpha != rank:
        lora = {m: {"lora_A": ab["lora_A"], "lora_B": ab["lora_B"] * (alpha / rank)} for m, ab in lora.items()}
    sd = lora_mod.lora_to_reference_state_dict(lora)
    sd.update(encoder_state)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(sd, tmp)
    tmp.replace(path)
    return path


def list_checkpoints(run_dir) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(run_dir, which: str) -> Path:
    """``"latest"`` → the newest checkpoint of ``run_dir``; otherwise a checkpoint folder path."""
    if which == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise InputError(f"--resume latest: {run_dir} has no checkpoint to resume from")
        return found[-1]
    folder = Path(which)
    if not (folder / "trainer_state.json").is_file():
        raise InputError(f"--resume: {folder} is not a checkpoint folder (no trainer_state.json)")
    return folder


class RunLog:
    """Scalars to ``log.jsonl`` (always) and TensorBoard (when the ``tensorboard`` package is installed)."""

    def __init__(self, run_dir: Path):
        self.file = open(Path(run_dir) / "log.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, step: int, **scalars) -> None:
        self.file.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(config: TrainConfig, pipe=None) -> TrainResult:
    """Run a training as configured (see :class:`Trainer`)."""
    return Trainer(config, pipe=pipe).train()
