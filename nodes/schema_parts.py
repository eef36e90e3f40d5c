"""Schema parts that several nodes share (inputs are a contract: names, defaults and tooltips
stay as released; see tests/golden/node_schemas.json)."""
from __future__ import annotations

from typing import Any

from ..ipx2p_core.guidance import FORMULA_TEXT, FORMULAS, INSTRUCTDIFFUSION, INSTRUCTPIX2PIX
from ._comfy import io
from ..ipx2p_core.relevance import DEFAULT_THRESHOLD, DEFAULT_UNTIL
from .fast_path import FAST_TOOLTIP
from .schedule import SCHEDULE_TOOLTIP, ScheduleType
from .sampling import NOISE_MODES

TEXT_CFG_TOOLTIP = "Instruction guidance s_T (paper: 7.5). Higher follows the instruction harder."
IMAGE_CFG_TOOLTIP = ("Image guidance s_I (paper: 1.5). Higher stays closer to the input image; "
                     "1.0 drops the unconditional branch (faster, same formula).")
MASK_TOOLTIP = ("Optional: edit only here (1 = edit, soft values blend; any size, batch 1 for every item). Outside "
                "the mask the latent follows the input image's latent and ends on it exactly. A mask drawn on the "
                "original picture is fitted as the Encode node fits the picture. A noise_mask on edit_latent (core "
                "Set Latent Noise Mask) counts as this mask.")
NOISE_TOOLTIP = ("per item: item k of a batch gets the seed's k-th noise, as KSampler does (item 0 equals the single "
                 "edit for deterministic samplers). same for all: every item gets item 0's noise at the start and at "
                 "every step, so each item equals its single edit with this seed: consistent variants, video frames.")
FORMULA_TOOLTIP = (f"instructpix2pix: {FORMULA_TEXT[INSTRUCTPIX2PIX]}, for InstructPix2Pix, MagicBrush, HIVE, "
                   f"SDXL-InstructPix2Pix and CosXL. instructdiffusion: {FORMULA_TEXT[INSTRUCTDIFFUSION]} "
                   "with t = instruction and zero image (InstructDiffusion's; its defaults are 5.0 / 1.25).")


def guidance_inputs() -> list:
    """model, positive, negative, edit_latent: the first inputs of Guider, Edit and Sweep."""
    return [
        io.Model.Input("model", tooltip="The InstructPix2Pix model (8-channel UNet)."),
        io.Conditioning.Input("positive", tooltip="The encoded instruction, e.g. 'make it snowy'."),
        io.Conditioning.Input("negative", tooltip="The encoded empty prompt (the paper's unconditional text)."),
        io.Latent.Input("edit_latent", tooltip="The image to edit, from 'InstructPix2Pix Encode Image'."),
    ]


SCHEDULED = " Ignored when a schedule is connected (the schedule gives the scales at every step)."
SWEEP_SCHEDULE_TOOLTIP = (
    "Optional: a schedule from 'InstructPix2Pix Guidance Schedule'. Each cell's scales follow its shape: a cell's "
    "value times the schedule's value at the step over its value at the start, so the cell at the schedule's start "
    "values is that schedule exactly. Steps where a cell's image_cfg is 1 skip the unconditional branch when every "
    "cell's is.")


def scale_inputs() -> list:
    """text_cfg and image_cfg widgets (Guider and Edit)."""
    return [
        io.Float.Input("text_cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip=TEXT_CFG_TOOLTIP + SCHEDULED),
        io.Float.Input("image_cfg", default=1.5, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip=IMAGE_CFG_TOOLTIP + SCHEDULED),
    ]


def mask_input() -> Any:
    return io.Mask.Input("mask", optional=True, tooltip=MASK_TOOLTIP)


def noise_input() -> Any:
    return io.Combo.Input("noise", options=list(NOISE_MODES), default="per item", optional=True, tooltip=NOISE_TOOLTIP)


def formula_input() -> Any:
    return io.Combo.Input("formula", options=list(FORMULAS), default=INSTRUCTPIX2PIX, optional=True, tooltip=FORMULA_TOOLTIP)


GUIDANCE_MAP_TOOLTIP = (
    "Optional: guidance that varies over the picture (any size, scaled to the latent like mask; batch 1 for every "
    "item). Where the map is 1 text_cfg / image_cfg apply, where it is 0 text_cfg_outside / image_cfg_outside, in "
    "between linearly; the formula is applied per position. Paint 1 where the instruction should act fully and "
    "lower values where the picture should stay closer to the input. Unlike mask, nothing is frozen: every "
    "position is edited, with its own strength.")


def guidance_map_inputs() -> list:
    """guidance_map and its outside scales (Edit, Guider, Sweep; optional, last)."""
    return [
        io.Mask.Input("guidance_map", optional=True, tooltip=GUIDANCE_MAP_TOOLTIP),
        io.Float.Input("text_cfg_outside", default=3.0, min=0.0, max=100.0, step=0.1, round=0.01, optional=True,
                       tooltip="With a guidance_map: text_cfg where the map is 0 (ignored without a map)."),
        io.Float.Input("image_cfg_outside", default=2.0, min=0.0, max=100.0, step=0.1, round=0.01, optional=True,
                       tooltip="With a guidance_map: image_cfg where the map is 0; higher stays closer to the input "
                               "(ignored without a map)."),
    ]


LOCALIZE_TOOLTIP = (
    "auto: the edit finds its own region. Over the first localize_until of the steps the guider gathers where the "
    "instruction changes the prediction (the text term c - i, which it computes anyway), turns that into a soft "
    "region, and from then on edits only there: outside it the latent follows the input image's, as with a drawn "
    "mask (with a mask too, the region is their intersection). No extra UNet calls, except when text_cfg = "
    "image_cfg had dropped the image-only branch: it is evaluated during the gathering steps (3 branches instead of "
    "2 there). A global change (a style) finds no region and edits the whole picture, saying so in the console.")


def schedule_input(tooltip: str = SCHEDULE_TOOLTIP) -> Any:
    return ScheduleType.Input("schedule", optional=True, tooltip=tooltip)


def localize_inputs() -> list:
    """localize and its two settings (Edit, Guider; optional, last)."""
    return [
        io.Combo.Input("localize", options=["off", "auto"], default="off", optional=True, tooltip=LOCALIZE_TOOLTIP),
        io.Float.Input("localize_until", default=DEFAULT_UNTIL, min=0.05, max=1.0, step=0.05, optional=True,
                       tooltip="With localize auto: the fraction of the steps over which the region is gathered "
                               "(the rest edit only inside it)."),
        io.Float.Input("localize_threshold", default=DEFAULT_THRESHOLD, min=0.0, max=1.0, step=0.05, optional=True,
                       tooltip="With localize auto: how strong the instruction's effect must be to count as the "
                               "region, on a 0-1 scale of this edit's own relevance; higher finds a smaller region."),
    ]


def fast_input() -> Any:
    return io.Boolean.Input("fast", default=False, optional=True, tooltip=FAST_TOOLTIP)
