"""The guidance sweep in the real host: cells equal single edits, the grid's layout, batching by
plan, progress over the whole sweep, cancelling, bad value lists."""
from __future__ import annotations

import shutil

import numpy
import pytest
import torch
from PIL import Image

from helpers import (
    Graph, edit_node, encode_graph, read_saved_latent, relative_l2, run_error, run_ok, save_latent, saved_images, write_picture,
)
from ipx2p_core.sweep import display_cell_size, grid_layout, random_grid_shape, random_guidance
from test_nodes_graph import counting, encode_text, pixels


def screenshot_dir(host_name: str):
    from ipx2p_tools.layout import ARTIFACTS_DIR

    directory = ARTIFACTS_DIR / "screenshots" / host_name
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def sweep_node(g, loader, positive, negative, encoded, text="5, 7.5", image="1, 1.5", mode="grid", count=3, seed=2,
               steps=2, sampler="euler_ancestral", **extra):
    return g.add("IPX2P_GuidanceSweep", model=(loader, 0), positive=(positive, 0), negative=(negative, 0),
                 edit_latent=(encoded, 0), vae=(loader, 2), seed=seed, steps=steps, text_cfg_values=text,
                 image_cfg_values=image, sampler_name=sampler, scheduler="normal", mode=mode, count=count, **extra)


@pytest.fixture()
def picture(host):
    return write_picture(host.input_dir, "sweep_64x48.png", (64, 48))


@pytest.mark.floor
def test_sweep_cells_equal_single_edits_and_the_grid_is_laid_out(host, host_name, ip2p_ckpt, picture):
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
    sweep = sweep_node(g, loader, positive, negative, encoded)
    cells = save_latent(g, sweep)
    grid = g.add("SaveImage", images=(sweep, 2), filename_prefix="ipx2p_grid")
    images = g.add("SaveImage", images=(sweep, 1), filename_prefix="ipx2p_cells")
    singles = {index: save_latent(g, edit_node(g, loader, positive, negative, encoded, seed=2, steps=2, text_cfg=t,
                                               image_cfg=i, sampler="euler_ancestral"))
               for index, (t, i) in ((0, (5.0, 1.0)), (3, (7.5, 1.5)))}
    result = run_ok(host, g)
    latents = read_saved_latent(host, result, cells)
    assert latents.shape == (4, 4, 6, 8)  # text-major: (5, 1), (5, 1.5), (7.5, 1), (7.5, 1.5)
    for index, node in singles.items():
        assert relative_l2(latents[index:index + 1], read_saved_latent(host, result, node)) < 1e-5
    assert relative_l2(latents[0:1], latents[3:4]) > 1e-3  # the cells do differ
    assert len(result.outputs[images]["images"]) == 4
    info = result.outputs[grid]["images"][0]
    grid_file = host.output_dir / info["subfolder"] / info["filename"]
    shutil.copy(grid_file, screenshot_dir(host_name) / "ip2p_sweep_grid_demo_weights.png")  # the README's picture
    with Image.open(grid_file) as picture_file:
        layout = grid_layout(2, 2, *display_cell_size(64, 48))
        assert picture_file.size == (layout.width, layout.height)
        # cell (row 1, column 0) holds the decoded (7.5, 1) cell, scaled up; the margins hold labels
        left, top = layout.cells[2]
        cell = picture_file.crop((left, top, left + layout.cell_width, top + layout.cell_height))
        assert len(set(cell.getdata())) > 50
        margin = picture_file.crop((0, layout.margin_top, layout.margin_left, layout.height))
        assert len(set(margin.getdata())) > 2  # text drawn on the white margin
        # Every cell shows its own image (text-major: row = text value, column = image value),
        # enlarged by an integer factor with nearest-neighbour: one level apart at most (PNG
        # rounding), while a transposed grid would put cell 2's image where cell 1's belongs.
        decoded = (saved_images(host, result, images) * 255).round()
        factor = layout.cell_width // 64
        grid_pixels = torch.from_numpy(numpy.asarray(picture_file.convert("RGB"), dtype=numpy.float32))
        shown = []
        for index, (left, top) in enumerate(layout.cells[:4]):
            rows = torch.arange(48) * factor + factor // 2 + top
            columns = torch.arange(64) * factor + factor // 2 + left
            shown.append(grid_pixels[rows][:, columns])
            assert float((shown[index] - decoded[index]).abs().max()) <= 1.0, index
        assert float((shown[1] - decoded[2]).abs().mean()) > 3.0  # cells 1 and 2 are told apart


def test_sweep_random_mode(host, ip2p_ckpt, picture):
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
    sweep = sweep_node(g, loader, positive, negative, encoded, mode="random", count=3, seed=7, sampler="euler")
    cells = save_latent(g, sweep)
    grid = g.add("SaveImage", images=(sweep, 2), filename_prefix="ipx2p_random_grid")
    pairs = random_guidance(7, 3)
    single = save_latent(g, edit_node(g, loader, positive, negative, encoded, seed=7, steps=2, text_cfg=pairs[1][0],
                                      image_cfg=pairs[1][1], sampler="euler"))
    result = run_ok(host, g)
    assert relative_l2(read_saved_latent(host, result, cells)[1:2], read_saved_latent(host, result, single)) < 1e-5
    info = result.outputs[grid]["images"][0]
    with Image.open(host.output_dir / info["subfolder"] / info["filename"]) as picture_file:
        layout = grid_layout(*random_grid_shape(3), *display_cell_size(64, 48), axis_labels=False)
        assert picture_file.size == (layout.width, layout.height)


def test_sweep_batches_cells_by_plan_and_costs_what_single_edits_cost(host, pack, loaded):
    sweep = pack
    model, clip, vae = loaded
    positive, negative = encode_text(clip, "make it snowy"), encode_text(clip, "")
    edit_latent = {"samples": vae.encode(pixels((48, 32)))}
    cells = [(5.0, 1.0), (5.0, 1.5), (7.5, 1.0), (7.5, 1.5)]
    options = dict(seed=3, steps=2, sampler_name="euler", scheduler="normal", denoise=1.0, mask=None)
    counted, calls = counting(model)
    batched = sweep.sweep_latents(counted, positive, negative, edit_latent, cells, **options)
    # two groups (image_cfg 1 needs {c, i}; 1.5 needs all three), each one UNet call per step
    assert sorted(size for size, _ in calls) == [4, 4, 6, 6]
    singles = {1.0: 2, 1.5: 3}
    assert sum(size for size, _ in calls) == sum(2 * singles[image] for _, image in cells)
    one_by_one = sweep.sweep_latents(model, positive, negative, edit_latent, cells, cells_per_run=1, **options)
    assert relative_l2(batched, one_by_one) < 1e-5


def test_sweep_with_the_instructdiffusion_formula(host, pack, loaded):
    # Each cell equals the single InstructDiffusion edit; its three branches (c, i, t) for both
    # cells run in one UNet call per step.
    sweep = pack
    model, clip, vae = loaded
    positive, negative = encode_text(clip, "make it snowy"), encode_text(clip, "")
    edit_latent = {"samples": vae.encode(pixels((48, 32)))}
    cells = [(5.0, 1.25), (5.0, 1.5)]
    options = dict(seed=3, steps=2, sampler_name="euler", scheduler="normal", denoise=1.0)
    counted, calls = counting(model)
    swept = sweep.sweep_latents(counted, positive, negative, edit_latent, cells, mask=None, formula="instructdiffusion",
                                **options)
    assert [size for size, _ in calls] == [6, 6]
    for index, (text_cfg, image_cfg) in enumerate(cells):
        single = pack.run_edit("test", model, positive, negative, edit_latent, text_cfg=text_cfg, image_cfg=image_cfg,
                               formula="instructdiffusion", **options)
        assert relative_l2(swept[index:index + 1], single) < 1e-5
    plain = sweep.sweep_latents(model, positive, negative, edit_latent, cells[:1], mask=None, **options)
    assert relative_l2(swept[:1], plain) > 1e-3  # the formula matters


@pytest.mark.floor
def test_sweep_reports_progress_over_the_whole_sweep_and_can_be_cancelled(host, ip2p_ckpt, picture):
    import comfy.model_management

    def graph(seed):
        g = Graph()
        loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
        save_latent(g, sweep_node(g, loader, positive, negative, encoded, text="5, 7.5", image="1.5", steps=2,
                                  seed=seed, cells_per_run=1))
        return g

    result = run_ok(host, graph(11), preview_method="latent2rgb")
    totals = [(value, total) for value, total, _ in result.progress if total == 4]  # 2 runs x 2 steps
    assert [value for value, _ in totals] == [1, 2, 3, 4]
    assert all(had_preview for value, total, had_preview in result.progress if total == 4)

    def cancel(value, total):
        if total == 4 and value == 2:
            comfy.model_management.interrupt_current_processing(True)

    host.progress_listener = cancel
    try:
        cancelled = host.run(graph(12).prompt)
    finally:
        host.progress_listener = None
        comfy.model_management.interrupt_current_processing(False)
    assert not cancelled.success and any(event == "execution_interrupted" for event, _ in cancelled.events)
    assert max(value for value, total, _ in cancelled.progress if total == 4) == 2
    run_ok(host, graph(13))  # and the next prompt runs


@pytest.mark.parametrize(("values", "message"), [
    ("5, seven", "input 'text_cfg_values' has 'seven'"),
    ("", "input 'text_cfg_values' is empty"),
])
def test_sweep_refuses_bad_value_lists(host, ip2p_ckpt, picture, values, message):
    g = Graph()
    loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
    save_latent(g, sweep_node(g, loader, positive, negative, encoded, text=values))
    error = run_error(host, g)
    assert "IPX2P_GuidanceSweep" in error and message in error and "Fix:" in error
