"""Guidance maps in the real host: IPX2P_Edit / IPX2P_Guider / IPX2P_GuidanceSweep's guidance_map
with text_cfg_outside / image_cfg_outside. No map, a map of ones and a map of zeros are the scalar
edits exactly; at a step the result is the formula per position from the branches the UNet gave."""
from __future__ import annotations

import pytest
import torch

from helpers import (
    Graph, edit_node, encode_graph, guider_sampled, read_saved_latent, rect_mask, relative_l2, run_error, run_ok, save_latent,
)
from ipx2p_core.guidance import BRANCHES
from reference import dual_cfg
from test_nodes_graph import encode_text, pixels

EDIT = dict(seed=3, steps=2, sampler_name="euler", scheduler="normal", denoise=1.0)


@pytest.fixture(scope="module")
def inputs(loaded):
    _, clip, vae = loaded
    return encode_text(clip, "make it snowy"), encode_text(clip, ""), {"samples": vae.encode(pixels((64, 64), seed=2))}


def left_half(size=64):
    weights = torch.zeros(1, size, size)
    weights[..., : size // 2] = 1.0
    return weights


@pytest.mark.floor
def test_no_map_ones_and_zeros_are_the_scalar_edits(pack, loaded, inputs):
    model = loaded[0]
    positive, negative, latent = inputs
    inside = pack.run_edit("IPX2P_Edit", model, positive, negative, latent, text_cfg=7.5, image_cfg=1.5, **EDIT)
    outside = pack.run_edit("IPX2P_Edit", model, positive, negative, latent, text_cfg=3.0, image_cfg=1.0, **EDIT)
    ones = pack.run_edit("IPX2P_Edit", model, positive, negative, latent, text_cfg=7.5, image_cfg=1.5, **EDIT,
                         guidance_map=torch.ones(1, 100, 100), text_cfg_outside=3.0, image_cfg_outside=1.0)
    zeros = pack.run_edit("IPX2P_Edit", model, positive, negative, latent, text_cfg=7.5, image_cfg=1.5, **EDIT,
                          guidance_map=torch.zeros(1, 64, 64), text_cfg_outside=3.0, image_cfg_outside=1.0)
    assert torch.equal(ones, inside)
    assert torch.equal(zeros, outside)
    half = pack.run_edit("IPX2P_Edit", model, positive, negative, latent, text_cfg=7.5, image_cfg=1.5, **EDIT,
                         guidance_map=left_half(), text_cfg_outside=3.0, image_cfg_outside=1.0)
    # far from the map's edge each side follows its own scales (the UNet mixes positions, so not exactly)
    assert relative_l2(half[..., :2], inside[..., :2]) < relative_l2(half[..., :2], outside[..., :2])
    assert relative_l2(half[..., -2:], outside[..., -2:]) < relative_l2(half[..., -2:], inside[..., -2:])


def branch_recorder(model):
    """A clone of `model` that records each UNet call's output chunks (the branches, in plan order)
    and the guider's result (a post-CFG function that returns it unchanged)."""
    calls, results = [], []
    clone = model.clone()

    def unet(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        calls.append((list(args["cond_or_uncond"]), out.clone()))  # chunk k is branch cond_or_uncond[k] of the plan
        return out

    def post_cfg(args):
        results.append(args["denoised"].clone())
        return args["denoised"]

    clone.set_model_unet_function_wrapper(unet)
    clone.set_model_sampler_post_cfg_function(post_cfg)
    return clone, calls, results


@pytest.mark.parametrize(("inside", "outside", "branches"), [((7.5, 1.5), (3.0, 1.0), 3), ((7.5, 1.0), (2.0, 1.0), 2)])
def test_a_step_is_the_formula_per_position(pack, loaded, inputs, inside, outside, branches):
    model, calls, results = branch_recorder(loaded[0])
    positive, negative, latent = inputs
    weights = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(1))
    pack.run_edit("IPX2P_Edit", model, positive, negative, latent, text_cfg=inside[0], image_cfg=inside[1],
                  **{**EDIT, "steps": 1}, guidance_map=weights, text_cfg_outside=outside[0],
                  image_cfg_outside=outside[1])
    assert len(calls) == 1 and calls[0][1].shape[0] == branches  # image_cfg 1 everywhere: u is not evaluated
    from ipx2p_core.masks import latent_mask

    w = latent_mask(weights, 8, 8)
    text = w * inside[0] + (1 - w) * outside[0]
    image = w * inside[1] + (1 - w) * outside[1]
    order, out = calls[0]
    chunks = {BRANCHES[index]: chunk for index, chunk in zip(order, out.chunk(branches))}
    c, i = chunks["text_image"], chunks["image_only"]
    u = chunks.get("uncond", i)  # with image_cfg 1 everywhere u's weight is 0: any value gives the formula
    expected = dual_cfg(c, i, u, text, image)
    assert (results[0] - expected).abs().max() <= 1e-6 * expected.abs().max()


def test_guider_equals_edit_and_the_sweep_takes_the_map(host, ip2p_ckpt):
    from helpers import write_picture

    picture = write_picture(host.input_dir, "map_64.png", (64, 64))
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
    weights = rect_mask(g, 64, 64, 8, 8, 32, 40, value=0.8)
    edited = save_latent(g, edit_node(g, loader, positive, negative, encoded, steps=2, guidance_map=weights,
                                      text_cfg_outside=2.5, image_cfg_outside=1.8))
    plain = save_latent(g, edit_node(g, loader, positive, negative, encoded, steps=2))
    guided = guider_sampled(g, loader, positive, negative, encoded, steps=2, guidance_map=(weights, 0),
                            text_cfg_outside=2.5, image_cfg_outside=1.8)
    vae = (loader, 2)
    sweep = g.add("IPX2P_GuidanceSweep", model=(loader, 0), positive=(positive, 0), negative=(negative, 0),
                  edit_latent=(encoded, 0), vae=vae, seed=1, steps=2, text_cfg_values="7.5, 5", image_cfg_values="1.5",
                  sampler_name="euler", scheduler="normal", mode="grid", count=1, guidance_map=(weights, 0),
                  text_cfg_outside=2.5, image_cfg_outside=1.8)
    swept = save_latent(g, sweep)
    result = run_ok(host, g)
    latents = {name: read_saved_latent(host, result, node) for name, node in
               (("edited", edited), ("plain", plain), ("guided", guided), ("swept", swept))}
    assert relative_l2(latents["guided"], latents["edited"]) < 1e-6
    assert relative_l2(latents["edited"], latents["plain"]) > 1e-3  # the map took effect
    # the sweep's 7.5 / 1.5 cell is the Edit with the map (same seed), not the Edit without it
    assert latents["swept"].shape[0] == 2 and relative_l2(latents["swept"][:1], latents["edited"]) < 1e-5
    assert torch.isfinite(latents["swept"]).all()


def test_a_map_of_another_batch_is_refused(host, ip2p_ckpt):
    from helpers import write_picture

    picture = write_picture(host.input_dir, "map_64.png", (64, 64))
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
    one = rect_mask(g, 64, 64, 8, 8, 32, 40)
    three = g.add("RepeatImageBatch", image=(g.add("MaskToImage", mask=(one, 0)), 0), amount=3)
    maps = g.add("ImageToMask", image=(three, 0), channel="red")
    save_latent(g, edit_node(g, loader, positive, negative, encoded, steps=1, guidance_map=maps))
    text = run_error(host, g)
    assert "IPX2P_Edit" in text and "guidance_map" in text and "has batch 3" in text and "pass one map" in text
