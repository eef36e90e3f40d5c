"""The region step (ipx2p_core.region) without the host: what the latent becomes inside and outside
the mask at a step and at the end."""
from __future__ import annotations

import torch

from ipx2p_core.region import empty_items, final_latent, merge_masks, model_input, step_result


def tensors(seed=0, shape=(2, 4, 4, 6)):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for _ in range(3)]


def half_mask(batch=2, height=4, width=6, soft=None):
    mask = torch.zeros(batch, 1, height, width)
    mask[..., : width // 2] = 1.0
    if soft is not None:
        mask[..., width // 2] = soft
    return mask


def test_inside_the_mask_the_sampler_and_the_model_rule_outside_the_target():
    x, noised, target = tensors()
    mask = half_mask()
    inside, outside = mask.bool().expand_as(x), ~mask.bool().expand_as(x)
    seen = model_input(x, noised, mask)
    assert torch.equal(seen[inside], x[inside]) and torch.equal(seen[outside], noised[outside])
    denoised = tensors(1)[0]
    result = step_result(denoised, target, mask)
    assert torch.equal(result[inside], denoised[inside]) and torch.equal(result[outside], target[outside])


def test_soft_values_blend_linearly():
    x, noised, target = tensors(2)
    mask = half_mask(soft=0.25)
    column = 3
    torch.testing.assert_close(model_input(x, noised, mask)[..., column], 0.25 * x[..., column] + 0.75 * noised[..., column])
    torch.testing.assert_close(step_result(x, target, mask)[..., column], 0.25 * x[..., column] + 0.75 * target[..., column])


def test_an_all_ones_mask_changes_nothing():
    x, noised, target = tensors(3)
    ones = torch.ones(2, 1, 4, 6)
    assert torch.equal(model_input(x, noised, ones), x)
    assert torch.equal(step_result(noised, target, ones), noised)
    assert torch.equal(final_latent(x, target, ones), x)


def test_the_end_is_the_target_itself_outside_a_hard_mask():
    samples, _, target = tensors(4)
    target = target.double()  # the target as given, not rounded through the sampled dtype's arithmetic
    mask = half_mask(soft=0.5)
    out = final_latent(samples, target, mask)
    outside = (mask == 0).expand_as(samples)
    assert torch.equal(out[outside], target.to(samples)[outside])
    assert torch.equal(out[~outside], samples[~outside])  # soft and selected: the sampled latent


def test_a_noise_mask_narrows_the_region():
    given = half_mask(batch=1)
    region = torch.zeros(1, 1, 4, 6)
    region[..., 1:5] = 0.5
    assert torch.equal(merge_masks(None, given), given)
    merged = merge_masks(region, given)
    assert torch.equal(merged, region * given)
    assert float(merged[..., 4:].abs().sum()) == 0.0


def test_empty_items_are_named():
    mask = torch.zeros(3, 1, 2, 2)
    mask[1, 0, 0, 0] = 0.1
    assert empty_items(mask) == [0, 2]
    assert empty_items(torch.ones(2, 1, 2, 2)) == []
