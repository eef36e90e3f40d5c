"""Paste-back and crop-and-stitch without the host (ipx2p_core.paste)."""
from __future__ import annotations

import pytest
import torch

from helpers import precision_recall
from ipx2p_core.geometry import Box, bounding_box, edit_fit, picture_to_fit, plan_crop
from ipx2p_core.masks import grow
from ipx2p_core.paste import PasteSettings, box_mask, crop_for_edit, paste_back, stitch_back
from ipx2p_tools.pictures import ellipse_mask, photo_like, synthetic_edit


@pytest.mark.parametrize("mode", ["original", "keep", "long_side"])
def test_paste_back_with_a_mask_keeps_every_pixel_outside_it(mode):
    # An original 3x the edit's size, not square; the edit differs everywhere.
    original = photo_like(1152, 1728, 5)
    fit = edit_fit(mode, 1728, 1152, 512)
    edited = torch.rand((1, fit.height, fit.width, 3))
    mask = torch.zeros((1, 1152, 1728))
    mask[:, 300:700, 500:1100] = 1.0
    result, weight = paste_back(original, edited, fit, mask, None, PasteSettings(feather=24))
    assert result.shape == original.shape
    assert torch.equal(result[mask == 0], original[mask == 0])
    assert torch.equal(weight[mask == 0], torch.zeros_like(weight[mask == 0]))
    # inside, away from the feather, it is the edit scaled back
    inner = result[0, 400:600, 600:1000]
    assert float((inner - original[0, 400:600, 600:1000]).abs().mean()) > 0.1


@pytest.mark.parametrize("mode", ["original", "keep", "long_side"])
def test_paste_back_finds_the_edited_region_itself(mode):
    original = photo_like(1152, 1728, 6)
    fit = edit_fit(mode, 1728, 1152, 512)
    framed = picture_to_fit(original, fit)
    region = ellipse_mask(fit.height, fit.width, (0.45, 0.55), (0.22, 0.18))
    edited = synthetic_edit(framed, region, 6)
    result, weight = paste_back(original, edited, fit, None, None, PasteSettings(feather=0))
    truth = torch.zeros((1, 1152, 1728), dtype=torch.bool)
    box = fit.source
    scaled = torch.nn.functional.interpolate(region.unsqueeze(1), size=(box.height, box.width), mode="bilinear")[:, 0] > 0.5
    truth[:, box.top:box.bottom, box.left:box.right] = scaled
    precision, recall = precision_recall(weight[0] > 0, truth[0])
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    assert torch.equal(result[weight == 0], original[weight == 0])


def test_stitch_round_trip_and_outside_the_region():
    picture = photo_like(600, 800, 9)
    mask = torch.zeros((1, 600, 800))
    mask[:, 250:300, 380:440] = 1.0
    plan = plan_crop(Box(380, 250, 60, 50), 32, 800, 600, 512)
    crop, crop_mask, stitch = crop_for_edit(picture, mask, plan)
    assert max(crop.shape[1:3]) == 512 and crop.shape[1] % 64 == 0 and crop.shape[2] % 64 == 0
    # an unedited crop stitches back to the picture itself
    back, _ = stitch_back(stitch, crop, None, "mask", 0, 16)
    assert torch.equal(back, picture)
    # an edit changes the masked area only, and never anything outside the region
    edited = torch.rand_like(crop)
    for blend in ("mask", "region"):
        out, weight = stitch_back(stitch, edited, None, blend, 0, 8)
        region = torch.zeros((1, 600, 800), dtype=torch.bool)
        rows, columns = plan.region.slices()
        region[:, rows, columns] = True
        assert torch.equal(out[~region], picture[~region])
        assert torch.equal(out[weight == 0], picture[weight == 0])
        assert float((out - picture).abs().max()) > 0.1


def changed_region(height: int, width: int, shape: str) -> torch.Tensor:
    """MASK [1,height,width] of a known edited region of the edit image: a rectangle or a blob."""
    if shape == "blob":
        return ellipse_mask(height, width, (0.4, 0.35), (0.12, 0.09))
    region = torch.zeros((1, height, width))
    region[:, int(0.55 * height):int(0.75 * height), int(0.6 * width):int(0.75 * width)] = 1.0
    return region


@pytest.mark.parametrize("size", [(384, 576, 192), (512, 512, 512), (768, 1152, 512)])
@pytest.mark.parametrize("shape", ["rect", "blob"])
def test_a_found_change_is_taken_whole_at_the_default_widgets(size, shape):
    # The returned mask (>= 0.5) covers the changed region: the feather ramps outside the found
    # region, not into it (an inward ramp left 0.71-0.88 of these regions). Far from the change
    # every pixel is the original's own.
    height, width, resolution = size
    original = photo_like(height, width, 3)
    fit = edit_fit("original", width, height, resolution)
    region = changed_region(fit.height, fit.width, shape)
    edited = synthetic_edit(picture_to_fit(original, fit), region, 3)
    settings = PasteSettings()
    assert (settings.threshold, settings.grow, settings.feather) == (0.06, 0, 16)  # Paste Back's defaults
    result, weight = paste_back(original, edited, fit, None, None, settings)
    truth = torch.nn.functional.interpolate(region.unsqueeze(1), size=(height, width), mode="bilinear")[:, 0] > 0.5
    precision, recall = precision_recall(weight[0] >= 0.5, truth[0])
    print(f"{shape} {width}x{height}: recall {recall:.3f} precision {precision:.3f}")
    assert recall >= 0.9 and precision >= 0.6, (precision, recall)
    far = grow(truth.float(), settings.feather + 8) == 0  # 8 px: the found outline's slack around the truth
    assert float(weight[far].max()) == 0.0
    assert torch.equal(result[far], original[far])


def test_a_given_mask_still_ramps_inside_it():
    # A drawn mask promises that nothing outside it changes: its feather stays inside.
    original = photo_like(256, 256, 4)
    fit = edit_fit("original", 256, 256, 256)
    mask = torch.zeros((1, 256, 256))
    mask[:, 64:192, 64:192] = 1.0
    _, weight = paste_back(original, torch.rand((1, 256, 256, 3)), fit, mask, None, PasteSettings())
    assert float(weight[mask == 0].max()) == 0.0 and 0.0 < float(weight[0, 128, 64]) < 0.5


@pytest.mark.parametrize("size", [(3, 3), (12, 10), (40, 30)])
def test_stitch_lands_the_edit_on_a_small_mask(size):
    # The blend weight is 1 on the whole mask (a mask of the crop, scaled there and back: >= 0.5
    # on it and 1 inside), with the ramp in the padding around it; an inward ramp gave a 12x10 px
    # mask about 0.07. Every pixel outside the stitched region is the picture's own.
    mask_width, mask_height = size
    picture = photo_like(600, 800, 9)
    mask = torch.zeros((1, 600, 800))
    mask[:, 300:300 + mask_height, 420:420 + mask_width] = 1.0
    box = bounding_box(mask)
    assert box is not None
    plan = plan_crop(box, 32, 800, 600, 512)
    crop, crop_mask, stitch = crop_for_edit(picture, mask, plan)
    edited = (crop + 0.3).clamp(0.0, 1.0)
    on_mask = mask[0] > 0
    interior = grow(mask, -1)[0] > 0
    outside = ~box_mask(600, 800, plan.region)[0]
    for given in (None, crop_mask):
        out, weight = stitch_back(stitch, edited, given, "mask", 0, 16)
        assert float(weight[0][on_mask].min()) >= 0.5
        assert bool((weight[0][interior] == 1.0).all())
        if given is None:  # the stitch's own mask: 1 on all of it, the ramp within feather px around it
            assert bool((weight[0][on_mask] == 1.0).all())
            assert float(weight[grow(mask, 16) == 0].max()) == 0.0
        assert float((out[0][on_mask] - picture[0][on_mask]).abs().mean()) > 0.1  # the edit is there
        assert torch.equal(out[:, outside], picture[:, outside])
        assert float(weight[:, outside].max()) == 0.0
