"""Typed options of the EX-4D generation stage: how the model is loaded and how one video is sampled.

:class:`ModelOptions` are fixed when the pipeline loads (weights, precision, memory placement, speed set-up — the
step cache and fp8 matmuls included, since :func:`ex4d.inpaint.speed.configure_speed` installs them on the loaded
model); :class:`SamplingOptions` are per call (steps, guidance, seed, mask erosion, prompts). The output geometry
(frames, size, frame rate) is neither: ``ex4d generate`` takes it from its flags, ``ex4d run`` and the web app from
the reconstruction (:func:`fill_geometry`). This module imports nothing heavy, so that the CLI can build the options
before deciding whether the diffusion extra is needed. CLI flags: :mod:`ex4d.generation_cli`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ex4d.errors import InputError

DTYPES = ("bf16", "fp16", "fp32")
OFFLOADS = ("none", "model", "group")
GROUP_OFFLOAD_TYPES = ("block_level", "leaf_level")
PARALLEL_MODES = ("ulysses", "ring", "cfg")


@dataclass(frozen=True)
class ModelOptions:
    """How the Wan2.1-I2V + EX-4D pipeline is loaded (see :func:`ex4d.inpaint.generate.load_generation_pipeline`).

    Attributes:
        model_dir, adapter: the Wan2.1-I2V folder and ``ex4d.ckpt`` / adapter folder.
        device: None = the device of the run that uses the model.
        dtype: ``bf16`` | ``fp16`` | ``fp32``; None = bf16 on CUDA, fp32 elsewhere.
        offload, group_offload_type, fp8: memory placement (:mod:`ex4d.inpaint.memory`).
        speed, attention, compile, compile_backend, fuse_lora, cache, fp8_matmul: the fields of
            :class:`ex4d.inpaint.speed.SpeedSettings` (``speed`` is its ``mode``).
        extra_loras: ``(file, scale)`` pairs of third-party LoRAs fused into the DiT.
        parallel, parallel_mode: context parallelism (``ex4d generate`` under torchrun only).
    """

    model_dir: Path | None = None
    adapter: Path | None = None
    device: str | None = None
    dtype: str | None = None
    offload: str = "none"
    group_offload_type: str = "block_level"
    fp8: bool = False
    speed: str = "quality"
    attention: str = "auto"
    compile: bool | None = None
    compile_backend: str = "inductor"
    fuse_lora: bool = True
    cache: str | None = None
    fp8_matmul: bool = False
    extra_loras: tuple[tuple[Path, float], ...] = ()
    parallel: int = 1
    parallel_mode: str = "ulysses"

    def __post_init__(self):
        for name, value, choices in (("dtype", self.dtype, DTYPES + (None,)), ("offload", self.offload, OFFLOADS),
                                     ("group_offload_type", self.group_offload_type, GROUP_OFFLOAD_TYPES),
                                     ("parallel_mode", self.parallel_mode, PARALLEL_MODES)):
            if value not in choices:
                raise InputError(f"{name} must be one of {', '.join(c for c in choices if c)}, got {value!r}",
                                 argument=name)
        object.__setattr__(self, "extra_loras", tuple((Path(p), float(s)) for p, s in self.extra_loras))
        for name in ("model_dir", "adapter"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))

    def torch_dtype(self):
        """The ``torch.dtype`` of :attr:`dtype`, or None."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, None: None}[self.dtype]

    def speed_settings(self):
        """These options as :class:`ex4d.inpaint.speed.SpeedSettings`."""
        from ex4d.inpaint.speed import SpeedSettings

        return SpeedSettings(mode=self.speed, attention=self.attention, compile=self.compile,
                             compile_backend=self.compile_backend, fuse_lora=self.fuse_lora, cache=self.cache,
                             fp8_matmul=self.fp8_matmul)

    def load_kwargs(self) -> dict:
        """Keyword arguments of :func:`ex4d.inpaint.generate.load_generation_pipeline` after the device."""
        return dict(torch_dtype=self.torch_dtype(), offload=self.offload, fp8=self.fp8,
                    group_offload_type=self.group_offload_type, speed=self.speed_settings(),
                    extra_loras=list(self.extra_loras))

    def generate_kwargs(self) -> dict:
        """Keyword arguments of :func:`ex4d.inpaint.generate.generate` that load the model."""
        return dict(model_dir=self.model_dir, adapter=self.adapter, parallel=self.parallel,
                    parallel_mode=self.parallel_mode, **self.load_kwargs())

    def cache_settings(self) -> dict:
        """What changes the generated frames besides file contents (the weight files are keyed by content)."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.name not in ("model_dir", "adapter", "extra_loras", "device")}
        settings["extra_lora_scales"] = [scale for _, scale in self.extra_loras]
        return settings

    def weight_files(self) -> dict[str, Path | None]:
        """The files and folders whose contents the loaded model depends on, by role."""
        return {"model_dir": self.model_dir, "adapter": self.adapter,
                **{f"extra_lora_{i}": path for i, (path, _) in enumerate(self.extra_loras)}}

    def check(self, device: str = "auto") -> None:
        """What loading would refuse (fp8 matmuls without an fp8 GPU, an unknown ``--cache``), without loading:
        one-line InputError."""
        from ex4d.inpaint.generate import check_generation_setup
        from ex4d.inpaint.speed import parse_cache
        from ex4d.utils.device import resolve_device

        try:
            parse_cache(self.cache)  # a typo in --cache fails now, not after the earlier stages
        except InputError as exc:  # named as the flag once (the CLI prefixes the flag it belongs to)
            raise InputError(exc.message.removeprefix("--cache: "), argument="cache") from None
        check_generation_setup(resolve_device(self.device or device), torch_dtype=self.torch_dtype(),
                               offload=self.offload, fp8=self.fp8, speed=self.speed_settings())

    def load(self, device: str = "auto", progress: bool = True):
        """The pipeline, loaded by :func:`ex4d.inpaint.generate.load_generation_pipeline` (the one loader)."""
        from ex4d.inpaint.generate import load_generation_pipeline
        from ex4d.utils.device import resolve_device

        if self.model_dir is None or self.adapter is None:
            raise InputError("--fill ex4d needs the Wan2.1-I2V folder (--wan-dir) and ex4d.ckpt (--ex4d-ckpt)")
        pipe = load_generation_pipeline(self.model_dir, self.adapter, resolve_device(self.device or device),
                                        **self.load_kwargs())
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=not progress)
        return pipe


@dataclass(frozen=True)
class SamplingOptions:
    """How one video is sampled. ``prompt`` / ``negative_prompt`` None = the reference's; ``mask_erode`` None = the
    reference's random 2–8 kernel, seeded with ``seed``."""

    steps: int = 25
    cfg: float = 5.0
    seed: int = 0
    mask_erode: int | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    window: int = 49
    window_overlap: int = 8

    def __post_init__(self):
        from ex4d.utils.windows import check_windows

        if self.steps < 1:
            raise InputError(f"--steps must be >= 1, got {self.steps}", argument="steps")
        if self.mask_erode is not None and self.mask_erode < 0:
            raise InputError(f"--mask-erode must be >= 0, got {self.mask_erode}", argument="mask_erode")
        check_windows(self.window, self.window_overlap)

    def generate_kwargs(self) -> dict:
        """Keyword arguments of :func:`ex4d.inpaint.generate.generate` (prompts filled in with the defaults)."""
        from ex4d.inpaint.prompts import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT

        return dict(num_inference_steps=self.steps, guidance_scale=self.cfg, seed=self.seed,
                    mask_erode=self.mask_erode, prompt=DEFAULT_PROMPT if self.prompt is None else self.prompt,
                    negative_prompt=DEFAULT_NEGATIVE_PROMPT if self.negative_prompt is None
                    else self.negative_prompt, window=self.window, window_overlap=self.window_overlap)


@dataclass(frozen=True)
class GenerationOptions:
    """The model and sampling options of the ``ex4d`` fill, as ``ex4d run``, ``--manifest`` and ``ex4d ui`` pass
    them."""

    model: ModelOptions = field(default_factory=ModelOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)

    def generate_kwargs(self) -> dict:
        """Everything :func:`ex4d.inpaint.generate.generate` takes besides files, pipe, device and geometry."""
        return {**self.model.generate_kwargs(), **self.sampling.generate_kwargs()}

    @classmethod
    def from_kwargs(cls, options: dict) -> GenerationOptions:
        """Options from :func:`ex4d.inpaint.generate.generate`'s keyword names (the older dict form of
        ``generate_options``). Geometry keys are refused: the fill takes them from the reconstruction."""
        options = dict(options)
        geometry = sorted(k for k in ("height", "width", "num_frames", "fps") if k in options)
        if geometry:
            raise InputError(f"generate_options: {', '.join(geometry)} come from the reconstruction (set the "
                             "working size and frame count of the run instead)")
        model, sampling = {}, {}
        renames = {"num_inference_steps": "steps", "guidance_scale": "cfg"}
        for key in ("num_inference_steps", "guidance_scale", "seed", "mask_erode", "prompt", "negative_prompt",
                    "window", "window_overlap"):
            if key in options:
                sampling[renames.get(key, key)] = options.pop(key)
        speed = options.pop("speed", None)
        if speed is not None:
            model.update(speed=speed.mode, attention=speed.attention, compile=speed.compile,
                         compile_backend=speed.compile_backend, fuse_lora=speed.fuse_lora, cache=speed.cache,
                         fp8_matmul=speed.fp8_matmul)
        dtype = options.pop("torch_dtype", None)
        if dtype is not None:
            names = {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}
            model["dtype"] = names.get(str(dtype), dtype)
        if options.pop("cpu_offload", False) and options.get("offload", "none") == "none":
            options["offload"] = "model"
        known = {f.name for f in dataclasses.fields(ModelOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"generate_options: unknown option(s) {', '.join(unknown)}")
        model.update(options)
        return cls(ModelOptions(**model), SamplingOptions(**sampling))


def as_generation_options(options: GenerationOptions | dict | None) -> GenerationOptions:
    """``options`` as :class:`GenerationOptions` (a dict in :meth:`GenerationOptions.from_kwargs` form accepted)."""
    if options is None:
        return GenerationOptions()
    if isinstance(options, GenerationOptions):
        return options
    return GenerationOptions.from_kwargs(options)


@dataclass(frozen=True)
class FillGeometry:
    """Frames, size and rate of a generated video."""

    num_frames: int
    height: int
    width: int
    fps: float


def fill_geometry(num_frames: int, height: int, width: int, fps: float) -> tuple[FillGeometry, str | None]:
    """The generation geometry of a reconstruction of ``num_frames`` frames of ``height`` × ``width`` at ``fps``:
    every frame (a clip that is not one 4k+1 window is generated as windows or padded, and comes out whole), the
    sides rounded up to multiples of 16 as the model needs (:mod:`ex4d.inpaint.preprocess`), and a one-line note
    when that changed the size (else None)."""
    from ex4d.inpaint.preprocess import round_size

    h, w = round_size(height, width)
    note = None
    if (h, w) != (height, width):
        note = (f"the ex4d fill generates {h}×{w} frames for the {height}×{width} render (the model takes sides that "
                "are multiples of 16)")
    return FillGeometry(num_frames, h, w, float(fps)), note
