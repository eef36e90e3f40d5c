"""Workflow files: UI format (what the ComfyUI frontend saves) to API format (what /prompt takes).

The conversion follows the frontend's rules: widget values are stored by position, in the order of
the node definition's inputs; an INT widget with control_after_generate (or named seed/noise_seed)
is followed by its control value ("fixed", "randomize", ...); an image-upload combo is followed by
the upload button's value. Links come from the `links` table. Reroutes are followed; notes and
muted nodes are left out. Nodes may carry `properties.ipx2p_role` so tools can find them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


class WorkflowError(ValueError):
    pass


@dataclass
class ApiWorkflow:
    prompt: dict[str, dict[str, Any]]
    roles: dict[str, str]  # role -> node id

    def node(self, role: str) -> dict[str, Any]:
        if role not in self.roles:
            raise WorkflowError(f"the workflow has no node for {role!r} (UI format: a node with properties.ipx2p_role = "
                                f"{role!r}; API format: a node titled {role!r})")
        return self.prompt[self.roles[role]]

    def set(self, role: str, input_name: str, value: Any) -> None:
        inputs = self.node(role)["inputs"]
        if isinstance(inputs.get(input_name), list):
            raise WorkflowError(f"input {input_name!r} of the {role!r} node is linked; it has no value to set")
        inputs[input_name] = value


def load_ui(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if "nodes" not in data or "links" not in data:
        raise WorkflowError(f"{path} is not a UI-format workflow (no 'nodes'/'links'); API files run as they are")
    return data


def is_widget(spec: Any) -> bool:
    kind = spec[0] if isinstance(spec, (list, tuple)) else spec
    options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _options(spec: Any) -> dict[str, Any]:
    if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1]
    return {}


def _ordered_inputs(info: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """(name, spec, optional) in the node definition's order."""
    inputs = info.get("input", {})
    order = info.get("input_order") or {section: list(inputs.get(section, {})) for section in ("required", "optional")}
    result = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            result.append((name, inputs[section][name], section == "optional"))
    return result


def ui_to_api(ui: dict[str, Any], object_info: dict[str, dict[str, Any]]) -> ApiWorkflow:
    """Convert a UI-format workflow with the host's node definitions (GET /object_info)."""
    nodes_by_id = {node["id"]: node for node in ui["nodes"]}
    links = {}
    for link in ui["links"]:
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"])
        else:
            links[link[0]] = (link[1], link[2])

    def resolve(link_id: int) -> list[Any] | None:
        origin_id, origin_slot = links[link_id]
        origin = nodes_by_id[origin_id]
        while origin["type"] == "Reroute":
            upstream = origin.get("inputs", [{}])[0].get("link")
            if upstream is None:
                return None
            origin_id, origin_slot = links[upstream]
            origin = nodes_by_id[origin_id]
        if origin.get("mode", MODE_ALWAYS) == MODE_NEVER:
            return None
        return [str(origin_id), origin_slot]

    missing = sorted({n["type"] for n in ui["nodes"] if n["type"] not in VIRTUAL_NODES and n["type"] not in object_info})
    if missing:
        raise WorkflowError(f"missing node types (install the packs that provide them): {', '.join(missing)}")

    prompt: dict[str, dict[str, Any]] = {}
    roles: dict[str, str] = {}
    for node in ui["nodes"]:
        if node["type"] in VIRTUAL_NODES or node.get("mode", MODE_ALWAYS) == MODE_NEVER:
            continue
        if node.get("mode", MODE_ALWAYS) == MODE_BYPASS:
            raise WorkflowError(f"node {node['id']} ({node['type']}) is bypassed; un-bypass or delete it first")
        info = object_info[node["type"]]
        linked = {entry["name"]: entry["link"] for entry in node.get("inputs", []) if entry.get("link") is not None}
        values = node.get("widgets_values", [])
        api_inputs: dict[str, Any] = {}
        position = 0
        for name, spec, optional in _ordered_inputs(info):
            if is_widget(spec):
                if isinstance(values, dict):
                    value = values.get(name)
                elif position >= len(values) and optional:
                    # Saved before this optional widget existed: the frontend gives it its default.
                    if "default" in _options(spec):
                        api_inputs[name] = _options(spec)["default"]
                    if name in linked:
                        source = resolve(linked[name])
                        if source is not None:
                            api_inputs[name] = source
                    continue
                else:
                    if position >= len(values):
                        raise WorkflowError(
                            f"node {node['id']} ({node['type']}) has {len(values)} widget values; "
                            f"input {name!r} needs more: the workflow was saved with another version of the node"
                        )
                    value = values[position]
                    position += 1
                    options = _options(spec)
                    has_control = options.get("control_after_generate") or (
                        spec[0] == "INT" and name in ("seed", "noise_seed")
                    )
                    if has_control:
                        position += 1
                    if any(options.get(flag) for flag in UPLOAD_FLAGS) and position < len(values):
                        position += 1
                api_inputs[name] = value
            if name in linked:
                source = resolve(linked[name])
                if source is not None:
                    api_inputs[name] = source
        title = node.get("title") or info.get("display_name") or node["type"]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": api_inputs, "_meta": {"title": title}}
        role = (node.get("properties") or {}).get("ipx2p_role")
        if role:
            roles[role] = str(node["id"])
    return ApiWorkflow(prompt, roles)
