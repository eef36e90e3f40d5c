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


def save_latent(graph: Graph, source: str, slot: int = 0) -> str:
    return graph.add("SaveLatent", samples=(source, slot), filename_prefix="ipx2p_test")


def read_saved_latent(host: Any, result: Any, node_id: str) -> Any:
    from safetensors.torch import load_file

    info = result.outputs[node_id]["latents"][0]
    return load_file(str(host.output_dir / info["subfolder"] / info["filename"]))["latent_tensor"]
