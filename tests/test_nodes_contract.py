"""Contract of the pack's nodes as the real host sees them: ids, inputs, outputs, defaults.

Saved workflows store widget values by position and links by slot index, so any change to the
schema below breaks users' graphs. The golden snapshot makes such a change fail CI; update it
(IPX2P_UPDATE_GOLDEN=1) only together with a "Behaviour changes" entry in the README.
"""
from __future__ import annotations

import json
import os

import pytest

from ipx2p_tools.layout import PACK_DIR_NAME, REPO_ROOT

GOLDEN = REPO_ROOT / "tests" / "golden" / "node_schemas.json"
# Combos whose options depend on the installation (files, host's samplers): only their default is pinned.
DYNAMIC_COMBOS = {"ckpt_name", "sampler_name", "scheduler", "model_path", "clip_vae_from"}
NUMBER_FIELDS = ("default", "min", "max", "step", "round", "control_after_generate")


def pack_node_ids(host) -> list[str]:
    return sorted(
        node_id for node_id, cls in host.nodes.NODE_CLASS_MAPPINGS.items()
        if getattr(cls, "RELATIVE_PYTHON_MODULE", "").endswith(PACK_DIR_NAME)
    )


def input_summary(name: str, spec) -> dict:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    summary: dict = {"name": name}
    if isinstance(kind, list) or kind == "COMBO":
        summary["type"] = "COMBO"
        if name not in DYNAMIC_COMBOS:
            summary["options"] = list(kind) if isinstance(kind, list) else list(options.get("options", []))
    else:
        summary["type"] = kind
    for field in NUMBER_FIELDS:
        if field in options:
            summary[field] = options[field]
    return summary


def schema_summary(info: dict) -> dict:
    inputs = []
    for section in ("required", "optional"):
        for name in info.get("input_order", {}).get(section, []):
            entry = input_summary(name, info["input"][section][name])
            entry["optional"] = section == "optional"
            inputs.append(entry)
    return {
        "display_name": info["display_name"],
        "category": info["category"],
        "inputs": inputs,
        "outputs": [{"type": t, "name": n} for t, n in zip(info["output"], info["output_name"])],
    }


@pytest.mark.floor
def test_schemas_match_the_golden_snapshot(host):
    current = {node_id: schema_summary(host.object_info(node_id)) for node_id in pack_node_ids(host)}
    if os.environ.get("IPX2P_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(current) == sorted(golden), "a node was added or removed: update the golden snapshot and the README"
    for node_id in golden:
        assert current[node_id] == golden[node_id], f"{node_id} changed: saved workflows would break"


@pytest.mark.floor
def test_ids_are_prefixed_unique_and_never_shadow_core(host):
    ids = pack_node_ids(host)
    golden = json.loads(GOLDEN.read_text())
    # The host drops a custom node whose id equals a core one: every golden id must be ours.
    assert ids == sorted(golden)
    assert all(node_id.startswith("IPX2P_") for node_id in ids)


@pytest.mark.floor
def test_every_node_is_documented_and_ids_do_not_collide(host):
    for node_id in pack_node_ids(host):
        info = host.object_info(node_id)
        assert info["description"], node_id
        assert info["category"].split("/")[0] == "instructpix2pix"
        assert info["display_name"].isascii()
        input_ids = set()
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                input_ids.add(name)
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        tooltips = info.get("output_tooltips") or []
        assert len(tooltips) == len(info["output"]) and all(tooltips), f"{node_id} outputs need tooltips"
        # 0.3.75 rejects a node whose input and output ids overlap; compare the V3 ids.
        cls = host.nodes.NODE_CLASS_MAPPINGS[node_id]
        output_ids = {output.id for output in cls.GET_SCHEMA().outputs if output.id}
        assert not input_ids & output_ids, node_id


def test_summary_detects_a_changed_default():
    # The snapshot comparison must be able to fail: a moved default shows up in the summary.
    info = {"display_name": "X", "category": "instructpix2pix", "input_order": {"required": ["text_cfg"]},
            "input": {"required": {"text_cfg": ["FLOAT", {"default": 7.5, "min": 0.0}]}},
            "output": ["GUIDER"], "output_name": ["GUIDER"]}
    changed = json.loads(json.dumps(info))
    changed["input"]["required"]["text_cfg"][1]["default"] = 8.0
    assert schema_summary(info) != schema_summary(changed)


@pytest.mark.floor
def test_the_suffix_tooltip_names_hives_text(host):
    suffix = host.object_info("IPX2P_EncodeInstructions")["input"]["optional"]["suffix"]
    assert suffix[1].get("default") == ""
    assert "image quality is five out of five" in suffix[1].get("tooltip", "")
