"""Paste Back, Crop For Edit and Stitch Edit in the real host, through its validator and executor.
Pictures go in and out as PNG files (Load Image, Save Image), as a user's do."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import Graph, edit_node, rect_mask, run_error, run_ok, saved_images
from ipx2p_core.geometry import Box, edit_fit, picture_to_fit, plan_crop
from ipx2p_tools.pictures import ellipse_mask, photo_like, synthetic_edit


def write_png(host, name: str, image: torch.Tensor) -> str:
    Image.fromarray((image[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)).save(host.input_dir / name)
    return name


def read_png(host, name: str) -> torch.Tensor:
    with Image.open(host.input_dir / name) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).unsqueeze(0)


def mask_png(g: Graph, source: str, slot: int) -> str:
    """Save a MASK output as a PNG (core MaskToImage, Save Image)."""
    return g.add("SaveImage", images=(g.add("MaskToImage", mask=(source, slot)), 0), filename_prefix="ipx2p_mask")


@pytest.mark.floor
@pytest.mark.parametrize("mode", ["original", "long_side", "keep"])
def test_paste_back_keeps_every_pixel_outside_the_mask(host, mode):
    # The original is 576x384, 3x the 192x128 edit ('keep' edits it at its own size).
    resolution = 192
    original = write_png(host, f"paste_{mode}.png", photo_like(384, 576, 1))
    fit = edit_fit(mode, 576, 384, resolution)
    assert (fit.width, fit.height) == ((576, 384) if mode == "keep" else (192, 128))
    noise = torch.rand((1, fit.height, fit.width, 3), generator=torch.Generator().manual_seed(2))
    edited = write_png(host, f"paste_{mode}_edit.png", noise)
    g = Graph()
    mask = rect_mask(g, 576, 384, 160, 80, 240, 220)
    paste = g.add("IPX2P_PasteBack", original=(g.add("LoadImage", image=original), 0),
                  edited=(g.add("LoadImage", image=edited), 0), mask=(mask, 0), threshold=0.06, grow=0, feather=8,
                  color_match=True, resize=mode, resolution=resolution)
    out = g.add("SaveImage", images=(paste, 0), filename_prefix="ipx2p_paste")
    weight = mask_png(g, paste, 1)
    result = run_ok(host, g)
    pasted, used = saved_images(host, result, out), saved_images(host, result, weight)
    source = read_png(host, original)
    assert pasted.shape == source.shape == (1, 384, 576, 3)
    outside = torch.ones((1, 384, 576), dtype=torch.bool)
    outside[:, 80:300, 160:400] = False
    assert torch.equal(pasted[outside], source[outside])  # bit for bit, at full resolution
    assert float(used[outside].max()) == 0.0
    inner = (slice(None), slice(120, 260), slice(200, 360))
    assert float((pasted[inner] - source[inner]).abs().mean()) > 0.1


@pytest.mark.floor
@pytest.mark.parametrize("mode", ["original", "long_side", "keep"])
def test_the_encode_nodes_picture_is_the_fit_paste_back_undoes(host, ip2p_ckpt, mode):
    # Paste Back undoes the fit the Encode node made: the Encode node's resized picture of a
    # non-square original is the fit's source box scaled to the edit size (Lanczos there, bicubic
    # in the fit, so equal up to resampling differences; a box 3 px off on one side is far off).
    from dataclasses import replace

    original = write_png(host, f"fit_{mode}.png", photo_like(150, 250, 9))
    g = Graph()
    loader = g.add("IPX2P_CheckpointLoader", ckpt_name=ip2p_ckpt.name, weights="auto")
    encoded = g.add("IPX2P_EncodeImage", vae=(loader, 2), image=(g.add("LoadImage", image=original), 0), resize=mode,
                    resolution=128)
    saved = g.add("SaveImage", images=(encoded, 1), filename_prefix="ipx2p_fit")
    encode_picture = saved_images(host, run_ok(host, g), saved)
    fit = edit_fit(mode, 250, 150, 128)
    assert encode_picture.shape[1:3] == (fit.height, fit.width)
    source = read_png(host, original)
    error = float((picture_to_fit(source, fit) - encode_picture).abs().mean())
    box = fit.source
    shifted = replace(fit, source=replace(box, left=box.left + 3, width=box.width - 3))  # 3 px off on one side
    shifted_error = float((picture_to_fit(source, shifted) - encode_picture).abs().mean())
    if mode == "keep":
        assert error == 0.0  # a crop: the same pixels
    else:
        assert error < 0.02
    assert shifted_error > 2 * error + 0.005


@pytest.mark.floor
def test_paste_back_finds_the_edited_region(host):
    original_picture = photo_like(384, 576, 3)
    original = write_png(host, "find_original.png", original_picture)
    fit = edit_fit("original", 576, 384, 192)
    region = ellipse_mask(fit.height, fit.width, (0.5, 0.4), (0.25, 0.2))
    edited = write_png(host, "find_edit.png", synthetic_edit(picture_to_fit(read_png(host, original), fit), region, 3))
    g = Graph()
    loaded = {name: g.add("LoadImage", image=name) for name in (original, edited)}
    paste = g.add("IPX2P_PasteBack", original=(loaded[original], 0), edited=(loaded[edited], 0), threshold=0.06, grow=0,
                  feather=0, color_match=False, resize="original", resolution=192)
    used = mask_png(g, paste, 1)
    result = run_ok(host, g)
    found = saved_images(host, result, used)[0, ..., 0] > 0.5
    truth = torch.nn.functional.interpolate(region.unsqueeze(1), size=(384, 576), mode="bilinear")[0, 0] > 0.5
    hits = float((found & truth).sum())
    precision, recall = hits / float(found.sum()), hits / float(truth.sum())
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def test_paste_back_with_the_vae_round_trip_runs(host, ip2p_ckpt):
    original = write_png(host, "vae_original.png", photo_like(128, 192, 4))
    fit = edit_fit("original", 192, 128, 96)
    edited = write_png(host, "vae_edit.png", photo_like(fit.height, fit.width, 5))
    g = Graph()
    loader = g.add("IPX2P_CheckpointLoader", ckpt_name=ip2p_ckpt.name, weights="auto")
    paste = g.add("IPX2P_PasteBack", original=(g.add("LoadImage", image=original), 0),
                  edited=(g.add("LoadImage", image=edited), 0), threshold=0.06, grow=4, feather=4, color_match=False,
                  resize="original", resolution=96, vae=(loader, 2))
    out = g.add("SaveImage", images=(paste, 0), filename_prefix="ipx2p_vae_paste")
    result = run_ok(host, g)
    assert saved_images(host, result, out).shape == (1, 128, 192, 3)


def test_paste_back_refuses_an_edit_of_another_fit(host):
    original = write_png(host, "wrong_original.png", photo_like(192, 288, 6))
    edited = write_png(host, "wrong_edit.png", photo_like(40, 80, 6))
    g = Graph()
    paste = g.add("IPX2P_PasteBack", original=(g.add("LoadImage", image=original), 0),
                  edited=(g.add("LoadImage", image=edited), 0), threshold=0.06, grow=0, feather=8, color_match=False,
                  resize="original", resolution=96)
    g.add("SaveImage", images=(paste, 0), filename_prefix="x")
    error = run_error(host, g)
    assert "IPX2P_PasteBack: input 'edited' is 80x40 px" in error and "64x64" in error and "Fix:" in error


@pytest.mark.floor
def test_crop_edit_stitch(host, ip2p_ckpt):
    picture = write_png(host, "stitch_picture.png", photo_like(300, 400, 7))
    g = Graph()
    image = g.add("LoadImage", image=picture)
    loader = g.add("IPX2P_CheckpointLoader", ckpt_name=ip2p_ckpt.name, weights="auto")
    crop = g.add("IPX2P_CropForEdit", image=(image, 0), mask=(rect_mask(g, 400, 300, 250, 100, 30, 20), 0),
                 padding=16, resolution=128)
    positive = g.add("CLIPTextEncode", text="make it snowy", clip=(loader, 1))
    negative = g.add("CLIPTextEncode", text="", clip=(loader, 1))
    encoded = g.add("IPX2P_EncodeImage", vae=(loader, 2), image=(crop, 0), resize="original", resolution=128)
    edited = g.add("VAEDecode", samples=(edit_node(g, loader, positive, negative, encoded, steps=1, text_cfg=1.0,
                                                   image_cfg=1.0), 0), vae=(loader, 2))
    stitched = g.add("IPX2P_StitchEdit", stitch=(crop, 2), edited=(edited, 0), feather=4, grow=0, blend="mask")
    unedited = g.add("IPX2P_StitchEdit", stitch=(crop, 2), edited=(crop, 0), feather=4, grow=0, blend="mask")
    saves = {name: g.add("SaveImage", images=(node, 0), filename_prefix=f"ipx2p_{name}") for name, node in
             (("crop", crop), ("encoded", encoded), ("stitched", stitched), ("unedited", unedited))}
    g.prompt[saves["encoded"]]["inputs"]["images"] = [encoded, 1]
    result = run_ok(host, g)
    out = {name: saved_images(host, result, node) for name, node in saves.items()}
    source = read_png(host, picture)
    plan = plan_crop(Box(250, 100, 30, 20), 16, 400, 300, 128)
    # the crop is at the working size, and the Encode node changes nothing
    assert out["crop"].shape[1:3] == (plan.height, plan.width) and max(plan.width, plan.height) == 128
    assert torch.equal(out["encoded"], out["crop"])
    # an unedited crop stitches back to the picture; an edit changes only the masked region and
    # the 4 px feather ramp around it
    assert torch.equal(out["unedited"], source)
    changed = (out["stitched"] - source).abs().amax(dim=-1)[0] > 0
    assert bool(changed.any()) and not bool(changed[:96].any()) and not bool(changed[124:].any())
    assert not bool(changed[:, :246].any()) and not bool(changed[:, 284:].any())


@pytest.mark.floor
def test_paste_back_at_its_default_widgets_returns_the_whole_found_change(host):
    # No mask, default widgets: the returned mask (>= 0.5) covers the changed rectangle (the
    # feather ramps outside the found region), and far from it the picture is the original's.
    original = write_png(host, "whole_original.png", photo_like(512, 512, 5))
    fit = edit_fit("original", 512, 512, 512)
    region = torch.zeros((1, 512, 512))
    region[:, 280:384, 300:380] = 1.0
    edited = write_png(host, "whole_edit.png", synthetic_edit(read_png(host, original), region, 5))
    g = Graph()
    loaded = {name: g.add("LoadImage", image=name) for name in (original, edited)}
    paste = g.add("IPX2P_PasteBack", original=(loaded[original], 0), edited=(loaded[edited], 0), threshold=0.06, grow=0,
                  feather=16, color_match=False, resize="original", resolution=512)
    out = g.add("SaveImage", images=(paste, 0), filename_prefix="ipx2p_whole")
    used = mask_png(g, paste, 1)
    result = run_ok(host, g)
    found = saved_images(host, result, used)[0, ..., 0] >= 0.5
    truth = region[0] > 0.5
    hits = float((found & truth).sum())
    precision, recall = hits / float(found.sum()), hits / float(truth.sum())
    assert recall >= 0.9 and precision >= 0.6, (precision, recall)
    far = torch.ones((1, 512, 512), dtype=torch.bool)
    far[:, 280 - 24:384 + 24, 300 - 24:380 + 24] = False  # feather + 8 px of the found outline's slack
    assert fit.source.width == 512 and torch.equal(saved_images(host, result, out)[far], read_png(host, original)[far])


@pytest.mark.floor
@pytest.mark.parametrize("size", [(12, 10), (3, 3)])
def test_stitch_edit_lands_on_a_small_mask(host, size):
    # A mask of a few px: at Stitch Edit's defaults the blend weight is 1 on the whole mask (the
    # feather ramps in the padding around it), and the picture outside the region is its own.
    width, height = size
    picture = write_png(host, "small_mask.png", photo_like(600, 800, 11))
    g = Graph()
    crop = g.add("IPX2P_CropForEdit", image=(g.add("LoadImage", image=picture), 0),
                 mask=(rect_mask(g, 800, 600, 420, 300, width, height), 0), padding=32, resolution=512)
    edited = g.add("ImageInvert", image=(crop, 0))
    stitched = g.add("IPX2P_StitchEdit", stitch=(crop, 2), edited=(edited, 0))
    out = g.add("SaveImage", images=(stitched, 0), filename_prefix="ipx2p_small_mask")
    used = mask_png(g, stitched, 1)
    result = run_ok(host, g)
    weight, image = saved_images(host, result, used)[0, ..., 0], saved_images(host, result, out)
    source = read_png(host, picture)
    on_mask = (slice(300, 300 + height), slice(420, 420 + width))
    assert float(weight[on_mask].min()) == 1.0
    assert float((image[0][on_mask] - source[0][on_mask]).abs().mean()) > 0.1  # the inverted crop is there (weight ~0.07 before: ~0.01)
    region = plan_crop(Box(420, 300, width, height), 32, 800, 600, 512).region
    outside = torch.ones((1, 600, 800), dtype=torch.bool)
    outside[:, region.top:region.bottom, region.left:region.right] = False
    assert torch.equal(image[outside], source[outside]) and float(weight[outside[0]].max()) == 0.0


def test_stitch_refuses_an_edit_of_another_crop_and_crop_needs_a_mask(host):
    picture = write_png(host, "stitch_other.png", photo_like(300, 400, 8))
    g = Graph()
    image = g.add("LoadImage", image=picture)
    crop = g.add("IPX2P_CropForEdit", image=(image, 0), mask=(rect_mask(g, 400, 300, 10, 10, 300, 40), 0),
                 padding=0, resolution=256)
    other = g.add("IPX2P_CropForEdit", image=(image, 0), mask=(rect_mask(g, 400, 300, 10, 10, 40, 200), 0),
                  padding=0, resolution=256)
    g.add("SaveImage", images=(g.add("IPX2P_StitchEdit", stitch=(crop, 2), edited=(other, 0)), 0), filename_prefix="x")
    error = run_error(host, g)
    assert "IPX2P_StitchEdit: input 'edited' is" in error and "does not fit" in error
    g = Graph()
    image = g.add("LoadImage", image=picture)
    empty = g.add("SolidMask", value=0.0, width=400, height=300)
    g.add("SaveImage", images=(g.add("IPX2P_CropForEdit", image=(image, 0), mask=(empty, 0), padding=8, resolution=512), 0),
          filename_prefix="x")
    error = run_error(host, g)
    assert "IPX2P_CropForEdit: input 'mask' selects nothing" in error and "Fix:" in error
