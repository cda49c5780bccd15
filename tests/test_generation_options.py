"""Typed generation options and their one set of CLI flags, shared by ``generate``, ``run`` and ``ui``."""

import dataclasses
from pathlib import Path

import pytest

from ex4d.cli import build_parser
from ex4d.errors import InputError
from ex4d.generation_cli import generation_options_from_args
from ex4d.generation_options import GenerationOptions, ModelOptions, SamplingOptions, as_generation_options

FLAGS = ["--wan-dir", "W", "--ex4d-ckpt", "C", "--steps", "4", "--cfg", "1", "--seed", "7", "--mask-erode", "3",
         "--prompt", "p", "--negative-prompt", "n", "--offload", "group", "--group-offload-type", "leaf_level",
         "--fp8", "--dtype", "fp16", "--speed", "eager", "--attention", "native", "--no-compile",
         "--cache", "taylorseer:3", "--fp8-matmul"]

EXPECTED = GenerationOptions(
    ModelOptions(model_dir=Path("W"), adapter=Path("C"), dtype="fp16", offload="group", group_offload_type="leaf_level",
                 fp8=True, speed="eager", attention="native", compile=False, cache="taylorseer:3", fp8_matmul=True),
    SamplingOptions(steps=4, cfg=1.0, seed=7, mask_erode=3, prompt="p", negative_prompt="n"))


@pytest.mark.parametrize("command", [
    ["generate", "--color-video", "c.mp4", "--mask-video", "m.mp4", "--output-video", "o.mp4"],
    ["run", "--input-video", "v.mp4", "--output-dir", "o", "--fill", "ex4d"],
    ["run", "--manifest", "list.csv", "--output-dir", "o", "--fill", "ex4d"],
    ["ui"],
])
def test_every_command_reads_the_same_flags_into_the_same_options(command):
    args = build_parser().parse_args(command + FLAGS)
    assert generation_options_from_args(args, resolve_weights=False) == EXPECTED
    defaults = generation_options_from_args(build_parser().parse_args(command), resolve_weights=False)
    assert defaults == GenerationOptions()  # the flags' defaults are the dataclasses' defaults


def test_only_generate_takes_the_parallel_flags():
    args = build_parser().parse_args(["generate", "--color-video", "c", "--mask-video", "m", "--output-video", "o",
                                      "--parallel", "2", "--parallel-mode", "cfg"])
    model = generation_options_from_args(args, resolve_weights=False).model
    assert (model.parallel, model.parallel_mode) == (2, "cfg")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--input-video", "v", "--output-dir", "o", "--parallel", "2"])


def test_options_are_frozen_and_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        EXPECTED.sampling.steps = 3
    with pytest.raises(InputError, match="--mask-erode must be >= 0"):
        SamplingOptions(mask_erode=-1)
    with pytest.raises(InputError, match="offload must be one of"):
        ModelOptions(offload="disk")


def test_the_older_dict_form_converts_to_the_same_options():
    pytest.importorskip("diffusers")
    import torch

    from ex4d.inpaint.speed import SpeedSettings

    legacy = {"model_dir": "W", "adapter": "C", "torch_dtype": torch.float16, "offload": "group",
              "group_offload_type": "leaf_level", "fp8": True, "num_inference_steps": 4, "guidance_scale": 1.0,
              "seed": 7, "mask_erode": 3, "prompt": "p", "negative_prompt": "n",
              "speed": SpeedSettings(mode="eager", attention="native", compile=False, cache="taylorseer:3",
                                     fp8_matmul=True)}
    assert as_generation_options(legacy) == EXPECTED
    # ... and back: generate()'s keyword arguments.
    kwargs = EXPECTED.generate_kwargs()
    assert kwargs["torch_dtype"] is torch.float16 and kwargs["speed"] == legacy["speed"]
    assert {k: kwargs[k] for k in legacy if k not in ("model_dir", "adapter")} == \
        {k: v for k, v in legacy.items() if k not in ("model_dir", "adapter")}
    assert as_generation_options({"cpu_offload": True}).model.offload == "model"
    with pytest.raises(InputError, match="height, num_frames come from the reconstruction"):
        as_generation_options({"height": 32, "num_frames": 5})
    with pytest.raises(InputError, match="unknown option"):
        as_generation_options({"stepz": 3})


def test_the_cache_key_parts_leave_out_paths_but_not_scales(tmp_path):
    lora = tmp_path / "l.safetensors"
    lora.write_bytes(b"")
    model = ModelOptions(Path("W"), Path("C"), extra_loras=((lora, 0.5),))
    assert model.weight_files() == {"model_dir": Path("W"), "adapter": Path("C"), "extra_lora_0": lora}
    settings = model.cache_settings()
    assert settings["extra_lora_scales"] == [0.5]
    assert not {"model_dir", "adapter", "extra_loras"} & set(settings)


def test_run_refuses_a_bad_cache_spec_before_any_stage(tiny_inputs, tmp_path, capsys):
    pytest.importorskip("diffusers")
    from ex4d.cli import main

    video, depth, _, _ = tiny_inputs
    wan, ckpt = tmp_path / "wan", tmp_path / "c.ckpt"
    wan.mkdir()
    ckpt.write_bytes(b"")
    out = tmp_path / "o"
    assert main(["run", "--input-video", str(video), "--depth", str(depth), "--output-dir", str(out), "--fill", "ex4d",
                 "--wan-dir", str(wan), "--ex4d-ckpt", str(ckpt), "--device", "cpu", "--cache", "tayl0rseer",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ex4d run: error: --cache: expected fbc") and len(err.splitlines()) == 1
    assert not out.exists()
