"""Image sizing rules for InstructPix2Pix editing."""
from __future__ import annotations

import math


def original_edit_size(width: int, height: int, resolution: int = 512) -> tuple[int, int]:
    """The size the original edit script (instruct-pix2pix `edit_cli.py`) resizes an input to.

    The long side is scaled to `resolution`, the short side by the same factor rounded *up* to a
    multiple of 64 (which nudges the factor), then both sides are floored to multiples of 64.
    The script then centre-fits the image to that size with Lanczos (PIL ImageOps.fit).
    Returns (width, height).
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if resolution < 64:
        raise ValueError(f"resolution must be at least 64, got {resolution}")
    short = min(width, height)
    factor = resolution / max(width, height)
    factor = math.ceil(short * factor / 64) * 64 / short
    new_width = int((width * factor) // 64) * 64
    new_height = int((height * factor) // 64) * 64
    return max(new_width, 64), max(new_height, 64)


def keep_edit_size(width: int, height: int, multiple: int = 8) -> tuple[int, int]:
    """Largest size <= the input whose sides are multiples of `multiple` (one latent pixel is 8 px)."""
    new_width, new_height = (width // multiple) * multiple, (height // multiple) * multiple
    if new_width < multiple or new_height < multiple:
        raise ValueError(f"image is {width}x{height} px; it must be at least {multiple}x{multiple} px")
    return new_width, new_height


def long_side_edit_size(width: int, height: int, resolution: int = 512, multiple: int = 8) -> tuple[int, int]:
    """Long side to `resolution`, short side in proportion; both rounded to multiples of `multiple`.

    Unlike the original rule this never passes `resolution` and keeps the aspect ratio within
    one latent pixel.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if resolution < multiple:
        raise ValueError(f"resolution must be at least {multiple}, got {resolution}")
    scale = resolution / max(width, height)
    new_width = max(multiple, round(width * scale / multiple) * multiple)
    new_height = max(multiple, round(height * scale / multiple) * multiple)
    return new_width, new_height


RESIZE_MODES = ("original", "keep", "long_side")


def edit_size(mode: str, width: int, height: int, resolution: int) -> tuple[int, int]:
    """Target (width, height) for a resize mode: original (the paper's rule), keep (crop to
    multiples of 8), long_side (long side to resolution, multiples of 8)."""
    if mode == "original":
        return original_edit_size(width, height, resolution)
    if mode == "keep":
        return keep_edit_size(width, height)
    if mode == "long_side":
        return long_side_edit_size(width, height, resolution)
    raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
