"""A small InstructPix2Pix MODEL of SD1.5's true block structure, built in the host process.

Same levels, resnets, attention placement, cross-attention width (768) and 8 input channels as
SD1.5-InstructPix2Pix, but `channels` base channels instead of 320, so compiling it on a CPU takes
seconds, not an hour. The host builds it with its own SD1.5-InstructPix2Pix model class and patcher,
so everything the pack does to a loaded model (clones, wrappers, sampling) is the host's real code.
"""
from __future__ import annotations

from typing import Any

import torch

from .layouts import UNetSpec, unet_layout
from .sd15_layout import UNET_PREFIX
from .synthetic import random_state_dict


def tiny_ip2p_model(channels: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A host MODEL (ModelPatcher on the CPU) of an SD1.5-InstructPix2Pix UNet with `channels` base
    channels (a multiple of 32: the UNet's group norms have 32 groups), random weights."""
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.supported_models

    spec = UNetSpec(model_channels=channels)
    weights = random_state_dict(unet_layout(spec), seed, dtype)
    config = comfy.model_detection.detect_unet_config(weights, UNET_PREFIX)
    model_config = comfy.supported_models.SD15_instructpix2pix(config)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model(weights, "")
    model.load_model_weights(weights, UNET_PREFIX)
    model.to(dtype)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
