"""InstructPix2Pix editing nodes for ComfyUI: edit images from plain-language instructions."""
from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
