"""localize = "auto" in the real host: the guider gathers the text term's relevance over the first
steps, turns it into a region and edits only there. With a UNet whose instruction effect is
confined to a known rectangle (a wrapper around the small UNet), the Edit node's `region` output
finds the rectangle, the latent outside it is the input's, and no UNet call is added (unless the
text_cfg = image_cfg identity had dropped i)."""
from __future__ import annotations

import pytest
import torch

from helpers import Graph, encode_graph, guider_sampled, read_saved_latent, relative_l2, run_ok, save_latent, write_picture
from ipx2p_core.relevance import region_stats
from ipx2p_tools.testkit.tiny import tiny_ip2p_model

SIZE = 16  # latent px (128 px pictures)
EDIT = dict(seed=0, steps=10, text_cfg=7.5, image_cfg=1.5, sampler_name="euler", scheduler="normal", denoise=1.0)
RECT = (slice(4, 10), slice(5, 12))  # rows, columns of the latent where the instruction acts


@pytest.fixture(scope="module")
def tiny():
    """(model, positive, negative, edit_latent): the small UNet, one text embedding for both
    prompts (so c = i wherever the wrapper adds nothing), a 128 px latent."""
    generator = torch.Generator().manual_seed(0)
    text = [[torch.randn(1, 77, 768, generator=generator), {}]]
    latent = {"samples": torch.randn(1, 4, SIZE, SIZE, generator=generator)}
    return tiny_ip2p_model(), text, [[text[0][0].clone(), {}]], latent


def rect(value=1.0) -> torch.Tensor:
    region = torch.zeros(1, 1, SIZE, SIZE)
    region[..., RECT[0], RECT[1]] = value
    return region


def confined(model, where: torch.Tensor, strength=0.6, noise=0.05):
    """A clone of `model` whose instruction (the c branch, chunk 0 of every call) moves the
    prediction by `strength` inside `where` [1,1,h,w] and by small noise everywhere (drawn from
    the call's sigma, so a run repeats); records each call's batch rows."""
    calls = []
    clone = model.clone()
    generator = torch.Generator()

    def unet(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        rows = int(args["input"].shape[0])
        calls.append(rows)
        order = list(args["cond_or_uncond"])
        per = rows // len(order)
        generator.manual_seed(int(float(args["timestep"].flatten()[0]) * 1000))
        shift = strength * where + noise * torch.randn(1, 4, SIZE, SIZE, generator=generator)
        out = out.clone()
        out[order.index(0) * per:(order.index(0) + 1) * per] += shift.to(out)
        return out

    clone.set_model_unet_function_wrapper(unet)
    return clone, calls


def edit(pack, tiny, model, report=None, **overrides):
    _, positive, negative, latent = tiny
    return pack.run_edit("IPX2P_Edit", model, positive, negative, latent, report=report, **{**EDIT, **overrides})


@pytest.mark.floor
def test_off_is_todays_edit_bit_for_bit(pack, tiny):
    base = tiny[0]
    plain = edit(pack, tiny, base)
    report: dict = {}
    off = edit(pack, tiny, base, report, localize="off", localize_until=0.7, localize_threshold=0.9)
    assert torch.equal(off, plain) and report["region"] is None


@pytest.mark.floor
def test_auto_finds_the_region_the_instruction_acts_on(host, pack, tiny):
    model, calls = confined(tiny[0], rect())
    plain_report: dict = {}
    plain = edit(pack, tiny, model, plain_report)
    plain_calls = list(calls)
    calls.clear()
    report: dict = {}
    found = edit(pack, tiny, model, report, localize="auto")
    assert calls == plain_calls == [3] * EDIT["steps"]  # no extra UNet call, no extra branch
    region = report["region"]
    precision, recall = region_stats(region, rect() > 0)
    print(f"auto, latent region: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    outside = region == 0
    assert bool(outside.any())
    latent = tiny[3]["samples"]
    assert torch.equal(found[outside.expand_as(found)], latent[outside.expand_as(latent)])
    inside = rect().bool().expand_as(found)
    assert relative_l2(found[inside], plain[inside]) < 0.5  # the edit is still there where it applies
    assert relative_l2(plain[~inside], latent[~inside]) > 1e-2  # without localize the outside changed
    # the Edit node's region output: the same region at the picture's size
    node = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_Edit"]
    _, positive, negative, latent_in = tiny
    out = node.execute(model=model, positive=positive, negative=negative, edit_latent=latent_in, **EDIT,
                       localize="auto").result
    pixels = out[1]
    assert tuple(pixels.shape) == (1, SIZE * 8, SIZE * 8)
    truth = torch.zeros(1, SIZE * 8, SIZE * 8, dtype=torch.bool)
    truth[:, RECT[0].start * 8:RECT[0].stop * 8, RECT[1].start * 8:RECT[1].stop * 8] = True
    precision, recall = region_stats(pixels, truth)
    print(f"auto, region output at picture size: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    assert torch.equal(out[0]["samples"], found)


def test_a_drawn_mask_and_auto_give_their_intersection(pack, tiny):
    model, _ = confined(tiny[0], rect())
    left = torch.zeros(1, SIZE * 8, SIZE * 8)
    left[..., : SIZE * 8 // 2] = 1.0  # columns 0-7 of the latent: cuts the rectangle (columns 5-11)
    report: dict = {}
    found = edit(pack, tiny, model, report, localize="auto", mask=left)
    region = report["region"]
    assert float(region[..., SIZE // 2:].max()) == 0.0
    truth = rect().bool()
    truth[..., SIZE // 2:] = False
    precision, recall = region_stats(region, truth)
    print(f"auto with a drawn mask: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    latent = tiny[3]["samples"]
    assert torch.equal(found[..., SIZE // 2:], latent[..., SIZE // 2:])


def test_the_identity_evaluates_i_only_while_gathering(pack, tiny):
    # text_cfg = image_cfg drops i (the result is u + s (c - u)); auto needs c - i, so i is
    # evaluated during the gathering steps (3 rows instead of 2) and dropped again afterwards.
    model, calls = confined(tiny[0], rect())
    edit(pack, tiny, model, text_cfg=1.5, image_cfg=1.5)
    assert calls == [2] * EDIT["steps"]
    calls.clear()
    report: dict = {}
    edit(pack, tiny, model, report, text_cfg=1.5, image_cfg=1.5, localize="auto", localize_until=0.3)
    assert calls == [3] * 3 + [2] * (EDIT["steps"] - 3)
    precision, recall = region_stats(report["region"], rect() > 0)
    print(f"identity, i while gathering: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def test_a_global_edit_keeps_the_whole_picture(pack, tiny):
    # no concentrated relevance: the region is the whole picture, and the edit is the plain one
    everywhere = torch.ones(1, 1, SIZE, SIZE)
    report: dict = {}
    found = edit(pack, tiny, confined(tiny[0], everywhere)[0], report, localize="auto")
    assert report["region"] is None
    assert torch.equal(found, edit(pack, tiny, confined(tiny[0], everywhere)[0]))


def test_guider_equals_edit_and_paste_back_takes_the_region(host, ip2p_ckpt):
    picture = write_picture(host.input_dir, "localize_64.png", (64, 64))
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
    common = dict(model=(loader, 0), positive=(positive, 0), negative=(negative, 0), edit_latent=(encoded, 0))
    settings = dict(localize="auto", localize_until=0.5, localize_threshold=0.4)
    edit_node = g.add("IPX2P_Edit", **common, seed=1, steps=4, text_cfg=7.5, image_cfg=1.5, sampler_name="euler",
                      scheduler="normal", denoise=1.0, **settings)
    edited = save_latent(g, edit_node)
    guided = guider_sampled(g, loader, positive, negative, encoded, steps=4, **settings)
    decoded = g.add("VAEDecode", samples=(edit_node, 0), vae=(loader, 2))
    pasted = g.add("IPX2P_PasteBack", original=(g.add("LoadImage", image=picture), 0), edited=(decoded, 0),
                   mask=(edit_node, 1), threshold=0.06, grow=0, feather=0, color_match=False, resize="keep",
                   resolution=64)
    g.add("SaveImage", images=(pasted, 0), filename_prefix="ipx2p_localize")
    result = run_ok(host, g)
    assert relative_l2(read_saved_latent(host, result, guided), read_saved_latent(host, result, edited)) < 1e-6
