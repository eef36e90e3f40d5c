"""Masks without the host: grow, feather, change detection, colour matching, compositing."""
from __future__ import annotations

import math

import pytest
import torch

from helpers import precision_recall
from ipx2p_core.masks import (
    ChangeSettings, colour_match, composite, detect_changes, feather, feather_outward, grow, inner_distance, mask_batch,
)
from ipx2p_tools.pictures import blur, ellipse_mask, photo_like, synthetic_edit


def square(size=64, left=20, top=16, width=24, height=20):
    mask = torch.zeros((1, size, size))
    mask[:, top:top + height, left:left + width] = 1.0
    return mask


def test_grow_and_shrink():
    mask = square()
    grown = grow(mask, 3)
    # 3 px on every side along the axes; the corners are rounded (an octagon, close to a disc)
    assert bool((grown[:, 13:39, 20:44] == 1).all()) and bool((grown[:, 16:36, 17:47] == 1).all())
    assert float(grown[:, :13].max()) == 0 and float(grown[:, 39:].max()) == 0
    assert float(grown[0, 13, 17]) == 0 and float(grown[0, 14, 18]) == 1
    shrunk = grow(mask, -3)
    assert float(shrunk.sum()) == 18 * 14
    assert torch.equal(grow(mask, 0), mask)


@pytest.mark.parametrize("pixels", [1, 4, 9])
def test_feather_ramps_inside_the_mask_over_at_most_its_width(pixels):
    mask = square(64, 10, 10, 40, 40)
    weight = feather(mask, pixels)
    assert torch.equal(weight[mask == 0], torch.zeros_like(weight[mask == 0]))  # exactly 0 outside
    row = weight[0, 30, :]
    ramp = [float(v) for v in row if 0 < float(v) < 1]
    assert len(ramp) == 2 * (pixels - 1)  # both edges, each inside the mask
    # the F-th pixel inside is the first at full weight
    assert float(row[10 + pixels - 1]) == 1.0 and (pixels == 1 or float(row[10 + pixels - 2]) < 1.0)
    assert ramp[:pixels - 1] == sorted(ramp[:pixels - 1])  # rising into the mask


def test_feather_keeps_soft_values_and_does_not_eat_the_picture_border():
    mask = torch.zeros((1, 32, 32))
    mask[:, :, :16] = 0.5  # touches the picture's left, top and bottom borders
    weight = feather(mask, 6)
    assert float(weight[0, 16, 0]) == 0.5 and float(weight[0, 0, 3]) == 0.5  # no ramp at the picture's border
    assert 0 < float(weight[0, 16, 15]) < 0.5  # ramp at the inner edge


@pytest.mark.parametrize("pixels", [1, 4, 9])
def test_feather_outward_keeps_the_mask_and_ramps_in_the_grown_margin(pixels):
    mask = square(64, 20, 20, 24, 24)
    weight = feather_outward(mask, pixels)
    assert torch.equal(weight[mask == 1], mask[mask == 1])  # the whole mask, untouched
    assert torch.equal(weight > 0, grow(mask, pixels) > 0)  # the ramp lies where grow adds, 0 beyond
    row = [float(v) for v in weight[0, 32, 20 + 24:]]
    ramp = row[:pixels]  # the k-th pixel out: smoothstep(1 - k / (pixels + 1)), falling outwards
    assert ramp == sorted(ramp, reverse=True) and all(0 < v < 1 for v in ramp) and row[pixels] == 0.0
    assert all(v + w == pytest.approx(1.0) for v, w in zip(ramp, reversed(ramp)))  # half its span at >= 0.5
    assert torch.equal(feather_outward(mask, 0), mask)


def test_feather_outward_keeps_soft_values_and_the_picture_border():
    mask = torch.zeros((1, 32, 32))
    mask[:, :, :8] = 0.5  # touches the picture's left, top and bottom borders
    mask[:, 10:12, 2:4] = 1.0
    weight = feather_outward(mask, 6)
    assert float(weight[0, 0, 0]) == 0.5 and float(weight[0, 20, 7]) == 0.5  # never below the mask
    assert 0.5 < float(weight[0, 11, 5]) < 1.0  # the 1.0 spot ramps down over its surroundings
    assert 0.0 < float(weight[0, 20, 8]) < 0.5 and float(weight[0, 20, 14]) == 0.0


def test_inner_distance_is_never_below_the_euclidean_distance():
    mask = torch.zeros((1, 41, 41), dtype=torch.bool)
    ys, xs = torch.meshgrid(torch.arange(41), torch.arange(41), indexing="ij")
    mask[0] = (ys - 20) ** 2 + (xs - 20) ** 2 <= 18 ** 2
    distance = inner_distance(mask, 30)[0]
    outside = [(y, x) for y in range(41) for x in range(41) if not mask[0, y, x]]
    for y in range(0, 41, 5):
        for x in range(0, 41, 5):
            if mask[0, y, x]:
                nearest = min(math.hypot(y - oy, x - ox) for oy, ox in outside)
                assert float(distance[y, x]) >= nearest - 1e-6


def test_mask_batch_rule():
    mask_batch(1, 4, "node")
    mask_batch(4, 4, "node")
    with pytest.raises(ValueError, match="node: input 'mask' has batch 3 and the edit has batch 2"):
        mask_batch(3, 2, "node")


REGIONS = [((0.5, 0.5), (0.2, 0.25)), ((0.3, 0.7), (0.08, 0.1)), ((0.6, 0.4), (0.3, 0.15))]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_change_detection_finds_a_known_edit_under_vae_like_blur(seed):
    # Photo-like pictures (1/f spectrum, shapes, grain); the "edit" recolours a known region and,
    # like the VAE, blurs everything and tints the whole picture a little.
    for centre, radii in REGIONS:
        picture = photo_like(384, 512, seed)
        region = ellipse_mask(384, 512, centre, radii)
        edited = synthetic_edit(picture, region, seed)
        found = detect_changes(edited, picture)
        precision, recall = precision_recall(found[0], region[0] > 0.5)
        assert precision >= 0.95 and recall >= 0.95, (seed, radii, precision, recall)


def test_change_detection_ignores_blur_and_drift_alone():
    picture = photo_like(256, 256, 7)
    vae_like = (blur(picture, 1.5) + torch.tensor([0.03, -0.02, 0.01])).clamp(0, 1)
    assert not bool(detect_changes(vae_like, picture).any())
    # but the same check sees a small, real change
    region = ellipse_mask(256, 256, (0.5, 0.5), (0.1, 0.1))
    assert bool(detect_changes(synthetic_edit(picture, region, 7), picture).any())


def test_change_detection_threshold_matters():
    picture = photo_like(256, 256, 8)
    region = ellipse_mask(256, 256, (0.5, 0.5), (0.2, 0.2))
    faint = synthetic_edit(picture, region, 8, strength=0.05)
    assert not bool(detect_changes(faint, picture, ChangeSettings(threshold=0.2)).any())
    assert bool(detect_changes(faint, picture, ChangeSettings(threshold=0.01)).any())


def test_colour_match_removes_a_drift_seen_around_the_mask():
    original = photo_like(128, 128, 4)
    drifted = (original * 0.9 + 0.08).clamp(0, 1)
    weight = square(128, 40, 40, 48, 48)
    covered = torch.ones((1, 128, 128), dtype=torch.bool)
    matched = colour_match(drifted, original, weight, covered, 12)
    inside = weight[0] > 0
    before = float((drifted[0][inside] - original[0][inside]).abs().mean())
    after = float((matched[0][inside] - original[0][inside]).abs().mean())
    assert after < before / 4


def test_composite_is_exact_where_the_weight_is_zero_or_one_or_the_pictures_agree():
    original, pasted = torch.rand((1, 16, 16, 3)), torch.rand((1, 16, 16, 3))
    weight = torch.zeros((1, 16, 16))
    weight[:, 4:8] = 1.0
    weight[:, 8:12] = 0.3
    out = composite(original, pasted, weight)
    assert torch.equal(out[:, :4], original[:, :4]) and torch.equal(out[:, 12:], original[:, 12:])
    assert torch.equal(out[:, 4:8], pasted[:, 4:8])
    assert torch.equal(composite(original, original.clone(), weight), original)
