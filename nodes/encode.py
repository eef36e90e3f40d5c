"""InstructPix2Pix Encode Image and InstructPix2Pix Conditioning."""
from __future__ import annotations

from typing import Any

import comfy.utils
import torch

from ..ipx2p_core.geometry import edit_fit, source_pixels
from ..ipx2p_core.image import RESIZE_MODES
from ._comfy import io
from .common import as_image, edit_conditionings, input_error

ENCODE = "IPX2P_EncodeImage"
# The largest edit the Encode node makes (2048 x 2048): beyond it the VAE and the UNet's attention
# ask for tens of GiB, and SD-family edit models are trained at 512-1024 px.
MAX_EDIT_PIXELS = 2048 * 2048
CONDITIONING = "IPX2P_Conditioning"


def resize_for_edit(image: torch.Tensor, mode: str, resolution: int) -> torch.Tensor:
    """image [B,H,W,C] float 0..1 -> [B,H',W',C] at the mode's size: the fit's source box (core
    `edit_fit`), scaled to the fit's size with the host's Lanczos when the sizes differ."""
    height, width = int(image.shape[1]), int(image.shape[2])
    if mode not in RESIZE_MODES:
        raise input_error(ENCODE, "resize", f"is {mode!r}", f"one of {', '.join(RESIZE_MODES)}", "choose original (the paper's)")
    try:
        fit = edit_fit(mode, width, height, resolution)
    except ValueError:
        raise input_error(ENCODE, "image", f"is {width}x{height} px", f"at least 8x8 px for resize '{mode}'",
                          "use a larger image, or resize 'original', which scales it up") from None
    new_width, new_height = fit.width, fit.height
    if new_width * new_height > MAX_EDIT_PIXELS:
        side = int(MAX_EDIT_PIXELS ** 0.5)
        raise input_error(
            ENCODE, "resize", f"is '{mode}' at resolution {resolution}, which would edit this {width}x{height} picture at "
            f"{new_width}x{new_height} px ({new_width * new_height / 1e6:.1f} MP)",
            f"at most {MAX_EDIT_PIXELS / 1e6:.1f} MP ({side}x{side}); SD1.5 edit models are trained at 512 px",
            f"use resize 'original' (the paper's 512 px) or 'long_side' with a resolution up to {side}, or cut the region "
            "out with 'InstructPix2Pix Crop For Edit' and paste the edit back")
    kept = source_pixels(image, fit)
    if mode == "keep" or (new_width, new_height) == (width, height):  # a crop only, no resampling
        return kept
    # The centre crop then the host's Lanczos (PIL) is PIL's ImageOps.fit, as the original script uses;
    # the crop is common_upscale's own "center" rule (see centre_crop_box), so the host is asked for none.
    resized = comfy.utils.common_upscale(kept.movedim(-1, 1), new_width, new_height, "lanczos", "disabled")
    return resized.movedim(1, -1).clamp(0.0, 1.0)


class EncodeImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=ENCODE,
            display_name="InstructPix2Pix Encode Image",
            category="instructpix2pix",
            description=(
                "Resizes the picture to edit and encodes it with the VAE (posterior mode, unscaled), "
                "the image InstructPix2Pix is conditioned on."
            ),
            inputs=[
                io.Vae.Input("vae", tooltip="The VAE of the InstructPix2Pix checkpoint."),
                io.Image.Input("image", tooltip="The picture to edit."),
                io.Combo.Input("resize", options=list(RESIZE_MODES), default="original",
                               tooltip="original: the paper's rule (long side to resolution, sides rounded to multiples "
                                       "of 64, centre fit, Lanczos). keep: the input size, centre-cropped to multiples of 8. "
                                       "long_side: long side to resolution, multiples of 8, aspect kept."),
                io.Int.Input("resolution", default=512, min=64, max=8192, step=8,
                             tooltip="Target long side in px for 'original' and 'long_side' (paper: 512)."),
            ],
            outputs=[
                io.Latent.Output("edit_latent", display_name="edit_latent",
                                 tooltip="The encoded image: connect to the InstructPix2Pix Guider, Edit or Conditioning."),
                io.Image.Output("resized_image", display_name="image",
                                tooltip="The resized pixels the latent was made from: for previews, ControlNet hints, paste-back."),
            ],
        )

    @classmethod
    def execute(cls, vae: Any, image: torch.Tensor, resize: str, resolution: int) -> io.NodeOutput:
        pixels = resize_for_edit(as_image(ENCODE, image, "image"), resize, resolution)
        latent = vae.encode(pixels)
        if not torch.isfinite(latent).all():
            raise input_error(ENCODE, "vae", "produced NaN or infinite latents", "finite latents",
                              "use a VAE that works in this precision (try --fp32-vae), or check the image")
        return io.NodeOutput({"samples": latent}, pixels)


class Conditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=CONDITIONING,
            display_name="InstructPix2Pix Conditioning",
            category="instructpix2pix",
            description=(
                "Makes the three conditionings of InstructPix2Pix guidance: text+image, image only, and "
                "unconditional (empty text, zero image). Use them with the core DualCFGGuider (cond1, cond2, "
                "negative; style regular) or any node that takes conditionings."
            ),
            inputs=[
                io.Conditioning.Input("positive", tooltip="The encoded instruction."),
                io.Conditioning.Input("negative", tooltip="The encoded empty prompt (the paper uses empty text)."),
                io.Latent.Input("edit_latent", tooltip="From 'InstructPix2Pix Encode Image'."),
            ],
            outputs=[
                io.Conditioning.Output("text_image", display_name="text_image",
                                       tooltip="c: the instruction with the image (DualCFGGuider cond1)."),
                io.Conditioning.Output("image_only", display_name="image_only",
                                       tooltip="i: empty text with the image (DualCFGGuider cond2)."),
                io.Conditioning.Output("uncond", display_name="uncond",
                                       tooltip="u: empty text with a zero image (DualCFGGuider negative)."),
                io.Latent.Output("latent", display_name="latent",
                                 tooltip="An empty latent of the edit's size and batch, to sample into."),
            ],
        )

    @classmethod
    def execute(cls, positive: list, negative: list, edit_latent: dict) -> io.NodeOutput:
        text_image, image_only, uncond, batch = edit_conditionings(CONDITIONING, positive, negative, edit_latent)
        samples = edit_latent["samples"]
        empty = torch.zeros((batch, *samples.shape[1:]), dtype=samples.dtype, device=samples.device)
        return io.NodeOutput(text_image, image_only, uncond, {"samples": empty})
