"""The guidance formulas written as their papers write them: the reference the pack's one
implementation (ipx2p_core.guidance.GuidancePlan.combine) is tested against."""
from __future__ import annotations

import torch


def dual_cfg(text_image: torch.Tensor, image_only: torch.Tensor, uncond: torch.Tensor, text_cfg: float,
             image_cfg: float) -> torch.Tensor:
    """InstructPix2Pix (Brooks et al. 2023, eq. 3): u + s_T (c - i) + s_I (i - u)."""
    return uncond + text_cfg * (text_image - image_only) + image_cfg * (image_only - uncond)


def instructdiffusion_cfg(text_image: torch.Tensor, image_only: torch.Tensor, text_only: torch.Tensor, text_cfg: float,
                          image_cfg: float) -> torch.Tensor:
    """InstructDiffusion (Geng et al. 2023): 0.5 (i + t) + s_T (c - i) + s_I (c - t)."""
    return 0.5 * (image_only + text_only) + text_cfg * (text_image - image_only) + image_cfg * (text_image - text_only)
