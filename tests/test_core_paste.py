"""Paste-back and crop-and-stitch without the host (ipx2p_core.paste)."""
from __future__ import annotations

import pytest
import torch

from helpers import precision_recall
from ipx2p_core.geometry import Box, edit_fit, picture_to_fit, plan_crop
from ipx2p_core.paste import PasteSettings, crop_for_edit, paste_back, stitch_back
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
