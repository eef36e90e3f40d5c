"""Text on pictures: the guidance sweep's labelled grid (layout math is in ipx2p_core.sweep)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..ipx2p_core.sweep import GridLayout, format_scale

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()


def _centred(draw: ImageDraw.ImageDraw, centre: tuple[int, int], text: str, face: object) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    draw.text((centre[0] - (right - left) / 2 - left, centre[1] - (bottom - top) / 2 - top), text, fill=INK, font=face)


def draw_grid(images: torch.Tensor, layout: GridLayout, cells: list[tuple[float, float]],
              text_values: list[float] | None = None, image_values: list[float] | None = None) -> torch.Tensor:
    """images [K,h,w,3] 0..1 on one labelled picture -> IMAGE [1,H,W,3].

    With text_values and image_values: rows are text_cfg values (title on the left), columns
    image_cfg values (title on top). Otherwise each cell is captioned with its two scales.
    """
    canvas = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    pixels = (images.detach().clamp(0, 1).cpu().float().numpy() * 255.0 + 0.5).astype(np.uint8)
    for index, (left, top) in enumerate(layout.cells[:len(cells)]):
        cell = Image.fromarray(pixels[index])
        if cell.size != (layout.cell_width, layout.cell_height):
            cell = cell.resize((layout.cell_width, layout.cell_height), Image.Resampling.NEAREST)
        canvas.paste(cell, (left, top))
    draw = ImageDraw.Draw(canvas)
    face = font(layout.font_size)
    if layout.axis_labels and text_values is not None and image_values is not None:
        _centred(draw, layout.column_title_centre, "image_cfg", face)
        for column, value in enumerate(image_values):
            _centred(draw, layout.column_label_centre(column), format_scale(value), face)
        for row, value in enumerate(text_values):
            _centred(draw, layout.row_label_centre(row), format_scale(value), face)
        # The row title reads bottom to top, drawn on its own strip and turned.
        title = "text_cfg"
        left, top, right, bottom = draw.textbbox((0, 0), title, font=face)
        strip = Image.new("RGB", (right - left + 4, bottom - top + 4), BACKGROUND)
        ImageDraw.Draw(strip).text((2 - left, 2 - top), title, fill=INK, font=face)
        strip = strip.rotate(90, expand=True)
        cx, cy = layout.row_title_centre
        canvas.paste(strip, (cx - strip.width // 2, cy - strip.height // 2))
    else:
        for index, (text_cfg, image_cfg) in enumerate(cells):
            first, second = layout.caption_centres(index)
            _centred(draw, first, f"text {format_scale(text_cfg)}", face)
            _centred(draw, second, f"image {format_scale(image_cfg)}", face)
    array = np.asarray(canvas, dtype=np.float32) / 255.0
    return torch.from_numpy(array).unsqueeze(0)
