"""Glue shared by the nodes: input checks with actionable errors, and the three conditionings."""
from __future__ import annotations

import logging
from typing import Any

import torch

from ..ipx2p_core.guidance import edit_batch_size
from .host_compat import executing_node as executing_node  # re-exported: node files import it from here

log = logging.getLogger(__name__)

# Put the checkpoint people should load into every "wrong model" message.
OFFICIAL_HINT = "an InstructPix2Pix checkpoint such as instruct-pix2pix-00-22000.safetensors (huggingface.co/timbrooks/instruct-pix2pix)"


def input_error(node: str, input_name: str, given: str, expected: str, fix: str) -> ValueError:
    """A user error in the shape the host shows on the node: who, what was given, what fits, the fix."""
    return ValueError(f"{node}: input '{input_name}' {given}; expected {expected}. Fix: {fix}")


def model_unet_config(model: Any) -> dict:
    """The host's UNet config of a MODEL ({} when the host keeps none)."""
    return getattr(getattr(model.model, "model_config", None), "unet_config", None) or {}


def model_in_channels(model: Any) -> int | None:
    channels = model_unet_config(model).get("in_channels")
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
    if samples.numel() and not bool(samples.any()):
        raise input_error(node, "edit_latent", "is all zeros (an empty latent, e.g. from Empty Latent Image)",
                          "the encoded picture to edit",
                          "connect the edit_latent output of 'InstructPix2Pix Encode Image' (or core VAE Encode)")
    return samples


def as_image(node: str, image: Any, input_name: str) -> torch.Tensor:
    """An IMAGE input as [B,H,W,3] float, checked: 1 (grey), 3 or 4 (alpha ignored) channels, at
    least one picture, finite. Values outside 0..1 are clipped, as Save Image clips them."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise input_error(node, input_name, f"is {shape}", "an IMAGE [batch, height, width, 3]",
                          "connect an image (e.g. Load Image), not a mask or a latent")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise input_error(node, input_name, f"is empty (shape {list(image.shape)})", "at least one picture",
                          "connect a non-empty image (check the node that made the batch)")
    if image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    image = image[..., :3]
    if not torch.isfinite(image).all():
        raise input_error(node, input_name, "holds NaN or infinite pixel values", "pixel values from 0 to 1",
                          "check the node that made the image (a VAE decode in fp16 can overflow: try --fp32-vae)")
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        log.warning("%s: input '%s' has pixel values from %.3g to %.3g; clipped to 0..1", node, input_name, low, high)
        image = image.clamp(0.0, 1.0)
    return image


def check_guidance(node: str, text_cfg: Any, image_cfg: Any, names: tuple[str, str] = ("text_cfg", "image_cfg")) -> None:
    """Scales must be finite and not negative (a negative scale inverts the edit)."""
    for input_name, value in ((names[0], text_cfg), (names[1], image_cfg)):
        values = value if isinstance(value, tuple) else (value,)
        bad = [v for v in values if not (float(v) >= 0.0 and float(v) < float("inf"))]
        if bad:
            raise input_error(node, input_name, f"is {bad[0]}", "a finite value of 0 or more (paper: 7.5 text, 1.5 image)",
                              f"set {input_name} to 0 or more")


def check_text_width(node: str, model: Any, conditionings: dict[str, list[Any]]) -> None:
    """The conditioning's token width must be the model's cross-attention width (768 for SD1.5,
    1024 for SD2.x, 2048 for SDXL): a conditioning from another text encoder cannot be used."""
    width = model_unet_config(model).get("context_dim")
    if width is None:
        return
    for input_name, conditioning in conditionings.items():
        for entry in conditioning:
            given = int(entry[0].shape[-1])
            if given != int(width):
                raise input_error(
                    node, input_name, f"is a conditioning of width {given} (from another text encoder)",
                    f"width {width}, this model's text encoder",
                    "encode the text with the CLIP output of the loader that gave this MODEL")


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
