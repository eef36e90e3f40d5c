"""Paste Back, Crop For Edit and Stitch Edit: the edit goes back into the full-resolution picture,
and only where it was meant to."""
from __future__ import annotations

import logging
from typing import Any

import torch

from ..ipx2p_core.geometry import Stitch, bounding_box, edit_fit, picture_to_fit, plan_crop, same_aspect
from ..ipx2p_core.image import RESIZE_MODES
from ..ipx2p_core.paste import PasteSettings, batch_of, crop_for_edit, mask_on_picture, paste_back, stitch_back
from ._comfy import io
from .common import as_image, as_mask, input_error

log = logging.getLogger(__name__)
PASTE = "IPX2P_PasteBack"
CROP = "IPX2P_CropForEdit"
STITCH_EDIT = "IPX2P_StitchEdit"
BLENDS = ("mask", "region")

# The crop and how to undo it, passed from Crop For Edit to Stitch Edit.
StitchType = io.Custom("IPX2P_STITCH")


def mask_for_picture(node: str, mask: Any, height: int, width: int, edit_size: tuple[int, int] | None) -> tuple[torch.Tensor, bool]:
    """(mask [B,H,W], True if it is a mask of the edit image): a mask of the picture, or, when
    `edit_size` is given, of the edit (any size with the edit's aspect)."""
    mask = as_mask(node, mask)
    mask_height, mask_width = int(mask.shape[1]), int(mask.shape[2])
    if (mask_height, mask_width) == (height, width):
        return mask, False
    if edit_size is not None and same_aspect(mask_width, mask_height, *edit_size):
        return mask, True
    expected = f"{width}x{height} (the picture's size)"
    if edit_size is not None:
        expected += f" or the edit's aspect ({edit_size[0]}x{edit_size[1]})"
    raise input_error(node, "mask", f"is {mask_width}x{mask_height} px", expected,
                      f"use the mask of this picture (Load Image's MASK output), or bring it to {width}x{height} "
                      "(core 'Convert Mask to Image', 'Upscale Image', 'Convert Image to Mask')")


def check_mask_batch(node: str, mask: torch.Tensor, batch: int) -> None:
    if mask.shape[0] not in (1, batch):
        raise input_error(node, "mask", f"has batch {mask.shape[0]} and the pictures {batch}",
                          f"a mask of batch 1 (used for every picture) or {batch}", "pass one mask, or one per picture")


class PasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PASTE,
            display_name="InstructPix2Pix Paste Back",
            category="instructpix2pix",
            description=(
                "Puts the edit back into the original picture at its full resolution, only where it changed: "
                "the edit is scaled back exactly onto the part of the original the Encode node used and blended "
                "in through the mask (given, or found by comparing the edit with the original). Every pixel outside "
                "a given mask, or beyond the feather around a found one, is the original's, bit for bit: no VAE "
                "blur, no colour shift."
            ),
            inputs=[
                io.Image.Input("original", tooltip="The picture before the edit, at any resolution (what went into "
                                                   "InstructPix2Pix Encode Image)."),
                io.Image.Input("edited", tooltip="The decoded edit (VAE Decode of the Edit node's LATENT)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional: where to take the edit (1), at the original's size or the edit's. "
                                      "Without it the changed region is found automatically."),
                io.Float.Input("threshold", default=0.06, min=0.0, max=1.0, step=0.005,
                               tooltip="Automatic mask only: how much a region's colour must change (0..1, RGB distance "
                                       "of 8 px block means) to count as edited. Lower finds subtler edits."),
                io.Int.Input("grow", default=0, min=-1024, max=1024,
                             tooltip="Pixels of the original added around the mask (negative: removed)."),
                io.Int.Input("feather", default=16, min=0, max=1024,
                             tooltip="Pixels of the original over which the mask's edge fades: inside a given mask "
                                     "(nothing outside it changes), outside a found one (the whole change is taken)."),
                io.Boolean.Input("color_match", default=False,
                                 tooltip="Correct the pasted region's colour drift: its mean and spread in the ring just "
                                         "outside the mask are matched to the original's there. Turn on when a seam shows."),
                io.Combo.Input("resize", options=list(RESIZE_MODES), default="original",
                               tooltip="Set as on InstructPix2Pix Encode Image, so its fit can be undone exactly."),
                io.Int.Input("resolution", default=512, min=64, max=8192, step=8,
                             tooltip="Set as on InstructPix2Pix Encode Image."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Optional, automatic mask only: the checkpoint's VAE, to compare the edit with the "
                                     "original's own VAE round trip (finds subtler edits)."),
            ],
            outputs=[
                io.Image.Output("pasted", display_name="image", tooltip="The original with the edit pasted in, at the "
                                                                          "original's size."),
                io.Mask.Output("pasted_mask", display_name="mask",
                               tooltip="Where the edit was taken (the grown, feathered weight), at the original's size; "
                                       "without a mask, the found change and the feather around it."),
            ],
        )

    @classmethod
    def execute(cls, original: torch.Tensor, edited: torch.Tensor, threshold: float, grow: int, feather: int,
                color_match: bool, resize: str, resolution: int, mask: torch.Tensor | None = None,
                vae: Any = None) -> io.NodeOutput:
        original = as_image(PASTE, original, "original")
        edited = as_image(PASTE, edited, "edited")
        height, width = int(original.shape[1]), int(original.shape[2])
        try:
            fit = edit_fit(resize, width, height, resolution)
        except ValueError as error:
            raise input_error(PASTE, "resize", f"cannot fit a {width}x{height} picture ({error})",
                              "the settings of the Encode node", "set resize and resolution as on the Encode node") from None
        edit_height, edit_width = int(edited.shape[1]), int(edited.shape[2])
        if not same_aspect(edit_width, edit_height, fit.width, fit.height):
            raise input_error(
                PASTE, "edited", f"is {edit_width}x{edit_height} px",
                f"the Encode node's {fit.width}x{fit.height} for a {width}x{height} original with resize '{resize}' at "
                f"{resolution} (or that size scaled)",
                "set resize and resolution as on the Encode node, and connect the decoded edit of this original",
            )
        try:
            batch_of(original, edited)
        except ValueError:
            raise input_error(PASTE, "edited", f"has batch {edited.shape[0]} and original batch {original.shape[0]}",
                              "equal batches, or one of them 1", "paste each edit into its own original") from None
        picture_mask = None
        if mask is not None:
            given, of_edit = mask_for_picture(PASTE, mask, height, width, (fit.width, fit.height))
            check_mask_batch(PASTE, given, max(int(original.shape[0]), int(edited.shape[0])))
            if not (given > 0).any():
                raise input_error(PASTE, "mask", "selects nothing (all zero)", "1 where the edit should be taken",
                                  "paint the edited region, or disconnect the mask to find it automatically")
            if of_edit:
                given = mask_on_picture(given, fit)
            picture_mask = given
        reference = None
        if picture_mask is None and vae is not None:
            framed = picture_to_fit(original, fit)
            reference = vae.decode(vae.encode(framed))[..., :3]
        settings = PasteSettings(threshold=threshold, grow=grow, feather=feather, colour_match=color_match)
        image, weight = paste_back(original, edited, fit, picture_mask, reference, settings)
        if picture_mask is None and not bool((weight > 0).any()):
            log.info("%s: found no change above threshold %.3f; the original is returned unchanged", PASTE, threshold)
        return io.NodeOutput(image, weight)


class CropForEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=CROP,
            display_name="InstructPix2Pix Crop For Edit",
            category="instructpix2pix",
            description=(
                "Cuts the masked region (with some context) out of a large picture and scales it to the model's "
                "working size, so a small face or detail is edited at full resolution (long side = resolution, "
                "sides multiples of 64: the Encode node then changes nothing). Put it back with Stitch Edit."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The full picture."),
                io.Mask.Input("mask", tooltip="What to edit (1), at the picture's size: e.g. Load Image's mask."),
                io.Int.Input("padding", default=32, min=0, max=8192,
                             tooltip="Context around the mask's bounding box, in px of the picture."),
                io.Int.Input("resolution", default=512, min=64, max=4096, step=64,
                             tooltip="The working size's long side (the Encode node's resolution; 512 for SD1.5)."),
            ],
            outputs=[
                io.Image.Output("cropped", display_name="image", tooltip="The region at the working size: encode it "
                                                                           "with InstructPix2Pix Encode Image."),
                io.Mask.Output("cropped_mask", display_name="mask",
                               tooltip="The mask cropped and scaled the same way (e.g. for the Edit node's mask)."),
                StitchType.Output("stitch", display_name="stitch", tooltip="How to put the edit back: connect to Stitch Edit."),
            ],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, mask: torch.Tensor, padding: int, resolution: int) -> io.NodeOutput:
        picture = as_image(CROP, image, "image")
        height, width = int(picture.shape[1]), int(picture.shape[2])
        selection, _ = mask_for_picture(CROP, mask, height, width, None)
        check_mask_batch(CROP, selection, int(picture.shape[0]))
        box = bounding_box(selection)
        if box is None:
            raise input_error(CROP, "mask", "selects nothing (all zero)", "1 over the region to edit",
                              "paint the region in Load Image's mask editor")
        if resolution % 64:
            raise input_error(CROP, "resolution", f"is {resolution}", "a multiple of 64", "use 512 (SD1.5) or 768")
        plan = plan_crop(box, padding, width, height, resolution)
        crop, crop_mask, stitch = crop_for_edit(picture, selection, plan)
        log.info("%s: region %s of %dx%d -> %dx%d", CROP, plan.region.describe(), width, height, plan.width, plan.height)
        return io.NodeOutput(crop, crop_mask, stitch)


class StitchEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=STITCH_EDIT,
            display_name="InstructPix2Pix Stitch Edit",
            category="instructpix2pix",
            description=(
                "Puts an edited crop from Crop For Edit back into the full picture: scaled back to the region it "
                "came from and blended in through the mask, feathered outwards into the padding around it (so even a "
                "mask of a few pixels takes the edit). Every pixel outside the region is the picture's own."
            ),
            inputs=[
                StitchType.Input("stitch", tooltip="From InstructPix2Pix Crop For Edit."),
                io.Image.Input("edited", tooltip="The decoded edit of the crop."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional: a mask of the crop to blend through instead of the stitch's own."),
                io.Int.Input("feather", default=16, min=0, max=1024, optional=True,
                             tooltip="Pixels of the picture over which the blend fades out around the mask (the whole "
                                     "mask takes the edit; keep padding >= grow + feather). blend region: inside the "
                                     "region's edge."),
                io.Int.Input("grow", default=0, min=-1024, max=1024, optional=True,
                             tooltip="Pixels of the picture added around the mask (kept inside the region)."),
                io.Combo.Input("blend", options=list(BLENDS), default="mask", optional=True,
                               tooltip="mask: replace what the mask selects (and blend the feather around it). region: "
                                       "replace the whole cropped region (edges feathered)."),
            ],
            outputs=[
                io.Image.Output("stitched", display_name="image", tooltip="The full picture with the edit stitched in."),
                io.Mask.Output("stitched_mask", display_name="mask", tooltip="Where the edit was blended in (the weight)."),
            ],
        )

    @classmethod
    def execute(cls, stitch: Any, edited: torch.Tensor, mask: torch.Tensor | None = None, feather: int = 16,
                grow: int = 0, blend: str = "mask") -> io.NodeOutput:
        if not isinstance(stitch, Stitch):
            raise input_error(STITCH_EDIT, "stitch", f"is a {type(stitch).__name__}", "the stitch output of Crop For Edit",
                              "connect InstructPix2Pix Crop For Edit's stitch")
        if blend not in BLENDS:
            raise input_error(STITCH_EDIT, "blend", f"is {blend!r}", "mask or region", "choose mask or region")
        edited = as_image(STITCH_EDIT, edited, "edited")
        plan = stitch.plan
        edit_height, edit_width = int(edited.shape[1]), int(edited.shape[2])
        if not same_aspect(edit_width, edit_height, plan.width, plan.height):
            raise input_error(
                STITCH_EDIT, "edited", f"is {edit_width}x{edit_height} px",
                f"the {plan.width}x{plan.height} crop this stitch was made for (or that size scaled)",
                "connect the edit of this stitch's crop (a stitch from another picture or crop does not fit)",
            )
        try:
            batch_of(stitch.picture, edited)
        except ValueError:
            raise input_error(STITCH_EDIT, "edited", f"has batch {edited.shape[0]} and the picture {stitch.picture.shape[0]}",
                              "equal batches, or one of them 1", "stitch each edit into its own picture") from None
        crop_mask = None
        if mask is not None:
            crop_mask = as_mask(STITCH_EDIT, mask)
            check_mask_batch(STITCH_EDIT, crop_mask, max(int(stitch.picture.shape[0]), int(edited.shape[0])))
            if not same_aspect(int(crop_mask.shape[2]), int(crop_mask.shape[1]), plan.width, plan.height):
                raise input_error(STITCH_EDIT, "mask", f"is {crop_mask.shape[2]}x{crop_mask.shape[1]} px",
                                  f"a mask of the {plan.width}x{plan.height} crop", "use Crop For Edit's mask output")
        image, weight = stitch_back(stitch, edited, crop_mask, blend, grow, feather)
        return io.NodeOutput(image, weight)
