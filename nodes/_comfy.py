"""The one place the pack imports ComfyUI's node API (V3 schema), so a switch is one line.

`comfy_api.latest` is marked unstable and has been reshaped; hosts from ComfyUI 0.35 on also ship
frozen versions (comfy_api.v0_0_3, ...). The newest frozen version from v0_0_3 on is used where
the host has one, else `latest` (ComfyUI 0.3.75 and 0.30.0 have only v0_0_2, which predates parts
of the schema the pack uses)."""
from __future__ import annotations

import importlib
import pkgutil
import re

import comfy_api

MIN_VERSION = (0, 0, 3)


def _api_module() -> str:
    versions = []
    for module in pkgutil.iter_modules(comfy_api.__path__):
        match = re.fullmatch(r"v(\d+)_(\d+)_(\d+)", module.name)
        if match and tuple(int(part) for part in match.groups()) >= MIN_VERSION:
            versions.append((tuple(int(part) for part in match.groups()), module.name))
    return f"comfy_api.{max(versions)[1]}" if versions else "comfy_api.latest"


API_MODULE = _api_module()
_api = importlib.import_module(API_MODULE)
ComfyExtension = _api.ComfyExtension
io = _api.io
ui = _api.ui

__all__ = ["API_MODULE", "ComfyExtension", "io", "ui"]
