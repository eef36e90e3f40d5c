"""Where pixels go: the Encode node's fit, its inverse, crop regions for small edits, resampling.

Boxes are in pixels of the picture they refer to, half-open ([left, left + width)). Images are
[B,H,W,C] float 0..1 and masks [B,H,W] float 0..1 (1 = selected), the host's layouts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .image import edit_size


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height

    def slices(self) -> tuple[slice, slice]:
        """(rows, columns) of this box, for indexing [..., H, W(, C)] tensors."""
        return slice(self.top, self.bottom), slice(self.left, self.right)

    def describe(self) -> str:
        return f"{self.width}x{self.height} px at ({self.left}, {self.top})"


@dataclass(frozen=True)
class EditFit:
    """How the Encode node turned a picture into the edit image: `source` (a box of the picture)
    is scaled to `width` x `height`. Pixels outside `source` are not in the edit."""

    picture_width: int
    picture_height: int
    source: Box
    width: int
    height: int


def centre_crop_box(width: int, height: int, target_width: int, target_height: int) -> Box:
    """The part of a width x height picture that a centre fit to the target's aspect keeps.

    This is the rule of the host's `comfy.utils.common_upscale(..., crop="center")`, which the
    Encode node uses: the wider side is trimmed by round(excess / 2) on both ends.
    """
    old_aspect = width / height
    new_aspect = target_width / target_height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((width - width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((height - height * (old_aspect / new_aspect)) / 2)
    return Box(x, y, width - 2 * x, height - 2 * y)


def edit_fit(mode: str, width: int, height: int, resolution: int) -> EditFit:
    """The Encode node's fit for a picture of width x height with `resize` = mode.

    original / long_side: centre fit (trim to the target aspect, then scale), or nothing when the
    picture already has the target size; keep: a centre crop to multiples of 8, no scaling.
    """
    new_width, new_height = edit_size(mode, width, height, resolution)
    if mode == "keep":
        source = Box((width - new_width) // 2, (height - new_height) // 2, new_width, new_height)
    elif (new_width, new_height) == (width, height):
        source = Box(0, 0, width, height)
    else:
        source = centre_crop_box(width, height, new_width, new_height)
    return EditFit(width, height, source, new_width, new_height)


def source_pixels(image: torch.Tensor, fit: EditFit) -> torch.Tensor:
    """The part of image [B,H,W,C] that the fit keeps: [B,sh,sw,C] for its source box, a view (the
    input itself when the box is the whole picture). The Encode node then scales it to the fit's size."""
    if fit.source == Box(0, 0, int(image.shape[2]), int(image.shape[1])):
        return image
    rows, columns = fit.source.slices()
    return image[:, rows, columns]


def same_aspect(width: int, height: int, other_width: int, other_height: int) -> bool:
    """True when two sizes have one aspect up to the rounding of a resize (one pixel of the larger)."""
    return abs(width * other_height - height * other_width) <= max(other_width, other_height, width, height)


# -- resampling ------------------------------------------------------------------------------------
def resize_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """image [B,H,W,C] -> [B,height,width,C]: bicubic, antialiased when shrinking, clamped to 0..1.
    Returns the input itself when the size is already right (no resampling, bit for bit)."""
    if image.shape[1] == height and image.shape[2] == width:
        return image
    channels_first = image.movedim(-1, 1).float()
    shrinking = height < image.shape[1] or width < image.shape[2]
    out = F.interpolate(channels_first, size=(height, width), mode="bicubic", align_corners=False, antialias=shrinking)
    return out.movedim(1, -1).clamp(0.0, 1.0).to(image.dtype)


def resize_mask(mask: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """mask [B,H,W] -> [B,height,width]: area averages when shrinking (an all-ones mask stays
    exactly ones), bilinear when growing; clamped to 0..1. Unchanged when the size is right."""
    if mask.shape[-2] == height and mask.shape[-1] == width:
        return mask
    planes = mask.unsqueeze(1).float()
    if height <= mask.shape[-2] and width <= mask.shape[-1]:
        out = F.adaptive_avg_pool2d(planes, (height, width))
    else:
        out = F.interpolate(planes, size=(height, width), mode="bilinear", align_corners=False)
    return out.squeeze(1).clamp(0.0, 1.0).to(mask.dtype)


def place(canvas: torch.Tensor, patch: torch.Tensor, box: Box) -> torch.Tensor:
    """A copy of canvas [B,H,W(,C)] with patch [B,h,w(,C)] written into `box` (out of place)."""
    out = canvas.clone()
    rows, columns = box.slices()
    out[:, rows, columns] = patch
    return out


def fit_to_picture(edited: torch.Tensor, fit: EditFit) -> torch.Tensor:
    """The edit image [B,h,w,C] scaled back onto the part of the picture it came from: [B,sh,sw,C]
    for the fit's source box (undoes the Encode node's scale; the trimmed borders are not in it)."""
    return resize_image(edited, fit.source.width, fit.source.height)


def picture_to_fit(picture: torch.Tensor, fit: EditFit) -> torch.Tensor:
    """The picture [B,H,W,C] as the Encode node framed it: the source box scaled to the edit size."""
    return resize_image(source_pixels(picture, fit), fit.width, fit.height)


# -- regions for crop-and-stitch ---------------------------------------------------------------------
@dataclass(frozen=True)
class CropPlan:
    """A region of the picture to edit on its own and the working size it is edited at.

    `region` is the mask's bounding box plus padding, enlarged (at most `max_growth` of its long
    side) to an aspect the working size allows, kept inside the picture; `width` x `height` is the
    working size (long side = resolution, both sides multiples of 64). When the picture is too
    small for that aspect the region is the clipped box and the scale differs slightly per axis
    (`distortion`, the relative difference of the two scales); the stitch undoes it exactly.
    """

    region: Box
    width: int
    height: int
    distortion: float


def bounding_box(mask: torch.Tensor) -> Box | None:
    """The smallest box holding every pixel > 0 of any mask in the batch [B,H,W]; None if none."""
    selected = (mask > 0).any(dim=0)
    rows = torch.nonzero(selected.any(dim=1)).flatten()
    columns = torch.nonzero(selected.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(columns[0]), int(columns[-1]) + 1
    return Box(left, top, right - left, bottom - top)


def _grow_span(start: int, length: int, new_length: int, limit: int) -> tuple[int, int]:
    """Grow [start, start+length) to new_length around its centre, shifted to stay in [0, limit)."""
    new_length = min(new_length, limit)
    new_start = start - (new_length - length) // 2
    new_start = max(0, min(new_start, limit - new_length))
    return new_start, new_length


MAX_GROWTH = 0.15


def plan_crop(box: Box, padding: int, picture_width: int, picture_height: int, resolution: int,
              max_growth: float = MAX_GROWTH) -> CropPlan:
    """The region and working size for editing `box` (a mask's bounding box) on its own.

    The box gets `padding` px of context on every side (clipped to the picture); its short side
    (and, for an exact ratio in whole pixels, its long side by a few px) is then enlarged to the
    nearest working aspect 64 k : resolution that is at least as wide, when that takes at most
    `max_growth` of the long side, and shifted to stay inside the picture.
    """
    if resolution < 64 or resolution % 64:
        raise ValueError(f"resolution must be a positive multiple of 64, got {resolution}")
    left = max(0, box.left - padding)
    top = max(0, box.top - padding)
    right = min(picture_width, box.right + padding)
    bottom = min(picture_height, box.bottom + padding)
    width, height = right - left, bottom - top
    landscape = width >= height
    long_len, short_len = (width, height) if landscape else (height, width)
    long_limit, short_limit = (picture_width, picture_height) if landscape else (picture_height, picture_width)
    steps = resolution // 64
    k = min(steps, max(1, math.ceil(short_len * steps / long_len - 1e-9)))
    # exact ratio k : steps in whole pixels: long = q m, short = p m
    divisor = math.gcd(k, steps)
    p, q = k // divisor, steps // divisor
    m = max(math.ceil(long_len / q), math.ceil(short_len / p))
    new_long, new_short = q * m, p * m
    fits = new_long <= long_limit and new_short <= short_limit
    grows_little = (new_short - short_len) <= max_growth * long_len and (new_long - long_len) <= max_growth * long_len
    if fits and grows_little:
        long_len, short_len = new_long, new_short
    long_start, short_start = (left, top) if landscape else (top, left)
    long_start, long_len = _grow_span(long_start, (width if landscape else height), long_len, long_limit)
    short_start, short_len = _grow_span(short_start, (height if landscape else width), short_len, short_limit)
    if landscape:
        region = Box(long_start, short_start, long_len, short_len)
    else:
        region = Box(short_start, long_start, short_len, long_len)
    # working size: the allowed aspect nearest to the region's
    ratio = short_len / long_len
    k = min(steps, max(1, round(ratio * steps)))
    work_long, work_short = resolution, 64 * k
    work_width, work_height = (work_long, work_short) if landscape else (work_short, work_long)
    distortion = abs((work_width / region.width) / (work_height / region.height) - 1.0)
    return CropPlan(region, work_width, work_height, distortion)


@dataclass(frozen=True)
class Stitch:
    """What StitchEdit needs to put an edited crop back: the full picture [B,H,W,C], its mask
    [1|B,H,W] (1 = the part to replace), the region that was cropped and the working size it was
    scaled to (`plan`), and the crop itself [B,h,w,C] as it was handed out."""

    picture: torch.Tensor
    mask: torch.Tensor
    plan: CropPlan
    crop: torch.Tensor

    @property
    def enlarged(self) -> bool:
        """True when the crop was scaled up for the edit (the region is smaller than the working size)."""
        return self.plan.width >= self.region.width and self.plan.height >= self.region.height

    @property
    def region(self) -> Box:
        return self.plan.region
