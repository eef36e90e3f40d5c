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
