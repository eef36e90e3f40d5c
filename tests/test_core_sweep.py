"""Sweeps without the host: value lists, random guidance, cell order, grid layout, per-item guidance."""
from __future__ import annotations

import pytest
import torch

from ipx2p_core.guidance import BRANCHES, IMAGE_ONLY, TEXT_IMAGE, UNCOND, plan_guidance
from reference import dual_cfg
from ipx2p_core.sweep import (
    MIN_CELL, display_cell_size, format_scale, grid_cells, grid_layout, parse_values, random_grid_shape,
    random_guidance,
)


@pytest.mark.parametrize(("text", "values"), [
    ("5, 7.5, 10", [5.0, 7.5, 10.0]),
    ("1.2;1.5 1.8", [1.2, 1.5, 1.8]),
    ("5:10:2.5", [5.0, 7.5, 10.0]),
    ("1, 2:3:0.5", [1.0, 2.0, 2.5, 3.0]),
    (" 7 ", [7.0]),
])
def test_parse_values(text, values):
    assert parse_values(text, "node", "text_cfg_values") == values


@pytest.mark.parametrize("text", ["", "  ", "5, seven", "1:2", "5:1:1", "1:2:0", "-1", "101", "nan"])
def test_parse_values_refuses_with_the_input_named(text):
    with pytest.raises(ValueError, match="node: input 'image_cfg_values'"):
        parse_values(text, "node", "image_cfg_values")


def test_random_guidance_is_seeded_and_in_the_app_ranges():
    pairs = random_guidance(42, 50)
    assert pairs == random_guidance(42, 50) and pairs != random_guidance(43, 50)
    for text, image in pairs:
        assert 6.0 <= text <= 9.0 and 1.2 <= image <= 1.8
        assert round(text, 2) == text and round(image, 2) == image
    assert len({pair for pair in pairs}) > 40


def test_cells_are_text_major():
    assert grid_cells([5, 7.5], [1.2, 1.5, 1.8]) == [(5, 1.2), (5, 1.5), (5, 1.8), (7.5, 1.2), (7.5, 1.5), (7.5, 1.8)]


def test_grid_layout_places_rows_and_columns():
    layout = grid_layout(2, 3, 200, 150)
    assert len(layout.cells) == 6
    # row r, column c is cell r * columns + c; rows go down, columns right, without overlap
    xs = sorted({left for left, _ in layout.cells})
    ys = sorted({top for _, top in layout.cells})
    assert len(xs) == 3 and len(ys) == 2
    assert all(b - a >= 200 for a, b in zip(xs, xs[1:])) and ys[1] - ys[0] >= 150
    assert layout.cells[4] == (xs[1], ys[1])
    assert xs[0] == layout.margin_left and ys[0] == layout.margin_top
    assert layout.width >= xs[-1] + 200 and layout.height >= ys[-1] + 150
    # labels sit in the margins: row values left of the cells, column values above
    assert layout.row_label_centre(1)[0] < layout.margin_left and layout.column_label_centre(2)[1] < layout.margin_top
    assert layout.font_size >= 12


def test_random_layout_has_captions_that_fit_the_cells():
    rows, columns = random_grid_shape(7)
    assert (rows, columns) == (3, 3)
    layout = grid_layout(rows, columns, 160, 160, axis_labels=False)
    assert layout.caption_height > 0 and layout.font_size * 10 * 0.6 <= 160
    first, second = layout.caption_centres(4)
    left, top = layout.cells[4]
    assert top + 160 < first[1] < second[1] < top + 160 + layout.caption_height


def test_small_cells_are_enlarged_for_the_grid():
    assert display_cell_size(64, 48) == (64 * 4, 48 * 4) and min(display_cell_size(64, 48)) >= MIN_CELL
    assert display_cell_size(512, 384) == (512, 384)


def test_format_scale():
    assert [format_scale(v) for v in (7.5, 5.0, 1.25, 10.0)] == ["7.5", "5", "1.25", "10"]


def test_per_item_scales_give_each_item_its_own_formula():
    generator = torch.Generator().manual_seed(0)
    preds = {branch: torch.randn((4, 4, 6, 6), generator=generator, dtype=torch.float64) for branch in BRANCHES}
    cells = [(5.0, 1.2), (7.5, 1.0), (3.0, 3.0), (1.0, 1.0)]
    plan = plan_guidance(tuple(t for t, _ in cells), tuple(i for _, i in cells))
    assert plan.branches == BRANCHES  # items need different identities: all three branches
    combined = plan.combine(preds)
    for index, (text, image) in enumerate(cells):
        expected = dual_cfg(*(preds[b][index:index + 1] for b in (TEXT_IMAGE, IMAGE_ONLY, UNCOND)), text, image)
        torch.testing.assert_close(combined[index:index + 1], expected, rtol=1e-12, atol=1e-12)
    # items that share an identity keep the cheaper plan
    assert plan_guidance((5.0, 7.5), (1.0, 1.0)).branches == (TEXT_IMAGE, IMAGE_ONLY)
    assert plan_guidance((2.0, 3.0), (2.0, 3.0)).branches == (TEXT_IMAGE, UNCOND)
def test_runs_group_cells_by_branches_and_respect_the_run_size():
    from ipx2p_core.sweep import cells_in_memory, plan_runs, run_scales

    cells = [(5.0, 1.0), (5.0, 1.5), (7.5, 1.0), (7.5, 1.5), (3.0, 3.0), (10.0, 1.0)]
    asked = []

    def run_size(branches, wanted):
        asked.append((branches, wanted))
        return 2

    runs = plan_runs(cells, run_size)
    assert runs == [[0, 2], [5], [1, 3], [4]]  # {c, i}: 0, 2, 5; all three: 1, 3; {c, u}: 4
    assert asked == [(2, 3), (3, 2), (2, 1)]
    assert plan_runs(cells, lambda branches, wanted: wanted) == [[0, 2, 5], [1, 3], [4]]
    assert plan_runs(cells, lambda branches, wanted: 0) == [[0], [2], [5], [1], [3], [4]]  # never below one cell
    assert [len(run) for run in plan_runs(cells[:2], lambda b, w: w, formula="instructdiffusion")] == [2]
    assert run_scales(cells, [1, 3]) == ((5.0, 7.5), (1.5, 1.5))
    assert run_scales(cells, [4]) == (3.0, 3.0)
    assert cells_in_memory(per_cell=100.0, free=1000.0, wanted=20) == 8
    assert cells_in_memory(per_cell=100.0, free=10.0, wanted=20) == 1
    assert cells_in_memory(per_cell=0.0, free=10.0, wanted=20) == 20
    assert cells_in_memory(per_cell=1.0, free=1e9, wanted=5) == 5
