"""Glue shared by the nodes: input checks with actionable errors, and the three conditionings."""
from __future__ import annotations

from typing import Any

import torch

from ..ipx2p_core.guidance import edit_batch_size
from ..ipx2p_core.masks import latent_mask, mask_batch

# Put the checkpoint people should load into every "wrong model" message.
OFFICIAL_HINT = "an InstructPix2Pix checkpoint such as instruct-pix2pix-00-22000.safetensors (huggingface.co/timbrooks/instruct-pix2pix)"


def input_error(node: str, input_name: str, given: str, expected: str, fix: str) -> ValueError:
    """A user error in the shape the host shows on the node: who, what was given, what fits, the fix."""
    return ValueError(f"{node}: input '{input_name}' {given}; expected {expected}. Fix: {fix}")


def model_in_channels(model: Any) -> int | None:
    unet_config = getattr(getattr(model.model, "model_config", None), "unet_config", None) or {}
    channels = unet_config.get("in_channels")
    return int(channels) if channels is not None else None


def require_ip2p_model(node: str, model: Any) -> None:
    channels = model_in_channels(model)
    if channels != 8:
        raise input_error(
            node, "model", f"has a {channels}-channel UNet ({type(model.model).__name__})",
            "an 8-channel InstructPix2Pix UNet (4 noise channels + 4 image channels)",
            f"load {OFFICIAL_HINT} with 'Load InstructPix2Pix Checkpoint'",
        )


def edit_samples(node: str, edit_latent: Any) -> torch.Tensor:
    """The image latent [B,4,h,w] from an edit_latent LATENT, checked."""
    if not isinstance(edit_latent, dict) or not isinstance(edit_latent.get("samples"), torch.Tensor):
        raise input_error(node, "edit_latent", f"is a {type(edit_latent).__name__}", "a LATENT",
                          "connect the edit_latent output of 'InstructPix2Pix Encode Image'")
    samples = edit_latent["samples"]
    if samples.ndim != 4 or samples.shape[1] != 4:
        raise input_error(node, "edit_latent", f"has shape {list(samples.shape)}", "an image latent [batch, 4, h, w]",
                          "encode the image with 'InstructPix2Pix Encode Image' (an SD1.5/SDXL VAE)")
    if not torch.isfinite(samples).all():
        raise input_error(node, "edit_latent", "holds NaN or infinite values", "finite values",
                          "check the VAE and the image (a broken VAE or fp16 overflow gives NaN)")
    return samples


def text_batch(conditioning: list[Any]) -> int:
    return max((int(entry[0].shape[0]) for entry in conditioning), default=1)


def with_image(conditioning: list[Any], image_latent: torch.Tensor) -> list[Any]:
    """A copy of `conditioning` whose entries carry `image_latent` as concat_latent_image."""
    return [[entry[0], {**entry[1], "concat_latent_image": image_latent}] for entry in conditioning]


def edit_conditionings(node: str, positive: list[Any], negative: list[Any], edit_latent: Any
                       ) -> tuple[list[Any], list[Any], list[Any], int]:
    """(text_image, image_only, uncond, batch): c = positive + image, i = negative + image,
    u = negative + zero image. Uses the host's key `concat_latent_image`, so core nodes and the
    model's own concat handling (including CosXL's x0.13025) see exactly what core IP2P gives."""
    samples = edit_samples(node, edit_latent)
    batch = edit_batch_size(max(text_batch(positive), text_batch(negative)), samples.shape[0], who=node)
    return (
        with_image(positive, samples),
        with_image(negative, samples),
        with_image(negative, torch.zeros_like(samples)),
        batch,
    )


def as_mask(node: str, mask: Any, input_name: str = "mask") -> torch.Tensor:
    """A MASK input as [B,H,W] float 0..1, checked: a tensor, 2-4 dims, not empty, finite."""
    if not isinstance(mask, torch.Tensor):
        raise input_error(node, input_name, f"is a {type(mask).__name__}", "a MASK",
                          "connect a mask (Load Image's MASK output, a mask editor, or a mask node)")
    if mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    elif mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise input_error(node, input_name, f"has shape {list(mask.shape)}", "a MASK [batch, height, width]",
                          "connect a MASK, not an IMAGE (use core 'Convert Image to Mask' for a picture)")
    if mask.numel() == 0:
        raise input_error(node, input_name, f"is empty (shape {list(mask.shape)})", "a mask with at least one pixel",
                          "connect a mask of the picture")
    if not torch.isfinite(mask).all():
        raise input_error(node, input_name, "holds NaN or infinite values", "values from 0 to 1",
                          "check the node that made the mask")
    return mask.float().clamp(0.0, 1.0)


def edit_mask(node: str, mask: Any, batch: int, height: int, width: int) -> torch.Tensor | None:
    """The optional `mask` input of an edit, scaled to the latent: [1 or batch, 1, height, width]."""
    if mask is None:
        return None
    mask = as_mask(node, mask)
    mask_batch(int(mask.shape[0]), batch, node)
    scaled = latent_mask(mask, height, width)
    empty = [index for index in range(scaled.shape[0]) if not bool((scaled[index] > 0).any())]
    if empty:
        which = "the mask" if scaled.shape[0] == 1 else f"mask item {empty[0]}"
        raise input_error(node, "mask", f"selects nothing ({which} is all zero)",
                          "a mask with 1 (or soft values) where the image should change",
                          "paint the region to edit (in Load Image's mask editor, 1 = edit), or disconnect the mask "
                          "to edit the whole image")
    return scaled
