"""API-format prompts built in code, and reading back what a SaveLatent node wrote (tests, bench)."""
from __future__ import annotations

from typing import Any


class Graph:
    """An API-format prompt built in code: g.add(class_type, **inputs) returns the node id; pass
    (node_id, slot) tuples as links."""

    def __init__(self) -> None:
        self.prompt: dict[str, dict[str, Any]] = {}

    def add(self, class_type: str, **inputs: Any) -> str:
        node_id = str(len(self.prompt) + 1)
        self.prompt[node_id] = {
            "class_type": class_type,
            "inputs": {k: list(v) if isinstance(v, tuple) else v for k, v in inputs.items()},
        }
        return node_id


def rect_mask(g: Graph, width: int, height: int, x: int, y: int, w: int, h: int, value: float = 1.0) -> str:
    """A MASK of width x height that is `value` on the w x h rectangle at (x, y), 0 elsewhere (core nodes)."""
    canvas = g.add("SolidMask", value=0.0, width=width, height=height)
    patch = g.add("SolidMask", value=value, width=w, height=h)
    return g.add("MaskComposite", destination=(canvas, 0), source=(patch, 0), x=x, y=y, operation="add")


def middle_quarter(g: Graph, size: int) -> tuple[str, int]:
    """The benchmarks' region: a size x size MASK that is 1 on its middle quarter (a link)."""
    return rect_mask(g, size, size, size // 4, size // 4, size // 2, size // 2), 0


def guidance_inputs(g: Graph, guidance: str, size: int, text_cfg: float, image_cfg: float) -> dict[str, Any]:
    """IPX2P_Edit's extra inputs for the benchmarks' guidance rows (bench_edit.py and gpu.py measure the
    same graphs): "map" a guidance_map over the middle quarter with 3.0 / 2.0 outside, "schedule" a
    linear schedule from text_cfg / image_cfg to 5.0 / 1.8, "localize" localize auto."""
    if guidance == "map":
        return {"guidance_map": middle_quarter(g, size), "text_cfg_outside": 3.0, "image_cfg_outside": 2.0}
    if guidance == "schedule":
        schedule = g.add("IPX2P_GuidanceSchedule", text_cfg_start=text_cfg, text_cfg_end=5.0, image_cfg_start=image_cfg,
                         image_cfg_end=1.8, curve="linear")
        return {"schedule": (schedule, 0)}
    if guidance == "localize":
        return {"localize": "auto"}
    raise ValueError(f"unknown guidance row {guidance!r}: map, schedule or localize")


def save_latent(graph: Graph, source: str, slot: int = 0) -> str:
    return graph.add("SaveLatent", samples=(source, slot), filename_prefix="ipx2p_test")


def read_saved_latent(host: Any, result: Any, node_id: str) -> Any:
    from safetensors.torch import load_file

    info = result.outputs[node_id]["latents"][0]
    return load_file(str(host.output_dir / info["subfolder"] / info["filename"]))["latent_tensor"]
