"""Guidance algebra (ipx2p_core.guidance): the plan always equals the paper's formula."""
from __future__ import annotations

import itertools

import pytest
import torch

from ipx2p_core.guidance import (
    BRANCHES, IMAGE_ONLY, INSTRUCTDIFFUSION, TEXT_IMAGE, TEXT_ONLY, UNCOND, edit_batch_size, plan_guidance,
)
from reference import dual_cfg, instructdiffusion_cfg

SCALES = [0.0, 0.5, 1.0, 1.5, 2.5, 7.5, 12.0]


def predictions(seed=0, shape=(2, 4, 8, 8)):
    generator = torch.Generator().manual_seed(seed)
    return {branch: torch.randn(shape, generator=generator, dtype=torch.float64) for branch in BRANCHES}


@pytest.mark.parametrize(("text_cfg", "image_cfg"), list(itertools.product(SCALES, SCALES)))
def test_plan_equals_the_formula(text_cfg, image_cfg):
    # Also for the skipped branches: the identities hold for any value of the branch left out.
    preds = predictions()
    expected = dual_cfg(preds[TEXT_IMAGE], preds[IMAGE_ONLY], preds[UNCOND], text_cfg, image_cfg)
    plan = plan_guidance(text_cfg, image_cfg)
    torch.testing.assert_close(plan.combine(preds), expected, rtol=1e-12, atol=1e-12)
    weighted = sum(weight * preds[branch] for branch, weight in zip(plan.branches, plan.weights))
    torch.testing.assert_close(weighted, expected, rtol=1e-12, atol=1e-12)
    full = plan_guidance(text_cfg, image_cfg, skip_branches=False)
    assert full.branches == BRANCHES
    torch.testing.assert_close(full.combine(preds), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("text_cfg", "image_cfg", "branches"),
    [
        (7.5, 1.5, (TEXT_IMAGE, IMAGE_ONLY, UNCOND)),
        (7.5, 1.0, (TEXT_IMAGE, IMAGE_ONLY)),
        (3.0, 3.0, (TEXT_IMAGE, UNCOND)),
        (1.0, 1.0, (TEXT_IMAGE,)),
        (1.0, 1.5, (TEXT_IMAGE, IMAGE_ONLY, UNCOND)),
    ],
)
def test_only_needed_branches_are_planned(text_cfg, image_cfg, branches):
    assert plan_guidance(text_cfg, image_cfg).branches == branches


def test_weights_sum_to_one():
    # A residual added to every branch alike (e.g. a ControlNet) keeps its strength.
    for text_cfg, image_cfg in itertools.product(SCALES, SCALES):
        assert sum(plan_guidance(text_cfg, image_cfg).weights) == pytest.approx(1.0)


def test_reductions():
    c, i, u = predictions(1).values()
    # s_I = 1: plain CFG between c and i; s_T = s_I = 1: c alone; s_T = s_I = s: CFG between c and u.
    torch.testing.assert_close(dual_cfg(c, i, u, 4.0, 1.0), i + 4.0 * (c - i))
    torch.testing.assert_close(dual_cfg(c, i, u, 1.0, 1.0), c)
    torch.testing.assert_close(dual_cfg(c, i, u, 3.0, 3.0), u + 3.0 * (c - u))


def test_linear_in_each_prediction():
    a, b = predictions(2), predictions(3)
    plan = plan_guidance(7.5, 1.5)
    mixed = {k: 2.0 * a[k] - 0.5 * b[k] for k in BRANCHES}
    torch.testing.assert_close(plan.combine(mixed), 2.0 * plan.combine(a) - 0.5 * plan.combine(b))


def test_combine_does_not_modify_inputs():
    preds = predictions(4)
    before = {k: v.clone() for k, v in preds.items()}
    plan_guidance(7.5, 1.5).combine(preds)
    for key in BRANCHES:
        assert torch.equal(preds[key], before[key])


@pytest.mark.parametrize(("text", "image", "batch"), [(1, 1, 1), (3, 1, 3), (1, 4, 4), (2, 2, 2)])
def test_edit_batch_sizes(text, image, batch):
    assert edit_batch_size(text, image) == batch


def test_mismatched_batches_name_both_sizes():
    with pytest.raises(ValueError, match="batch 2 and the image has batch 3"):
        edit_batch_size(2, 3, who="IPX2P_Guider")


@pytest.mark.parametrize(("text_cfg", "image_cfg"), [(5.0, 1.25), (1.0, 1.0), (0.5, 0.5), (7.5, 0.0)])
def test_instructdiffusion_plan_equals_its_formula(text_cfg, image_cfg):
    generator = torch.Generator().manual_seed(5)
    preds = {b: torch.randn((2, 4, 8, 8), generator=generator, dtype=torch.float64) for b in (TEXT_IMAGE, IMAGE_ONLY, TEXT_ONLY)}
    plan = plan_guidance(text_cfg, image_cfg, formula=INSTRUCTDIFFUSION)
    assert plan.branches == (TEXT_IMAGE, IMAGE_ONLY, TEXT_ONLY)
    expected = instructdiffusion_cfg(preds[TEXT_IMAGE], preds[IMAGE_ONLY], preds[TEXT_ONLY], text_cfg, image_cfg)
    torch.testing.assert_close(plan.combine(preds), expected, rtol=1e-12, atol=1e-12)
    weighted = sum(w * preds[b] for b, w in zip(plan.branches, plan.weights))
    torch.testing.assert_close(weighted, expected, rtol=1e-12, atol=1e-12)
    assert sum(plan.weights) == pytest.approx(1.0)
    # and it is not InstructPix2Pix's formula with the same scales
    assert not torch.allclose(expected, dual_cfg(preds[TEXT_IMAGE], preds[IMAGE_ONLY], preds[TEXT_ONLY], text_cfg, image_cfg))


def test_instructdiffusion_per_item_scales():
    generator = torch.Generator().manual_seed(6)
    preds = {b: torch.randn((2, 4, 4, 4), generator=generator, dtype=torch.float64) for b in (TEXT_IMAGE, IMAGE_ONLY, TEXT_ONLY)}
    plan = plan_guidance((5.0, 3.0), (1.25, 2.0), formula=INSTRUCTDIFFUSION)
    out = plan.combine(preds)
    for index, (t, i) in enumerate([(5.0, 1.25), (3.0, 2.0)]):
        one = {b: p[index:index + 1] for b, p in preds.items()}
        torch.testing.assert_close(out[index:index + 1], instructdiffusion_cfg(*one.values(), t, i), rtol=1e-12, atol=1e-12)


def test_unknown_formula_is_refused():
    with pytest.raises(ValueError, match="formula must be one of"):
        plan_guidance(7.5, 1.5, formula="magic")


# -- the hook split, as the guider (nodes/ip2p_guider.py) runs it: plan.combine(predictions, text_step) ----------
FORMULA_CASES = [("instructpix2pix", t, i) for t, i in itertools.product(SCALES, SCALES)] + [
    ("instructdiffusion", t, i) for t, i in [(5.0, 1.25), (1.0, 1.0), (0.5, 0.5), (7.5, 0.0)]]


def all_predictions(seed=7, shape=(2, 4, 6, 6)):
    generator = torch.Generator().manual_seed(seed)
    return {b: torch.randn(shape, generator=generator, dtype=torch.float64) for b in (TEXT_IMAGE, IMAGE_ONLY, UNCOND, TEXT_ONLY)}


def written_out(formula, preds, text_cfg, image_cfg):
    if formula == INSTRUCTDIFFUSION:
        return instructdiffusion_cfg(preds[TEXT_IMAGE], preds[IMAGE_ONLY], preds[TEXT_ONLY], text_cfg, image_cfg)
    return dual_cfg(preds[TEXT_IMAGE], preds[IMAGE_ONLY], preds[UNCOND], text_cfg, image_cfg)


@pytest.mark.parametrize(("formula", "text_cfg", "image_cfg"), FORMULA_CASES)
@pytest.mark.parametrize("skip", [True, False])
def test_the_hook_split_equals_the_formula(formula, text_cfg, image_cfg, skip):
    # A CFG hook gets (cond = c, uncond = the anchor) and replaces a + s_T (c - a); the plan adds the
    # rest of the formula after it. A hook that does plain CFG gives the formula exactly, from the
    # planned branches only (a branch the plan skips is poisoned to prove it is not read).
    preds = all_predictions()
    plan = plan_guidance(text_cfg, image_cfg, skip_branches=skip, formula=formula)
    planned = {b: preds[b] if b in plan.branches else torch.full_like(preds[b], float("nan")) for b in preds}
    seen = []

    def plain_cfg(cond, anchor):
        seen.append((cond, anchor))
        return anchor + (cond - anchor) * plan.text_factor(cond)

    expected = written_out(formula, preds, text_cfg, image_cfg)
    torch.testing.assert_close(plan.combine(planned, plain_cfg), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(plan.combine(planned), expected, rtol=1e-12, atol=1e-12)
    (cond, anchor), = seen
    assert cond is planned[TEXT_IMAGE] and anchor is planned[plan.anchor]
    assert plan.branches[plan.anchor_index] == plan.anchor and plan.branches[0] == TEXT_IMAGE
    # the hook's bracket is replaced, the rest is kept: a hook returning zero leaves the image term alone
    rest = plan.combine(planned, lambda cond, anchor: torch.zeros_like(cond))
    correction = plan.image_correction(planned)
    torch.testing.assert_close(rest, torch.zeros_like(rest) if correction is None else correction)


@pytest.mark.parametrize("formula", ["instructpix2pix", "instructdiffusion"])
def test_per_item_hook_split(formula):
    # A sweep's cells in one batch: cond_scale is a per-item tensor and each item gets its own formula.
    preds = all_predictions(8)
    texts, images = (5.0, 7.5), (1.5, 1.25)
    plan = plan_guidance(texts, images, formula=formula)
    factor = plan.text_factor(preds[TEXT_IMAGE])
    assert factor.shape == (2, 1, 1, 1) and factor.flatten().tolist() == list(texts)
    out = plan.combine(preds, lambda cond, anchor: anchor + (cond - anchor) * factor)
    for index, (text_cfg, image_cfg) in enumerate(zip(texts, images)):
        one = {b: p[index:index + 1] for b, p in preds.items()}
        torch.testing.assert_close(out[index:index + 1], written_out(formula, one, text_cfg, image_cfg), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("formula", "text_cfg", "image_cfg", "positions"), [
    ("instructpix2pix", 7.5, 1.0, {0}), ("instructpix2pix", 1.0, 1.0, {0}), ("instructdiffusion", 5.0, 1.25, {0, 2})])
def test_full_plan_and_the_branches_patches_see_as_cond(formula, text_cfg, image_cfg, positions):
    plan = plan_guidance(text_cfg, image_cfg, formula=formula)
    assert plan.full.branches == plan_guidance(text_cfg, image_cfg, skip_branches=False, formula=formula).branches
    assert len(plan.full.branches) == 3
    assert plan.text_positions == frozenset(positions)
