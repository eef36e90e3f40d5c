"""Guidance maps (ipx2p_core.guidance.GuidanceMap): the formula applied per latent position, with
the scales blended between the inside and outside values by the map; exact at the map's ends."""
from __future__ import annotations

import pytest
import torch

from ipx2p_core.guidance import (
    BRANCHES, IMAGE_ONLY, INSTRUCTDIFFUSION, TEXT_IMAGE, TEXT_ONLY, UNCOND, guidance_map, plan_guidance,
)
from reference import dual_cfg, instructdiffusion_cfg

SHAPE = (2, 4, 8, 8)


def predictions(seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return {b: torch.randn(SHAPE, generator=generator, dtype=dtype) for b in (*BRANCHES, TEXT_ONLY)}


def ramp(batch=1):
    """A map going from 0 (left) to 1 (right), with exact 0 and 1 columns at the ends."""
    return torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(batch, 1, 8, 8).clone()


@pytest.mark.parametrize(("inside", "outside"), [((7.5, 1.5), (3.0, 1.2)), ((7.5, 1.0), (7.5, 1.5)),
                                                 ((5.0, 5.0), (1.0, 1.0)), ((0.0, 0.0), (12.0, 2.5))])
def test_the_formula_holds_at_every_position(inside, outside):
    preds = predictions(dtype=torch.float64)
    where = guidance_map(ramp(), *outside)
    plan = plan_guidance(*inside, where=where)
    w = ramp().double()
    text = w * inside[0] + (1 - w) * outside[0]
    image = w * inside[1] + (1 - w) * outside[1]
    expected = dual_cfg(preds[TEXT_IMAGE], preds[IMAGE_ONLY], preds[UNCOND], text, image)
    torch.testing.assert_close(plan.combine(preds), expected, rtol=1e-12, atol=1e-12)


def test_instructdiffusion_per_position():
    preds = predictions(dtype=torch.float64)
    where = guidance_map(ramp(2), 2.0, 0.5)
    plan = plan_guidance(5.0, 1.25, formula=INSTRUCTDIFFUSION, where=where)
    w = ramp(2).double()
    expected = instructdiffusion_cfg(preds[TEXT_IMAGE], preds[IMAGE_ONLY], preds[TEXT_ONLY], w * 5.0 + (1 - w) * 2.0,
                                     w * 1.25 + (1 - w) * 0.5)
    torch.testing.assert_close(plan.combine(preds), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("inside", "outside"), [((7.5, 1.5), (3.0, 1.2)), ((7.3, 1.7), (2.1, 1.0))])
def test_a_map_of_ones_or_zeros_is_the_scalar_edit_exactly(inside, outside):
    preds = predictions()
    ones = plan_guidance(*inside, where=guidance_map(torch.ones(1, 1, 8, 8), *outside))
    zeros = plan_guidance(*inside, where=guidance_map(torch.zeros(1, 1, 8, 8), *outside))
    assert ones.branches == plan_guidance(*inside).branches
    assert zeros.branches == plan_guidance(*outside).branches
    assert torch.equal(ones.combine(preds), plan_guidance(*inside).combine(preds))
    assert torch.equal(zeros.combine(preds), plan_guidance(*outside).combine(preds))


@pytest.mark.parametrize(("inside", "outside", "branches"), [
    ((7.5, 1.0), (3.0, 1.0), (TEXT_IMAGE, IMAGE_ONLY)),  # image_cfg 1 everywhere: u dropped
    ((2.5, 2.5), (4.0, 4.0), (TEXT_IMAGE, UNCOND)),  # text = image everywhere: i dropped
    ((1.0, 1.0), (1.0, 1.0), (TEXT_IMAGE,)),
    ((7.5, 1.0), (2.5, 2.5), BRANCHES),  # each position needs a different pair: all three
    ((7.5, 1.0), (7.5, 1.5), BRANCHES),
])
def test_a_branch_is_dropped_only_where_every_position_can_do_without_it(inside, outside, branches):
    plan = plan_guidance(*inside, where=guidance_map(ramp(), *outside))
    assert plan.branches == branches
    preds = predictions(dtype=torch.float64)
    w = ramp().double()
    expected = dual_cfg(preds[TEXT_IMAGE], preds[IMAGE_ONLY], preds[UNCOND], w * inside[0] + (1 - w) * outside[0],
                        w * inside[1] + (1 - w) * outside[1])
    torch.testing.assert_close(plan.combine(preds), expected, rtol=1e-12, atol=1e-12)


def test_per_item_scales_with_a_map():
    """A sweep's cells (per-item scales) inside the map, the outside values for every cell."""
    preds = predictions(dtype=torch.float64)
    plan = plan_guidance((7.5, 5.0), (1.5, 1.2), where=guidance_map(ramp(), 3.0, 1.0))
    w = ramp().double()
    text = w * torch.tensor([7.5, 5.0], dtype=torch.float64).view(2, 1, 1, 1) + (1 - w) * 3.0
    image = w * torch.tensor([1.5, 1.2], dtype=torch.float64).view(2, 1, 1, 1) + (1 - w) * 1.0
    expected = dual_cfg(preds[TEXT_IMAGE], preds[IMAGE_ONLY], preds[UNCOND], text, image)
    torch.testing.assert_close(plan.combine(preds), expected, rtol=1e-12, atol=1e-12)


def test_hooks_get_the_text_scale_per_position():
    where = guidance_map(ramp(), 3.0, 1.0)
    factor = plan_guidance(7.5, 1.5, where=where).text_factor(torch.zeros(SHAPE))
    assert factor.shape == (1, 1, 8, 8)
    assert float(factor[0, 0, 0, 0]) == 3.0 and float(factor[0, 0, 0, -1]) == 7.5
    assert plan_guidance(7.5, 1.5, where=where).full.where is where
