"""Tiny random depth models saved in the real on-disk layouts (no network). All fp32 and seeded."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def save_depth_anything(folder: Path, size: int = 28, metric: bool = False, seed: int = 0) -> Path:
    """``save_pretrained`` layout of ``depth-anything/Depth-Anything-V2-*-hf`` (config.json, model.safetensors,
    preprocessor_config.json), with a 2-layer DINOv2 of width 16 and a ``size``-px network input."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(seed)
    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            patch_size=14, image_size=size, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False, apply_layernorm=True,
                            initializer_range=0.1)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[4, 8, 16, 16],
                                 fusion_hidden_size=8, head_hidden_size=4,
                                 depth_estimation_type="metric" if metric else "relative", max_depth=20 if metric else 1,
                                 initializer_range=0.1)
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():  # a positive bias so that the final ReLU/sigmoid does not flatten the random output
        model.head.conv3.bias.fill_(1.0)
        model.head.conv3.weight.mul_(300.0)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_rescale": True, "do_resize": True, "ensure_multiple_of": 14,
        "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "DPTImageProcessor",
        "image_std": [0.229, 0.224, 0.225], "keep_aspect_ratio": True, "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"height": size, "width": size}}))
    return folder


def save_depth_pro(folder: Path, fov_deg: float = 60.0, use_fov_model: bool = True, seed: int = 0) -> Path:
    """``save_pretrained`` layout of ``apple/DepthPro-hf`` with 2-layer DINOv2 encoders of width 16 (patch 32 px,
    network input 128×128). The FoV head outputs exactly ``fov_deg`` (zero weight, bias = fov)."""
    from transformers import DepthProConfig, DepthProForDepthEstimation

    torch.manual_seed(seed)
    sub = dict(model_type="dinov2", hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
               patch_size=8, image_size=32, initializer_range=0.1)
    config = DepthProConfig(fusion_hidden_size=8, patch_size=32, intermediate_hook_ids=[1, 0],
                            intermediate_feature_dims=[8, 8], scaled_images_feature_dims=[16, 16, 8],
                            use_fov_model=use_fov_model, image_model_config=dict(sub), patch_model_config=dict(sub),
                            fov_model_config=dict(sub), initializer_range=0.1)
    model = DepthProForDepthEstimation(config).eval()
    with torch.no_grad():
        model.head.layers[4].bias.fill_(1.0)
        model.head.layers[4].weight.mul_(30.0)
        if use_fov_model:
            model.fov_model.head.layers[4].weight.zero_()
            model.fov_model.head.layers[4].bias.fill_(fov_deg)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "DepthProImageProcessorFast", "image_std": [0.5, 0.5, 0.5], "resample": 2,
        "rescale_factor": 0.00392156862745098, "size": {"height": 128, "width": 128}}))
    return folder


SVD_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "set_alpha_to_one": False, "sigma_max": 700.0, "sigma_min": 0.002,
    "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "continuous",
    "trained_betas": None, "use_karras_sigmas": True,
}
CLIP_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224},
}


def save_depthcrafter(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Tiny DepthCrafter in the real layouts: ``root/DepthCrafter/`` (the UNet at the repository root, config named
    like DepthCrafter's class, fp32 weights) and ``root/svd/`` (model_index.json, vae/ and image_encoder/ as fp16 variants, scheduler/ with
    SVD's Euler config, feature_extractor/). UNet: 2 levels (32, 64 channels), context 16; VAE: 3 levels (stride 4);
    total stride 8 px. Returns (unet_root, svd_root)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet_root, svd_root = root / "DepthCrafter", root / "svd"
    unet = UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64), addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
        layers_per_block=1, cross_attention_dim=16, num_attention_heads=(2, 4), num_frames=8,
    ).eval()
    unet.save_pretrained(unet_root)
    cfg_path = unet_root / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["_class_name"] = "DiffusersUNetSpatioTemporalConditionModelDepthCrafter"
    cfg_path.write_text(json.dumps(cfg, indent=2))

    vae = AutoencoderKLTemporalDecoder(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3, block_out_channels=(32, 32, 32),
        layers_per_block=1, latent_channels=4, sample_size=32, scaling_factor=0.18215, force_upcast=True,
    ).eval()
    vae.half().save_pretrained(svd_root / "vae", variant="fp16")
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=224,
        patch_size=56, projection_dim=16,
    )).eval()
    encoder.half().save_pretrained(svd_root / "image_encoder", variant="fp16")
    (svd_root / "scheduler").mkdir(parents=True)
    (svd_root / "scheduler" / "scheduler_config.json").write_text(json.dumps(SVD_SCHEDULER))
    (svd_root / "feature_extractor").mkdir()
    (svd_root / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR))
    (svd_root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableVideoDiffusionPipeline", "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
        "vae": ["diffusers", "AutoencoderKLTemporalDecoder"]}))
    return unet_root, svd_root
