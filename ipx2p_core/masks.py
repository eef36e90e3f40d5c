"""Masks for editing only what the instruction names: latent masks, grow and feather, change
detection, colour matching and compositing.

Masks are [B,H,W] float 0..1 (1 = edit here), images [B,H,W,C] float 0..1, latent masks
[B,1,h,w]. Everything is out of place and pure torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .geometry import centre_crop_box, resize_mask


def mask_batch(mask_batch_size: int, batch: int, who: str) -> None:
    """A mask of batch 1 applies to every item; otherwise the batches must agree."""
    if mask_batch_size not in (1, batch):
        raise ValueError(
            f"{who}: input 'mask' has batch {mask_batch_size} and the edit has batch {batch}; expected a mask "
            + ("of batch 1" if batch == 1 else f"of batch 1 (used for every item) or {batch}")
            + ". Fix: pass one mask, or one per image."
        )


def latent_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """mask [B,H,W] at any size -> [B,1,height,width] for a latent of that size.

    A mask of another aspect is first centre-trimmed to the latent's aspect, as the Encode node
    trims the picture (so a mask drawn on the original picture lands on the same spot), then
    area-averaged: soft values blend and an all-ones mask stays exactly ones.
    """
    box = centre_crop_box(int(mask.shape[-1]), int(mask.shape[-2]), width, height)
    rows, columns = box.slices()
    return resize_mask(mask[..., rows, columns], width, height).unsqueeze(1)


# -- morphology ---------------------------------------------------------------------------------------
def _max_filter(planes: torch.Tensor, cross: bool) -> torch.Tensor:
    """3x3 (square) or plus-shaped (cross) maximum of [N,1,H,W]; outside the picture counts as 0."""
    if not cross:
        return F.max_pool2d(F.pad(planes, (1, 1, 1, 1), value=0.0), 3, stride=1)
    padded = F.pad(planes, (1, 1, 1, 1), value=0.0)
    centre = padded[..., 1:-1, 1:-1]
    return torch.stack([centre, padded[..., :-2, 1:-1], padded[..., 2:, 1:-1],
                        padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]]).amax(dim=0)


def _dilate(planes: torch.Tensor, pixels: int) -> torch.Tensor:
    # Alternating square and plus steps grow an octagon, close to a disc of radius `pixels`.
    for step in range(pixels):
        planes = _max_filter(planes, cross=step % 2 == 1)
    return planes


def _erode(planes: torch.Tensor, pixels: int) -> torch.Tensor:
    # Outside the picture counts as selected: a mask touching the border is not eaten from there.
    return 1.0 - _dilate(1.0 - planes, pixels)


def grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (pixels > 0) or erode (pixels < 0) a mask [B,H,W] by about |pixels| px; soft values
    are kept (a grey-level max / min filter)."""
    if pixels == 0:
        return mask
    planes = mask.unsqueeze(1).float()
    planes = _dilate(planes, pixels) if pixels > 0 else _erode(planes, -pixels)
    return planes.squeeze(1).to(mask.dtype)


def inner_distance(selected: torch.Tensor, limit: int) -> torch.Tensor:
    """For a boolean mask [B,H,W]: the city-block distance (1, 2, ...) of each selected pixel to the
    nearest unselected one, capped at `limit`; 0 outside. The picture's border does not count as
    unselected. City-block distance is never below the Euclidean one, so a ramp over `limit`
    steps lies within `limit` px of the edge in every direction."""
    planes = selected.unsqueeze(1).float()
    distance = torch.zeros_like(planes)
    current = planes
    for _ in range(limit):
        distance = distance + current
        if not bool(current.any()):
            break
        padded = F.pad(current, (1, 1, 1, 1), value=1.0)
        current = torch.stack([padded[..., 1:-1, 1:-1], padded[..., :-2, 1:-1], padded[..., 2:, 1:-1],
                               padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]]).amin(dim=0)
    return distance.squeeze(1)


def feather(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Soften a mask's edge inwards: the weight rises from 0 outside the mask to the mask's value
    over `pixels` px inside it (smoothstep). Where the mask is 0 the weight is exactly 0, so
    compositing with it keeps every pixel outside the mask; the ramp spans at most `pixels` px."""
    if pixels <= 0:
        return mask
    selected = mask > 0
    box = _bounding_slices(selected)
    if box is None:
        return mask
    rows, columns = box
    distance = inner_distance(selected[:, rows, columns], pixels)
    ramp = (distance / pixels).clamp(0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)
    out = torch.zeros_like(mask)
    out[:, rows, columns] = mask[:, rows, columns] * ramp.to(mask.dtype)
    return out


def feather_outward(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Soften a mask's edge outwards: the weight is never below the mask (all of it is taken, at
    its own values) and falls from the mask's value to 0 over the `pixels` px around it.

    The k-th pixel out (k = 1..pixels, in the octagonal steps `grow` takes) gets
    smoothstep(1 - k / (pixels + 1)) of the largest mask value k steps away; beyond `pixels` steps
    the weight is exactly 0, so the ramp lies where grow(mask, pixels) adds, and a pixel farther
    from the mask keeps its own value when composited."""
    if pixels <= 0:
        return mask
    box = _bounding_slices(mask > 0, margin=pixels + 1)
    if box is None:
        return mask
    rows, columns = box
    reach = mask[:, rows, columns].unsqueeze(1).float()
    weight = reach
    for step in range(1, pixels + 1):
        reach = _max_filter(reach, cross=step % 2 == 0)  # the steps of _dilate: square, plus, square, ...
        level = 1.0 - step / (pixels + 1)
        weight = torch.maximum(weight, reach * (level * level * (3.0 - 2.0 * level)))
    out = mask.clone()
    out[:, rows, columns] = weight.squeeze(1).to(mask.dtype)
    return out


def _bounding_slices(selected: torch.Tensor, margin: int = 1) -> tuple[slice, slice] | None:
    """Rows and columns of the selected pixels' bounding box, `margin` px wider on each side (kept
    inside the picture)."""
    any_selected = selected.any(dim=0)
    rows = torch.nonzero(any_selected.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    columns = torch.nonzero(any_selected.any(dim=0)).flatten()
    height, width = any_selected.shape
    return (slice(max(0, int(rows[0]) - margin), min(height, int(rows[-1]) + 1 + margin)),
            slice(max(0, int(columns[0]) - margin), min(width, int(columns[-1]) + 1 + margin)))


def despeckle(selected: torch.Tensor, radius: int) -> torch.Tensor:
    """Boolean [B,H,W]: drop specks narrower than about 2 radius + 1 px (opening) and fill holes
    of that size (closing)."""
    if radius <= 0:
        return selected
    planes = selected.unsqueeze(1).float()
    planes = _dilate(_erode(planes, radius), radius)
    planes = _erode(_dilate(planes, radius), radius)
    return planes.squeeze(1) > 0.5


# -- change detection ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChangeSettings:
    """How edits are told apart from what the VAE round trip changes anyway.

    The VAE (8x downsampling) loses fine texture and a little colour; an edit changes colours over
    regions. Edited regions are found in two passes, on the colour difference with any global
    drift below the threshold removed (IP2P often tints the whole picture a little):
    1. blocks of `block` px whose mean colour differs by more than `threshold` (the length of the
       R, G, B difference, on 0..1): block means average texture differences away; specks of one
       block are dropped and one-block holes filled;
    2. near the outline of those blocks, the pixels where the lightly blurred difference
       (`detail_sigma` px) is above `edge_fraction` of its nearby peak: the outline of a blurred
       step lies at half its height, and a changed region is rarely uniform, so a little below
       half finds the region's edge to a few px, not to a block.
    """

    threshold: float = 0.06
    block: int = 8
    detail_sigma: float = 1.5
    edge_fraction: float = 0.35


def _gaussian_blur(planes: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N,C,H,W] (replicate padding)."""
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=planes.dtype, device=planes.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = planes.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    out = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="replicate"), horizontal, groups=channels)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), vertical, groups=channels)


def colour_difference(edited: torch.Tensor, reference: torch.Tensor, threshold: float) -> torch.Tensor:
    """edited - reference, [B,3,h,w], less each channel's global drift when that drift (the median
    difference) is below `threshold`."""
    difference = (edited[..., :3].float() - reference[..., :3].float()).movedim(-1, 1)
    drift = difference.flatten(2).median(dim=2).values[..., None, None]
    drift = torch.where(drift.abs() < threshold, drift, torch.zeros_like(drift))
    return difference - drift


def detect_changes(edited: torch.Tensor, reference: torch.Tensor, settings: ChangeSettings = ChangeSettings()
                   ) -> torch.Tensor:
    """Where edited [B,h,w,3] changed reference [B,h,w,3] (the picture as the Encode node framed it,
    or its VAE round trip): a boolean mask [B,h,w]. See ChangeSettings for the method."""
    height, width = int(edited.shape[1]), int(edited.shape[2])
    threshold = settings.threshold
    difference = colour_difference(edited, reference, threshold)
    block = max(1, min(settings.block, height, width))
    blocks_h, blocks_w = max(1, height // block), max(1, width // block)
    coarse = F.adaptive_avg_pool2d(difference, (blocks_h, blocks_w)).norm(dim=1) > threshold
    coarse = despeckle(coarse, 1)
    coarse_full = F.interpolate(coarse.unsqueeze(1).float(), size=(height, width), mode="nearest")
    core = _erode(coarse_full, block) > 0.5
    band = _dilate(coarse_full, block) > 0.5
    detail = _gaussian_blur(difference, settings.detail_sigma).norm(dim=1, keepdim=True)
    peak = F.max_pool2d(detail, 2 * block + 1, stride=1, padding=block)
    edge = detail > torch.clamp(settings.edge_fraction * peak, min=threshold)
    selected = (core | (band & edge)).squeeze(1)
    return despeckle(selected, 1)


# -- colour matching and compositing ---------------------------------------------------------------------
def colour_match(pasted: torch.Tensor, original: torch.Tensor, weight: torch.Tensor, covered: torch.Tensor,
                 ring_pixels: int) -> torch.Tensor:
    """Correct the colour drift of the pasted picture [B,H,W,3] before compositing.

    The edit is not meant to change the surroundings of the region it is pasted into, so the ring
    of `ring_pixels` px just outside the weight (where the edit covers the picture, `covered`
    [B,H,W] bool) shows the colour change the model and VAE added: per channel, the mean and
    spread of the edit there are mapped onto the original's (gain limited to 0.5..2). Returns the
    corrected picture; unchanged where there is no ring.
    """
    selected = weight > 0
    ring = (grow(selected.float(), ring_pixels) > 0) & ~selected & covered
    out = pasted.clone()
    for item in range(pasted.shape[0]):
        ring_item = ring[min(item, ring.shape[0] - 1)]
        if int(ring_item.sum()) < 16:
            continue
        edit_values = pasted[item][ring_item].float()  # [N,3]
        original_values = original[min(item, original.shape[0] - 1)][ring_item].float()
        edit_mean, original_mean = edit_values.mean(dim=0), original_values.mean(dim=0)
        gain = (original_values.std(dim=0) + 1e-4) / (edit_values.std(dim=0) + 1e-4)
        gain = gain.clamp(0.5, 2.0)
        corrected = (pasted[item].float() - edit_mean) * gain + original_mean
        out[item] = corrected.clamp(0.0, 1.0).to(pasted.dtype)
    return out


def composite(original: torch.Tensor, pasted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """original [B,H,W,C] with pasted [B,H,W,C] blended in through weight [B,H,W]. Where the weight
    is 0 the original's pixels are returned bit for bit (not recomputed), where it is 1 the pasted
    ones, and where the two pictures agree their common value (torch.lerp is exact at both ends)."""
    w = weight.unsqueeze(-1).to(original.dtype).expand_as(original)
    blended = torch.lerp(original, pasted.to(original.dtype), w)
    return torch.where(w > 0, blended, original)
