"""The pack's guider: a host CFGGuider whose step is ipx2p_core's guidance and region step.

Everything here is how the host is asked to run that math: one batched model call for the planned
branches (calc_cond_batch, so ControlNet, IP-Adapter and hooks compose), the host's CFG hook points,
the host's noising for the region, an attention choice for CPUs, and the branch labels patches
read. The math itself (which branches, their weights, the blend) is in ipx2p_core.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import comfy.ldm.modules.attention as host_attention
import comfy.patcher_extension
import comfy.sampler_helpers
import comfy.samplers
import comfy.utils
import torch
from comfy.cli_args import args

from ..ipx2p_core import region
from ..ipx2p_core.relevance import RelevanceMap, find_region, steps_to_gather
from ..ipx2p_core.schedule import GuidanceSchedule, progress_of
from ..ipx2p_core.guidance import BRANCH_INPUTS, FORMULA_BRANCHES, IMAGE_ONLY, INSTRUCTPIX2PIX, TEXT_IMAGE, TEXT_ONLY, UNCOND, \
    GuidanceMap, \
    Scale, plan_guidance
from .common import executing_node, input_error, with_image
from .fast_path import fast_model

# Branch -> key in the guider's conds. "positive"/"negative" are the keys the host and other packs
# treat as cond/uncond (area handling, conditioning hooks); the image-only branch is a negative-type
# prompt, as in core's DualCFGGuider, and InstructDiffusion's text-only branch a positive-type one.
COND_KEYS = {TEXT_IMAGE: "positive", IMAGE_ONLY: "image_only", UNCOND: "negative", TEXT_ONLY: "text_only"}
PROMPT_TYPES = {IMAGE_ONLY: "negative", TEXT_ONLY: "positive"}
BRANCH_LABELS_KEY = "ipx2p_branch_labels"


def _exact_sdpa(func: Any, *args: Any, **kwargs: Any) -> Any:
    """optimized_attention_override: the host's PyTorch SDPA attention instead of `func`."""
    return host_attention.attention_pytorch(*args, **kwargs)


def attention_options(model: Any) -> dict[str, Any]:
    """transformer_options that pick the fastest exact attention the host offers on the model's device.

    On CPU the host falls back to sub-quadratic attention unless started with
    --use-pytorch-cross-attention, though PyTorch's SDPA is exact and faster there (bench/README.md).
    GPUs already get SDPA, xformers or better from the host; an attention flag the user gave and an
    override set by another pack are kept. Uses the host's own per-model hook (transformer_options
    "optimized_attention_override"), so nothing global changes.
    """
    device = getattr(model, "load_device", None)
    chosen_by_user = any(getattr(args, flag, False) for flag in ("use_split_cross_attention", "use_quad_cross_attention"))
    fallback = host_attention.optimized_attention is host_attention.attention_sub_quad and not chosen_by_user
    current = model.model_options.get("transformer_options", {})
    if getattr(device, "type", None) == "cpu" and fallback and "optimized_attention_override" not in current:
        return {"optimized_attention_override": _exact_sdpa}
    return {}


class BranchLabels:
    """APPLY_MODEL wrapper: tell patches which batch chunks are cond (0) and uncond (1).

    The host fills transformer_options["cond_or_uncond"] with each chunk's index in the guider's
    list of conds; patches (IP-Adapter's attn2 replacement, SAG's attn1 capture, ...) read it with
    CFGGuider's meaning, 0 = cond, 1 = uncond, and some fail on any other value. Branches that
    carry the instruction (c, and InstructDiffusion's t) are cond; the image-only and unconditional
    branches are uncond: an image prompt then acts like part of the instruction.
    """

    def __init__(self, cond_positions: frozenset[int]) -> None:
        self.cond_positions = cond_positions

    def __call__(self, executor: Any, x: torch.Tensor, t: torch.Tensor, c_concat: Any = None, c_crossattn: Any = None,
                 control: Any = None, transformer_options: dict = {}, **kwargs: Any) -> Any:
        indices = transformer_options.get("cond_or_uncond")
        if indices is not None:
            labels = [0 if index in self.cond_positions else 1 for index in indices]
            transformer_options = {**transformer_options, "cond_or_uncond": labels}
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def _follow(cells: Scale, value: float, start: float) -> Scale:
    """Per-cell scales that follow a schedule: each cell's value times value / start (the value
    itself where the schedule starts at 0)."""
    values = cells if isinstance(cells, tuple) else (cells,)
    followed = tuple(value if start == 0 else v * value / start for v in values)
    return followed if isinstance(cells, tuple) else followed[0]


class RegionRun:
    """The region edit of one sampling run: mask [B,1,h,w], the target latent (unscaled) and the
    run's unit noise, moved to the sampling device and the model's latent scale on first use."""

    def __init__(self, mask: torch.Tensor, target: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> None:
        self.mask, self.target, self.noise, self.sigmas = mask, target, noise, sigmas
        self._ready: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def on(self, x: torch.Tensor, model: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._ready is None or self._ready[0].device != x.device:
            target = model.process_latent_in(self.target.to(device=x.device, dtype=x.dtype))
            self._ready = (self.mask.to(device=x.device, dtype=x.dtype), target, self.noise.to(device=x.device, dtype=x.dtype))
        return self._ready


@dataclass(frozen=True)
class Localize:
    """localize = "auto": gather the text term's relevance over the first `until` of the steps,
    then edit only the region found (threshold on the normalised relevance)."""

    until: float
    threshold: float


class StepClock:
    """Which step of the run a model call belongs to, and that step's progress: ipx2p_core.schedule.
    progress_of at the step's starting sigma, so a schedule means the same for every sampler and
    step count, and every call inside a step (heun's and dpm_2's second call) gets its step's values.

    Steps are counted by the sampler's step callback (every host sampler reports each step), which
    reads nothing from the device. On the CPU, where reading a call's sigma is free, a call whose
    sigma lies outside the counted step's interval (a sampler that does not report its steps, or
    one that jumps back up) is placed by its sigma instead."""

    def __init__(self, sigmas: torch.Tensor) -> None:
        self.sigmas = [float(s) for s in sigmas.flatten().cpu()]
        self.last = max(0, len(self.sigmas) - 2)
        try:
            self.progress_at = [progress_of(s, self.sigmas) for s in self.sigmas[:self.last + 1]]
        except ValueError:  # no sigma above 0: nothing is sampled, every call is at the start
            self.progress_at = [0.0] * (self.last + 1)
        self.step = 0

    def wrap(self, callback: Any) -> Any:
        def counted(step: int, *args: Any, **kwargs: Any) -> Any:
            self.step = int(step) + 1
            return callback(step, *args, **kwargs) if callback is not None else None
        return counted

    def step_of(self, timestep: torch.Tensor) -> int:
        counted = min(self.step, self.last)
        if timestep.device.type != "cpu" or len(self.sigmas) < 2:
            return counted
        sigma = float(timestep.flatten()[0])
        high, low = self.sigmas[counted], self.sigmas[counted + 1]
        if low * (1 - 1e-6) <= sigma <= high * (1 + 1e-6):
            return counted
        index = sum(1 for s in self.sigmas[:-1] if s >= sigma * (1 - 1e-6)) - 1
        return min(max(index, 0), self.last)

    def progress(self, timestep: torch.Tensor) -> tuple[int, float]:
        step = self.step_of(timestep)
        return step, self.progress_at[step]


class Finding:
    """The localize run: the relevance gathered so far, the step it turns into the region, the
    drawn mask it is intersected with, and the region once found."""

    def __init__(self, settings: Localize, steps: int, drawn: torch.Tensor | None, target: torch.Tensor,
                 noise: torch.Tensor, sigmas: torch.Tensor) -> None:
        self.settings, self.drawn = settings, drawn
        self.gather = steps_to_gather(steps, settings.until)
        self.relevance = RelevanceMap()
        self.target, self.noise, self.sigmas = target, noise, sigmas
        self.region: torch.Tensor | None = None
        self.whole = False
        self.notes: list[str] = []

    def finish(self) -> torch.Tensor | None:
        """The region from the relevance gathered (intersected with the drawn mask); None if nothing
        was gathered or the whole picture is the region (no item found one, no mask drawn)."""
        if self.region is None and self.relevance.steps > 0:
            found = find_region(self.relevance.total(), threshold=self.settings.threshold)
            self.notes = found.describe()
            mask = found.mask.float()
            if self.drawn is not None:
                mask = mask * self.drawn.to(mask)
            self.region = mask
            # no item found a region and none was drawn: the whole picture, i.e. the plain edit
            self.whole = self.drawn is None and bool(found.fallback.all())
        return None if self.whole else self.region


class InstructPix2PixGuider(comfy.samplers.CFGGuider):
    """The formula's result at every step (ipx2p_core.guidance: u + text_cfg (c - i) + image_cfg (i - u)
    or InstructDiffusion's), evaluating only the branches the plan needs, all in one batched model call.

    Hooks written for plain CFG see a CFG step from the anchor (i, or u when i is not needed) to
    c at scale text_cfg, plus the image term (see ipx2p_core.guidance): sampler_cfg_function
    replaces the bracket, post-CFG functions receive the whole result with cond = c and
    uncond = the anchor, and a model option "disable_cfg1_optimization" makes every branch run.
    """

    def __init__(self, model_patcher: Any, text_cfg: Scale, image_cfg: Scale, formula: str = INSTRUCTPIX2PIX,
                 node: str = "IPX2P_Guider", fast: bool = False, where: GuidanceMap | None = None,
                 schedule: GuidanceSchedule | None = None, localize: Localize | None = None) -> None:
        self.text_cfg: Scale = text_cfg if isinstance(text_cfg, tuple) else float(text_cfg)
        self.image_cfg: Scale = image_cfg if isinstance(image_cfg, tuple) else float(image_cfg)
        self.formula, self.node, self.where = formula, node, where
        self.schedule, self.localize = schedule, localize
        self._widget_text_cfg = self.text_cfg  # with a schedule, a different cfg (core CFGOverride) replaces its text value
        self._plans: dict[tuple, Any] = {}
        self._clock: StepClock | None = None
        self._finding: Finding | None = None
        self.used_region: torch.Tensor | None = None  # the region of the last run ([B,1,h,w]; None: the whole picture)
        # with a schedule: (step, progress, text_cfg, image_cfg) of each model call
        self.scales_used: list[tuple[int, float, Scale, Scale]] = []
        self.plan = plan_guidance(self.text_cfg, self.image_cfg, formula=formula, where=where)
        # the caller's model is never changed: the guider samples a clone (with `fast`, one whose UNet
        # runs compiled where nodes/fast_path.py can; else it says why, once, and runs the standard path)
        self.fast_reason: str | None = None
        if fast:
            model_patcher, self.fast_reason = fast_model(model_patcher, node)
            if self.fast_reason is not None:
                logging.warning("%s: fast path off, running the standard path: %s.", executing_node(node),
                                self.fast_reason)
        else:
            model_patcher = model_patcher.clone()
        model_patcher.model_options.setdefault("transformer_options", {}).update(attention_options(model_patcher))
        # conds are listed in plan order, so a branch's list index is its position in the plan
        model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, BRANCH_LABELS_KEY,
                                           BranchLabels(self.plan.text_positions))
        self._cfg_ready = False
        super().__init__(model_patcher)
        self._cfg_ready = True
        self.region_mask: torch.Tensor | None = None  # [1|B,1,h,w], 1 = edit here
        self.region_target: torch.Tensor | None = None  # the input image latent, unscaled [B,4,h,w]
        self._region: RegionRun | None = None

    @property
    def cfg(self) -> Scale:
        """CFGGuider's `cfg` is the instruction's scale here: text_cfg (a tuple for a sweep's cells)."""
        return self.text_cfg

    @cfg.setter
    def cfg(self, value: Scale) -> None:
        """Setting `cfg` sets text_cfg (core CFGOverride sets it over a sigma range and puts the old
        value back; image_cfg stays). CFGGuider's constructor sets it too, before the scales exist."""
        if not getattr(self, "_cfg_ready", False):
            return
        value = value if isinstance(value, tuple) else float(value)
        if value != self.text_cfg:
            self.text_cfg = value
            self.plan = plan_guidance(self.text_cfg, self.image_cfg, formula=self.formula, where=self.where)

    def set_edit(self, positive: list, negative: list, image_latent: torch.Tensor, mask: torch.Tensor | None) -> None:
        """The formula's branches as host conds (the image on the host's key concat_latent_image,
        so core nodes and the model's own concat handling see what core IP2P gives), and the region:
        edit only inside `mask` [1|B,1,h,w]; outside it the latent follows the image latent
        [B,4,h,w] (unscaled) noised to each step's sigma, and ends on it."""
        zero = torch.zeros_like(image_latent)
        conds = {}
        for branch in FORMULA_BRANCHES[self.formula]:
            with_text, with_picture = BRANCH_INPUTS[branch]
            entries = with_image(positive if with_text else negative, image_latent if with_picture else zero)
            if branch in PROMPT_TYPES:
                entries = [[t, {**d, "prompt_type": PROMPT_TYPES[branch]}] for t, d in entries]
            conds[COND_KEYS[branch]] = entries
        self.inner_set_conds(conds)
        self.region_mask, self.region_target = mask, image_latent

    def sample(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler: Any, sigmas: torch.Tensor,
               denoise_mask: torch.Tensor | None = None, callback: Any = None, disable_pbar: bool = False,
               seed: Any = None) -> torch.Tensor:
        """CFGGuider.sample, with the region edit done here rather than by the host's inpainting.

        The host blends towards the *sampled* latent (for SamplerCustomAdvanced: the Conditioning
        node's empty latent, giving zeros outside the mask, and at denoise 1 a start that is not
        pure noise inside it). The pack blends towards the input image's latent instead, and a
        noise_mask on the sampled latent (core SetLatentNoiseMask) is taken as the region too.
        """
        if self.region_target is not None and tuple(noise.shape[-2:]) != tuple(self.region_target.shape[-2:]):
            size = "x".join(str(int(v) * 8) for v in reversed(noise.shape[-2:]))
            edit = "x".join(str(int(v) * 8) for v in reversed(self.region_target.shape[-2:]))
            raise input_error(
                executing_node(self.node), "latent_image", f"is {size} px but the guider's edit_latent is {edit} px",
                "a latent of the edit's size (the image channels would be stretched to fit)",
                "sample into the latent output of 'InstructPix2Pix Conditioning', or an empty latent of the edit's size")
        mask = self.region_mask
        if denoise_mask is not None and self.region_target is not None:
            given = comfy.sampler_helpers.prepare_mask(denoise_mask, noise.shape, "cpu")[:, :1].float()
            mask = region.merge_masks(mask, given)
            denoise_mask = None
        self.used_region, self.scales_used = mask, []
        finding = self.localize is not None and self.region_target is not None and sigmas.shape[-1] >= 2
        if self.schedule is not None or finding:
            self._clock = StepClock(sigmas)
            callback = self._clock.wrap(callback)
        try:
            if (mask is None and not finding) or self.region_target is None or sigmas.shape[-1] < 2:
                return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
            batch = int(noise.shape[0])
            target = comfy.utils.resize_to_batch_size(self.region_target, batch).float()
            if mask is not None:
                mask = comfy.utils.resize_to_batch_size(mask.float(), batch)
                self._region = RegionRun(mask, target, noise, sigmas)
            if finding and self.localize is not None:
                self._finding = Finding(self.localize, int(sigmas.shape[-1]) - 1, mask, target, noise, sigmas)
            try:
                samples = super().sample(noise, latent_image, sampler, sigmas, None, callback, disable_pbar, seed)
            finally:
                self._region = None
                finding_run, self._finding = self._finding, None
            if finding_run is not None:
                mask = finding_run.finish()
                for note in finding_run.notes:
                    logging.info("%s: localize: %s", executing_node(self.node), note)
                self.used_region = mask
            return samples if mask is None else region.final_latent(samples, target, mask.to(samples))
        finally:
            self._clock = None

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict = {}, seed: Any = None
                 ) -> torch.Tensor:
        """One step of the region edit (ipx2p_core.region), with the host's noising of the target."""
        finding = self._finding
        if finding is not None and finding.region is None and self._clock is not None \
                and self._clock.step_of(timestep) >= finding.gather:
            found = finding.finish()  # the gathering window is over: from this step on, edit only there
            if found is not None:
                self._region = RegionRun(found, finding.target, finding.noise, finding.sigmas)
        run = self._region
        if run is None:
            return super().__call__(x, timestep, model_options, seed)
        mask, target, noise = run.on(x, self.inner_model)
        if "denoise_mask_function" in model_options:  # e.g. core DifferentialDiffusion
            mask = model_options["denoise_mask_function"](timestep, mask, extra_options={"model": self, "sigmas": run.sigmas})
        noised = self.inner_model.scale_latent_inpaint(x=x, sigma=timestep, noise=noise, latent_image=target,
                                                       denoise_mask=mask)
        denoised = super().__call__(region.model_input(x, noised, mask), timestep, model_options, seed)
        return region.step_result(denoised, target, mask)

    def step_plan(self, timestep: torch.Tensor) -> Any:
        """The plan of this model call: the guider's own, or with a schedule the plan of the scales at
        the step's progress (one plan per pair of scales, made once; a pair with image_cfg 1 drops u)."""
        if self.schedule is None or self._clock is None:
            return self.plan
        step, progress = self._clock.progress(timestep)
        text, image = self.schedule.at(progress)
        if not isinstance(self.text_cfg, tuple) and self.text_cfg != self._widget_text_cfg:
            text = self.text_cfg  # core CFGOverride set text_cfg over its sigma range
        text_cfg: Scale = text
        image_cfg: Scale = image
        if isinstance(self._widget_text_cfg, tuple) or isinstance(self.image_cfg, tuple):
            # a sweep's cells: each cell's scales follow the schedule's shape (value / start value)
            start_text, start_image = self.schedule.at(0.0)
            text_cfg = _follow(self._widget_text_cfg, text, start_text)
            image_cfg = _follow(self.image_cfg, image, start_image)
        key = (text_cfg, image_cfg)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = plan_guidance(text_cfg, image_cfg, formula=self.formula, where=self.where)
        self.scales_used.append((step, progress, text_cfg, image_cfg))
        return plan

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict = {}, seed: Any = None
                      ) -> torch.Tensor:
        """The planned branches in one host call, the host's pre-CFG, CFG and post-CFG hook points,
        and the formula from ipx2p_core (GuidancePlan.combine)."""
        plan = self.step_plan(timestep)
        gathering = self._finding is not None and self._finding.region is None
        if (model_options.get("disable_cfg1_optimization", False) or (gathering and IMAGE_ONLY not in plan.branches)) \
                and len(plan.branches) < 3:
            plan = plan.full
        conds = [self.conds.get(COND_KEYS[branch]) for branch in plan.branches]
        if "sampler_calc_cond_batch_function" in model_options:
            args = {"conds": conds, "input": x, "sigma": timestep, "model": self.inner_model, "model_options": model_options}
            out = model_options["sampler_calc_cond_batch_function"](args)
        else:
            out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        cond_scale = plan.text_factor(x)
        for fn in model_options.get("sampler_pre_cfg_function", []):
            args = {"conds": conds, "conds_out": out, "cond_scale": cond_scale, "timestep": timestep,
                    "input": x, "sigma": timestep, "model": self.inner_model, "model_options": model_options}
            out = fn(args)
        predictions = dict(zip(plan.branches, out))
        if gathering and self._finding is not None:
            self._finding.relevance.add(predictions[TEXT_IMAGE], predictions[IMAGE_ONLY], timestep)
        cond, anchor = predictions[TEXT_IMAGE], predictions[plan.anchor]
        cond_list, anchor_list = conds[0], conds[plan.anchor_index]
        text_step = None
        if "sampler_cfg_function" in model_options:
            cfg_function = model_options["sampler_cfg_function"]

            def text_step(cond: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
                # the host's CFG functions work on noise predictions (x - denoised), the plan on denoised
                args = {"cond": x - cond, "uncond": x - anchor, "cond_scale": cond_scale, "timestep": timestep,
                        "input": x, "sigma": timestep, "cond_denoised": cond, "uncond_denoised": anchor,
                        "model": self.inner_model, "model_options": model_options, "input_cond": cond_list,
                        "input_uncond": anchor_list}
                return x - cfg_function(args)
        result = plan.combine(predictions, text_step)
        for fn in model_options.get("sampler_post_cfg_function", []):
            args = {"denoised": result, "cond": cond_list, "uncond": anchor_list, "cond_scale": cond_scale,
                    "model": self.inner_model, "uncond_denoised": anchor, "cond_denoised": cond, "sigma": timestep,
                    "model_options": model_options, "input": x}
            result = fn(args)
        return result
