"""Writes the shipped workflows (workflows/*.json) in the frontend's UI format.

`python -m ipx2p_tools.build_workflows` boots the selected host (for its node definitions, so
slot indices and widget order come from the real nodes) and rewrites the files. The files are
committed; tests load them as a user would.
"""
from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ipx2p_tools.layout import REPO_ROOT, selected_host
from ipx2p_tools.workflow import is_widget


def _socket_type(spec: Any) -> str:
    kind = spec[0] if isinstance(spec, (list, tuple)) else spec
    return "COMBO" if isinstance(kind, list) else str(kind)

OFFICIAL_CHECKPOINT = "instruct-pix2pix-00-22000.safetensors"
OFFICIAL_REPO = "timbrooks/instruct-pix2pix"
OFFICIAL_URL = f"https://huggingface.co/{OFFICIAL_REPO}/resolve/main/{OFFICIAL_CHECKPOINT}"


# Nodes with no widgets, drawn narrow so they do not cover their neighbours.
COMPACT_SIZES = {"VAEDecode": (220, 50), "MaskToImage": (220, 30), "CLIPMergeAdd": (320, 50)}


class UiWorkflowBuilder:
    def __init__(self, object_info: dict[str, dict[str, Any]], name: str) -> None:
        self.info = object_info
        self.name = name
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []

    def add(
        self,
        node_type: str,
        widgets: list[Any],
        pos: tuple[int, int],
        links: dict[str, tuple[dict[str, Any], int]] | None = None,
        role: str | None = None,
        title: str | None = None,
        models: list[dict[str, str]] | None = None,
        size: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        info = self.info[node_type]
        size = size or COMPACT_SIZES.get(node_type, (320, 130))
        node_id = len(self.nodes) + 1
        properties: dict[str, Any] = {"Node name for S&R": node_type}
        if role:
            properties["ipx2p_role"] = role
        if models:
            properties["models"] = models
        node: dict[str, Any] = {
            "id": node_id,
            "type": node_type,
            "pos": list(pos),
            "size": list(size),
            "flags": {},
            "order": len(self.nodes),
            "mode": 0,
            "inputs": [],
            "outputs": [
                {"name": name, "type": kind, "links": [], "slot_index": slot}
                for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"]))
            ],
            "properties": properties,
            "widgets_values": widgets,
        }
        if title:
            node["title"] = title
        declared = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = info.get("input_order") or {section: list(info["input"].get(section, {})) for section in ("required", "optional")}
        # Every socket (non-widget) input gets a slot, linked or not, in the definition's order:
        # the frontend numbers input slots so, and links point at slot numbers.
        for name in order.get("required", []) + order.get("optional", []):
            if not is_widget(declared[name]):
                node["inputs"].append({"name": name, "type": _socket_type(declared[name]), "link": None})
        for input_name, (source, slot) in (links or {}).items():
            if input_name not in declared:
                raise KeyError(f"{node_type} has no input {input_name!r}")
            target = next(index for index, entry in enumerate(node["inputs"]) if entry["name"] == input_name)
            link_id = len(self.links) + 1
            kind = source["outputs"][slot]["type"]
            self.links.append([link_id, source["id"], slot, node_id, target, kind])
            source["outputs"][slot]["links"].append(link_id)
            node["inputs"][target]["link"] = link_id
        self.nodes.append(node)
        return node

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"ipx2p/{self.name}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
            "version": 0.4,
        }


CHECKPOINT_MODELS = [{"name": OFFICIAL_CHECKPOINT, "url": OFFICIAL_URL, "directory": "checkpoints"}]


def _inputs(wf: UiWorkflowBuilder) -> tuple[dict[str, Any], ...]:
    """Loader, picture, instruction, empty negative and the encoded image: every workflow starts so."""
    ckpt = wf.add("IPX2P_CheckpointLoader", [OFFICIAL_CHECKPOINT, "auto", "default"], (20, 40), role="checkpoint",
                  models=CHECKPOINT_MODELS)
    image = wf.add("LoadImage", ["example.png", "image"], (20, 260), role="image", size=(320, 320))
    positive = wf.add("CLIPTextEncode", ["make it snowy"], (380, 0), {"clip": (ckpt, 1)}, role="instruction",
                      title="Instruction")
    negative = wf.add("CLIPTextEncode", [""], (380, 220), {"clip": (ckpt, 1)}, role="negative",
                      title="Negative (leave empty)")
    encoded = wf.add("IPX2P_EncodeImage", ["original", 512], (380, 440), {"vae": (ckpt, 2), "image": (image, 0)},
                     role="encode")
    return ckpt, positive, negative, encoded


EDIT_WIDGETS = [0, "fixed", 100, 7.5, 1.5, "euler_ancestral", "normal", 1.0, "per item", "instructpix2pix"]


def _edit(wf: UiWorkflowBuilder, model, positive, negative, edit_latent, pos: tuple[int, int], role: str = "edit",
          mask=None, widgets: list[Any] | None = None, title: str | None = None) -> dict[str, Any]:
    links = {"model": model, "positive": positive, "negative": negative, "edit_latent": edit_latent}
    if mask is not None:
        links["mask"] = mask
    return wf.add("IPX2P_Edit", widgets or list(EDIT_WIDGETS), pos, links, role=role, size=(320, 320), title=title)


def _edit_tail(wf: UiWorkflowBuilder, model, positive, negative, encoded, ckpt, x: int) -> None:
    edited = _edit(wf, model, positive, negative, (encoded, 0), (x, 100))
    decoded = wf.add("VAEDecode", [], (x + 360, 100), {"samples": (edited, 0), "vae": (ckpt, 2)})
    wf.add("SaveImage", ["ipx2p_edit"], (x + 600, 100), {"images": (decoded, 0)}, role="save", size=(400, 420))


def edit_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The main job in one node: the paper's settings (100 Euler-ancestral steps, s_T 7.5, s_I 1.5,
    long side 512 with sides in multiples of 64)."""
    wf = UiWorkflowBuilder(info, "ip2p_edit")
    ckpt, positive, negative, encoded = _inputs(wf)
    _edit_tail(wf, (ckpt, 0), (positive, 0), (negative, 0), encoded, ckpt, 760)
    return wf.to_json()


def custom_sampler_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The same edit with the guider on SamplerCustomAdvanced, for custom samplers and schedules."""
    wf = UiWorkflowBuilder(info, "ip2p_custom_sampler")
    ckpt, positive, negative, encoded = _inputs(wf)
    conditioning = wf.add("IPX2P_Conditioning", [], (760, 420),
                          {"positive": (positive, 0), "negative": (negative, 0), "edit_latent": (encoded, 0)})
    guider = wf.add(
        "IPX2P_Guider", [7.5, 1.5, "instructpix2pix"], (760, 0),
        {"model": (ckpt, 0), "positive": (positive, 0), "negative": (negative, 0), "edit_latent": (encoded, 0)},
        role="guider",
    )
    noise = wf.add("RandomNoise", [0, "fixed"], (1100, 0), role="noise")
    sampler = wf.add("KSamplerSelect", ["euler_ancestral"], (1100, 130), role="sampler")
    sigmas = wf.add("BasicScheduler", ["normal", 100, 1.0], (1100, 240), {"model": (ckpt, 0)}, role="scheduler")
    sampled = wf.add(
        "SamplerCustomAdvanced", [], (1440, 100),
        {"noise": (noise, 0), "guider": (guider, 0), "sampler": (sampler, 0), "sigmas": (sigmas, 0),
         "latent_image": (conditioning, 3)},
    )
    decoded = wf.add("VAEDecode", [], (1780, 100), {"samples": (sampled, 0), "vae": (ckpt, 2)})
    wf.add("SaveImage", ["ipx2p_edit"], (2020, 100), {"images": (decoded, 0)}, role="save", size=(400, 420))
    return wf.to_json()


CONTROLNET = "control_v11p_sd15_canny.pth"
CONTROLNET_URL = f"https://huggingface.co/lllyasviel/ControlNet-v1-1/resolve/main/{CONTROLNET}"

# IPAdapter_plus (github.com/cubiq/ComfyUI_IPAdapter_plus) is not installed here; these are its two
# nodes' definitions as its current release declares them, so the workflow can be written.
IPADAPTER_NODES = {
    "IPAdapterUnifiedLoader": {
        "input": {"required": {"model": ["MODEL"], "preset": [["LIGHT - SD1.5 only (low strength)", "STANDARD (medium strength)",
                                                                  "VIT-G (medium strength)", "PLUS (high strength)",
                                                                  "PLUS FACE (portraits)", "FULL FACE - SD1.5 only (portraits stronger)"]]},
                  "optional": {"ipadapter": ["IPADAPTER"]}},
        "input_order": {"required": ["model", "preset"], "optional": ["ipadapter"]},
        "output": ["MODEL", "IPADAPTER"], "output_name": ["model", "ipadapter"],
    },
    "IPAdapter": {
        "input": {"required": {"model": ["MODEL"], "ipadapter": ["IPADAPTER"], "image": ["IMAGE"],
                               "weight": ["FLOAT", {"default": 1.0}], "start_at": ["FLOAT", {"default": 0.0}],
                               "end_at": ["FLOAT", {"default": 1.0}],
                               "weight_type": [["standard", "prompt is more important", "style transfer"]]},
                  "optional": {"attn_mask": ["MASK"]}},
        "input_order": {"required": ["model", "ipadapter", "image", "weight", "start_at", "end_at", "weight_type"],
                        "optional": ["attn_mask"]},
        "output": ["MODEL"], "output_name": ["MODEL"],
    },
}


def controlnet_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The edit guided by a ControlNet on the edit image's edges (core ControlNetApplyAdvanced on
    positive and negative, so the control reaches every guidance branch at its set strength)."""
    wf = UiWorkflowBuilder(info, "ip2p_controlnet")
    ckpt, positive, negative, encoded = _inputs(wf)
    edges = wf.add("Canny", [0.4, 0.8], (760, 520), {"image": (encoded, 1)}, role="hint")
    control = wf.add("ControlNetLoader", [CONTROLNET], (760, 700), role="controlnet",
                     models=[{"name": CONTROLNET, "url": CONTROLNET_URL, "directory": "controlnet"}])
    applied = wf.add(
        "ControlNetApplyAdvanced", [0.6, 0.0, 1.0], (1100, 500),
        {"positive": (positive, 0), "negative": (negative, 0), "control_net": (control, 0), "image": (edges, 0),
         "vae": (ckpt, 2)},
        role="apply_controlnet",
    )
    _edit_tail(wf, (ckpt, 0), (applied, 0), (applied, 1), encoded, ckpt, 1440)
    return wf.to_json()


def lora_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The edit with an SD1.5 LoRA on the model and the text encoder (its first-convolution weights,
    made for 4 input channels, are skipped by ComfyUI with a logged error; the rest applies)."""
    wf = UiWorkflowBuilder(info, "ip2p_lora")
    ckpt = wf.add("IPX2P_CheckpointLoader", [OFFICIAL_CHECKPOINT, "auto", "default"], (20, 40), role="checkpoint",
                  models=CHECKPOINT_MODELS)
    lora = wf.add("LoraLoader", ["your_sd15_lora.safetensors", 0.8, 0.8], (20, 240),
                  {"model": (ckpt, 0), "clip": (ckpt, 1)}, role="lora")
    image = wf.add("LoadImage", ["example.png", "image"], (20, 460), role="image", size=(320, 320))
    positive = wf.add("CLIPTextEncode", ["make it snowy"], (380, 0), {"clip": (lora, 1)}, role="instruction",
                      title="Instruction")
    negative = wf.add("CLIPTextEncode", [""], (380, 220), {"clip": (lora, 1)}, role="negative",
                      title="Negative (leave empty)")
    encoded = wf.add("IPX2P_EncodeImage", ["original", 512], (380, 440), {"vae": (ckpt, 2), "image": (image, 0)},
                     role="encode")
    _edit_tail(wf, (lora, 0), (positive, 0), (negative, 0), encoded, ckpt, 760)
    return wf.to_json()


def ipadapter_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The edit steered by a reference picture through IPAdapter_plus (an external pack). The
    pack's guider hands IP-Adapter the text+image branch as cond, so the reference acts like part
    of the instruction and scales with text_cfg."""
    wf = UiWorkflowBuilder({**info, **IPADAPTER_NODES}, "ip2p_ipadapter")
    ckpt, positive, negative, encoded = _inputs(wf)
    loader = wf.add("IPAdapterUnifiedLoader", ["PLUS (high strength)"], (760, 440), {"model": (ckpt, 0)},
                    role="ipadapter_loader")
    reference = wf.add("LoadImage", ["reference.png", "image"], (760, 600), role="reference", size=(320, 320))
    adapted = wf.add("IPAdapter", [0.8, 0.0, 1.0, "standard"], (1100, 440),
                     {"model": (loader, 0), "ipadapter": (loader, 1), "image": (reference, 0)}, role="ipadapter")
    _edit_tail(wf, (adapted, 0), (positive, 0), (negative, 0), encoded, ckpt, 1440)
    return wf.to_json()


def masked_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Edit only the painted region: Load Image's mask (paint it in the mask editor), grown a little
    with core GrowMask, on the Edit node's mask input."""
    wf = UiWorkflowBuilder(info, "ip2p_masked")
    ckpt, positive, negative, encoded = _inputs(wf)
    image = next(node for node in wf.nodes if node["type"] == "LoadImage")
    grown = wf.add("GrowMask", [8, True], (380, 640), {"mask": (image, 1)}, role="grow_mask")
    edited = _edit(wf, (ckpt, 0), (positive, 0), (negative, 0), (encoded, 0), (760, 100), mask=(grown, 0))
    decoded = wf.add("VAEDecode", [], (1120, 100), {"samples": (edited, 0), "vae": (ckpt, 2)})
    wf.add("SaveImage", ["ipx2p_masked"], (1360, 100), {"images": (decoded, 0)}, role="save", size=(400, 420))
    return wf.to_json()


def paste_back_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The edit pasted back into the full-resolution original where it changed (the mask is found
    by comparing with the original's VAE round trip); the found mask is previewed."""
    wf = UiWorkflowBuilder(info, "ip2p_paste_back")
    ckpt, positive, negative, encoded = _inputs(wf)
    image = next(node for node in wf.nodes if node["type"] == "LoadImage")
    edited = _edit(wf, (ckpt, 0), (positive, 0), (negative, 0), (encoded, 0), (760, 100))
    decoded = wf.add("VAEDecode", [], (1120, 100), {"samples": (edited, 0), "vae": (ckpt, 2)})
    pasted = wf.add("IPX2P_PasteBack", [0.06, 0, 16, False, "original", 512], (1120, 300),
                    {"original": (image, 0), "edited": (decoded, 0), "vae": (ckpt, 2)}, role="paste", size=(320, 300))
    wf.add("SaveImage", ["ipx2p_paste_back"], (1480, 100), {"images": (pasted, 0)}, role="save", size=(400, 420))
    shown = wf.add("MaskToImage", [], (1480, 560), {"mask": (pasted, 1)})
    wf.add("PreviewImage", [], (1840, 560), {"images": (shown, 0)}, role="preview_mask", size=(300, 300))
    return wf.to_json()


def crop_stitch_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A small detail of a large photo edited at the model's working size: Crop For Edit around the
    painted mask, encode and edit the crop (inside its mask), Stitch Edit back into the photo."""
    wf = UiWorkflowBuilder(info, "ip2p_crop_stitch")
    ckpt = wf.add("IPX2P_CheckpointLoader", [OFFICIAL_CHECKPOINT, "auto", "default"], (20, 40), role="checkpoint",
                  models=CHECKPOINT_MODELS)
    image = wf.add("LoadImage", ["example.png", "image"], (20, 260), role="image", size=(320, 320))
    positive = wf.add("CLIPTextEncode", ["make him smile"], (380, 0), {"clip": (ckpt, 1)}, role="instruction",
                      title="Instruction")
    negative = wf.add("CLIPTextEncode", [""], (380, 220), {"clip": (ckpt, 1)}, role="negative",
                      title="Negative (leave empty)")
    crop = wf.add("IPX2P_CropForEdit", [32, 512], (380, 440), {"image": (image, 0), "mask": (image, 1)}, role="crop")
    encoded = wf.add("IPX2P_EncodeImage", ["original", 512], (760, 480), {"vae": (ckpt, 2), "image": (crop, 0)},
                     role="encode")
    edited = _edit(wf, (ckpt, 0), (positive, 0), (negative, 0), (encoded, 0), (760, 40), mask=(crop, 1))
    decoded = wf.add("VAEDecode", [], (1120, 100), {"samples": (edited, 0), "vae": (ckpt, 2)})
    stitched = wf.add("IPX2P_StitchEdit", [16, 0, "mask"], (1120, 300), {"stitch": (crop, 2), "edited": (decoded, 0)},
                      role="stitch")
    wf.add("SaveImage", ["ipx2p_crop_stitch"], (1480, 100), {"images": (stitched, 0)}, role="save", size=(400, 420))
    return wf.to_json()


def sweep_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Nine edits at once on a labelled grid: text_cfg 5, 7.5, 10 down, image_cfg 1.2, 1.5, 1.8 across."""
    wf = UiWorkflowBuilder(info, "ip2p_sweep")
    ckpt, positive, negative, encoded = _inputs(wf)
    sweep = wf.add("IPX2P_GuidanceSweep",
                   [0, "fixed", 20, "5, 7.5, 10", "1.2, 1.5, 1.8", "euler_ancestral", "normal", "grid", 6, 1.0, 0,
                    "instructpix2pix"],
                   (760, 100), {"model": (ckpt, 0), "positive": (positive, 0), "negative": (negative, 0),
                                "edit_latent": (encoded, 0), "vae": (ckpt, 2)}, role="sweep", size=(340, 400))
    wf.add("SaveImage", ["ipx2p_sweep_grid"], (1140, 100), {"images": (sweep, 2)}, role="save", size=(500, 520))
    wf.add("PreviewImage", [], (1680, 100), {"images": (sweep, 1)}, role="preview_cells", size=(300, 300))
    return wf.to_json()


def batch_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Three instructions over one picture in one edit, each with the same noise (consistent variants)."""
    wf = UiWorkflowBuilder(info, "ip2p_batch")
    ckpt = wf.add("IPX2P_CheckpointLoader", [OFFICIAL_CHECKPOINT, "auto", "default"], (20, 40), role="checkpoint",
                  models=CHECKPOINT_MODELS)
    image = wf.add("LoadImage", ["example.png", "image"], (20, 260), role="image", size=(320, 320))
    instructions = wf.add("IPX2P_EncodeInstructions",
                          ["make it snowy\nturn it into a watercolor painting\nmake it look like night", ""], (380, 0),
                          {"clip": (ckpt, 1)}, role="instructions", size=(340, 200))
    encoded = wf.add("IPX2P_EncodeImage", ["original", 512], (380, 440), {"vae": (ckpt, 2), "image": (image, 0)},
                     role="encode")
    widgets = list(EDIT_WIDGETS)
    widgets[EDIT_WIDGETS.index("per item")] = "same for all"
    edited = _edit(wf, (ckpt, 0), (instructions, 0), (instructions, 1), (encoded, 0), (760, 100), widgets=widgets)
    decoded = wf.add("VAEDecode", [], (1120, 100), {"samples": (edited, 0), "vae": (ckpt, 2)})
    wf.add("SaveImage", ["ipx2p_batch"], (1360, 100), {"images": (decoded, 0)}, role="save", size=(400, 420))
    return wf.to_json()


def iterative_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Two edits in a row: the first edit's LATENT is the second's edit_latent (no VAE round trip)."""
    wf = UiWorkflowBuilder(info, "ip2p_iterative")
    ckpt, positive, negative, encoded = _inputs(wf)
    second_instruction = wf.add("CLIPTextEncode", ["now make it night"], (760, 460), {"clip": (ckpt, 1)},
                                role="instruction2", title="Second instruction")
    first = _edit(wf, (ckpt, 0), (positive, 0), (negative, 0), (encoded, 0), (760, 100), title="First edit")
    second = _edit(wf, (ckpt, 0), (second_instruction, 0), (negative, 0), (first, 0), (1120, 100), role="edit2",
                   title="Second edit")
    for index, (latent, x) in enumerate(((first, 1480), (second, 1480))):
        decoded = wf.add("VAEDecode", [], (x, 100 + 480 * index), {"samples": (latent, 0), "vae": (ckpt, 2)})
        wf.add("SaveImage", [f"ipx2p_iterative_{index + 1}"], (x + 240, 100 + 480 * index), {"images": (decoded, 0)},
               role="save" if index else "save_first", size=(400, 420))
    return wf.to_json()


# The Edit node's widgets after `formula`: fast, text_cfg_outside, image_cfg_outside, localize,
# localize_until, localize_threshold (their defaults).
EDIT_EXTRA_WIDGETS = [False, 3.0, 2.0, "off", 0.4, 0.4]


def guidance_map_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Guidance painted over the picture: Load Image's mask (paint where the instruction should act
    fully) on the Edit node's guidance_map, softened with core GrowMask; elsewhere the edit runs at
    text_cfg_outside 3 / image_cfg_outside 2 (closer to the photo) instead of 7.5 / 1.5."""
    wf = UiWorkflowBuilder(info, "ip2p_guidance_map")
    ckpt, positive, negative, encoded = _inputs(wf)
    image = next(node for node in wf.nodes if node["type"] == "LoadImage")
    grown = wf.add("GrowMask", [16, True], (380, 640), {"mask": (image, 1)}, role="grow_mask")
    edited = wf.add("IPX2P_Edit", EDIT_WIDGETS + EDIT_EXTRA_WIDGETS, (760, 100),
                    {"model": (ckpt, 0), "positive": (positive, 0), "negative": (negative, 0), "edit_latent": (encoded, 0),
                     "guidance_map": (grown, 0)}, role="edit", size=(320, 420))
    decoded = wf.add("VAEDecode", [], (1120, 100), {"samples": (edited, 0), "vae": (ckpt, 2)})
    wf.add("SaveImage", ["ipx2p_guidance_map"], (1360, 100), {"images": (decoded, 0)}, role="save", size=(400, 420))
    return wf.to_json()


def schedule_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Scales that change over the steps: text_cfg 7.5 -> 5 and image_cfg 1.5 -> 1.8 (follow the
    instruction for the layout early, stay close to the photo for the detail late)."""
    wf = UiWorkflowBuilder(info, "ip2p_schedule")
    ckpt, positive, negative, encoded = _inputs(wf)
    schedule = wf.add("IPX2P_GuidanceSchedule", [7.5, 5.0, 1.5, 1.8, "linear", ""], (760, 480), role="schedule",
                      size=(320, 260))
    edited = wf.add("IPX2P_Edit", EDIT_WIDGETS + EDIT_EXTRA_WIDGETS, (760, 0),
                    {"model": (ckpt, 0), "positive": (positive, 0), "negative": (negative, 0), "edit_latent": (encoded, 0),
                     "schedule": (schedule, 0)}, role="edit", size=(320, 420))
    decoded = wf.add("VAEDecode", [], (1120, 100), {"samples": (edited, 0), "vae": (ckpt, 2)})
    wf.add("SaveImage", ["ipx2p_schedule"], (1360, 100), {"images": (decoded, 0)}, role="save", size=(400, 420))
    return wf.to_json()


def localize_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An edit that finds its own region (localize auto), pasted back into the full-resolution
    original through the region it used (Edit's `region` output on Paste Back's mask); the region
    is previewed."""
    wf = UiWorkflowBuilder(info, "ip2p_localize")
    ckpt, positive, negative, encoded = _inputs(wf)
    image = next(node for node in wf.nodes if node["type"] == "LoadImage")
    widgets = EDIT_WIDGETS + EDIT_EXTRA_WIDGETS
    widgets[widgets.index("off")] = "auto"
    edited = wf.add("IPX2P_Edit", widgets, (760, 100),
                    {"model": (ckpt, 0), "positive": (positive, 0), "negative": (negative, 0), "edit_latent": (encoded, 0)},
                    role="edit", size=(320, 420))
    decoded = wf.add("VAEDecode", [], (1120, 100), {"samples": (edited, 0), "vae": (ckpt, 2)})
    pasted = wf.add("IPX2P_PasteBack", [0.06, 0, 16, False, "original", 512], (1120, 300),
                    {"original": (image, 0), "edited": (decoded, 0), "mask": (edited, 1)}, role="paste", size=(320, 300))
    wf.add("SaveImage", ["ipx2p_localize"], (1480, 100), {"images": (pasted, 0)}, role="save", size=(400, 420))
    shown = wf.add("MaskToImage", [], (1480, 560), {"mask": (edited, 1)})
    wf.add("PreviewImage", [], (1840, 560), {"images": (shown, 0)}, role="preview_region", size=(300, 300))
    return wf.to_json()


COSXL_CHECKPOINT = "cosxl_edit.safetensors"
COSXL_URL = "https://huggingface.co/stabilityai/cosxl/resolve/main/cosxl_edit.safetensors"
SD15_BASE = "v1-5-pruned-emaonly.safetensors"
SD15_BASE_URL = "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors"


def _family_edit(wf: UiWorkflowBuilder, loader: dict[str, Any], instruction: str, encode: list[Any], edit: list[Any],
                 prefix: str) -> None:
    """Picture, instruction, empty negative, Encode, Edit, VAE Decode, Save Image after a loader."""
    image = wf.add("LoadImage", ["example.png", "image"], (20, 300), role="image", size=(320, 320))
    positive = wf.add("CLIPTextEncode", [instruction], (400, 0), {"clip": (loader, 1)}, role="instruction",
                      title="Instruction")
    negative = wf.add("CLIPTextEncode", [""], (400, 220), {"clip": (loader, 1)}, role="negative",
                      title="Negative (leave empty)")
    encoded = wf.add("IPX2P_EncodeImage", encode, (400, 440), {"vae": (loader, 2), "image": (image, 0)}, role="encode")
    edited = _edit(wf, (loader, 0), (positive, 0), (negative, 0), (encoded, 0), (780, 100), widgets=edit)
    decoded = wf.add("VAEDecode", [], (1140, 100), {"samples": (edited, 0), "vae": (loader, 2)})
    wf.add("SaveImage", [prefix], (1380, 100), {"images": (decoded, 0)}, role="save", size=(400, 420))


def cosxl_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """CosXL Edit with its recommended settings (text 5.0, image 1.5, 20 Euler steps, normal), at
    its native resolution (long side 1024); the loader detects the EDM v-prediction."""
    wf = UiWorkflowBuilder(info, "cosxl_edit")
    loader = wf.add("IPX2P_CheckpointLoader", [COSXL_CHECKPOINT, "auto", "default"], (20, 40), role="checkpoint",
                    models=[{"name": COSXL_CHECKPOINT, "url": COSXL_URL, "directory": "checkpoints"}])
    _family_edit(wf, loader, "make it a snowy winter evening", ["long_side", 1024],
                 [0, "fixed", 20, 5.0, 1.5, "euler", "normal", 1.0, "per item", "instructpix2pix"], "cosxl_edit")
    return wf.to_json()


def sdxl_ip2p_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """diffusers/sdxl-instructpix2pix-768 from its diffusers folder (put it in models/diffusers),
    with the model card's settings (text 3.0, image 1.5, 30 steps) at 768 px."""
    wf = UiWorkflowBuilder(info, "sdxl_ip2p")
    loader = wf.add("IPX2P_DiffusersLoader", ["diffusers/sdxl-instructpix2pix-768", "(from the folder)", "default"],
                    (20, 40), role="checkpoint", size=(340, 130))
    _family_edit(wf, loader, "make it a snowy winter evening", ["original", 768],
                 [0, "fixed", 30, 3.0, 1.5, "euler", "normal", 1.0, "per item", "instructpix2pix"], "sdxl_ip2p")
    return wf.to_json()


def make_editable_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An SD1.5 fine-tune made editable: UNet through Make Any SD1.5 Model Editable, text encoder
    through core CLIPMergeSubtract and CLIPMergeAdd (ip2p + 1.0 x (finetune - base)), saved with
    core Save Checkpoint (reload it with Load InstructPix2Pix Checkpoint), and one edit with it."""
    wf = UiWorkflowBuilder(info, "make_editable")
    ip2p = wf.add("IPX2P_CheckpointLoader", [OFFICIAL_CHECKPOINT, "auto", "default"], (20, 40), role="checkpoint",
                  models=CHECKPOINT_MODELS)
    finetune = wf.add("CheckpointLoaderSimple", ["your_sd15_finetune.safetensors"], (20, 240), role="finetune",
                      title="Fine-tune (SD1.5)")
    base = wf.add("CheckpointLoaderSimple", [SD15_BASE], (20, 420), role="base", title="Its base (SD1.5)",
                  models=[{"name": SD15_BASE, "url": SD15_BASE_URL, "directory": "checkpoints"}])
    merged = wf.add("IPX2P_MakeEditable", [1.0], (400, 40),
                    {"ip2p_model": (ip2p, 0), "finetune_model": (finetune, 0), "base_model": (base, 0)}, role="merge")
    difference = wf.add("CLIPMergeSubtract", [1.0], (400, 240), {"clip1": (finetune, 1), "clip2": (base, 1)},
                        role="clip_subtract")
    clip = wf.add("CLIPMergeAdd", [], (400, 420), {"clip1": (ip2p, 1), "clip2": (difference, 0)}, role="clip_add")
    wf.add("CheckpointSave", ["checkpoints/ipx2p_editable"], (760, 40),
           {"model": (merged, 0), "clip": (clip, 0), "vae": (ip2p, 2)}, role="save_checkpoint")
    image = wf.add("LoadImage", ["example.png", "image"], (20, 620), role="image", size=(320, 320))
    positive = wf.add("CLIPTextEncode", ["make it snowy"], (760, 220), {"clip": (clip, 0)}, role="instruction",
                      title="Instruction")
    negative = wf.add("CLIPTextEncode", [""], (760, 440), {"clip": (clip, 0)}, role="negative",
                      title="Negative (leave empty)")
    encoded = wf.add("IPX2P_EncodeImage", ["original", 512], (400, 620), {"vae": (ip2p, 2), "image": (image, 0)},
                     role="encode")
    edited = _edit(wf, (merged, 0), (positive, 0), (negative, 0), (encoded, 0), (1120, 100))
    decoded = wf.add("VAEDecode", [], (1480, 100), {"samples": (edited, 0), "vae": (ip2p, 2)})
    wf.add("SaveImage", ["ipx2p_editable"], (1720, 100), {"images": (decoded, 0)}, role="save", size=(400, 420))
    return wf.to_json()


WORKFLOWS = {
    "ip2p_edit.json": edit_workflow,
    "ip2p_custom_sampler.json": custom_sampler_workflow,
    "ip2p_controlnet.json": controlnet_workflow,
    "ip2p_lora.json": lora_workflow,
    "ip2p_ipadapter.json": ipadapter_workflow,
    "ip2p_masked.json": masked_workflow,
    "ip2p_paste_back.json": paste_back_workflow,
    "ip2p_crop_stitch.json": crop_stitch_workflow,
    "ip2p_sweep.json": sweep_workflow,
    "ip2p_batch.json": batch_workflow,
    "ip2p_iterative.json": iterative_workflow,
    "ip2p_guidance_map.json": guidance_map_workflow,
    "ip2p_schedule.json": schedule_workflow,
    "ip2p_localize.json": localize_workflow,
    "cosxl_edit.json": cosxl_workflow,
    "sdxl_ip2p.json": sdxl_ip2p_workflow,
    "make_editable.json": make_editable_workflow,
}


def main() -> None:
    from ipx2p_tools.host import InProcessHost

    _, tree = selected_host()
    with tempfile.TemporaryDirectory() as tmp:
        host = InProcessHost(tree, input_dir=Path(tmp) / "in", output_dir=Path(tmp) / "out", temp_dir=Path(tmp) / "t")
        info = host.boot().all_object_info()
        for filename, build in WORKFLOWS.items():
            path = REPO_ROOT / "workflows" / filename
            path.write_text(json.dumps(build(info), indent=2) + "\n")
            print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
