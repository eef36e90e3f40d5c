"""Guidance sweeps: the value lists users type, the original app's randomized guidance, cell
order, how cells are batched into sampling runs, and the layout of the labelled grid picture
(drawing itself is the nodes' job)."""
from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from .guidance import INSTRUCTPIX2PIX, Scale, plan_guidance

MAX_CELLS = 100

# The original app (instruct-pix2pix edit_app.py, "Randomize CFG"): text U(6, 9), image U(1.2, 1.8),
# rounded to two decimals.
RANDOM_TEXT_RANGE = (6.0, 9.0)
RANDOM_IMAGE_RANGE = (1.2, 1.8)

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^({_NUMBER}):({_NUMBER}):({_NUMBER})$")


def parse_values(text: str, who: str, input_name: str) -> list[float]:
    """"5, 7.5, 10" -> [5.0, 7.5, 10.0]. Separators: commas, semicolons or spaces; "a:b:step" is
    the range from a to b (inclusive) in steps of step. Raises ValueError naming the input."""
    values: list[float] = []
    tokens = [token for token in re.split(r"[,;\s]+", text.strip()) if token]
    if not tokens:
        raise ValueError(
            f"{who}: input '{input_name}' is empty; expected numbers such as \"5, 7.5, 10\" or a range "
            "\"5:10:2.5\". Fix: type at least one value."
        )
    for token in tokens:
        ranged = _RANGE.match(token)
        try:
            if ranged:
                start, stop, step = (float(group) for group in ranged.groups())
                if step <= 0 or stop < start:
                    raise ValueError(token)
                count = int(math.floor((stop - start) / step + 1e-9)) + 1
                if count > MAX_CELLS:
                    raise ValueError(token)
                values.extend(round(start + index * step, 6) for index in range(count))
            else:
                values.append(float(token))
        except ValueError:
            raise ValueError(
                f"{who}: input '{input_name}' has {token!r}, which is not a number or a range; expected numbers "
                "separated by commas (\"5, 7.5, 10\") or ranges start:stop:step with step > 0 (\"5:10:2.5\"). "
                f"Fix: correct {token!r}."
            ) from None
    bad = [value for value in values if not math.isfinite(value) or value < 0 or value > 100]
    if bad:
        raise ValueError(
            f"{who}: input '{input_name}' has {bad[0]}; expected guidance scales from 0 to 100. Fix: remove or "
            "correct it."
        )
    return values


def random_guidance(seed: int, count: int) -> list[tuple[float, float]]:
    """`count` (text_cfg, image_cfg) pairs drawn as the original app draws them, seeded."""
    generator = random.Random(seed)
    pairs = []
    for _ in range(count):
        text = round(generator.uniform(*RANDOM_TEXT_RANGE), 2)
        image = round(generator.uniform(*RANDOM_IMAGE_RANGE), 2)
        pairs.append((text, image))
    return pairs


def grid_cells(text_values: list[float], image_values: list[float]) -> list[tuple[float, float]]:
    """Cells in batch order, text-major: for each text value, each image value."""
    return [(text, image) for text in text_values for image in image_values]


def plan_runs(cells: list[tuple[float, float]], run_size: Callable[[int, int], int],
              formula: str = INSTRUCTPIX2PIX) -> list[list[int]]:
    """The sampling runs of a sweep: lists of cell indices, each sampled as one batch.

    Cells whose scales need the same branches (see plan_guidance) share runs, so a sweep costs what
    its single edits cost; `run_size(branch_count, cells_in_group)` says how many cells one run may
    batch (what memory holds, or the user's choice).
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, (text_cfg, image_cfg) in enumerate(cells):
        groups.setdefault(plan_guidance(text_cfg, image_cfg, formula=formula).branches, []).append(index)
    runs: list[list[int]] = []
    for branches, members in groups.items():
        size = max(1, run_size(len(branches), len(members)))
        runs.extend(members[start:start + size] for start in range(0, len(members), size))
    return runs


def run_scales(cells: list[tuple[float, float]], run: list[int]) -> tuple[Scale, Scale]:
    """(text_cfg, image_cfg) of one run: floats for a run of one cell, else per-item tuples."""
    if len(run) == 1:
        return cells[run[0]]
    return tuple(cells[i][0] for i in run), tuple(cells[i][1] for i in run)


def cells_in_memory(per_cell: float, free: float, wanted: int, headroom: float = 0.8) -> int:
    """How many cells one run can batch when a cell's activations take `per_cell` bytes and `free`
    bytes are free (using `headroom` of them): at least 1, at most `wanted`."""
    if per_cell <= 0:
        return wanted
    return max(1, min(wanted, int(headroom * free / per_cell)))


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes on the grid picture (pixels, origin top left).

    Rows are text_cfg values top to bottom and columns image_cfg values left to right
    (`axis_labels`); in random mode (`axis_labels` False) cells are laid out in reading order with
    a caption under each. `cells[k]` is the (left, top) of cell k in batch order.
    """

    width: int
    height: int
    cell_width: int
    cell_height: int
    rows: int
    columns: int
    font_size: int
    margin_left: int
    margin_top: int
    caption_height: int
    gap: int
    cells: tuple[tuple[int, int], ...]
    axis_labels: bool

    def row_label_centre(self, row: int) -> tuple[int, int]:
        left, top = self.cells[row * self.columns]
        return (self.margin_left - self.gap - self.font_size * 2, top + self.cell_height // 2)

    def column_label_centre(self, column: int) -> tuple[int, int]:
        left, top = self.cells[column]
        return (left + self.cell_width // 2, self.margin_top - self.gap - self.font_size // 2 - 2)

    @property
    def column_title_centre(self) -> tuple[int, int]:
        return (self.margin_left + (self.width - self.margin_left) // 2, self.font_size // 2 + self.gap)

    @property
    def row_title_centre(self) -> tuple[int, int]:
        return (self.font_size // 2 + self.gap, self.margin_top + (self.height - self.margin_top) // 2)

    def caption_centres(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Centres of the two caption lines under cell `index` (random mode)."""
        left, top = self.cells[index]
        first = top + self.cell_height + self.gap + self.font_size // 2
        return (left + self.cell_width // 2, first), (left + self.cell_width // 2, first + self.font_size + self.gap)


MIN_CELL = 160


def display_cell_size(width: int, height: int) -> tuple[int, int]:
    """The size a cell is shown at on the grid: the edit's, enlarged so the short side is at
    least MIN_CELL px (small test edits stay legible next to their labels)."""
    factor = max(1, math.ceil(MIN_CELL / max(1, min(width, height))))
    return width * factor, height * factor


def grid_layout(rows: int, columns: int, cell_width: int, cell_height: int, axis_labels: bool = True) -> GridLayout:
    """The layout of a rows x columns grid of cell_width x cell_height pictures.

    Text scales with the cells (readable on a 160 px cell and on a 768 px one): the font is
    max(12, min(cell side) / 10) px; axis titles and values get their own margins.
    """
    if rows < 1 or columns < 1:
        raise ValueError(f"a grid needs at least one row and column, got {rows}x{columns}")
    font = max(12, min(cell_width, cell_height) // 10)
    gap = max(4, font // 3)
    if axis_labels:
        margin_left = font + 2 * gap + font * 4 + gap  # row title (rotated) + values
        margin_top = font + 2 * gap + font + gap  # column title + values
        caption = 0
    else:
        # Two caption lines under each cell ("text 7.31", "image 1.52"), at most 10 characters
        # wide, so the font must fit the cell's width.
        font = max(10, min(font, int(cell_width / (10 * 0.6))))
        gap = max(4, font // 3)
        margin_left = margin_top = gap
        caption = 2 * font + 3 * gap
    cells = tuple(
        (margin_left + column * (cell_width + gap), margin_top + row * (cell_height + caption + gap))
        for row in range(rows) for column in range(columns)
    )
    width = margin_left + columns * cell_width + (columns - 1) * gap + gap
    height = margin_top + rows * (cell_height + caption) + (rows - 1) * gap + gap
    return GridLayout(width, height, cell_width, cell_height, rows, columns, font, margin_left, margin_top, caption, gap,
                      cells, axis_labels)


def random_grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) for `count` cells in reading order, as square as possible."""
    columns = math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def format_scale(value: float) -> str:
    """7.5 -> "7.5", 5.0 -> "5", 1.25 -> "1.25"."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
