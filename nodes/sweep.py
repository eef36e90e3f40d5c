"""InstructPix2Pix Guidance Sweep: one edit at many (text_cfg, image_cfg) pairs, on one grid."""
from __future__ import annotations

from typing import Any

import comfy.model_management
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..ipx2p_core.guidance import INSTRUCTPIX2PIX, plan_guidance
from ..ipx2p_core.sweep import (
    MAX_CELLS, display_cell_size, grid_cells, grid_layout, parse_values, random_grid_shape, random_guidance,
)
from ._comfy import io
from .common import edit_conditionings, input_error
from .drawing import draw_grid
from .guider import (
    IMAGE_CFG_TOOLTIP, TEXT_CFG_TOOLTIP, check_sampling_names, edit_sigmas, formula_input, guidance_inputs, mask_input,
    run_edit,
)
from .sampling import sampler_for

NODE = "IPX2P_GuidanceSweep"
MODES = ("grid", "random")


def cells_that_fit(model: Any, branches: int, latent_shape: tuple[int, ...], wanted: int) -> int:
    """How many cells one sampling run can batch: what the device's free memory holds (the
    host's own activation estimate for the UNet, with the model's unloaded part set aside)."""
    try:
        per_cell = float(model.model.memory_required([branches, *latent_shape[1:]]))
        free = float(comfy.model_management.get_free_memory(model.load_device))
        free -= max(0.0, float(model.model_size()) - float(model.loaded_size()))
    except (AttributeError, TypeError):
        return wanted
    if per_cell <= 0:
        return wanted
    return max(1, min(wanted, int(0.8 * free / per_cell)))


class SweepProgress:
    """One progress bar (with latent previews) over every step of every run of the sweep."""

    def __init__(self, model: Any, total: int) -> None:
        self.total, self.done = total, 0
        self.bar = comfy.utils.ProgressBar(total)
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def callback(self, step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None:
        self.done += 1
        preview = self.previewer.decode_latent_to_preview_image("JPEG", x0) if self.previewer else None
        self.bar.update_absolute(min(self.done, self.total), self.total, preview)


class GuidanceSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="InstructPix2Pix Guidance Sweep",
            category="instructpix2pix",
            description=(
                "Runs one edit at many guidance pairs and lays the results out on one labelled grid: rows are "
                "text_cfg values (top to bottom), columns image_cfg values (left to right). Every cell uses the "
                "same seed, so cells differ only by their scales, and each equals InstructPix2Pix Edit with that "
                "seed and those scales. random: the original app's randomized guidance (text 6-9, image 1.2-1.8)."
            ),
            inputs=guidance_inputs() + [
                io.Vae.Input("vae", tooltip="The checkpoint's VAE, to decode the cells for the grid."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="The noise seed, the same for every cell (and the random mode's draw)."),
                io.Int.Input("steps", default=20, min=1, max=10000,
                             tooltip="Sampling steps per cell (the paper uses 100; 20 is enough to compare settings)."),
                io.String.Input("text_cfg_values", default="5, 7.5, 10",
                                tooltip="text_cfg values for the rows, e.g. '5, 7.5, 10' or a range '5:10:2.5'. "
                                        + TEXT_CFG_TOOLTIP),
                io.String.Input("image_cfg_values", default="1.2, 1.5, 1.8",
                                tooltip="image_cfg values for the columns, e.g. '1.2, 1.5, 1.8'. " + IMAGE_CFG_TOOLTIP),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler_ancestral",
                               tooltip="The sampler (paper: Euler ancestral)."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="The noise schedule (paper: 'normal')."),
                io.Combo.Input("mode", options=list(MODES), default="grid",
                               tooltip="grid: every text value with every image value. random: `count` pairs drawn "
                                       "as the original app's 'Randomize CFG' (text U(6, 9), image U(1.2, 1.8)), seeded."),
                io.Int.Input("count", default=6, min=1, max=MAX_CELLS, tooltip="How many random pairs (random mode)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="As on InstructPix2Pix Edit: 1.0 starts from noise."),
                mask_input(),
                io.Int.Input("cells_per_run", default=0, min=0, max=MAX_CELLS, optional=True,
                             tooltip="Cells sampled together in one batch. 0: as many as the device's memory holds."),
                formula_input(),
            ],
            outputs=[
                io.Latent.Output("latent", display_name="latent",
                                 tooltip="Every cell's latent, in batch order (for each text value, each image value)."),
                io.Image.Output("images", display_name="images", tooltip="Every cell decoded, in the same order."),
                io.Image.Output("grid", display_name="grid", tooltip="One labelled picture of all cells."),
            ],
        )

    @classmethod
    def execute(cls, model: Any, positive: list, negative: list, edit_latent: dict, vae: Any, seed: int, steps: int,
                text_cfg_values: str, image_cfg_values: str, sampler_name: str, scheduler: str, mode: str, count: int,
                denoise: float = 1.0, mask: torch.Tensor | None = None, cells_per_run: int = 0,
                formula: str = INSTRUCTPIX2PIX) -> io.NodeOutput:
        if mode not in MODES:
            raise input_error(NODE, "mode", f"is {mode!r}", "grid or random", "choose grid or random")
        check_sampling_names(NODE, sampler_name, scheduler)
        _, _, _, batch = edit_conditionings(NODE, positive, negative, edit_latent)
        if batch != 1:
            raise input_error(NODE, "positive", f"and edit_latent make a batch of {batch}",
                              "one image and one instruction (a sweep varies the guidance of one edit)",
                              "sweep one instruction at a time, or use InstructPix2Pix Edit for batches")
        if mode == "grid":
            text_values = parse_values(text_cfg_values, NODE, "text_cfg_values")
            image_values = parse_values(image_cfg_values, NODE, "image_cfg_values")
            cells = grid_cells(text_values, image_values)
            if len(cells) > MAX_CELLS:
                raise input_error(NODE, "text_cfg_values", f"and image_cfg_values make {len(cells)} cells",
                                  f"at most {MAX_CELLS}", "use fewer values")
        else:
            cells = random_guidance(seed, count)
        latents = sweep_latents(model, positive, negative, edit_latent, cells, seed=seed, steps=steps,
                                sampler_name=sampler_name, scheduler=scheduler, denoise=denoise, mask=mask,
                                cells_per_run=cells_per_run, formula=formula)
        images = vae.decode(latents)
        if images.ndim == 5:  # video-style VAEs return [B,T,H,W,C]
            images = images.reshape(-1, *images.shape[-3:])
        cell_width, cell_height = display_cell_size(int(images.shape[2]), int(images.shape[1]))
        if mode == "grid":
            layout = grid_layout(len(text_values), len(image_values), cell_width, cell_height, axis_labels=True)
            grid = draw_grid(images, layout, cells, text_values, image_values)
        else:
            rows, columns = random_grid_shape(len(cells))
            layout = grid_layout(rows, columns, cell_width, cell_height, axis_labels=False)
            grid = draw_grid(images, layout, cells)
        return io.NodeOutput({"samples": latents}, images, grid)


def sweep_latents(model: Any, positive: list, negative: list, edit_latent: dict, cells: list[tuple[float, float]], *,
                  seed: int, steps: int, sampler_name: str, scheduler: str, denoise: float,
                  mask: torch.Tensor | None, cells_per_run: int = 0, formula: str = INSTRUCTPIX2PIX) -> torch.Tensor:
    """Each cell's latent, in cell order: cells that need the same branches are batched together
    (so the sweep costs what its single edits cost), in runs as large as memory allows."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, (text_cfg, image_cfg) in enumerate(cells):
        groups.setdefault(plan_guidance(text_cfg, image_cfg, formula=formula).branches, []).append(index)
    shape = tuple(edit_latent["samples"].shape)
    runs: list[list[int]] = []
    for branches, members in groups.items():
        size = cells_per_run or cells_that_fit(model, len(branches), shape, len(members))
        runs.extend(members[start:start + size] for start in range(0, len(members), size))
    sigmas = edit_sigmas(model, scheduler, steps, denoise, sampler_name)
    steps_per_run = max(0, sigmas.shape[-1] - 1)
    total = 0
    for run in runs:
        shared = sampler_for(sampler_name, "same for all", (len(run), *shape[1:]), seed, sigmas, model.load_device)
        total += steps_per_run * (1 if shared is not None else len(run))
    progress = SweepProgress(model, max(1, total))
    results: dict[int, torch.Tensor] = {}
    for run in runs:
        comfy.model_management.throw_exception_if_processing_interrupted()
        text_cfg: Any = tuple(cells[i][0] for i in run)
        image_cfg: Any = tuple(cells[i][1] for i in run)
        if len(run) == 1:
            text_cfg, image_cfg = text_cfg[0], image_cfg[0]
        samples = run_edit(NODE, model, positive, negative, edit_latent, seed=seed, steps=steps, text_cfg=text_cfg,
                           image_cfg=image_cfg, sampler_name=sampler_name, scheduler=scheduler, denoise=denoise,
                           mask=mask, noise_mode="same for all", batch=len(run), callback=progress.callback,
                           formula=formula)
        for position, index in enumerate(run):
            results[index] = samples[position:position + 1]
    return torch.cat([results[index] for index in range(len(cells))])

