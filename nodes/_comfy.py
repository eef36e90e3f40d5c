"""The one place the pack imports ComfyUI's node API (V3 schema), so a switch is one line."""
from comfy_api.latest import ComfyExtension, io, ui

__all__ = ["ComfyExtension", "io", "ui"]
