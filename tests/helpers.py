"""Shared test helpers (not fixtures)."""
from __future__ import annotations

from pathlib import Path

from ipx2p_tools.layout import REPO_ROOT
from ipx2p_tools.workflow import ApiWorkflow, load_ui, ui_to_api

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
    if "edit" in api.roles:
        api.set("edit", "seed", seed)
        api.set("edit", "steps", steps)
    else:
        api.set("noise", "noise_seed", seed)
        api.set("scheduler", "steps", steps)
    return api


class Graph:
    """An API-format prompt built in code: g.add(class_type, **inputs) returns the node id; pass
    (node_id, slot) tuples as links."""

    def __init__(self) -> None:
        self.prompt: dict[str, dict] = {}

    def add(self, class_type: str, **inputs) -> str:
        node_id = str(len(self.prompt) + 1)
        self.prompt[node_id] = {
            "class_type": class_type,
            "inputs": {k: list(v) if isinstance(v, tuple) else v for k, v in inputs.items()},
        }
        return node_id


def save_latent(graph: Graph, source: str, slot: int = 0) -> str:
    return graph.add("SaveLatent", samples=(source, slot), filename_prefix="ipx2p_test")


def read_saved_latent(host, result, node_id: str):
    from safetensors.torch import load_file

    info = result.outputs[node_id]["latents"][0]
    return load_file(str(host.output_dir / info["subfolder"] / info["filename"]))["latent_tensor"]


def relative_l2(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def write_picture(directory: Path, name: str, size, color=(40, 110, 190)) -> str:
    from PIL import Image, ImageDraw

    width, height = size
    picture = Image.new("RGB", (width, height), color)
    ImageDraw.Draw(picture).ellipse((width // 5, height // 6, width // 2, height * 5 // 6), fill=(240, 200, 50))
    picture.save(Path(directory) / name)
    return name
