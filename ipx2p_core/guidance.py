"""InstructPix2Pix dual classifier-free guidance (Brooks et al. 2023, eq. 3).

Three predictions per step:
    c = eps(z, image, instruction)     the text+image branch
    i = eps(z, image, empty text)      the image-only branch
    u = eps(z, zero image, empty text) the unconditional branch
    result = u + s_T (c - i) + s_I (i - u)

Written as coefficients on (c, i, u): (s_T, s_I - s_T, 1 - s_I). They sum to 1, so anything added to
all three branches alike (a ControlNet residual, say) passes through with its strength unchanged.

Two identities let a sampler skip branches without changing the result:
    s_I = 1:            u + s_T (c - i) + (i - u) = i + s_T (c - i)   -> needs {c, i}
    s_T = s_I = s:      u + s (c - i) + s (i - u) = u + s (c - u)     -> needs {c, u}
and both at once (s_T = s_I = 1) leaves c alone.

For hooks written for plain CFG (ComfyUI's sampler_cfg_function, post-CFG functions, attention
patches that tell cond from uncond) the result is split as

    result = [a + s_T (c - a)] + (s_I - 1)(i - u)

where the anchor a is i when i is evaluated, else u (or c alone): the bracket is an ordinary CFG
step from the anchor ("uncond") to c ("cond") at scale s_T, and the second term, present only
when all three branches run, is the extra image guidance. It equals the formula in every plan.

InstructDiffusion (Geng et al. 2023) guides with another triple:
    c = eps(z, image, instruction), i = eps(z, image, empty text), t = eps(z, zero image, instruction)
    result = 0.5 (i + t) + s_T (c - i) + s_I (c - t)
i.e. coefficients (s_T + s_I, 0.5 - s_T, 0.5 - s_I) on (c, i, t), again summing to 1. Split for
hooks the same way, with the anchor a = i:
    result = [i + s_T (c - i)] + [0.5 (t - i) + s_I (c - t)]
All three branches always run (no identity is used for it).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Union

import torch

TEXT_IMAGE, IMAGE_ONLY, UNCOND, TEXT_ONLY = "text_image", "image_only", "uncond", "text_only"
BRANCHES = (TEXT_IMAGE, IMAGE_ONLY, UNCOND)
INSTRUCTPIX2PIX, INSTRUCTDIFFUSION = "instructpix2pix", "instructdiffusion"
FORMULAS = (INSTRUCTPIX2PIX, INSTRUCTDIFFUSION)
FORMULA_BRANCHES = {INSTRUCTPIX2PIX: BRANCHES, INSTRUCTDIFFUSION: (TEXT_IMAGE, IMAGE_ONLY, TEXT_ONLY)}
# Each formula as the nodes' tooltips and descriptions spell it (one text, reused everywhere).
FORMULA_TEXT = {
    INSTRUCTPIX2PIX: "u + text_cfg (c - i) + image_cfg (i - u)",
    INSTRUCTDIFFUSION: "0.5 (i + t) + text_cfg (c - i) + image_cfg (c - t)",
}
# Branches that carry the instruction: what patches that tell cond from uncond see as cond.
TEXT_BRANCHES = (TEXT_IMAGE, TEXT_ONLY)
# What each branch is given: (the instruction, else the empty text; the image, else a zero image).
BRANCH_INPUTS = {TEXT_IMAGE: (True, True), IMAGE_ONLY: (False, True), UNCOND: (False, False), TEXT_ONLY: (True, False)}


Scale = Union[float, tuple[float, ...]]
# A replacement for the plain-CFG bracket: (cond, anchor) -> a + s_T (c - a), or a hook's version of it.
TextStep = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _as_factor(value: Scale, like: torch.Tensor) -> float | torch.Tensor:
    """A scale as a multiplier for predictions `like` [B,...]: a float, or per item a [B,1,...] tensor."""
    if isinstance(value, tuple):
        return _per_item_factor(value, like.dtype, like.device, like.ndim)
    return value


@functools.lru_cache(maxsize=32)
def _per_item_factor(values: tuple[float, ...], dtype: torch.dtype, device: torch.device, ndim: int) -> torch.Tensor:
    """Per-item scales as a [B,1,...] tensor on the predictions' device, made once: a step of a
    sweep then copies nothing from the host to a GPU (such a copy waits for the GPU's queue)."""
    return torch.tensor(values, dtype=dtype, device=device).view(-1, *([1] * (ndim - 1)))


@dataclass(frozen=True, eq=False)
class GuidanceMap:
    """Scales that vary over the picture: where `weights` [1|B,1,h,w] (latent size, values in
    [0, 1]) is 1 the plan's text_cfg / image_cfg apply, where it is 0 `text_outside` /
    `image_outside`, in between linearly: s(x) = w(x) s + (1 - w(x)) s_outside, per position.
    Made with `guidance_map`, which also notes whether any position is inside (w > 0) and any
    outside (w < 1): a plan keeps only the branches the scales that occur need."""

    weights: torch.Tensor
    text_outside: float
    image_outside: float
    has_inside: bool
    has_outside: bool


def guidance_map(weights: torch.Tensor, text_outside: float, image_outside: float) -> GuidanceMap:
    """A GuidanceMap from latent-size weights [1|B,1,h,w] (clamped to [0, 1], kept on the CPU)."""
    weights = weights.detach().float().clamp(0.0, 1.0).cpu()
    return GuidanceMap(weights, float(text_outside), float(image_outside), bool((weights > 0).any()),
                       bool((weights < 1).any()))


@functools.lru_cache(maxsize=32)
def _blended(inside: Scale, outside: float, where: GuidanceMap, dtype: torch.dtype, device: torch.device,
             ndim: int) -> torch.Tensor:
    """w s + (1 - w) s_outside as a [1|B,1,h,w] tensor on the predictions' device, made once per
    plan and device (exactly s where w is 1 and exactly s_outside where w is 0)."""
    weights = where.weights.to(device=device, dtype=dtype)
    value = _per_item_factor(inside, dtype, device, ndim) if isinstance(inside, tuple) else inside
    return weights * value + (1.0 - weights) * outside


def _all_close(value: Scale, target: float) -> bool:
    values = value if isinstance(value, tuple) else (value,)
    return all(math.isclose(v, target) for v in values)


def _minus(a: Scale, b: Scale) -> Scale:
    if isinstance(a, tuple) or isinstance(b, tuple):
        size = max(len(v) for v in (a, b) if isinstance(v, tuple))
        left = a if isinstance(a, tuple) else (a,) * size
        right = b if isinstance(b, tuple) else (b,) * size
        return tuple(x - y for x, y in zip(left, right))
    return a - b


@dataclass(frozen=True)
class GuidancePlan:
    """Which branches a step evaluates (c first, then the anchor), and the weight of each.

    text_cfg and image_cfg are floats, or tuples with one value per batch item (a guidance sweep
    samples its cells as one batch); the branches are then those every item needs.
    """

    branches: tuple[str, ...]
    text_cfg: Scale
    image_cfg: Scale
    formula: str = INSTRUCTPIX2PIX
    where: GuidanceMap | None = field(default=None, compare=False)

    @property
    def weights(self) -> tuple[Scale, ...]:
        """The coefficient of each planned branch in the result (they sum to 1)."""
        if self.formula == INSTRUCTDIFFUSION:
            return (_minus(self.text_cfg, _minus(0.0, self.image_cfg)), _minus(0.5, self.text_cfg),
                    _minus(0.5, self.image_cfg))
        if len(self.branches) == 1:
            return (1.0,)
        if len(self.branches) == 2:
            return (self.text_cfg, _minus(1.0, self.text_cfg))
        return (self.text_cfg, _minus(self.image_cfg, self.text_cfg), _minus(1.0, self.image_cfg))

    @property
    def anchor(self) -> str:
        """The branch text guidance starts from: what CFG hooks are given as "uncond"."""
        return self.branches[1] if len(self.branches) > 1 else TEXT_IMAGE

    @property
    def anchor_index(self) -> int:
        """The anchor's position in `branches` (0 when c is alone)."""
        return self.branches.index(self.anchor)

    @property
    def full(self) -> GuidancePlan:
        """The same scales with every branch of the formula evaluated (for patches that must see
        each branch, e.g. a model option "disable_cfg1_optimization")."""
        return plan_guidance(self.text_cfg, self.image_cfg, skip_branches=False, formula=self.formula, where=self.where)

    @property
    def text_positions(self) -> frozenset[int]:
        """Positions, in the full plan's branch order, of the branches that carry the instruction:
        what patches that tell cond from uncond must see as cond."""
        return frozenset(index for index, branch in enumerate(self.full.branches) if branch in TEXT_BRANCHES)

    def text_factor(self, like: torch.Tensor) -> float | torch.Tensor:
        """text_cfg as a multiplier for predictions `like` [B,...]: what CFG hooks get as cond_scale
        (a float; per item [B,1,1,1]; with a guidance map per position [1|B,1,h,w])."""
        if self.where is not None:
            return _blended(self.text_cfg, self.where.text_outside, self.where, like.dtype, like.device, like.ndim)
        return _as_factor(self.text_cfg, like)

    def image_factor(self, like: torch.Tensor, minus: float = 0.0) -> float | torch.Tensor:
        """image_cfg - `minus` as a multiplier for predictions `like` (per item or per position as text_factor)."""
        if self.where is not None:
            return _blended(_minus(self.image_cfg, minus), self.where.image_outside - minus, self.where, like.dtype,
                            like.device, like.ndim)
        return _as_factor(_minus(self.image_cfg, minus), like)

    def _image_is_one(self) -> bool:
        """image_cfg is 1 at every position (the image term vanishes)."""
        inside = _all_close(self.image_cfg, 1.0)
        if self.where is None:
            return inside
        outside = math.isclose(self.where.image_outside, 1.0)
        return (inside or not self.where.has_inside) and (outside or not self.where.has_outside)

    def text_guidance(self, predictions: dict[str, torch.Tensor]) -> torch.Tensor:
        """a + s_T (c - a): the plain-CFG part (out of place)."""
        anchor, cond = predictions[self.anchor], predictions[TEXT_IMAGE]
        return anchor + (cond - anchor) * self.text_factor(cond)

    def image_correction(self, predictions: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """What the formula adds to the bracket: (s_I - 1)(i - u) when all three InstructPix2Pix
        branches run (else None: it is zero); for InstructDiffusion 0.5 (t - i) + s_I (c - t)."""
        if self.formula == INSTRUCTDIFFUSION:
            cond, image_only, text_only = (predictions[b] for b in (TEXT_IMAGE, IMAGE_ONLY, TEXT_ONLY))
            return (text_only - image_only) * 0.5 + (cond - text_only) * self.image_factor(cond)
        if len(self.branches) < 3 or self._image_is_one():
            return None
        difference = predictions[IMAGE_ONLY] - predictions[UNCOND]
        return difference * self.image_factor(difference, minus=1.0)

    def combine(self, predictions: dict[str, torch.Tensor], text_step: TextStep | None = None) -> torch.Tensor:
        """The formula's result from the planned branches only (each [B,...], keyed by branch).

        `text_step(cond, anchor)`, when given, replaces the plain-CFG bracket a + s_T (c - a): a
        host's CFG function (rescaling and the like) works on that part, and the rest of the
        formula, image_correction, is added after it. This is the code the guider runs.
        """
        if text_step is None:
            result = self.text_guidance(predictions)
        else:
            result = text_step(predictions[TEXT_IMAGE], predictions[self.anchor])
        correction = self.image_correction(predictions)
        return result if correction is None else result + correction


def _branches_for(text_cfg: float, image_cfg: float) -> tuple[str, ...]:
    if math.isclose(image_cfg, 1.0) and math.isclose(text_cfg, 1.0):
        return (TEXT_IMAGE,)
    if math.isclose(image_cfg, 1.0):
        return (TEXT_IMAGE, IMAGE_ONLY)
    if math.isclose(text_cfg, image_cfg):
        return (TEXT_IMAGE, UNCOND)
    return BRANCHES


def _pair(text_cfg: Scale, image_cfg: Scale) -> tuple[tuple[float, ...], tuple[float, ...]]:
    size = max(len(v) for v in (text_cfg, image_cfg) if isinstance(v, tuple))
    texts = tuple(float(v) for v in text_cfg) if isinstance(text_cfg, tuple) else (float(text_cfg),) * size
    images = tuple(float(v) for v in image_cfg) if isinstance(image_cfg, tuple) else (float(image_cfg),) * size
    if len(texts) != len(images):
        raise ValueError(f"per-item scales need one text and one image value per item, got {len(texts)} and {len(images)}")
    return texts, images


def plan_guidance(text_cfg: Scale, image_cfg: Scale, skip_branches: bool = True,
                  formula: str = INSTRUCTPIX2PIX, where: GuidanceMap | None = None) -> GuidancePlan:
    """The cheapest set of branches that gives exactly u + s_T (c - i) + s_I (i - u).

    With skip_branches=False all three are always evaluated (for checks and for patches that
    must see every branch). With per-item scales (tuples) the plan is one that fits every item:
    the identity all items share, else all three branches. formula "instructdiffusion" always
    plans its three branches (c, i, t).

    `where`: a guidance map (scales per position, see GuidanceMap); text_cfg / image_cfg are then
    the scales where the map is 1. A branch is dropped only when every position can do without it:
    the plan fits every (text, image) pair that occurs, inside (where the map is above 0) and outside
    (where it is below 1).
    """
    if formula not in FORMULAS:
        raise ValueError(f"formula must be one of {', '.join(FORMULAS)}, got {formula!r}")
    if formula == INSTRUCTDIFFUSION:
        if isinstance(text_cfg, tuple) or isinstance(image_cfg, tuple):
            texts, images = _pair(text_cfg, image_cfg)
            return GuidancePlan(FORMULA_BRANCHES[formula], texts, images, formula, where)
        return GuidancePlan(FORMULA_BRANCHES[formula], float(text_cfg), float(image_cfg), formula, where)
    pairs: list[tuple[float, float]] = []
    if isinstance(text_cfg, tuple) or isinstance(image_cfg, tuple):
        texts, images = _pair(text_cfg, image_cfg)
        text_cfg, image_cfg = texts, images
    else:
        text_cfg, image_cfg = float(text_cfg), float(image_cfg)
        texts, images = (text_cfg,), (image_cfg,)
    if where is None or where.has_inside:
        pairs += zip(texts, images)
    if where is not None and where.has_outside:
        pairs.append((where.text_outside, where.image_outside))
    kinds = {_branches_for(t, i) for t, i in pairs}
    branches = kinds.pop() if skip_branches and len(kinds) == 1 else BRANCHES
    return GuidancePlan(branches, text_cfg, image_cfg, INSTRUCTPIX2PIX, where)


def edit_batch_size(text_batch: int, image_batch: int, who: str = "InstructPix2Pix") -> int:
    """Batch size of an edit: one image with N instructions, N images with one, or N with N."""
    if text_batch == image_batch or text_batch == 1 or image_batch == 1:
        return max(text_batch, image_batch)
    raise ValueError(
        f"{who}: input 'positive' has batch {text_batch} and the image has batch {image_batch} (input 'edit_latent'); "
        "expected equal batches, or one of them 1 (one image with many instructions, or many images with one). "
        "Fix: batch the same number of images and instructions."
    )
