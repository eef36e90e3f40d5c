"""Paths that newer ComfyUI (0.30 here; 0.35-0.38 on NVIDIA) takes differently, run on both hosts as
far as a CPU can show them (bench/gpu.sh runs the dynamic-VRAM ones on a GPU):
- the loaders register a reload factory (`cached_patcher_init`), which the host's dynamic-VRAM
  patcher calls with disable_dynamic=True to copy a MODEL for hooked conditionings;
- a hooked conditioning (Create Hook LoRA) works with the pack's MODEL;
- core CFGOverride sets the pack guider's text_cfg;
- the Edit node's sigmas are KSampler's, also for samplers that drop the penultimate sigma;
- the pack imports the newest frozen node API the host has;
- no UNet tensor is left a shape-only stand-in after loading.
"""
from __future__ import annotations

import inspect
import pkgutil

import pytest
import torch

from helpers import Graph, edit_node, encode_graph, read_saved_latent, relative_l2, run_ok, save_latent, write_picture

pytestmark = pytest.mark.floor


@pytest.fixture(scope="module")
def picture(host):
    return write_picture(host.input_dir, "compat_64x48.png", (64, 48))


def sample_digests(module, every: int = 40) -> dict[str, float]:
    """A cheap fingerprint of a UNet: the sum of every 40th tensor, in float64."""
    return {name: float(value.double().sum()) for index, (name, value) in enumerate(module.state_dict().items())
            if index % every == 0}


def test_loader_registers_a_reload_factory_the_host_can_call(host, loaded):
    model = loaded[0]
    if not hasattr(model, "cached_patcher_init"):
        pytest.skip("this ComfyUI has no cached_patcher_init (no dynamic VRAM)")
    factory, arguments = model.cached_patcher_init[:2]
    assert "disable_dynamic" in inspect.signature(factory).parameters
    again = factory(*arguments, disable_dynamic=True)
    assert type(again.model) is type(model.model)
    assert sample_digests(again.model.diffusion_model) == sample_digests(model.model.diffusion_model)
    assert not again.is_dynamic()
    # The host's own use of it (the path a dynamic MODEL takes for hooked conditionings): a clone
    # that rebuilds its model through the factory instead of sharing it.
    copy = model.clone(force_deepcopy=True)
    assert copy.model is not model.model and type(copy.model) is type(model.model)
    assert sample_digests(copy.model.diffusion_model) == sample_digests(model.model.diffusion_model)
    del again, copy


def test_no_unet_tensor_is_left_a_stand_in(loaded):
    unet = loaded[0].model.diffusion_model
    stand_ins = [name for name, tensor in [*unet.named_parameters(), *unet.named_buffers()]
                 if tensor.numel() > 1 and 0 in tensor.stride()]
    assert not stand_ins
    assert sum(tensor.numel() for tensor in unet.parameters()) > 800_000_000  # the whole SD1.5 UNet


def test_a_hooked_conditioning_edits_with_the_pack_model(host, ip2p_ckpt, lora_file, picture):
    def graph(with_hook: bool) -> tuple[Graph, str]:
        g = Graph()
        loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
        if with_hook:
            hooks = g.add("CreateHookLoraModelOnly", lora_name=lora_file, strength_model=1.0)
            positive = g.add("ConditioningSetProperties", cond_NEW=(positive, 0), strength=1.0, set_cond_area="default",
                             hooks=(hooks, 0))
        return g, save_latent(g, edit_node(g, loader, positive, negative, encoded, steps=1, sampler="euler"))

    plain_graph, plain_node = graph(False)
    hooked_graph, hooked_node = graph(True)
    plain = read_saved_latent(host, run_ok(host, plain_graph), plain_node)
    hooked = read_saved_latent(host, run_ok(host, hooked_graph), hooked_node)
    assert torch.isfinite(hooked).all()
    assert relative_l2(hooked, plain) > 1e-4  # the hook's LoRA acted on the instruction's branch


def test_cfg_override_sets_the_guiders_text_cfg(host, ip2p_ckpt, picture):
    if "CFGOverride" not in host.nodes.NODE_CLASS_MAPPINGS:
        pytest.skip("this ComfyUI has no CFGOverride node")

    def sample(text_cfg: float, override: float | None) -> tuple[Graph, str]:
        g = Graph()
        loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
        model = (loader, 0)
        if override is not None:
            model = (g.add("CFGOverride", model=model, cfg=override, start_percent=0.0, end_percent=1.0), 0)
        guider = g.add("IPX2P_Guider", model=model, positive=(positive, 0), negative=(negative, 0),
                       edit_latent=(encoded, 0), text_cfg=text_cfg, image_cfg=1.5)
        conditioning = g.add("IPX2P_Conditioning", positive=(positive, 0), negative=(negative, 0), edit_latent=(encoded, 0))
        sampled = g.add("SamplerCustomAdvanced", noise=(g.add("RandomNoise", noise_seed=4), 0), guider=(guider, 0),
                        sampler=(g.add("KSamplerSelect", sampler_name="euler"), 0),
                        sigmas=(g.add("BasicScheduler", model=(loader, 0), scheduler="normal", steps=2, denoise=1.0), 0),
                        latent_image=(conditioning, 3))
        return g, save_latent(g, sampled)

    results = {}
    for name, (text_cfg, override) in {"plain_3": (3.0, None), "override_3": (7.5, 3.0), "plain_7_5": (7.5, None)}.items():
        g, node = sample(text_cfg, override)
        results[name] = read_saved_latent(host, run_ok(host, g), node)
    assert relative_l2(results["override_3"], results["plain_3"]) < 1e-6
    assert relative_l2(results["override_3"], results["plain_7_5"]) > 1e-3


@pytest.mark.parametrize(("sampler", "denoise"), [("dpm_2", 1.0), ("uni_pc", 1.0), ("dpm_2", 0.6), ("euler", 0.6)])
def test_edit_sigmas_are_ksamplers(host, ip2p_ckpt, picture, sampler, denoise):
    # At image_cfg 1 the edit is plain CFG between c and i, which core KSampler computes from the
    # pack's Conditioning outputs; equal results need equal sigmas (dpm_2 and uni_pc drop the
    # penultimate sigma of a one-step-longer schedule in KSampler).
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
    pack = save_latent(g, edit_node(g, loader, positive, negative, encoded, seed=9, steps=3, text_cfg=4.0, image_cfg=1.0,
                                    sampler=sampler, denoise=denoise))
    conditioning = g.add("IPX2P_Conditioning", positive=(positive, 0), negative=(negative, 0), edit_latent=(encoded, 0))
    start = (conditioning, 3) if denoise >= 1.0 else (encoded, 0)
    core = save_latent(g, g.add("KSampler", model=(loader, 0), positive=(conditioning, 0), negative=(conditioning, 1),
                                latent_image=start, seed=9, steps=3, cfg=4.0, sampler_name=sampler, scheduler="normal",
                                denoise=denoise))
    result = run_ok(host, g)
    assert relative_l2(read_saved_latent(host, result, pack), read_saved_latent(host, result, core)) < 1e-5


def test_the_pack_uses_the_newest_frozen_node_api(host):
    import sys

    import comfy_api

    frozen = sorted(tuple(int(part) for part in module.name[1:].split("_")) for module in pkgutil.iter_modules(comfy_api.__path__)
                    if module.name.startswith("v") and module.name[1:].replace("_", "").isdigit())
    newest = [version for version in frozen if version >= (0, 0, 3)]
    expected = f"comfy_api.v{'_'.join(map(str, newest[-1]))}" if newest else "comfy_api.latest"
    module = sys.modules[host.nodes.NODE_CLASS_MAPPINGS["IPX2P_Edit"].__module__.rsplit(".", 1)[0] + "._comfy"]
    assert module.API_MODULE == expected
