"""Putting an edit back into the full-resolution picture: paste-back and crop-and-stitch.

Everything outside the final weight is the original picture's pixels, bit for bit: the edit
(made at the model's working size, through the VAE) only ever replaces what the mask selects.
Images [B,H,W,3] float 0..1, masks [B,H,W].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .geometry import (
    Box, CropPlan, EditFit, Stitch, fit_to_picture, picture_to_fit, place, resize_image, resize_mask,
)
from .masks import ChangeSettings, colour_match, composite, detect_changes, feather, feather_outward, grow


@dataclass(frozen=True)
class PasteSettings:
    """threshold: change detection's (see ChangeSettings); grow: px added (or, negative, removed)
    around the mask; feather: px over which the edge ramps: inside a given mask, outside a found one
    (see paste_back); colour_match: correct the edit's colour drift from the ring just outside the
    mask."""

    threshold: float = 0.06
    grow: int = 0
    feather: int = 16
    colour_match: bool = False


def batch_of(*tensors: torch.Tensor) -> int:
    """The common batch of tensors whose batches are 1 or one shared size (else ValueError)."""
    sizes = {int(t.shape[0]) for t in tensors} - {1}
    if len(sizes) > 1:
        raise ValueError(f"batches {sorted(int(t.shape[0]) for t in tensors)} do not match")
    return sizes.pop() if sizes else 1


def broadcast(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    return tensor if tensor.shape[0] == batch else tensor.expand(batch, *tensor.shape[1:])


def box_mask(height: int, width: int, box: Box) -> torch.Tensor:
    """[1,height,width] bool: True inside `box`."""
    out = torch.zeros((1, height, width), dtype=torch.bool)
    rows, columns = box.slices()
    out[:, rows, columns] = True
    return out


def edit_on_picture(original: torch.Tensor, edited: torch.Tensor, fit: EditFit) -> torch.Tensor:
    """The original [B,H,W,3] with the whole edit scaled back onto the box it came from."""
    batch = batch_of(original, edited)
    patch = broadcast(fit_to_picture(edited, fit), batch).to(original.dtype)
    return place(broadcast(original, batch), patch, fit.source)


def mask_on_picture(mask: torch.Tensor, fit: EditFit) -> torch.Tensor:
    """A mask [B,h,w] of the edit image (any size of the edit's aspect) -> [B,H,W] of the picture."""
    height, width = fit.picture_height, fit.picture_width
    canvas = torch.zeros((mask.shape[0], height, width), dtype=mask.dtype)
    return place(canvas, resize_mask(mask, fit.source.width, fit.source.height), fit.source)


def found_changes(edited: torch.Tensor, reference: torch.Tensor, fit: EditFit, threshold: float, block: int = 8
                  ) -> torch.Tensor:
    """Where the edit changed the picture, as a 0/1 mask [B,H,W] of the picture.

    edited [B,h,w,3] and reference [B,h',w',3] (the picture framed as the Encode node framed it,
    or its VAE round trip) are compared at the edit's size; the outline is scaled to the picture
    smoothly and cut at one half, so it is not blocky at the picture's resolution."""
    edited = resize_image(edited, fit.width, fit.height)
    reference = resize_image(reference, fit.width, fit.height)
    batch = batch_of(edited, reference)
    changed = detect_changes(broadcast(edited, batch), broadcast(reference, batch),
                             ChangeSettings(threshold=threshold, block=block))
    on_picture = mask_on_picture(changed.float(), fit)
    return (on_picture > 0.5).float()


def paste_weight(mask: torch.Tensor, covered: torch.Tensor, grow_pixels: int, feather_pixels: int,
                 outward: bool = False) -> torch.Tensor:
    """The compositing weight [B,H,W]: the mask grown and feathered, kept to where the edit covers
    the picture (`covered` [1|B,H,W] bool).

    Inwards (outward False): the ramp lies inside the grown mask and the weight is 0 wherever that
    is 0, so nothing outside a drawn mask changes. Outwards: the grown mask is taken whole, at its
    own values, and the ramp lies in the `feather_pixels` px around it; for a mask that marks what
    must change (a found change, a small detail to stitch), whose edge an inward ramp would fade."""
    if outward:
        return feather_outward(grow(mask, grow_pixels), feather_pixels) * covered.to(mask.dtype)
    grown = grow(mask, grow_pixels) * covered.to(mask.dtype)
    return feather(grown, feather_pixels)


def paste_back(original: torch.Tensor, edited: torch.Tensor, fit: EditFit, mask: torch.Tensor | None,
               reference: torch.Tensor | None, settings: PasteSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(picture with the edit pasted in [B,H,W,3], weight used [B,H,W]).

    mask: [B,H,W] of the picture (1 = take the edit), or None to find the changed region by
    comparing the edit with `reference`: the framed picture's VAE round trip, or None to compare
    with the framed picture itself.

    A given mask is feathered inwards (every pixel outside it stays the original's); a found one
    outwards, so the whole change is taken and only pixels within grow + feather px of it blend.
    """
    height, width = int(original.shape[1]), int(original.shape[2])
    covered = box_mask(height, width, fit.source)
    pasted = edit_on_picture(original[..., :3], edited[..., :3], fit)
    batch = int(pasted.shape[0])
    found = mask is None
    if mask is None:
        # Against the VAE round trip, texture differences are mostly gone and 4 px blocks suffice;
        # against the picture itself, 8 px blocks (one latent pixel) average the VAE's loss away.
        block = 4 if reference is not None else 8
        if reference is None:
            reference = picture_to_fit(original[..., :3], fit)
        mask = found_changes(edited, reference, fit, settings.threshold, block)
    mask = broadcast(mask.float(), batch) if mask.shape[0] in (1, batch) else mask.float()
    weight = paste_weight(mask, covered, settings.grow, settings.feather, outward=found)
    if settings.colour_match:
        ring = max(8, 2 * settings.feather, round(0.02 * max(height, width)))
        pasted = colour_match(pasted, broadcast(original[..., :3], batch), weight, covered, ring)
    result = composite(broadcast(original[..., :3], batch), pasted, weight)
    return result, weight


# -- crop and stitch ---------------------------------------------------------------------------------
def crop_for_edit(picture: torch.Tensor, mask: torch.Tensor, plan: CropPlan) -> tuple[torch.Tensor, torch.Tensor, Stitch]:
    """(crop [B,h,w,C], its mask [B,h,w], the stitch): the plan's region of picture [B,H,W,C] and
    mask [B,H,W] scaled to the working size."""
    rows, columns = plan.region.slices()
    crop = resize_image(picture[:, rows, columns], plan.width, plan.height)
    crop_mask = resize_mask(mask[:, rows, columns], plan.width, plan.height)
    return crop, crop_mask, Stitch(picture, mask, plan, crop)


def stitch_back(stitch: Stitch, edited: torch.Tensor, mask: torch.Tensor | None, blend: str, grow_pixels: int,
                feather_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the picture with the edited crop blended back [B,H,W,C], weight used [B,H,W]).

    blend "mask": through the stitch's mask (or `mask`, a mask of the crop), grown and feathered
    outwards: the whole mask takes the edit (a small detail keeps it) and the ramp lies in the
    padding around it, so every pixel farther than grow + feather px from the mask is the
    picture's own. "region": the whole cropped region, feathered inwards. Either way the weight is
    kept inside the region: every pixel outside it is the picture's own.

    When the crop was enlarged for the edit (a region smaller than the working size, the usual
    case), what is pasted is the picture plus the edit's change (edited - crop, scaled back): where
    the edit changed nothing the picture's own pixels stay, exactly, and an unedited crop stitches
    back to the picture itself. A reduced crop (a region larger than the working size) is pasted
    as scaled back: adding the picture's finer detail to a changed subject would ghost it.
    """
    picture = stitch.picture
    region = stitch.region
    height, width = int(picture.shape[1]), int(picture.shape[2])
    batch = batch_of(picture, edited)
    edited = edited[..., :picture.shape[-1]].to(picture.dtype)
    rows, columns = region.slices()
    if stitch.enlarged and edited.shape[1:3] == stitch.crop.shape[1:3]:
        change = broadcast(edited, batch) - broadcast(stitch.crop, batch)
        back = F.interpolate(change.movedim(-1, 1).float(), size=(region.height, region.width), mode="bicubic",
                             align_corners=False, antialias=True).movedim(1, -1)
        patch = (broadcast(picture, batch)[:, rows, columns] + back.to(picture.dtype)).clamp(0.0, 1.0)
    else:
        patch = broadcast(resize_image(edited, region.width, region.height), batch)
    pasted = place(broadcast(picture, batch), patch.to(picture.dtype), region)
    inside = box_mask(height, width, region)
    if blend == "region":
        weight_mask = inside.float()
    elif mask is not None:
        canvas = torch.zeros((mask.shape[0], height, width))
        weight_mask = place(canvas, resize_mask(mask.float(), region.width, region.height), region)
    else:
        weight_mask = stitch.mask.float()
    weight_mask = broadcast(weight_mask, batch) if weight_mask.shape[0] in (1, batch) else weight_mask
    weight = paste_weight(weight_mask, inside, grow_pixels, feather_pixels, outward=blend != "region")
    return composite(broadcast(picture, batch), pasted, weight), weight
