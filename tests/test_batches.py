"""Instruction batches and the Edit node's noise choice, in the real host."""
from __future__ import annotations

import pytest
import torch

from helpers import (
    Graph, edit_node, encode_graph, read_saved_latent, relative_l2, run_ok, save_latent, write_picture,
)
from test_nodes_graph import encode_text, pixels


def test_encode_instructions_one_per_line(host, loaded):
    model, clip, _ = loaded
    node = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_EncodeInstructions"]
    positive, negative = node.execute(clip, "make it snowy\n\n   turn it red  \n").result
    assert positive[0][0].shape[0] == 2 and negative[0][0].shape[0] == 1
    # line k is the encoding of that instruction alone, and the negative is the empty text
    torch.testing.assert_close(positive[0][0][1:2], encode_text(clip, "turn it red")[0][0], rtol=0, atol=0)
    torch.testing.assert_close(negative[0][0], encode_text(clip, "")[0][0], rtol=0, atol=0)
    # lines of different token counts batch (a 300-token instruction is 4 chunks of 77)
    long_text = " ".join(["snow"] * 300)
    positive, _ = node.execute(clip, f"short\n{long_text}").result
    assert positive[0][0].shape[:2] == (2, 308)


def test_encode_instructions_refuses_no_instruction(host, loaded):
    with pytest.raises(ValueError) as caught:
        host.nodes.NODE_CLASS_MAPPINGS["IPX2P_EncodeInstructions"].execute(loaded[1], "\n   \n")
    message = str(caught.value)
    assert "IPX2P_EncodeInstructions: input 'instructions' has no instruction" in message and "Fix:" in message


@pytest.mark.parametrize("sampler", ["euler", pytest.param("euler_ancestral", marks=pytest.mark.floor)])
def test_batched_instructions_equal_single_edits_with_same_noise(host, ip2p_ckpt, sampler):
    # N instructions over one image in one edit; with "same for all" each item is its single edit,
    # for a deterministic sampler and for one that draws noise at every step.
    picture = write_picture(host.input_dir, "batch_64x48.png", (64, 48))
    steps = 3 if sampler == "euler_ancestral" else 2  # the second noisy step shows per item's batch-wide draw
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
    batch = g.add("IPX2P_EncodeInstructions", clip=(loader, 1), instructions="make it snowy\nturn it red\nmake it snowy")
    together = save_latent(g, edit_node(g, loader, batch, (batch, 1), encoded, steps=steps, sampler=sampler,
                                        noise="same for all"))
    per_item = save_latent(g, edit_node(g, loader, batch, (batch, 1), encoded, steps=steps, sampler=sampler, noise="per item"))
    singles = []
    for text in ("make it snowy", "turn it red"):
        instruction = g.add("CLIPTextEncode", text=text, clip=(loader, 1))
        singles.append(save_latent(g, edit_node(g, loader, instruction, negative, encoded, steps=steps, sampler=sampler)))
    result = run_ok(host, g)
    both = read_saved_latent(host, result, together)
    alone = [read_saved_latent(host, result, node) for node in singles]
    assert both.shape[0] == 3
    assert relative_l2(both[0:1], alone[0]) < 1e-5 and relative_l2(both[1:2], alone[1]) < 1e-5
    assert relative_l2(both[2:3], both[0:1]) < 1e-5  # identical instructions give identical items
    other = read_saved_latent(host, result, per_item)
    assert relative_l2(other[2:3], other[0:1]) > 1e-3  # per item: item 2 has other noise than item 0 ...
    if sampler == "euler":
        assert relative_l2(other[0:1], alone[0]) < 1e-5  # ... and item 0 is the single edit
    else:
        # ... but with step noise drawn for the whole batch (as core KSampler does), not even item 0 is
        assert relative_l2(other[0:1], alone[0]) > 1e-4


def test_per_item_noise_is_the_seeds_kth_draw(pack, loaded):
    import comfy.sample

    model, clip, vae = loaded
    positive, negative = encode_text(clip, "make it snowy"), encode_text(clip, "")
    images = torch.cat([vae.encode(pixels((48, 32), seed)) for seed in (1, 2)])
    kwargs = dict(seed=9, steps=2, text_cfg=7.5, image_cfg=1.5, sampler_name="euler", scheduler="normal", denoise=1.0)
    batch = pack.run_edit("test", model, positive, negative, {"samples": images}, noise_mode="per item", **kwargs)
    noise = comfy.sample.prepare_noise(torch.zeros((2, 4, 4, 6)), 9)
    import comfy.samplers

    guider, _ = pack.build_guider("test", model, positive, negative, {"samples": images[1:2]}, 7.5, 1.5)
    sigmas = pack.edit_sigmas(model, "normal", 2, 1.0)
    second = guider.sample(noise[1:2], torch.zeros((1, 4, 4, 6)), comfy.samplers.sampler_object("euler"), sigmas,
                           seed=9, disable_pbar=True)
    assert relative_l2(batch[1:2], second) < 1e-5


@pytest.mark.parametrize("sampler", ["dpmpp_2m_sde", "dpmpp_sde_gpu", "lcm", "dpmpp_2m"])
def test_same_noise_for_each_kind_of_sampler(pack, loaded, sampler):
    # One sampler of each way of drawing step noise (default, Brownian on CPU, Brownian on the
    # device, none); every host sampler is classified (test below).
    model, clip, vae = loaded
    positive = [[torch.cat([encode_text(clip, "make it snowy")[0][0]] * 2), {}]]
    negative = encode_text(clip, "")
    edit_latent = {"samples": vae.encode(pixels((32, 32)))}
    kwargs = dict(seed=4, steps=2, text_cfg=1.0, image_cfg=1.0, sampler_name=sampler, scheduler="normal", denoise=1.0)
    both = pack.run_edit("test", model, positive, negative, edit_latent, noise_mode="same for all", **kwargs)
    alone = pack.run_edit("test", model, encode_text(clip, "make it snowy"), negative, edit_latent, **kwargs)
    assert relative_l2(both[0:1], alone) < 1e-5 and relative_l2(both[1:2], alone) < 1e-5


def test_every_host_sampler_is_classified(host):
    import inspect

    import comfy.k_diffusion.sampling as k_sampling
    import comfy.samplers

    import sys

    sampling = sys.modules[host.nodes.NODE_CLASS_MAPPINGS["IPX2P_Edit"].__module__.rsplit(".", 1)[0] + ".sampling"]
    known = sampling.DEFAULT_NOISE | sampling.BROWNIAN_CPU | sampling.BROWNIAN_GPU | sampling.DETERMINISTIC
    assert set(comfy.samplers.KSampler.SAMPLERS) <= known
    for name in set(comfy.samplers.KSampler.SAMPLERS) - sampling.DETERMINISTIC:
        function = getattr(k_sampling, f"sample_{name}")
        assert "noise_sampler" in inspect.signature(function).parameters, name


def test_unknown_sampler_runs_item_by_item(pack, loaded, monkeypatch):
    # A sampler the pack cannot share noise for (as a newer ComfyUI may add): "same for all" runs
    # one item at a time, still each equal to its single edit.
    import sys

    from test_nodes_graph import counting

    sampling = sys.modules[pack.__name__.rsplit(".", 1)[0] + ".sampling"]
    monkeypatch.setattr(sampling, "DEFAULT_NOISE", sampling.DEFAULT_NOISE - {"euler_ancestral"})
    model, clip, vae = loaded
    positive = [[torch.cat([encode_text(clip, "make it snowy")[0][0]] * 2), {}]]
    negative = encode_text(clip, "")
    edit_latent = {"samples": vae.encode(pixels((32, 32)))}
    kwargs = dict(seed=4, steps=2, text_cfg=1.0, image_cfg=1.0, sampler_name="euler_ancestral", scheduler="normal",
                  denoise=1.0)
    counted, calls = counting(model)
    both = pack.run_edit("test", counted, positive, negative, edit_latent, noise_mode="same for all", **kwargs)
    assert [size for size, _ in calls] == [1, 1, 1, 1]
    alone = pack.run_edit("test", model, encode_text(clip, "make it snowy"), negative, edit_latent, **kwargs)
    assert relative_l2(both[1:2], alone) < 1e-5
