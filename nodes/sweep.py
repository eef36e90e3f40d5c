"""InstructPix2Pix Guidance Sweep: one edit at many (text_cfg, image_cfg) pairs, on one grid."""
from __future__ import annotations

from typing import Any

import comfy.samplers
import torch

from ..ipx2p_core.guidance import INSTRUCTPIX2PIX
from ..ipx2p_core.sweep import MAX_CELLS, display_cell_size, grid_cells, grid_layout, parse_values, random_grid_shape, \
    random_guidance
from ._comfy import io
from .common import input_error
from .drawing import draw_grid
from .engine import EditRequest, Sampling, sweep
from .schema_parts import IMAGE_CFG_TOOLTIP, TEXT_CFG_TOOLTIP, fast_input, formula_input, guidance_inputs, \
    guidance_map_inputs, mask_input, schedule_input, \
    SWEEP_SCHEDULE_TOOLTIP

NODE = "IPX2P_GuidanceSweep"
MODES = ("grid", "random")


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
                fast_input(),
                *guidance_map_inputs(),
                schedule_input(SWEEP_SCHEDULE_TOOLTIP),
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
                formula: str = INSTRUCTPIX2PIX, fast: bool = False, guidance_map: torch.Tensor | None = None,
                text_cfg_outside: float = 3.0, image_cfg_outside: float = 2.0, schedule: Any = None) -> io.NodeOutput:
        if mode not in MODES:
            raise input_error(NODE, "mode", f"is {mode!r}", "grid or random", "choose grid or random")
        sampling = Sampling(seed, steps, sampler_name, scheduler, denoise, "same for all").checked(NODE)
        if mode == "grid":
            text_values = parse_values(text_cfg_values, NODE, "text_cfg_values")
            image_values = parse_values(image_cfg_values, NODE, "image_cfg_values")
            cells = grid_cells(text_values, image_values)
            if len(cells) > MAX_CELLS:
                raise input_error(NODE, "text_cfg_values", f"and image_cfg_values make {len(cells)} cells",
                                  f"at most {MAX_CELLS}", "use fewer values")
        else:
            cells = random_guidance(seed, count)
        text_scales, image_scales = tuple(cell[0] for cell in cells), tuple(cell[1] for cell in cells)
        request = EditRequest.checked(NODE, model, positive, negative, edit_latent, text_scales, image_scales, mask, formula,
                                      fast, guidance_map=guidance_map, text_cfg_outside=text_cfg_outside,
                                      image_cfg_outside=image_cfg_outside, schedule=schedule)
        if request.batch != 1:
            raise input_error(NODE, "positive", f"and edit_latent make a batch of {request.batch}",
                              "one image and one instruction (a sweep varies the guidance of one edit)",
                              "sweep one instruction at a time, or use InstructPix2Pix Edit for batches")
        latents = sweep(request, sampling, cells, cells_per_run)
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

