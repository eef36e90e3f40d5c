"""The region step: what the latent becomes inside and outside an edit's mask.

An edit with a mask changes only the masked region. At every sigma the sampler's latent x is
replaced outside the mask by the input image's latent noised to that sigma, the model denoises
that, and its prediction is replaced outside the mask by the input image's latent; at the end
the latent outside a hard mask is the input image's latent itself. This is the host's latent-space
inpainting step (ComfyUI comfy/samplers.py, KSamplerX0Inpaint) with the input image as the target,
where the host blends towards the latent being sampled.

Layouts: mask [B,1,h,w] float 0..1 (1 = edit here), latents [B,C,h,w]. Out of place, pure torch.
"""
from __future__ import annotations

import torch


def merge_masks(region: torch.Tensor | None, given: torch.Tensor) -> torch.Tensor:
    """The region when the sampled latent also carries a noise mask `given` [B,1,h,w] (core Set
    Latent Noise Mask): their product, so both limit the edit; `given` alone without a region."""
    return given if region is None else region.to(given) * given


def model_input(x: torch.Tensor, noised_target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What the model sees at one step: the sampler's latent x inside the mask, the target noised
    to the step's sigma outside it."""
    return x * mask + noised_target * (1.0 - mask)


def step_result(denoised: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What the step returns: the model's prediction inside the mask, the target (in the model's
    latent scale) outside it."""
    return denoised * mask + target * (1.0 - mask)


def final_latent(samples: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The edit's result: outside a hard mask (mask == 0) the target latent itself (unscaled, as
    given), not its round trip through the model's latent scaling, which can differ in the last bit."""
    outside = (mask == 0).to(samples.device).expand_as(samples)
    return torch.where(outside, target.to(samples), samples)


def empty_items(mask: torch.Tensor) -> list[int]:
    """Indices of the items of a latent mask [B,1,h,w] that select nothing."""
    return [index for index in range(mask.shape[0]) if not bool((mask[index] > 0).any())]
