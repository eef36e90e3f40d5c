"""Region edits in the real host: the Edit and Guider nodes' mask, against the unmasked edit, the
input latent, core's noise-mask path, DifferentialDiffusion, and bad masks."""
from __future__ import annotations

import pytest
import torch

from helpers import Graph, edit_node, encode_graph, read_saved_latent, rect_mask, relative_l2, run_error, run_ok, save_latent
from test_nodes_graph import counting, encode_text, pixels

# The picture is 64x64 px (latent 8x8); the mask covers px 16..47 x 24..55, latent 2..5 x 3..6.
MASK_BOX = (16, 24, 32, 32)


def latent_outside(latent: torch.Tensor) -> torch.Tensor:
    keep = torch.ones_like(latent, dtype=torch.bool)
    keep[..., 3:7, 2:6] = False
    return keep


@pytest.fixture()
def square_picture(host):
    from helpers import write_picture

    return write_picture(host.input_dir, "region_64.png", (64, 64))


@pytest.mark.floor
def test_masks_in_edit_and_guider(host, ip2p_ckpt, square_picture):
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, square_picture)
    plain = save_latent(g, edit_node(g, loader, positive, negative, encoded, steps=2))
    # a mask of all ones, at another size than the picture
    ones = g.add("SolidMask", value=1.0, width=100, height=100)
    all_ones = save_latent(g, edit_node(g, loader, positive, negative, encoded, steps=2, mask=ones))
    box = rect_mask(g, 64, 64, *MASK_BOX)
    masked = save_latent(g, edit_node(g, loader, positive, negative, encoded, steps=2, mask=box))
    # the same through the Guider and SamplerCustomAdvanced, sampling into the Conditioning node's latent
    conds = g.add("IPX2P_Conditioning", positive=(positive, 0), negative=(negative, 0), edit_latent=(encoded, 0))
    guider = g.add("IPX2P_Guider", model=(loader, 0), positive=(positive, 0), negative=(negative, 0),
                   edit_latent=(encoded, 0), text_cfg=7.5, image_cfg=1.5, mask=(box, 0))
    sampled = g.add("SamplerCustomAdvanced", noise=(g.add("RandomNoise", noise_seed=1), 0), guider=(guider, 0),
                    sampler=(g.add("KSamplerSelect", sampler_name="euler"), 0),
                    sigmas=(g.add("BasicScheduler", model=(loader, 0), scheduler="normal", steps=2, denoise=1.0), 0),
                    latent_image=(conds, 3))
    guided = save_latent(g, sampled)
    source = save_latent(g, encoded)
    result = run_ok(host, g)
    latents = {name: read_saved_latent(host, result, node) for name, node in
               (("plain", plain), ("ones", all_ones), ("masked", masked), ("guided", guided), ("source", source))}

    # all ones: the unmasked edit, the same numbers
    assert torch.equal(latents["ones"], latents["plain"])
    # hard mask: outside, the input latent exactly; inside, an edit
    outside = latent_outside(latents["masked"])
    assert torch.equal(latents["masked"][outside], latents["source"][outside])
    assert relative_l2(latents["masked"][~outside], latents["source"][~outside]) > 0.1
    # inside it follows the unmasked edit's direction more than the input's (the region is edited)
    assert relative_l2(latents["masked"][~outside], latents["plain"][~outside]) < relative_l2(
        latents["source"][~outside], latents["plain"][~outside])
    # Guider + mask through SamplerCustomAdvanced = Edit + mask
    assert relative_l2(latents["guided"], latents["masked"]) < 1e-6


def test_masked_edit_decodes_to_the_input_away_from_the_mask(host, loaded, pack):
    # Decoded, the masked edit matches the VAE round trip of the input away from the mask's edge and
    # differs inside. (Exact equality cannot show here: the random VAE's mid-block attention mixes
    # every position into every pixel; a trained decoder is local.)
    model, clip, vae = loaded
    picture = pixels((128, 128), seed=4)
    edit_latent = {"samples": vae.encode(picture)}
    mask = torch.zeros((1, 128, 128))
    mask[:, 32:64, 32:64] = 1.0
    positive, negative = encode_text(clip, "make it snowy"), encode_text(clip, "")
    edited = pack.run_edit("test", model, positive, negative, edit_latent, seed=2, steps=2, text_cfg=7.5, image_cfg=1.5,
                           sampler_name="euler", scheduler="normal", denoise=1.0, mask=mask)
    unmasked = pack.run_edit("test", model, positive, negative, edit_latent, seed=2, steps=2, text_cfg=7.5,
                             image_cfg=1.5, sampler_name="euler", scheduler="normal", denoise=1.0)
    with torch.no_grad():
        decoded, round_trip, whole = vae.decode(edited), vae.decode(edit_latent["samples"]), vae.decode(unmasked)
    far = torch.ones((128, 128), dtype=torch.bool)
    far[8:88, 8:88] = False  # 24 px (3 latent pixels) around the mask
    inside = float((decoded[0][mask[0] > 0] - round_trip[0][mask[0] > 0]).abs().mean())
    away = float((decoded[0][far] - round_trip[0][far]).abs().mean())
    away_unmasked = float((whole[0][far] - round_trip[0][far]).abs().mean())
    # measured: away 0.069, inside 0.349, away for the unmasked edit 0.151
    assert away < 0.25 * inside and away < 0.6 * away_unmasked, (away, inside, away_unmasked)


def test_core_noise_mask_gives_zeros_the_pack_gives_the_input(host, ip2p_ckpt, square_picture):
    # Core's path for a masked IP2P edit (SetLatentNoiseMask on the empty latent, DualCFGGuider) pulls
    # the outside towards zeros; the pack's guider reads the same noise_mask and keeps the input there.
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, square_picture)
    conds = g.add("IPX2P_Conditioning", positive=(positive, 0), negative=(negative, 0), edit_latent=(encoded, 0))
    masked_latent = g.add("SetLatentNoiseMask", samples=(conds, 3), mask=(rect_mask(g, 64, 64, *MASK_BOX), 0))
    core = g.add("DualCFGGuider", model=(loader, 0), cond1=(conds, 0), cond2=(conds, 1), negative=(conds, 2),
                 cfg_conds=7.5, cfg_cond2_negative=1.5, style="regular")
    pack = g.add("IPX2P_Guider", model=(loader, 0), positive=(positive, 0), negative=(negative, 0),
                 edit_latent=(encoded, 0), text_cfg=7.5, image_cfg=1.5)
    outputs = {}
    for name, guider in (("core", core), ("pack", pack)):
        sampled = g.add("SamplerCustomAdvanced", noise=(g.add("RandomNoise", noise_seed=1), 0), guider=(guider, 0),
                        sampler=(g.add("KSamplerSelect", sampler_name="euler"), 0),
                        sigmas=(g.add("BasicScheduler", model=(loader, 0), scheduler="normal", steps=2, denoise=1.0), 0),
                        latent_image=(masked_latent, 0))
        outputs[name] = save_latent(g, sampled)
    # and a noise_mask on the edit latent itself counts as the Edit node's mask, as KSampler honours it
    noised = g.add("SetLatentNoiseMask", samples=(encoded, 0), mask=(rect_mask(g, 64, 64, *MASK_BOX), 0))
    outputs["edit"] = save_latent(g, g.add("IPX2P_Edit", model=[loader, 0], positive=[positive, 0], negative=[negative, 0],
                                           edit_latent=[noised, 0], seed=1, steps=2, text_cfg=7.5, image_cfg=1.5,
                                           sampler_name="euler", scheduler="normal", denoise=1.0))
    source = save_latent(g, encoded)
    result = run_ok(host, g)
    core_latent, pack_latent, edit_latent = (read_saved_latent(host, result, outputs[name]) for name in ("core", "pack", "edit"))
    source_latent = read_saved_latent(host, result, source)
    outside = latent_outside(pack_latent)
    assert float(core_latent[outside].abs().max()) < 1e-3 * float(source_latent.abs().max())
    assert torch.equal(pack_latent[outside], source_latent[outside])
    assert torch.equal(edit_latent[outside], source_latent[outside])
    assert relative_l2(edit_latent, pack_latent) < 1e-6  # Edit = Guider for the same noise and sigmas


def test_differential_diffusion_composes_with_a_soft_mask(host, ip2p_ckpt, square_picture):
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, square_picture)
    soft = rect_mask(g, 64, 64, *MASK_BOX, value=0.6)
    differential = g.add("DifferentialDiffusion", model=(loader, 0))
    plain = save_latent(g, edit_node(g, loader, positive, negative, encoded, steps=2, mask=soft))
    with_dd = save_latent(g, edit_node(g, differential, positive, negative, encoded, steps=2, mask=soft))
    source = save_latent(g, encoded)
    result = run_ok(host, g)
    plain_latent, dd_latent, source_latent = (read_saved_latent(host, result, n) for n in (plain, with_dd, source))
    assert relative_l2(dd_latent, plain_latent) > 1e-3  # the host's denoise_mask_function was applied
    outside = latent_outside(dd_latent)
    assert torch.equal(dd_latent[outside], source_latent[outside])
    assert torch.isfinite(dd_latent).all()


def test_a_masked_edit_costs_the_unet_calls_of_the_unmasked_one(pack, loaded):
    model, clip, vae = loaded
    edit_latent = {"samples": vae.encode(pixels((64, 64)))}
    positive, negative = encode_text(clip, "make it snowy"), encode_text(clip, "")
    mask = torch.zeros((1, 64, 64))
    mask[:, 10:30, 10:40] = 1
    counts = []
    for region in (None, mask):
        counted, calls = counting(model)
        pack.run_edit("test", counted, positive, negative, edit_latent, seed=0, steps=2, text_cfg=7.5, image_cfg=1.5,
                      sampler_name="euler", scheduler="normal", denoise=1.0, mask=region)
        counts.append([size for size, _ in calls])
    assert counts[0] == counts[1] == [3, 3]


@pytest.mark.parametrize(("mask_kind", "message"), [
    ("zero", "input 'mask' selects nothing"),
    ("batch", "input 'mask' has batch 3 and the edit has batch 1"),
])
def test_bad_masks_are_refused(host, ip2p_ckpt, square_picture, mask_kind, message):
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, square_picture)
    if mask_kind == "zero":
        mask = g.add("SolidMask", value=0.0, width=64, height=64)
    else:
        mask = g.add("RepeatImageBatch", image=(g.add("MaskToImage", mask=(rect_mask(g, 64, 64, *MASK_BOX), 0)), 0), amount=3)
        mask = g.add("ImageToMask", image=(mask, 0), channel="red")
    save_latent(g, edit_node(g, loader, positive, negative, encoded, mask=mask))
    error = run_error(host, g)
    assert "IPX2P_Edit" in error and message in error and "Fix:" in error
