"""EX-4D generation stage: Wan2.1-I2V + rank-16 LoRA + the condition encoder, on diffusers (spec §6–§8).

Needs the ``diffusion`` extra (diffusers, transformers, peft, accelerate, safetensors, ftfy, sentencepiece).
"""

from ex4d.inpaint.condition_encoder import CamVidEncoder, inject_condition_tokens
from ex4d.inpaint.memory import configure_memory
from ex4d.inpaint.schedule import Ex4dFlowMatchScheduler, reference_sigmas, reference_timesteps

__all__ = [
    "CamVidEncoder",
    "configure_memory",
    "Ex4dFlowMatchScheduler",
    "Ex4dInpaintPipeline",
    "generate",
    "inject_condition_tokens",
    "load_pipeline",
    "reference_sigmas",
    "reference_timesteps",
]


def __getattr__(name):  # lazy: the pipeline imports diffusers' pipelines, which is slow
    if name == "Ex4dInpaintPipeline":
        from ex4d.inpaint.pipeline import Ex4dInpaintPipeline

        return Ex4dInpaintPipeline
    if name == "load_pipeline":
        from ex4d.inpaint.loading import load_pipeline

        return load_pipeline
    if name == "generate":
        from ex4d.inpaint.generate import generate

        return generate
    raise AttributeError(name)
