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

OFFICIAL_CHECKPOINT = "instruct-pix2pix-00-22000.safetensors"
OFFICIAL_REPO = "timbrooks/instruct-pix2pix"
OFFICIAL_URL = f"https://huggingface.co/{OFFICIAL_REPO}/resolve/main/{OFFICIAL_CHECKPOINT}"


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
        size: tuple[int, int] = (320, 130),
    ) -> dict[str, Any]:
        info = self.info[node_type]
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
        for input_name, (source, slot) in (links or {}).items():
            if input_name not in declared:
                raise KeyError(f"{node_type} has no input {input_name!r}")
            link_id = len(self.links) + 1
            kind = source["outputs"][slot]["type"]
            self.links.append([link_id, source["id"], slot, node_id, len(node["inputs"]), kind])
            source["outputs"][slot]["links"].append(link_id)
            node["inputs"].append({"name": input_name, "type": kind, "link": link_id})
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


def edit_workflow(info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The main job: one image, one instruction, the paper's settings (100 Euler-ancestral steps,
    s_T 7.5, s_I 1.5, long side 512). Built from ComfyUI's core nodes for now."""
    wf = UiWorkflowBuilder(info, "ip2p_edit")
    models = [{"name": OFFICIAL_CHECKPOINT, "url": OFFICIAL_URL, "directory": "checkpoints"}]
    ckpt = wf.add("CheckpointLoaderSimple", [OFFICIAL_CHECKPOINT], (20, 40), role="checkpoint", models=models)
    image = wf.add("LoadImage", ["example.png", "image"], (20, 230), role="image", size=(320, 320))
    resize = wf.add("ImageScale", ["lanczos", 512, 512, "center"], (380, 230), {"image": (image, 0)}, role="resize")
    positive = wf.add("CLIPTextEncode", ["make it snowy"], (380, 0), {"clip": (ckpt, 1)}, role="instruction",
                      title="Instruction")
    negative = wf.add("CLIPTextEncode", [""], (380, 420), {"clip": (ckpt, 1)}, role="negative",
                      title="Negative (leave empty)")
    ip2p = wf.add(
        "InstructPixToPixConditioning", [], (740, 200),
        {"positive": (positive, 0), "negative": (negative, 0), "vae": (ckpt, 2), "pixels": (resize, 0)},
    )
    guider = wf.add(
        "DualCFGGuider", [7.5, 1.5, "regular"], (1080, 0),
        {"model": (ckpt, 0), "cond1": (ip2p, 0), "cond2": (ip2p, 1), "negative": (negative, 0)},
        role="guider",
    )
    noise = wf.add("RandomNoise", [0, "fixed"], (1080, 200), role="noise")
    sampler = wf.add("KSamplerSelect", ["euler_ancestral"], (1080, 330), role="sampler")
    sigmas = wf.add("BasicScheduler", ["normal", 100, 1.0], (1080, 440), {"model": (ckpt, 0)}, role="scheduler")
    sampled = wf.add(
        "SamplerCustomAdvanced", [], (1420, 100),
        {"noise": (noise, 0), "guider": (guider, 0), "sampler": (sampler, 0), "sigmas": (sigmas, 0),
         "latent_image": (ip2p, 2)},
    )
    decoded = wf.add("VAEDecode", [], (1760, 100), {"samples": (sampled, 0), "vae": (ckpt, 2)})
    wf.add("SaveImage", ["ipx2p_edit"], (2000, 100), {"images": (decoded, 0)}, role="save", size=(400, 420))
    return wf.to_json()


WORKFLOWS = {"ip2p_edit.json": edit_workflow}


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
