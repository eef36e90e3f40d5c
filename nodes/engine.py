"""Where an edit runs: one validated request, the guider built from it, KSampler's sigmas and
noise, and the sampling run. Edit, Guider and Guidance Sweep call this module and nothing else
to edit; the math it runs is ipx2p_core's (guidance, region, sweep planning).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..ipx2p_core.guidance import FORMULAS, INSTRUCTPIX2PIX, GuidanceMap, Scale, edit_batch_size
from ..ipx2p_core.guidance import guidance_map as make_guidance_map
from ..ipx2p_core.masks import latent_mask, mask_batch
from ..ipx2p_core.region import empty_items
from ..ipx2p_core.relevance import DEFAULT_THRESHOLD, DEFAULT_UNTIL
from ..ipx2p_core.schedule import GuidanceSchedule
from ..ipx2p_core.sweep import cells_in_memory, plan_runs, run_scales
from .common import as_mask, check_guidance, check_text_width, edit_samples, input_error, require_ip2p_model, text_batch
from .host_compat import sampling_memory
from .ip2p_guider import InstructPix2PixGuider, Localize, attention_options
from .sampling import NOISE_MODES, initial_noise, sampler_for

__all__ = [
    "EditRequest", "Sampling", "attention_options", "build_guider", "edit", "edit_sigmas", "guider_for", "run_edit",
    "sweep", "sweep_latents",
]


def region_mask(node: str, mask: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """A checked MASK [B,H,W] as the edit's latent mask [1 or batch, 1, height, width]."""
    mask_batch(int(mask.shape[0]), batch, node)
    scaled = latent_mask(mask, height, width)
    empty = empty_items(scaled)
    if empty:
        which = "the mask" if scaled.shape[0] == 1 else f"mask item {empty[0]}"
        raise input_error(node, "mask", f"selects nothing ({which} is all zero)",
                          "a mask with 1 (or soft values) where the image should change",
                          "paint the region to edit (in Load Image's mask editor, 1 = edit), or disconnect the mask "
                          "to edit the whole image")
    return scaled


# The guidance map's scales where it is 0, by default: follow the instruction less, stay closer to the input.
TEXT_CFG_OUTSIDE, IMAGE_CFG_OUTSIDE = 3.0, 2.0


def checked_guidance_map(node: str, weights: Any, batch: int, height: int, width: int, text_outside: float,
                         image_outside: float) -> GuidanceMap:
    """A checked `guidance_map` MASK [B,H,W] at the latent's size as the plan's GuidanceMap (any
    values in 0..1 are fine, all zeros too: the whole picture then gets the outside scales)."""
    pixels = as_mask(node, weights, "guidance_map")
    if int(pixels.shape[0]) not in (1, batch):
        raise input_error(node, "guidance_map", f"has batch {int(pixels.shape[0])} and the edit has batch {batch}",
                          "a map of batch 1 (used for every item)" + ("" if batch == 1 else f" or {batch}"),
                          "pass one map, or one per image")
    check_guidance(node, text_outside, image_outside, ("text_cfg_outside", "image_cfg_outside"))
    return make_guidance_map(latent_mask(pixels, height, width), text_outside, image_outside)


LOCALIZE_MODES = ("off", "auto")


def checked_localize(node: str, mode: str, until: float, threshold: float) -> Localize | None:
    """The localize settings (None for "off"), or the user's error."""
    if mode not in LOCALIZE_MODES:
        raise input_error(node, "localize", f"is {mode!r}", "off or auto", "choose off or auto")
    if mode == "off":
        return None
    if not 0.0 < float(until) <= 1.0:
        raise input_error(node, "localize_until", f"is {until}", "a fraction of the steps above 0 and at most 1",
                          f"set it between 0.05 and 1 (default {DEFAULT_UNTIL})")
    if not 0.0 <= float(threshold) <= 1.0:
        raise input_error(node, "localize_threshold", f"is {threshold}", "a value from 0 to 1",
                          f"set it between 0 and 1 (default {DEFAULT_THRESHOLD}; higher finds a smaller region)")
    return Localize(float(until), float(threshold))


@dataclass(frozen=True)
class EditRequest:
    """One edit's guidance inputs, checked once (EditRequest.checked): the model, the instruction
    and empty-text conditionings, the image latent [B,4,h,w] (unscaled), the batch, the scales
    (floats, or per-item tuples for a sweep's cells), the formula, the region (a latent mask
    [1|B,1,h,w], or None for the whole picture) and the guidance map (`where`: scales per
    position, or None)."""

    node: str
    model: Any
    positive: list
    negative: list
    image_latent: torch.Tensor
    batch: int
    text_cfg: Scale
    image_cfg: Scale
    formula: str = INSTRUCTPIX2PIX
    region: torch.Tensor | None = None
    batch_index: list[int] | None = None
    fast: bool = False
    where: GuidanceMap | None = None
    schedule: GuidanceSchedule | None = None
    localize: Localize | None = None

    @classmethod
    def checked(cls, node: str, model: Any, positive: list, negative: list, edit_latent: Any, text_cfg: Scale,
                image_cfg: Scale, mask: Any = None, formula: str = INSTRUCTPIX2PIX, fast: bool = False, *,
                guidance_map: Any = None, text_cfg_outside: float = TEXT_CFG_OUTSIDE,
                image_cfg_outside: float = IMAGE_CFG_OUTSIDE, schedule: Any = None, localize: str = "off",
                localize_until: float = DEFAULT_UNTIL, localize_threshold: float = DEFAULT_THRESHOLD) -> EditRequest:
        """The request, or the first bad input as a ValueError naming `node`. A noise_mask on
        edit_latent (core Set Latent Noise Mask) is the region when `mask` is None, as KSampler
        honours it."""
        if mask is None and isinstance(edit_latent, dict) and isinstance(edit_latent.get("noise_mask"), torch.Tensor):
            mask = edit_latent["noise_mask"]
        pixels_mask = as_mask(node, mask) if mask is not None else None
        require_ip2p_model(node, model)
        if formula not in FORMULAS:
            raise input_error(node, "formula", f"is {formula!r}", f"one of {', '.join(FORMULAS)}",
                              "choose instructpix2pix (InstructPix2Pix, MagicBrush, HIVE, CosXL ...) or instructdiffusion")
        check_guidance(node, text_cfg, image_cfg)
        samples = edit_samples(node, edit_latent)
        batch = edit_batch_size(max(text_batch(positive), text_batch(negative)), samples.shape[0], who=node)
        check_text_width(node, model, {"positive": positive, "negative": negative})
        region = None
        if pixels_mask is not None:
            region = region_mask(node, pixels_mask, batch, int(samples.shape[-2]), int(samples.shape[-1]))
        where = None
        if guidance_map is not None:
            where = checked_guidance_map(node, guidance_map, batch, int(samples.shape[-2]), int(samples.shape[-1]),
                                         text_cfg_outside, image_cfg_outside)
        if schedule is not None and not isinstance(schedule, GuidanceSchedule):
            raise input_error(node, "schedule", f"is a {type(schedule).__name__}",
                              "the schedule output of 'InstructPix2Pix Guidance Schedule'",
                              "connect an InstructPix2Pix Guidance Schedule node, or disconnect the input")
        return cls(node, model, positive, negative, samples, batch, text_cfg, image_cfg, formula, region,
                   edit_latent.get("batch_index"), bool(fast), where, schedule,
                   checked_localize(node, localize, localize_until, localize_threshold))

    def with_scales(self, text_cfg: Scale, image_cfg: Scale) -> EditRequest:
        return dataclasses.replace(self, text_cfg=text_cfg, image_cfg=image_cfg)

    def item(self, index: int, batch: int) -> EditRequest:
        """Item `index` of a batch of `batch` as a request of its own (entries of batch 1 are shared)."""
        def one(value: Any) -> Any:
            return value[index] if isinstance(value, tuple) else value

        latent = self.image_latent[index:index + 1] if self.image_latent.shape[0] > 1 else self.image_latent
        region = self.region[index:index + 1] if self.region is not None and self.region.shape[0] > 1 else self.region
        where = self.where
        if where is not None and where.weights.shape[0] > 1:
            where = make_guidance_map(where.weights[index:index + 1], where.text_outside, where.image_outside)
        return dataclasses.replace(self, positive=item_of(self.positive, index, batch), image_latent=latent, batch=1,
                                   text_cfg=one(self.text_cfg), image_cfg=one(self.image_cfg), region=region,
                                   batch_index=None, where=where)


@dataclass(frozen=True)
class Sampling:
    """How an edit is sampled, as core KSampler takes it."""

    seed: int
    steps: int
    sampler_name: str
    scheduler: str
    denoise: float
    noise_mode: str = "per item"

    def checked(self, node: str) -> Sampling:
        """Itself, or a ValueError naming `node` for a noise mode, sampler or scheduler this host
        does not have (a workflow saved on another version; some hosts do not check a V3 node's
        option lists, and KSampler would silently swap in its first)."""
        if self.noise_mode not in NOISE_MODES:
            raise input_error(node, "noise", f"is {self.noise_mode!r}", f"one of {', '.join(NOISE_MODES)}",
                              "choose 'per item' or 'same for all'")
        for input_name, value, known in (("sampler_name", self.sampler_name, comfy.samplers.KSampler.SAMPLERS),
                                         ("scheduler", self.scheduler, comfy.samplers.KSampler.SCHEDULERS)):
            if value not in known:
                raise input_error(node, input_name, f"is {value!r}, which this ComfyUI does not have",
                                  f"one of {', '.join(known)}",
                                  "pick one from the list (the workflow was saved with another ComfyUI version)")
        return self


def guider_for(request: EditRequest) -> InstructPix2PixGuider:
    """The pack's guider for a request (the caller's MODEL is cloned, never changed)."""
    guider = InstructPix2PixGuider(request.model, request.text_cfg, request.image_cfg, request.formula, request.node,
                                   fast=request.fast, where=request.where, schedule=request.schedule,
                                   localize=request.localize)
    guider.set_edit(request.positive, request.negative, request.image_latent, request.region)
    return guider


def build_guider(node: str, model: Any, positive: list, negative: list, edit_latent: dict, text_cfg: Scale,
                 image_cfg: Scale, mask: Any = None, formula: str = INSTRUCTPIX2PIX, fast: bool = False,
                 **guidance: Any) -> tuple[InstructPix2PixGuider, int]:
    """The guider for these inputs, checked, and the edit's batch."""
    request = EditRequest.checked(node, model, positive, negative, edit_latent, text_cfg, image_cfg, mask, formula, fast,
                                  **guidance)
    return guider_for(request), request.batch


def edit_sigmas(model: Any, scheduler: str, steps: int, denoise: float, sampler_name: str = "euler") -> torch.Tensor:
    """The sigmas core KSampler uses for these settings, taken from the host's KSampler itself:
    BasicScheduler's denoise rule (the last `steps` of a longer schedule), no sigmas at denoise 0,
    and the schedule one step longer with its penultimate sigma dropped for the samplers listed in
    KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS (dpm_2, uni_pc, ...)."""
    ksampler = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=sampler_name, scheduler=scheduler,
                                       denoise=denoise)
    return ksampler.sigmas.cpu()


def item_of(conditioning: list, index: int, batch: int) -> list:
    """Item `index` of a conditioning of batch `batch` (entries of batch 1 are shared)."""
    items = []
    for tensor, extra in conditioning:
        extra = dict(extra)
        pooled = extra.get("pooled_output")
        if isinstance(pooled, torch.Tensor) and pooled.shape[0] == batch > 1:
            extra["pooled_output"] = pooled[index:index + 1]
        items.append([tensor[index:index + 1] if tensor.shape[0] == batch > 1 else tensor, extra])
    return items


def edit(request: EditRequest, sampling: Sampling, batch: int | None = None, callback: Any = None,
         report: dict | None = None) -> torch.Tensor:
    """Sample one edit (KSampler's way: sigmas, start, noise) and return the latent, unscaled.

    `batch` forces the batch (a sweep samples one image as many cells); `callback` replaces the
    default progress bar with previews; `report`, when given, receives "region": the latent mask
    [B,1,h,w] the edit was confined to (the drawn mask and / or the region localize found), or
    None for the whole picture, and "scales": with a schedule, (step, progress, text_cfg,
    image_cfg) of each model call.
    """
    model = request.model
    batch = batch or request.batch
    image_latent = request.image_latent
    if sampling.denoise >= 1.0:
        start = torch.zeros((batch, *image_latent.shape[1:]), dtype=image_latent.dtype)
    else:
        start = comfy.utils.resize_to_batch_size(image_latent, batch).clone()
    sigmas = edit_sigmas(model, sampling.scheduler, sampling.steps, sampling.denoise, sampling.sampler_name)
    if sigmas.numel() < 2:  # denoise 0: nothing to sample, the input comes back (as core KSampler)
        return start
    start = comfy.sample.fix_empty_latent_channels(model, start)
    sampler = sampler_for(sampling.sampler_name, sampling.noise_mode, tuple(start.shape), sampling.seed, sigmas,
                          model.load_device)
    if sampler is None:
        # A sampler whose step noise the pack cannot share over a batch: one run per item, each
        # with the seed's own noise, which is what "same for all" means.
        parts, regions = [], []
        for index in range(batch):
            comfy.model_management.throw_exception_if_processing_interrupted()
            item_report: dict = {}
            parts.append(edit(request.item(index, batch), sampling, batch=1, callback=callback, report=item_report))
            regions.append(item_report.get("region"))
            if report is not None:
                report.setdefault("scales", []).extend(item_report.get("scales", []))
        if report is not None:
            report["region"] = None if all(r is None for r in regions) else torch.cat(
                [torch.ones_like(parts[i][:, :1]) if r is None else r.to(parts[i]) for i, r in enumerate(regions)])
        return torch.cat(parts)
    guider = guider_for(request)
    noise = initial_noise(start, sampling.seed, sampling.noise_mode, request.batch_index)
    if callback is None:
        callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    samples = guider.sample(noise, start, sampler, sigmas, denoise_mask=None, callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=sampling.seed)
    if report is not None:
        used = guider.used_region
        report["region"] = None if used is None else comfy.utils.resize_to_batch_size(used.float().cpu(), batch)
        report["scales"] = list(guider.scales_used)
    return samples.to(comfy.model_management.intermediate_device())


def run_edit(node: str, model: Any, positive: list, negative: list, edit_latent: dict, *, seed: int, steps: int,
             text_cfg: Scale, image_cfg: Scale, sampler_name: str, scheduler: str, denoise: float,
             mask: torch.Tensor | None = None, noise_mode: str = "per item", batch: int | None = None,
             callback: Any = None, formula: str = INSTRUCTPIX2PIX, fast: bool = False, report: dict | None = None,
             **guidance: Any) -> torch.Tensor:
    """edit() from a node's inputs: the sampling settings, then the request, checked once.
    `guidance`: guidance_map, text_cfg_outside, image_cfg_outside, schedule, localize,
    localize_until, localize_threshold (as EditRequest.checked); `report` as edit()'s."""
    sampling = Sampling(seed, steps, sampler_name, scheduler, denoise, noise_mode).checked(node)
    request = EditRequest.checked(node, model, positive, negative, edit_latent, text_cfg, image_cfg, mask, formula, fast,
                                  **guidance)
    return edit(request, sampling, batch, callback, report)


# -- guidance sweeps ---------------------------------------------------------------------------------------
def cells_that_fit(model: Any, branches: int, latent_shape: tuple[int, ...], wanted: int) -> int:
    """How many cells one sampling run can batch: what the device's free memory holds (the
    host's own activation estimate for the UNet, with the model's unloaded part set aside)."""
    memory = sampling_memory(model, [branches, *latent_shape[1:]])
    return wanted if memory is None else cells_in_memory(*memory, wanted)


class SweepProgress:
    """One progress bar (with latent previews) over every step of every run of a sweep."""

    def __init__(self, model: Any, total: int) -> None:
        self.total, self.done = total, 0
        self.bar = comfy.utils.ProgressBar(total)
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def callback(self, step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None:
        self.done += 1
        preview = self.previewer.decode_latent_to_preview_image("JPEG", x0) if self.previewer else None
        self.bar.update_absolute(min(self.done, self.total), self.total, preview)


def sweep(request: EditRequest, sampling: Sampling, cells: list[tuple[float, float]], cells_per_run: int = 0
          ) -> torch.Tensor:
    """Each cell's latent [len(cells),4,h,w], in cell order, every cell with the same seed and
    noise ("same for all"): cells that need the same branches are batched together (so the sweep
    costs what its single edits cost), in runs as large as memory allows or `cells_per_run`."""
    model = request.model
    shape = tuple(request.image_latent.shape)
    sampling = dataclasses.replace(sampling, noise_mode="same for all")
    runs = plan_runs(cells, lambda branches, wanted: cells_per_run or cells_that_fit(model, branches, shape, wanted),
                     request.formula)
    sigmas = edit_sigmas(model, sampling.scheduler, sampling.steps, sampling.denoise, sampling.sampler_name)
    steps_per_run = max(0, sigmas.shape[-1] - 1)
    total = 0
    for run in runs:
        shared = sampler_for(sampling.sampler_name, sampling.noise_mode, (len(run), *shape[1:]), sampling.seed, sigmas,
                             model.load_device)
        total += steps_per_run * (1 if shared is not None else len(run))
    progress = SweepProgress(model, max(1, total))
    results: dict[int, torch.Tensor] = {}
    for run in runs:
        comfy.model_management.throw_exception_if_processing_interrupted()
        samples = edit(request.with_scales(*run_scales(cells, run)), sampling, batch=len(run), callback=progress.callback)
        for position, index in enumerate(run):
            results[index] = samples[position:position + 1]
    return torch.cat([results[index] for index in range(len(cells))])


def sweep_latents(model: Any, positive: list, negative: list, edit_latent: dict, cells: list[tuple[float, float]], *,
                  node: str = "IPX2P_GuidanceSweep", seed: int, steps: int, sampler_name: str, scheduler: str,
                  denoise: float, mask: torch.Tensor | None, cells_per_run: int = 0, formula: str = INSTRUCTPIX2PIX,
                  fast: bool = False) -> torch.Tensor:
    """sweep() from a node's inputs, checked once (every cell's scales among them)."""
    sampling = Sampling(seed, steps, sampler_name, scheduler, denoise, "same for all").checked(node)
    texts, images = tuple(cell[0] for cell in cells), tuple(cell[1] for cell in cells)
    request = EditRequest.checked(node, model, positive, negative, edit_latent, texts, images, mask, formula, fast)
    return sweep(request, sampling, cells, cells_per_run)
