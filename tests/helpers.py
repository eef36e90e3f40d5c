"""Shared test helpers (not fixtures)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ipx2p_tools.layout import REPO_ROOT
from ipx2p_tools.testkit.graph import Graph, read_saved_latent, rect_mask, save_latent  # noqa: F401  (tests import them from here)
from ipx2p_tools.workflow import ApiWorkflow, load_ui, ui_to_api

if TYPE_CHECKING:
    import torch

WORKFLOWS = REPO_ROOT / "workflows"


def small_edit_prompt(object_info, ckpt_name: str, image_name: str, steps=2, seed=0, resize="keep", resolution=64,
                      workflow: Path = WORKFLOWS / "ip2p_edit.json") -> ApiWorkflow:
    """A shipped workflow set up for a fast run on the random-weight checkpoint ("keep": the
    picture's own size, so tests choose the latent size by the picture they make)."""
    api = ui_to_api(load_ui(workflow), object_info)
    api.set("checkpoint", "ckpt_name", ckpt_name)
    api.set("image", "image", image_name)
    api.set("encode", "resize", resize)
    api.set("encode", "resolution", resolution)
    if "edit" in api.roles or "sweep" in api.roles:
        role = "edit" if "edit" in api.roles else "sweep"
        api.set(role, "seed", seed)
        api.set(role, "steps", steps)
    else:
        api.set("noise", "noise_seed", seed)
        api.set("scheduler", "steps", steps)
    return api


def relative_l2(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def precision_recall(found: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """(precision, recall) of a found boolean mask against the true one."""
    hits = float((found & truth).sum())
    return hits / max(1.0, float(found.sum())), hits / float(truth.sum())


def write_picture(directory: Path, name: str, size, color=(40, 110, 190)) -> str:
    from PIL import Image, ImageDraw

    width, height = size
    picture = Image.new("RGB", (width, height), color)
    ImageDraw.Draw(picture).ellipse((width // 5, height // 6, width // 2, height * 5 // 6), fill=(240, 200, 50))
    picture.save(Path(directory) / name)
    return name


def encode_graph(g: Graph, ckpt: str, picture: str, resize="keep", resolution=64, weights="auto",
                 instruction="make it snowy"):
    """Loader, picture, instruction, empty negative and the encoded image: (loader, positive, negative, encoded)."""
    loader = g.add("IPX2P_CheckpointLoader", ckpt_name=ckpt, weights=weights)
    image = g.add("LoadImage", image=picture)
    positive = g.add("CLIPTextEncode", text=instruction, clip=(loader, 1))
    negative = g.add("CLIPTextEncode", text="", clip=(loader, 1))
    encoded = g.add("IPX2P_EncodeImage", vae=(loader, 2), image=(image, 0), resize=resize, resolution=resolution)
    return loader, positive, negative, encoded


def edit_node(g: Graph, loader, positive, negative, encoded, seed=1, steps=3, text_cfg=7.5, image_cfg=1.5,
              sampler="euler", mask=None, noise=None, denoise=1.0, **extra) -> str:
    """An IPX2P_Edit node; positive / negative are node ids (slot 0) or (node id, slot)."""
    def link(source):
        return source if isinstance(source, tuple) else (source, 0)

    inputs = dict(model=(loader, 0), positive=link(positive), negative=link(negative), edit_latent=(encoded, 0), seed=seed,
                  steps=steps, text_cfg=text_cfg, image_cfg=image_cfg, sampler_name=sampler, scheduler="normal",
                  denoise=denoise)
    if mask is not None:
        inputs["mask"] = (mask, 0)
    if noise is not None:
        inputs["noise"] = noise
    for name, value in extra.items():  # other optional inputs: node ids are linked (slot 0), widgets as given
        inputs[name] = (value, 0) if name in ("guidance_map", "schedule") else value
    return g.add("IPX2P_Edit", **inputs)


def guider_sampled(g: Graph, loader, positive, negative, encoded, steps: int, seed: int = 1, **guider_inputs) -> str:
    """An IPX2P_Guider (text_cfg 7.5 / image_cfg 1.5 unless given) on SamplerCustomAdvanced (euler, normal),
    sampling into the Conditioning node's latent; returns the node that saves the result."""
    guider = g.add("IPX2P_Guider", model=(loader, 0), positive=(positive, 0), negative=(negative, 0),
                   edit_latent=(encoded, 0), **{"text_cfg": 7.5, "image_cfg": 1.5, **guider_inputs})
    conds = g.add("IPX2P_Conditioning", positive=(positive, 0), negative=(negative, 0), edit_latent=(encoded, 0))
    return save_latent(g, g.add(
        "SamplerCustomAdvanced", noise=(g.add("RandomNoise", noise_seed=seed), 0), guider=(guider, 0),
        sampler=(g.add("KSamplerSelect", sampler_name="euler"), 0),
        sigmas=(g.add("BasicScheduler", model=(loader, 0), scheduler="normal", steps=steps, denoise=1.0), 0),
        latent_image=(conds, 3)))


def tiny_inputs():
    """(model, positive, negative, edit_latent): the small UNet of SD1.5's block structure, random text
    embeddings (the negative a tenth of another draw), a 64 px latent."""
    import torch

    from ipx2p_tools.testkit.tiny import tiny_ip2p_model

    generator = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, 77, 768, generator=generator), {}]]
    negative = [[torch.randn(1, 77, 768, generator=generator) * 0.1, {}]]
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=generator)}
    return tiny_ip2p_model(), positive, negative, latent


def run_ok(host, graph: Graph, **kwargs):
    result = host.run(graph.prompt, **kwargs)
    assert result.success, result.error_text()
    return result


def run_error(host, graph: Graph) -> str:
    result = host.run(graph.prompt)
    assert not result.success
    return result.error_text()


def saved_images(host, result, node_id: str):
    """The float images [B,H,W,3] a SaveImage node wrote (PNG, 8 bits), in batch order."""
    import numpy as np
    import torch
    from PIL import Image

    pictures = []
    for info in result.outputs[node_id]["images"]:
        with Image.open(Path(host.output_dir) / info["subfolder"] / info["filename"]) as image:
            pictures.append(torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0))
    return torch.stack(pictures)


def encode_text(clip, text: str):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def pixels(size, seed=0):
    """A random IMAGE [1,H,W,3] of size (width, height)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.rand((1, size[1], size[0], 3), generator=generator)


def release_models(host=None) -> None:
    """Unload the host's models and drop the executor's cached outputs (which hold models too)."""
    import gc

    import comfy.model_management

    comfy.model_management.unload_all_models()
    if host is not None:
        host.executor.reset()
    gc.collect()


def watch_image_input(model):
    """(a clone of model, list): the clone records the image channels (c_concat) of every UNet call."""
    seen: list = []
    watched = model.clone()

    def wrapper(apply_model, args):
        seen.append(args["c"]["c_concat"].detach().clone())
        return apply_model(args["input"], args["timestep"], **args["c"])

    watched.set_model_unet_function_wrapper(wrapper)
    return watched, seen


def tensor_digests(module) -> dict[str, str]:
    """A digest of every tensor (exact equality without holding two models)."""
    import hashlib

    import torch

    return {name: hashlib.sha1(value.detach().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
            for name, value in module.state_dict().items()}


def edit_both_ways(host, model, clip, vae, instruction="make it snowy", size=64, text_cfg=5.0, image_cfg=1.5,
                   formula="instructpix2pix"):
    """One step through IPX2P_Edit (watching the first UNet call) and through IPX2P_Guider with the
    same noise and sigmas. Returns (edit latent, guider latent, image latent, c_concat seen)."""
    import comfy.sample
    import comfy.samplers
    import torch

    nodes = host.nodes.NODE_CLASS_MAPPINGS
    positive, negative = encode_text(clip, instruction), encode_text(clip, "")
    edit_latent = nodes["IPX2P_EncodeImage"].execute(vae, pixels((size, size), seed=3), "keep", 512).result[0]
    watched, seen = watch_image_input(model)
    options = dict(seed=7, steps=1, text_cfg=text_cfg, image_cfg=image_cfg, sampler_name="euler", scheduler="normal",
                   denoise=1.0, formula=formula)
    edited = nodes["IPX2P_Edit"].execute(watched, positive, negative, edit_latent, **options).result[0]["samples"]
    guider = nodes["IPX2P_Guider"].execute(model, positive, negative, edit_latent, text_cfg, image_cfg,
                                           formula=formula).result[0]
    empty = torch.zeros_like(edit_latent["samples"])
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 1).cpu()
    guided = guider.sample(comfy.sample.prepare_noise(empty, 7), empty, comfy.samplers.sampler_object("euler"), sigmas,
                           seed=7, disable_pbar=True)
    return edited, guided.cpu(), edit_latent["samples"], seen[0]


def assert_image_latent_scaled(concat, image_latent, scale: float) -> None:
    import torch

    # The branches carrying the image see it times the family's scale; the unconditional one zeros.
    items = [concat[k:k + 1] for k in range(concat.shape[0])]
    with_image = [item for item in items if float(item.abs().max()) > 0]
    assert with_image and len(with_image) < len(items)
    for item in with_image:
        torch.testing.assert_close(item, image_latent.to(item) * scale, rtol=1e-6, atol=1e-6)


def file_mappings(path: Path) -> int:
    """How many memory mappings of `path` this process holds (Linux)."""
    target = str(path.resolve())
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if line.rstrip("\n").endswith(" " + target))
