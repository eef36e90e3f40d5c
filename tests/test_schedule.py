"""Guidance schedules in the real host: IPX2P_GuidanceSchedule's output on Edit, Guider and Guidance
Sweep. A constant schedule is the plain edit exactly; every model call uses the schedule at its
step's progress (log sigma between the run's first and last non-zero sigma), whatever the sampler
and step count; a step whose image_cfg is 1 skips u; core CFGOverride still sets text_cfg."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import (
    Graph, encode_graph, guider_sampled, read_saved_latent, relative_l2, run_error, run_ok, save_latent, tiny_inputs,
    write_picture,
)

EDIT = dict(seed=0, steps=4, text_cfg=7.5, image_cfg=1.5, sampler_name="euler", scheduler="normal", denoise=1.0)
KEYFRAMES = "0: 7.5/1.5, 0.6: 5/1.8, 1: 3/1"


@pytest.fixture(scope="module")
def tiny():
    """(model, positive, negative, edit_latent): the small UNet, random text embeddings, a 64 px latent."""
    return tiny_inputs()


@pytest.fixture(scope="module")
def schedule_node(host):
    node = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_GuidanceSchedule"]

    def make(**settings):
        inputs = dict(text_cfg_start=7.5, text_cfg_end=5.0, image_cfg_start=1.5, image_cfg_end=1.8, curve="linear",
                      keyframes="")
        return node.execute(**{**inputs, **settings}).result[0]
    return make


def edit(pack, tiny, model=None, **overrides):
    base, positive, negative, latent = tiny
    return pack.run_edit("IPX2P_Edit", model or base, positive, negative, latent, **{**EDIT, **overrides})


def call_recorder(model):
    """A clone of `model` that records each UNet call's sigma and batch rows (one row per branch)."""
    calls = []
    clone = model.clone()

    def unet(apply_model, args):
        calls.append((float(args["timestep"].flatten()[0]), int(args["input"].shape[0])))
        return apply_model(args["input"], args["timestep"], **args["c"])

    clone.set_model_unet_function_wrapper(unet)
    return clone, calls


def expected_scales(progress: float) -> tuple[float, float]:
    """KEYFRAMES, linear, computed here without the pack."""
    points = [(0.0, 7.5, 1.5), (0.6, 5.0, 1.8), (1.0, 3.0, 1.0)]
    xs = [p for p, _, _ in points]
    return (float(np.interp(progress, xs, [t for _, t, _ in points])), float(np.interp(progress, xs, [i for _, _, i in points])))


@pytest.mark.floor
def test_a_constant_schedule_is_the_plain_edit_and_the_widgets_are_ignored(pack, tiny, schedule_node):
    plain = edit(pack, tiny)
    assert torch.equal(edit(pack, tiny, schedule=schedule_node(text_cfg_end=7.5, image_cfg_end=1.5)), plain)
    # curve constant: the start values throughout (the ends are not used)
    assert torch.equal(edit(pack, tiny, schedule=schedule_node(curve="constant", text_cfg_end=2.0, image_cfg_end=3.0)),
                       plain)
    assert torch.equal(edit(pack, tiny, schedule=schedule_node(keyframes="0: 7.5/1.5")), plain)
    # with a schedule the node's text_cfg / image_cfg do not matter
    other = edit(pack, tiny, text_cfg=4.0, image_cfg=1.2)
    assert torch.equal(edit(pack, tiny, text_cfg=4.0, image_cfg=1.2, schedule=schedule_node(text_cfg_end=7.5,
                                                                                          image_cfg_end=1.5)), plain)
    assert not torch.equal(other, plain)
    changing = edit(pack, tiny, schedule=schedule_node())
    assert relative_l2(changing, plain) > 1e-4  # 7.5 -> 5, 1.5 -> 1.8 changes the result


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "dpm_2"])
def test_each_call_uses_the_schedule_at_its_steps_progress(pack, tiny, schedule_node, sampler, steps):
    # dpm_2 evaluates the model twice per step (the second call at a sigma between the step's two)
    # and KSampler drops the penultimate sigma of its schedule: progress is measured on the sigmas
    # the run uses, so the values are the same function of sigma for all three.
    model, calls = call_recorder(tiny[0])
    report: dict = {}
    edit(pack, tiny, model=model, sampler_name=sampler, steps=steps, schedule=schedule_node(keyframes=KEYFRAMES),
         report=report)
    sigmas = [float(s) for s in pack.edit_sigmas(model, "normal", steps, 1.0, sampler)]
    first, last = sigmas[0], [s for s in sigmas if s > 0][-1]
    used = report["scales"]
    assert len(used) == len(calls) > 0
    seen_steps = []
    for (sigma, rows), (step, progress, text_cfg, image_cfg) in zip(calls, used):
        # the call lies inside its step
        assert sigmas[step + 1] * (1 - 1e-5) <= sigma <= sigmas[step] * (1 + 1e-5), (step, sigma)
        expected_progress = (math.log(first) - math.log(sigmas[step])) / (math.log(first) - math.log(last))
        assert progress == pytest.approx(expected_progress, abs=1e-9)
        assert (text_cfg, image_cfg) == pytest.approx(expected_scales(expected_progress), abs=1e-9)
        assert rows == (2 if image_cfg == 1.0 else 3)  # a step at image_cfg 1 skips u
        seen_steps.append(step)
    assert sorted(set(seen_steps)) == list(range(len(sigmas) - 1)) and seen_steps == sorted(seen_steps)
    per_call = 2 if sampler == "dpm_2" else 1
    assert len(calls) == per_call * (len(sigmas) - 1) - (per_call - 1)  # dpm_2's last step (to sigma 0) is one call
    assert used[0][2:] == (7.5, 1.5) and used[-1][2:] == (3.0, 1.0)


def test_cfg_override_replaces_the_schedules_text_cfg(host, pack, tiny, schedule_node):
    if "CFGOverride" not in host.nodes.NODE_CLASS_MAPPINGS:
        pytest.skip("this ComfyUI has no CFGOverride node")
    override = host.nodes.NODE_CLASS_MAPPINGS["CFGOverride"]
    model = override.execute(model=tiny[0], cfg=3.0, start_percent=0.0, end_percent=1.0).result[0]
    report: dict = {}
    edit(pack, tiny, model=model, steps=6, schedule=schedule_node(keyframes=KEYFRAMES), report=report)
    for _, progress, text_cfg, image_cfg in report["scales"]:
        assert text_cfg == 3.0 and image_cfg == pytest.approx(expected_scales(progress)[1])


def test_guider_and_sweep_follow_the_schedule_like_edit(host, ip2p_ckpt):
    picture = write_picture(host.input_dir, "schedule_64.png", (64, 64))
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
    schedule = g.add("IPX2P_GuidanceSchedule", text_cfg_start=7.5, text_cfg_end=4.0, image_cfg_start=1.5,
                     image_cfg_end=1.0, curve="cosine")
    common = dict(model=(loader, 0), positive=(positive, 0), negative=(negative, 0), edit_latent=(encoded, 0))
    edited = save_latent(g, g.add("IPX2P_Edit", **common, seed=1, steps=3, text_cfg=2.0, image_cfg=1.1,
                                  sampler_name="euler", scheduler="normal", denoise=1.0, schedule=(schedule, 0)))
    plain = save_latent(g, g.add("IPX2P_Edit", **common, seed=1, steps=3, text_cfg=7.5, image_cfg=1.5,
                                 sampler_name="euler", scheduler="normal", denoise=1.0))
    guided = guider_sampled(g, loader, positive, negative, encoded, steps=3, text_cfg=2.0, image_cfg=1.1,
                            schedule=(schedule, 0))
    # a sweep's cell at the schedule's start values follows the schedule exactly
    swept = save_latent(g, g.add("IPX2P_GuidanceSweep", **common, vae=(loader, 2), seed=1, steps=3,
                                 text_cfg_values="7.5, 3.75", image_cfg_values="1.5", sampler_name="euler",
                                 scheduler="normal", mode="grid", count=1, schedule=(schedule, 0)))
    result = run_ok(host, g)
    latents = {name: read_saved_latent(host, result, node) for name, node in
               (("edited", edited), ("plain", plain), ("guided", guided), ("swept", swept))}
    assert relative_l2(latents["guided"], latents["edited"]) < 1e-6
    assert relative_l2(latents["edited"], latents["plain"]) > 1e-3
    assert relative_l2(latents["swept"][:1], latents["edited"]) < 1e-5
    assert relative_l2(latents["swept"][1:], latents["edited"]) > 1e-3  # the half-strength cell differs


@pytest.mark.floor
@pytest.mark.parametrize(("keyframes", "words"), [
    ("0: 7.5, 1: 3/2", ("'0: 7.5'",)),
    ("0: 7.5/1.5, 0: 5/1.8", ("same progress",)),
    ("0: 7.5/1.5, 1.5: 3/2", ("1.5",)),
    ("start: 7.5/1.5", ("'start: 7.5/1.5'",)),
])
def test_keyframes_that_do_not_parse_are_named(host, ip2p_ckpt, keyframes, words):
    picture = write_picture(host.input_dir, "schedule_64.png", (64, 64))
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
    schedule = g.add("IPX2P_GuidanceSchedule", text_cfg_start=7.5, text_cfg_end=4.0, image_cfg_start=1.5,
                     image_cfg_end=1.0, curve="linear", keyframes=keyframes)
    save_latent(g, g.add("IPX2P_Edit", model=(loader, 0), positive=(positive, 0), negative=(negative, 0),
                         edit_latent=(encoded, 0), seed=1, steps=1, text_cfg=7.5, image_cfg=1.5, sampler_name="euler",
                         scheduler="normal", denoise=1.0, schedule=(schedule, 0)))
    text = run_error(host, g)
    assert "IPX2P_GuidanceSchedule" in text and "keyframes" in text, text
    assert all(word in text for word in words), text
    assert "expected" in text and "Fix:" in text
