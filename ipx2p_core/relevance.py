"""Where the instruction acts: a relevance map from the text term and the soft region it gives.

InstructPix2Pix evaluates per step c (instruction + image), i (empty text + image) and u; the text
term (c - i) is what the instruction adds to the picture (Brooks et al. 2023, eq. 3), so its size
per latent position says where the edit happens. With `localize = auto` the guider feeds the
predictions of the first `until` of the steps to a `RelevanceMap`, then turns its total into a
soft region (`find_region` / `soft_region`) used as the edit mask for the remaining steps: outside
it the latent follows the input image (ipx2p_core.region).

On a real photo (c - i) is non-zero everywhere (the model re-renders texture, shifts colours a
little) and noisy from step to step, but much larger where the instruction acts. So the map is
summed over steps (the noise averages out, the edit adds up), smoothed (isolated pixels drop
out), and the region is cut a little below halfway between the map's background level and its
peak. An item whose map has no clear peak (a global edit such as a style change, or nothing at
all) gets the whole picture: localising it would freeze most of the picture.

Layouts: predictions [B,4,h,w] (denoised latents), relevance and regions [B,1,h,w] float,
regions in 0..1 (1 = edit here). Pure torch, out of place.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .masks import grow as grow_mask

# The share of the steps whose predictions build the map. By 40% of the steps the layout of the
# edit is settled and several steps have averaged the per-step noise of (c - i); the remaining 60%
# (the low-sigma detail steps) still run with the region, which replaces the latent outside it by
# the noised input at every step, so whatever the early unmasked steps changed there is undone.
DEFAULT_UNTIL = 0.4
# Where to cut the smoothed map, rescaled so 0 is its background level and 1 its peak (see
# `normalised_relevance`). Not halfway: |c - i| adds the edit and the noise in quadrature, so where
# an edit fades to half its strength the map is only ~0.35-0.45 of the way up (with noise 30-50% of
# the edit); 0.4 puts the outline of a soft-edged edit near its half-strength contour and still
# leaves the background (at ~0 after the rescale, fluctuating by ~0.1) well outside.
DEFAULT_THRESHOLD = 0.4
# Box blur radius in latent pixels (a 3x3 box, twice): removes single noisy positions and fills
# pin holes while moving the outline of a straight edge by less than a pixel. A radius of 2 rounds
# corners and lets background blotches merge (precision on a sharp rectangle drops to ~0.9).
DEFAULT_SMOOTH = 1
# Full-strength dilation in latent pixels after the cut. 0 keeps the region on the measured outline;
# the soft band of `DEFAULT_EDGE` pixels outside it (weights below 0.5) already blends the seam.
# Raise it when the edit must reach past the object (a shadow, a halo).
DEFAULT_GROW = 0
# Width in latent pixels of the soft band outside the grown region: weights fall linearly from
# below 0.5 to 0, so the region's 0.5 outline stays where it was cut.
DEFAULT_EDGE = 2
# Values within this distance of the threshold ramp linearly (0 at threshold - RAMP, 1 at
# threshold + RAMP): the region's own edge is soft, not a staircase of latent pixels.
RAMP = 0.1
# Background level and peak of the smoothed map, as quantiles over an item's positions. The
# background level is the 20th percentile so a region covering up to ~80% of the picture is still
# measured against true background. The peak is the 99.9th (the 4th highest of 64x64): the blur
# has already flattened single outlying positions, and a lower quantile would fall outside an edit
# smaller than 1% of the picture (6x6 latent px of 64x64), which then spreads over its background.
BACKGROUND_QUANTILE = 0.2
PEAK_QUANTILE = 0.999
# A map whose peak (after the blur) is less than this multiple of its background level has no
# concentrated edit: the whole picture is edited (see `find_region`). Measured on Gaussian noise
# alone: ~1.4x from one step, ~1.15x summed over eight; an edit confined to a rectangle, with
# noise 60-80% of its strength: ~1.9x, with 30-50%: ~3x.
MIN_CONTRAST = 1.6
# From this many steps on, RelevanceMap.total leaves out each position's largest step (with fewer,
# one step would be a third or more of what is left).
TRIM_FROM = 4
# Below this the map counts as zero (no edit at all); keeps every division finite.
_TINY = 1e-12


class RelevanceMap:
    """Per-position relevance of the instruction, summed over the steps given to `add`.

    Each step contributes |c - i| per position (L2 over the latent channels) divided by its mean
    over the item's positions. The mean normalisation puts every step on the same footing (the
    size of (c - i) changes a lot with sigma and with the text scale's effect) and weighs steps by
    their contrast: a step whose difference is concentrated adds a peaked map, a step of plain
    noise adds a nearly flat one, which only raises the background that `find_region` subtracts.
    The mean, not a quantile, because it needs no sort and stays finite for an all-zero step.
    Steps are weighted equally: the high-sigma steps give the edit's coarse extent, the later ones
    sharpen its outline, and both matter; `sigma` is accepted so callers pass the step's state
    and a weighting could be added without changing them.

    From `TRIM_FROM` steps on, `total` leaves out each position's largest step (a trimmed sum):
    a position that jumps in one step only (a highlight, a stray blotch) is noise, an edit shows
    in every step. Dropping one step of every position scales a steady edit's profile, not its
    shape, so the outline found is unchanged. A cap on each step's values would also tame jumps,
    but it flattens a small, clean edit's soft edge and moves its outline outwards.

    `add` keeps the sum and the maximum on the predictions' device and reads nothing back (no
    host-device synchronisation), since it runs every sampling step.
    """

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self._largest: torch.Tensor | None = None
        self.steps = 0

    def add(self, cond: torch.Tensor, image_only: torch.Tensor, sigma: float | torch.Tensor) -> None:
        """Add one step: cond = c, image_only = i, denoised predictions [B,4,h,w]; sigma the step's."""
        del sigma  # equal weights, see the class docstring
        if cond.shape != image_only.shape or cond.dim() != 4:
            raise ValueError(f"RelevanceMap.add: predictions of shapes {tuple(cond.shape)} and {tuple(image_only.shape)}; "
                             "expected two latents [B,C,h,w] of the same shape")
        # float32: the square sum of a half-precision difference can overflow
        difference = cond.float() - image_only.float()
        magnitude = torch.linalg.vector_norm(difference, dim=1, keepdim=True)
        step_map = magnitude / magnitude.mean(dim=(2, 3), keepdim=True).clamp_min(_TINY)
        if self._sum is None or self._largest is None:
            self._sum, self._largest = step_map, step_map
        elif self._sum.shape != step_map.shape:
            raise ValueError(f"RelevanceMap.add: a step of shape {tuple(step_map.shape)} after steps of shape "
                             f"{tuple(self._sum.shape)}; every step of one run has the same batch and latent size")
        else:
            self._sum = self._sum + step_map
            self._largest = torch.maximum(self._largest, step_map)
        self.steps += 1

    def total(self) -> torch.Tensor:
        """The accumulated relevance [B,1,h,w] (float32, on the predictions' device): the sum of
        the steps' maps, less each position's largest from TRIM_FROM steps on."""
        if self._sum is None or self._largest is None:
            raise RuntimeError("RelevanceMap.total: no step was added")
        return self._sum - self._largest if self.steps >= TRIM_FROM else self._sum


class FoundRegion(NamedTuple):
    """What `find_region` found: mask [B,1,h,w] in 0..1; fallback [B] bool, True where the item
    had no concentrated relevance and gets the whole picture; coverage [B], the mean of the mask
    (the share of the picture edited). All on the relevance's device; `describe` reads them."""

    mask: torch.Tensor
    fallback: torch.Tensor
    coverage: torch.Tensor

    def describe(self) -> list[str]:
        """One line per item for the log (reads the flags back to the host once)."""
        flags = self.fallback.cpu().tolist()
        shares = self.coverage.cpu().tolist()
        return [f"item {index}: no change concentrated anywhere, editing the whole picture" if flag
                else f"item {index}: editing {100.0 * share:.0f}% of the picture"
                for index, (flag, share) in enumerate(zip(flags, shares))]


def _box_blur(planes: torch.Tensor, radius: int) -> torch.Tensor:
    """[N,1,h,w] averaged over a (2 radius + 1) box, twice (a tent, close to a Gaussian). Only
    positions inside the picture count, so a region touching the border keeps its value there."""
    if radius <= 0:
        return planes
    size = 2 * radius + 1
    for _ in range(2):
        planes = F.avg_pool2d(planes, size, stride=1, padding=radius, count_include_pad=False)
    return planes


def _quantiles(planes: torch.Tensor, quantiles: tuple[float, ...]) -> list[torch.Tensor]:
    """Per-item quantiles of [B,1,h,w] as [B,1,1,1] each, the nearest rank: a sort and indices fixed
    by the shape, so nothing is read back from the device (torch.quantile checks its arguments)."""
    ordered = planes.flatten(1).sort(dim=1).values
    last = ordered.shape[1] - 1
    return [ordered[:, int(round(q * last))].view(-1, 1, 1, 1) for q in quantiles]


def normalised_relevance(relevance: torch.Tensor, smooth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """relevance [B,1,h,w] -> (map [B,1,h,w] in 0..1, concentrated [B] bool).

    The map is box-blurred (`smooth` px), then rescaled per item so its background level (20th
    percentile) is 0 and its peak (99.9th percentile) is 1, clamped. `concentrated` is False where
    the peak is under MIN_CONTRAST times the background: nothing stands out.
    """
    smoothed = _box_blur(relevance.float(), smooth)
    background, peak = _quantiles(smoothed, (BACKGROUND_QUANTILE, PEAK_QUANTILE))
    spread = peak - background
    normalised = ((smoothed - background) / spread.clamp_min(_TINY)).clamp(0.0, 1.0)
    concentrated = (peak > _TINY) & (peak > MIN_CONTRAST * background)
    return normalised, concentrated.flatten()


def _soft_edge(mask: torch.Tensor, edge: int) -> torch.Tensor:
    """A band of `edge` px outside mask [B,1,h,w]: at k px out the weight is the mask's nearby
    value times 0.5 (edge + 1 - k) / (edge + 1), so it is below 0.5 from the first pixel on and
    reaches 0 at edge + 1 px."""
    if edge <= 0:
        return mask
    planes = mask.squeeze(1)
    out = planes
    for distance in range(1, edge + 1):
        weight = 0.5 * (edge + 1 - distance) / (edge + 1)
        out = torch.maximum(out, grow_mask(planes, distance) * weight)
    return out.unsqueeze(1)


def find_region(relevance: torch.Tensor, threshold: float = DEFAULT_THRESHOLD, smooth: int = DEFAULT_SMOOTH,
                grow: int = DEFAULT_GROW, edge: int = DEFAULT_EDGE) -> FoundRegion:
    """The soft edit region of relevance [B,1,h,w] (a `RelevanceMap.total()`).

    1. smooth and rescale per item to 0..1 between background and peak (`normalised_relevance`);
    2. cut at `threshold` with a linear ramp of +-RAMP, so the region's edge is soft;
    3. dilate by `grow` latent px at full strength (masks.grow: soft values kept);
    4. add a soft band of `edge` px outside (weights below 0.5, down to 0).

    Fallback: an item with no concentrated relevance (its peak under MIN_CONTRAST times its
    background: a global edit, pure noise, all zeros) or whose cut selects nothing gets the whole
    picture (mask of ones) and fallback True. An empty region would freeze the picture, so the
    edit would silently do nothing; the whole picture is the edit without localisation. Computed
    on the device without reading anything back.
    """
    if not 0.0 <= threshold <= 1.0:  # also refuses NaN
        raise ValueError(f"find_region: threshold {threshold}; expected a value in 0..1")
    if smooth < 0 or grow < 0 or edge < 0:
        raise ValueError(f"find_region: smooth {smooth}, grow {grow}, edge {edge}; expected values >= 0")
    normalised, concentrated = normalised_relevance(relevance, smooth)
    cut = ((normalised - (threshold - RAMP)) / (2.0 * RAMP)).clamp(0.0, 1.0)
    grown = grow_mask(cut.squeeze(1), grow).unsqueeze(1) if grow > 0 else cut
    mask = _soft_edge(grown, edge)
    selected = mask.flatten(1).amax(dim=1) >= 0.5
    fallback = ~(concentrated & selected)
    mask = torch.where(fallback.view(-1, 1, 1, 1), torch.ones_like(mask), mask)
    return FoundRegion(mask, fallback, mask.mean(dim=(1, 2, 3)))


def soft_region(relevance: torch.Tensor, threshold: float = DEFAULT_THRESHOLD, smooth: int = DEFAULT_SMOOTH,
                grow: int = DEFAULT_GROW) -> torch.Tensor:
    """The mask [B,1,h,w] in 0..1 of `find_region` (with its default soft band); items without a
    concentrated relevance get the whole picture. Use `find_region` to know which."""
    return find_region(relevance, threshold, smooth, grow).mask


def steps_to_gather(total_steps: int, until: float) -> int:
    """How many of `total_steps` model evaluations gather relevance: `until` of them, rounded up,
    at least 1 and at most total_steps - 1 so at least one step runs with the region.

    With total_steps == 1 both limits cannot hold: the answer is 1, the only step gathers and the
    region can only be applied to the result (the final keep), not to a step. Counts are in the
    caller's unit: pass model evaluations when a sampler makes several per step.
    """
    if total_steps < 1:
        raise ValueError(f"steps_to_gather: total_steps {total_steps}; expected at least 1")
    if math.isnan(until):
        raise ValueError("steps_to_gather: until is NaN; expected a fraction of the steps in 0..1")
    if total_steps == 1:
        return 1
    # the tolerance keeps 0.3 * 10 (3.0000000000000004 in binary) at 3
    wanted = math.ceil(until * total_steps - 1e-9)
    return max(1, min(total_steps - 1, wanted))


def region_stats(region: torch.Tensor, truth: torch.Tensor, at: float = 0.5) -> tuple[float, float]:
    """(precision, recall) of region >= at against the boolean truth, over all items together;
    region [B,1,h,w] and truth of a shape that broadcasts with it. An empty selection has
    precision 1 (nothing wrongly selected); an empty truth has recall 1."""
    found, truth = torch.broadcast_tensors(region >= at, truth.bool())
    hits = float((found & truth).sum())
    found_count, truth_count = float(found.sum()), float(truth.sum())
    precision = hits / found_count if found_count > 0 else 1.0
    recall = hits / truth_count if truth_count > 0 else 1.0
    return precision, recall
