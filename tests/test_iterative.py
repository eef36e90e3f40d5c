"""Iterative edits: the Edit node's LATENT feeds the next edit's edit_latent directly."""
from __future__ import annotations

import pytest
import torch

from helpers import Graph, edit_node, encode_graph, read_saved_latent, run_ok, save_latent, watch_image_input, write_picture
from test_nodes_graph import encode_text, pixels


def test_the_second_edit_is_conditioned_on_the_first_edits_latent(pack, loaded):
    model, clip, vae = loaded
    positive, negative = encode_text(clip, "make it snowy"), encode_text(clip, "")
    options = dict(seed=1, steps=2, text_cfg=7.5, image_cfg=1.5, sampler_name="euler", scheduler="normal", denoise=1.0)
    first = pack.run_edit("test", model, positive, negative, {"samples": vae.encode(pixels((64, 48)))}, **options)
    watched, seen = watch_image_input(model)
    pack.run_edit("test", watched, encode_text(clip, "now make it night"), negative, {"samples": first}, **options)
    # c and i carry the image, u a zero image (in the host's batch order); the image is the first
    # edit's output, unchanged
    concat = seen[0]
    assert concat.shape[0] == 3
    items = [concat[k:k + 1] for k in range(3)]
    assert sum(torch.equal(item, first.to(concat)) for item in items) == 2
    assert sum(float(item.abs().max()) == 0.0 for item in items) == 1


@pytest.mark.floor
def test_edits_chain_through_the_graph(host, ip2p_ckpt):
    picture = write_picture(host.input_dir, "chain_64x48.png", (64, 48))
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
    first = edit_node(g, loader, positive, negative, encoded, steps=1)
    night = g.add("CLIPTextEncode", text="now make it night", clip=(loader, 1))
    g.prompt[first]["inputs"]["seed"] = 5
    second = g.add("IPX2P_Edit", model=[loader, 0], positive=[night, 0], negative=[negative, 0], edit_latent=[first, 0],
                   seed=5, steps=1, text_cfg=7.5, image_cfg=1.5, sampler_name="euler", scheduler="normal", denoise=1.0)
    saved_first, saved_second = save_latent(g, first), save_latent(g, second)
    g.add("SaveImage", images=(g.add("VAEDecode", samples=(second, 0), vae=(loader, 2)), 0), filename_prefix="ipx2p_chain")
    result = run_ok(host, g)
    a, b = read_saved_latent(host, result, saved_first), read_saved_latent(host, result, saved_second)
    assert a.shape == b.shape == (1, 4, 6, 8) and not torch.equal(a, b)
