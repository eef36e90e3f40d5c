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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

TEXT_IMAGE, IMAGE_ONLY, UNCOND = "text_image", "image_only", "uncond"
BRANCHES = (TEXT_IMAGE, IMAGE_ONLY, UNCOND)


@dataclass(frozen=True)
class GuidancePlan:
    """Which branches a step evaluates (c first, then the anchor), and the weight of each."""

    branches: tuple[str, ...]
    text_cfg: float
    image_cfg: float

    @property
    def weights(self) -> tuple[float, ...]:
        """The coefficient of each planned branch in the result (they sum to 1)."""
        if len(self.branches) == 1:
            return (1.0,)
        if len(self.branches) == 2:
            return (self.text_cfg, 1.0 - self.text_cfg)
        return (self.text_cfg, self.image_cfg - self.text_cfg, 1.0 - self.image_cfg)

    @property
    def anchor(self) -> str:
        """The branch text guidance starts from: what CFG hooks are given as "uncond"."""
        return self.branches[1] if len(self.branches) > 1 else TEXT_IMAGE

    def text_guidance(self, predictions: dict[str, torch.Tensor]) -> torch.Tensor:
        """a + s_T (c - a): the plain-CFG part (out of place)."""
        anchor, cond = predictions[self.anchor], predictions[TEXT_IMAGE]
        return anchor + (cond - anchor) * self.text_cfg

    def image_correction(self, predictions: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """(s_I - 1)(i - u) when all three branches run, else None (it is zero)."""
        if len(self.branches) < 3 or math.isclose(self.image_cfg, 1.0):
            return None
        return (predictions[IMAGE_ONLY] - predictions[UNCOND]) * (self.image_cfg - 1.0)

    def combine(self, predictions: dict[str, torch.Tensor]) -> torch.Tensor:
        """u + s_T (c - i) + s_I (i - u), from the planned branches only."""
        result = self.text_guidance(predictions)
        correction = self.image_correction(predictions)
        return result if correction is None else result + correction


def plan_guidance(text_cfg: float, image_cfg: float, skip_branches: bool = True) -> GuidancePlan:
    """The cheapest set of branches that gives exactly u + s_T (c - i) + s_I (i - u).

    With skip_branches=False all three are always evaluated (for checks and for patches that
    must see every branch).
    """
    text_cfg, image_cfg = float(text_cfg), float(image_cfg)
    if skip_branches:
        if math.isclose(image_cfg, 1.0) and math.isclose(text_cfg, 1.0):
            return GuidancePlan((TEXT_IMAGE,), text_cfg, image_cfg)
        if math.isclose(image_cfg, 1.0):
            return GuidancePlan((TEXT_IMAGE, IMAGE_ONLY), text_cfg, image_cfg)
        if math.isclose(text_cfg, image_cfg):
            return GuidancePlan((TEXT_IMAGE, UNCOND), text_cfg, image_cfg)
    return GuidancePlan(BRANCHES, text_cfg, image_cfg)


def dual_cfg(
    text_image: torch.Tensor, image_only: torch.Tensor, uncond: torch.Tensor, text_cfg: float, image_cfg: float
) -> torch.Tensor:
    """The paper's formula, written as the paper writes it (reference for tests)."""
    return uncond + text_cfg * (text_image - image_only) + image_cfg * (image_only - uncond)


def edit_batch_size(text_batch: int, image_batch: int, who: str = "InstructPix2Pix") -> int:
    """Batch size of an edit: one image with N instructions, N images with one, or N with N."""
    if text_batch == image_batch or text_batch == 1 or image_batch == 1:
        return max(text_batch, image_batch)
    raise ValueError(
        f"{who}: the instruction conditioning has batch {text_batch} and the image has batch {image_batch}; "
        "they must match, or one of them must be 1 (one image with many instructions, or many images with one). "
        "Fix: batch the same number of images and instructions."
    )
