"""Geometry without the host: the Encode node's fit and its inverse, latent masks, crop regions."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from ipx2p_core.geometry import (
    Box, bounding_box, centre_crop_box, edit_fit, fit_to_picture, plan_crop, resize_image, resize_mask, same_aspect,
    source_pixels,
)
from ipx2p_core.image import edit_size
from ipx2p_core.masks import latent_mask
from ipx2p_tools.pictures import photo_like


def test_centre_crop_box_trims_the_wider_side_evenly():
    # 900x600 to 512x344 (aspect 1.488 < 1.5): the width is trimmed by round(900 - 900 * 1.488/1.5) / 2 per side
    assert centre_crop_box(900, 600, 512, 344) == Box(3, 0, 894, 600)
    assert centre_crop_box(600, 900, 344, 512) == Box(0, 3, 600, 894)
    assert centre_crop_box(640, 480, 64, 48) == Box(0, 0, 640, 480)  # same aspect: nothing trimmed


@pytest.mark.parametrize("mode", ["original", "keep", "long_side"])
@pytest.mark.parametrize("size", [(900, 600), (600, 900), (1920, 1080), (97, 203), (512, 512)])
def test_edit_fit_source_lies_in_the_picture_and_has_the_edit_aspect(mode, size):
    width, height = size
    fit = edit_fit(mode, width, height, 512)
    assert (fit.width, fit.height) == edit_size(mode, width, height, 512)
    box = fit.source
    assert 0 <= box.left and 0 <= box.top and box.right <= width and box.bottom <= height
    if mode == "keep":
        assert (box.width, box.height) == (fit.width, fit.height)  # a crop, no scaling
        assert box.left == (width - fit.width) // 2 and box.top == (height - fit.height) // 2
    else:
        # trimmed only along one side, by at most what the aspect needs
        assert box.width == width or box.height == height
        assert same_aspect(box.width, box.height, fit.width, fit.height)


def test_source_pixels_are_the_fit_source_box():
    image = torch.rand((2, 203, 97, 3))
    kept = source_pixels(image, edit_fit("keep", 97, 203, 512))  # 96x200: one column and three rows trimmed
    assert torch.equal(kept, image[:, 1:201, 0:96, :])
    framed = source_pixels(image, edit_fit("original", 97, 203, 512))
    box = centre_crop_box(97, 203, *edit_size("original", 97, 203, 512))
    assert torch.equal(framed, image[:, box.top:box.bottom, box.left:box.right, :])
    whole = torch.rand((1, 64, 64, 3))
    assert source_pixels(whole, edit_fit("original", 64, 64, 64)) is whole


def test_fit_to_picture_inverts_the_scale():
    fit = edit_fit("original", 900, 600, 512)
    edited = photo_like(fit.height, fit.width, 1, batch=2)
    back = fit_to_picture(edited, fit)
    assert back.shape == (2, fit.source.height, fit.source.width, 3)
    # scaling back down again returns (nearly) the edit: the map is the inverse of the fit's scale
    again = resize_image(back, fit.width, fit.height)
    assert float((again - edited).abs().mean()) < 0.03
    assert float((again.flip(2) - edited).abs().mean()) > 0.05  # (a wrong map would not be)


def test_resize_keeps_the_input_when_the_size_is_right():
    image = torch.rand((1, 40, 60, 3))
    assert resize_image(image, 60, 40) is image
    mask = torch.rand((1, 40, 60))
    assert resize_mask(mask, 60, 40) is mask


@pytest.mark.parametrize("size", [(512, 512), (100, 70), (97, 203), (64, 64), (9, 300)])
def test_latent_mask_of_all_ones_is_exactly_ones(size):
    width, height = size
    for latent_h, latent_w in [(8, 8), (6, 8), (64, 48), (3, 5)]:
        scaled = latent_mask(torch.ones((1, height, width)), latent_h, latent_w)
        assert scaled.shape == (1, 1, latent_h, latent_w)
        assert torch.equal(scaled, torch.ones_like(scaled))


def test_latent_mask_averages_soft_values_and_trims_like_the_encode_node():
    # A mask of a 900x600 picture for a 64x43 latent (the 'long_side' fit of 512x344): the picture's
    # trimmed 3 px columns do not count, and each latent pixel is the mean of its block.
    mask = torch.zeros((1, 600, 900))
    mask[:, :, :3] = 1.0  # only in the trimmed strip
    assert float(latent_mask(mask, 43, 64).max()) == 0.0
    half = torch.zeros((1, 64, 64))
    half[:, :, :32] = 1.0
    half[:, :, 32:] = 0.25
    scaled = latent_mask(half, 8, 8)
    assert torch.equal(scaled[0, 0, :, :4], torch.ones(8, 4))
    torch.testing.assert_close(scaled[0, 0, :, 4:], torch.full((8, 4), 0.25))


def test_bounding_box():
    mask = torch.zeros((2, 50, 80))
    assert bounding_box(mask) is None
    mask[0, 10:20, 30:35] = 1
    mask[1, 40, 70] = 0.2
    assert bounding_box(mask) == Box(30, 10, 41, 31)


def working_sizes(resolution: int) -> list[tuple[int, int]]:
    """(long, short) sizes the working resolution allows: long = resolution, short = 64 k."""
    return [(resolution, 64 * k) for k in range(1, resolution // 64 + 1)]


def allowed(width: int, height: int, resolution: int) -> bool:
    long, short = max(width, height), min(width, height)
    return any(long * s == short * r for r, s in working_sizes(resolution))


@pytest.mark.parametrize("resolution", [512, 768])
def test_plan_crop_rules(resolution):
    cases = list(itertools.product([(60, 50), (300, 40), (33, 200), (500, 500)], [0, 16, 32], [(2000, 1500), (1500, 2000)]))
    for (box_w, box_h), padding, (pic_w, pic_h) in cases:
        box = Box(700, 600, box_w, box_h)
        plan = plan_crop(box, padding, pic_w, pic_h, resolution)
        region = plan.region
        # contains the box plus padding (clipped), stays inside the picture
        assert region.left <= max(0, box.left - padding) and region.top <= max(0, box.top - padding)
        assert region.right >= min(pic_w, box.right + padding) and region.bottom >= min(pic_h, box.bottom + padding)
        assert region.left >= 0 and region.top >= 0 and region.right <= pic_w and region.bottom <= pic_h
        # enlarged by at most 15 % of the padded box's long side
        padded_long = max(box_w + 2 * padding, box_h + 2 * padding)
        assert region.width - (box_w + 2 * padding) <= math.ceil(0.15 * padded_long)
        assert region.height - (box_h + 2 * padding) <= math.ceil(0.15 * padded_long)
        # the working size: long side = resolution, sides multiples of 64, and the region's aspect
        assert max(plan.width, plan.height) == resolution and plan.width % 64 == 0 and plan.height % 64 == 0
        assert allowed(region.width, region.height, resolution)
        assert plan.distortion == pytest.approx(0.0, abs=1e-9)
        assert (plan.width >= plan.height) == (region.width >= region.height)


def test_plan_crop_near_the_border_shifts_inside_and_a_small_picture_distorts_a_little():
    plan = plan_crop(Box(0, 0, 40, 30), 32, 2000, 1500, 512)
    assert plan.region.left == 0 and plan.region.top == 0 and plan.distortion == pytest.approx(0.0, abs=1e-9)
    # The whole 100x70 picture is selected: no room to enlarge, so the scale differs slightly per axis.
    plan = plan_crop(Box(0, 0, 100, 70), 8, 100, 70, 512)
    assert plan.region == Box(0, 0, 100, 70)
    assert (plan.width, plan.height) == (512, 384) and 0 < plan.distortion < 0.1


def test_plan_crop_refuses_a_resolution_off_the_grid():
    with pytest.raises(ValueError, match="multiple of 64"):
        plan_crop(Box(0, 0, 10, 10), 0, 100, 100, 500)
