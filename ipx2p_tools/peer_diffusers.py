"""diffusers' StableDiffusionInstructPix2PixPipeline as an independent reference for the pack's edit.

Everything is offline: the pipeline is built from the same single-file LDM checkpoint the host loads,
with a local config folder written here (there is no network to fetch runwayml's or timbrooks' configs).
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# SD1.5's latent scale. ComfyUI's SaveLatent stores latents divided by it (process_latent_out);
# diffusers' output_type="latent" returns them multiplied, as the UNet sees them.
SD15_LATENT_SCALE = 0.18215

# SD1.5 training schedule, as both frameworks define it ("scaled_linear" in diffusers is ComfyUI's
# "linear": betas = linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2).
SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    # "linspace" puts the timesteps on round(linspace(999, 0, steps)), which are integers for 10
    # steps (999 / 9 = 111): exactly the timesteps ComfyUI's "normal" schedule picks.
    "timestep_spacing": "linspace",
    "steps_offset": 1,
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}

UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,  # 4 noisy-latent channels + 4 image-latent channels
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": SD15_LATENT_SCALE,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# CLIP ViT-L/14's text tower, the SD1.5 text encoder.
TEXT_ENCODER_CONFIG = {
    "architectures": ["CLIPTextModel"],
    "model_type": "clip_text_model",
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 49407,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}

MODEL_INDEX = {
    "_class_name": "StableDiffusionInstructPix2PixPipeline",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json")


def write_config_folder(folder: Path, host_tree: Path) -> Path:
    """A diffusers pipeline folder without weights: what from_single_file(config=...) reads."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, config in (("unet", UNET_CONFIG), ("vae", VAE_CONFIG), ("text_encoder", TEXT_ENCODER_CONFIG)):
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=1))
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=1))
    # The host's own CLIP tokenizer files, so both sides tokenize with the same vocabulary.
    tokenizer = folder / "tokenizer"
    tokenizer.mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(host_tree / "comfy" / "sd1_tokenizer" / name, tokenizer / name)
    # ComfyUI's copy says 8192 (it splits long prompts into 77-token chunks itself); diffusers pads
    # and truncates to model_max_length, which must be CLIP's 77 positions.
    settings = json.loads((tokenizer / "tokenizer_config.json").read_text())
    settings["model_max_length"] = 77
    (tokenizer / "tokenizer_config.json").write_text(json.dumps(settings, indent=1))
    return folder


def load_pipeline(checkpoint: Path, config_folder: Path, dtype: torch.dtype = torch.float32):
    """The diffusers IP2P pipeline (fp32 by default) from the single-file checkpoint, offline."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_single_file(
        str(checkpoint), config=str(config_folder), local_files_only=True, safety_checker=None,
        requires_safety_checker=False, torch_dtype=dtype,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- SDXL-InstructPix2Pix (diffusers/sdxl-instructpix2pix-768's component configs) ----------------------------
SDXL_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 96,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}
SDXL_VAE_CONFIG = {**VAE_CONFIG, "scaling_factor": 0.13025, "force_upcast": True, "sample_size": 1024}
SDXL_TEXT_ENCODER_2_CONFIG = {
    **TEXT_ENCODER_CONFIG,
    "architectures": ["CLIPTextModelWithProjection"],
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
}
SDXL_SCHEDULER_CONFIG = {**SCHEDULER_CONFIG, "timestep_spacing": "leading"}
SDXL_MODEL_INDEX = {
    "_class_name": "StableDiffusionXLInstructPix2PixPipeline",
    "force_zeros_for_empty_prompt": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def write_sdxl_config_folder(folder: Path, host_tree: Path) -> Path:
    """An SDXL-InstructPix2Pix pipeline folder without weights (for from_single_file(config=...))."""
    write_config_folder(folder, host_tree)
    for name, config in (("unet", SDXL_UNET_CONFIG), ("vae", SDXL_VAE_CONFIG), ("text_encoder_2", SDXL_TEXT_ENCODER_2_CONFIG)):
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SDXL_SCHEDULER_CONFIG, indent=1))
    (folder / "model_index.json").write_text(json.dumps(SDXL_MODEL_INDEX, indent=1))
    shutil.copytree(folder / "tokenizer", folder / "tokenizer_2", dirs_exist_ok=True)
    # SDXL's second tokenizer pads with "!" (token 0), as OpenCLIP does.
    settings = json.loads((folder / "tokenizer_2" / "tokenizer_config.json").read_text())
    settings["pad_token"] = "!"
    (folder / "tokenizer_2" / "tokenizer_config.json").write_text(json.dumps(settings, indent=1))
    special = json.loads((folder / "tokenizer_2" / "special_tokens_map.json").read_text())
    special["pad_token"] = "!"
    (folder / "tokenizer_2" / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
    return folder


def load_sdxl_pipeline(checkpoint: Path, config_folder: Path, dtype: torch.dtype = torch.float32):
    """diffusers' StableDiffusionXLInstructPix2PixPipeline from an SDXL single file, offline."""
    from diffusers import StableDiffusionXLInstructPix2PixPipeline

    pipe = StableDiffusionXLInstructPix2PixPipeline.from_single_file(
        str(checkpoint), config=str(config_folder), local_files_only=True, torch_dtype=dtype,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def png_pixels(paths: list[Path]) -> torch.Tensor:
    """[B,3,H,W] float 0..1 exactly as core LoadImage reads a PNG (uint8 / 255), channels first."""
    arrays = []
    for path in paths:
        with Image.open(path) as picture:
            arrays.append(np.array(picture.convert("RGB")).astype(np.float32) / 255.0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def comfy_unit_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """comfy.sample.prepare_noise for a batch without batch_index: one CPU draw for the whole batch."""
    generator = torch.manual_seed(seed)
    return torch.randn(shape, dtype=torch.float32, layout=torch.strided, generator=generator, device="cpu")


def comfy_start_scale(sigma_max: float) -> float:
    """ComfyUI's x_T = noise * sqrt(1 + sigma_max^2) when sampling starts at the model's sigma_max
    (EPS noise_scaling with max_denoise): the variance of a noised latent of unit variance."""
    return math.sqrt(1.0 + sigma_max**2)
