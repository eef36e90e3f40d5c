"""InstructPix2Pix Guider (for SamplerCustomAdvanced) and InstructPix2Pix Edit (the one-node path)."""
from __future__ import annotations

from typing import Any

import comfy.ldm.modules.attention as host_attention
import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.sampler_helpers
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy.cli_args import args

from ..ipx2p_core.guidance import (
    FORMULAS, IMAGE_ONLY, INSTRUCTDIFFUSION, INSTRUCTPIX2PIX, TEXT_BRANCHES, TEXT_IMAGE, TEXT_ONLY, UNCOND, Scale,
    plan_guidance,
)
from ._comfy import io
from .common import (
    as_mask, check_guidance, check_text_width, edit_conditionings, edit_mask, executing_node, input_error, require_ip2p_model,
    with_image,
)
from .sampling import NOISE_MODES, initial_noise, sampler_for

GUIDER = "IPX2P_Guider"
EDIT = "IPX2P_Edit"

# Branch -> key in the guider's conds. "positive"/"negative" are the keys the host and other packs
# treat as cond/uncond (area handling, conditioning hooks); the image-only branch is a negative-type
# prompt, as in core's DualCFGGuider.
COND_KEYS = {TEXT_IMAGE: "positive", IMAGE_ONLY: "image_only", UNCOND: "negative", TEXT_ONLY: "text_only"}


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


BRANCH_LABELS_KEY = "ipx2p_branch_labels"


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


class InstructPix2PixGuider(comfy.samplers.CFGGuider):
    """u + text_cfg (c - i) + image_cfg (i - u) at every step, evaluating only the branches the
    algebra needs (see ipx2p_core.guidance), all in one batched model call.

    Hooks written for plain CFG see a CFG step from the anchor (i, or u when i is not needed) to
    c at scale text_cfg, plus the image term (see ipx2p_core.guidance): sampler_cfg_function
    replaces the bracket, post-CFG functions receive the whole result with cond = c and
    uncond = the anchor, and a model option "disable_cfg1_optimization" makes every branch run.
    """

    def __init__(self, model_patcher: Any, text_cfg: Scale, image_cfg: Scale, formula: str = INSTRUCTPIX2PIX) -> None:
        self.text_cfg: Scale = text_cfg if isinstance(text_cfg, tuple) else float(text_cfg)
        self.image_cfg: Scale = image_cfg if isinstance(image_cfg, tuple) else float(image_cfg)
        self.formula = formula
        self.plan = plan_guidance(self.text_cfg, self.image_cfg, formula=formula)
        full = plan_guidance(self.text_cfg, self.image_cfg, skip_branches=False, formula=formula)
        # conds are listed in plan order, so a branch's list index is its position in the plan
        cond_positions = frozenset(i for i, branch in enumerate(full.branches) if branch in TEXT_BRANCHES)
        model_patcher = model_patcher.clone()  # the caller's model is never changed
        model_patcher.model_options.setdefault("transformer_options", {}).update(attention_options(model_patcher))
        model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, BRANCH_LABELS_KEY,
                                           BranchLabels(cond_positions))
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
            self.plan = plan_guidance(self.text_cfg, self.image_cfg, formula=self.formula)

    def set_region(self, mask: torch.Tensor | None, target: torch.Tensor) -> None:
        """Edit only inside `mask` [1|B,1,h,w]; outside it the latent follows `target` (the input
        image's latent, unscaled) noised to each step's sigma, and ends on it."""
        self.region_mask = mask
        self.region_target = target

    def hook_scale(self, like: torch.Tensor) -> float | torch.Tensor:
        """cond_scale for CFG hooks: text_cfg, or per item a [B,1,...] tensor (guidance sweeps)."""
        if isinstance(self.text_cfg, tuple):
            return torch.tensor(self.text_cfg, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.ndim - 1)))
        return self.text_cfg

    def set_edit_conds(self, text_image: list, image_only: list, uncond: list, text_only: list | None = None) -> None:
        image_only = [[t, {**d, "prompt_type": "negative"}] for t, d in image_only]
        conds = {"positive": text_image, "image_only": image_only, "negative": uncond}
        if text_only is not None:
            conds["text_only"] = [[t, {**d, "prompt_type": "positive"}] for t, d in text_only]
        self.inner_set_conds(conds)

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
                executing_node(GUIDER), "latent_image", f"is {size} px but the guider's edit_latent is {edit} px",
                "a latent of the edit's size (the image channels would be stretched to fit)",
                "sample into the latent output of 'InstructPix2Pix Conditioning', or an empty latent of the edit's size")
        mask = self.region_mask
        if denoise_mask is not None and self.region_target is not None:
            given = comfy.sampler_helpers.prepare_mask(denoise_mask, noise.shape, "cpu")[:, :1].float()
            mask = given if mask is None else mask.to(given) * given
            denoise_mask = None
        if mask is None or self.region_target is None or sigmas.shape[-1] < 2:
            return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        batch = int(noise.shape[0])
        target = comfy.utils.resize_to_batch_size(self.region_target, batch).float()
        mask = comfy.utils.resize_to_batch_size(mask.float(), batch)
        self._region = RegionRun(mask, target, noise, sigmas)
        try:
            samples = super().sample(noise, latent_image, sampler, sigmas, None, callback, disable_pbar, seed)
        finally:
            self._region = None
        # Outside a hard mask the result is the input latent itself, not its round trip through the
        # model's latent scaling (which can differ in the last bit).
        outside = (mask == 0).to(samples.device).expand_as(samples)
        return torch.where(outside, target.to(samples), samples)

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict = {}, seed: Any = None
                 ) -> torch.Tensor:
        """The host's latent-space inpainting step (KSamplerX0Inpaint), towards the input image."""
        run = self._region
        if run is None:
            return super().__call__(x, timestep, model_options, seed)
        mask, target, noise = run.on(x, self.inner_model)
        if "denoise_mask_function" in model_options:  # e.g. core DifferentialDiffusion
            mask = model_options["denoise_mask_function"](timestep, mask, extra_options={"model": self, "sigmas": run.sigmas})
        keep = 1.0 - mask
        noised = self.inner_model.scale_latent_inpaint(x=x, sigma=timestep, noise=noise, latent_image=target,
                                                       denoise_mask=mask)
        denoised = super().__call__(x * mask + noised * keep, timestep, model_options, seed)
        return denoised * mask + target * keep

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict = {}, seed: Any = None
                      ) -> torch.Tensor:
        plan = self.plan
        if model_options.get("disable_cfg1_optimization", False) and len(plan.branches) < 3:
            plan = plan_guidance(self.text_cfg, self.image_cfg, skip_branches=False, formula=self.formula)
        conds = [self.conds.get(COND_KEYS[branch]) for branch in plan.branches]
        if "sampler_calc_cond_batch_function" in model_options:
            args = {"conds": conds, "input": x, "sigma": timestep, "model": self.inner_model, "model_options": model_options}
            out = model_options["sampler_calc_cond_batch_function"](args)
        else:
            out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        for fn in model_options.get("sampler_pre_cfg_function", []):
            args = {"conds": conds, "conds_out": out, "cond_scale": self.hook_scale(x), "timestep": timestep,
                    "input": x, "sigma": timestep, "model": self.inner_model, "model_options": model_options}
            out = fn(args)
        predictions = dict(zip(plan.branches, out))
        cond, anchor = predictions[TEXT_IMAGE], predictions[plan.anchor]
        cond_list, anchor_list = conds[0], conds[plan.branches.index(plan.anchor)]
        if "sampler_cfg_function" in model_options:
            args = {"cond": x - cond, "uncond": x - anchor, "cond_scale": self.hook_scale(x), "timestep": timestep,
                    "input": x, "sigma": timestep, "cond_denoised": cond, "uncond_denoised": anchor,
                    "model": self.inner_model, "model_options": model_options, "input_cond": cond_list,
                    "input_uncond": anchor_list}
            result = x - model_options["sampler_cfg_function"](args)
        else:
            result = plan.text_guidance(predictions)
        correction = plan.image_correction(predictions)
        if correction is not None:
            result = result + correction
        for fn in model_options.get("sampler_post_cfg_function", []):
            args = {"denoised": result, "cond": cond_list, "uncond": anchor_list, "cond_scale": self.hook_scale(x),
                    "model": self.inner_model, "uncond_denoised": anchor, "cond_denoised": cond, "sigma": timestep,
                    "model_options": model_options, "input": x}
            result = fn(args)
        return result


def build_guider(node: str, model: Any, positive: list, negative: list, edit_latent: dict,
                 text_cfg: Scale, image_cfg: Scale, mask: Any = None, formula: str = INSTRUCTPIX2PIX
                 ) -> tuple[InstructPix2PixGuider, int]:
    """The pack's guider for an edit, with its region when a mask is given; also the edit's batch."""
    require_ip2p_model(node, model)
    if formula not in FORMULAS:
        raise input_error(node, "formula", f"is {formula!r}", f"one of {', '.join(FORMULAS)}",
                          "choose instructpix2pix (InstructPix2Pix, MagicBrush, HIVE, CosXL ...) or instructdiffusion")
    check_guidance(node, text_cfg, image_cfg)
    text_image, image_only, uncond, batch = edit_conditionings(node, positive, negative, edit_latent)
    check_text_width(node, model, {"positive": positive, "negative": negative})
    samples = edit_latent["samples"]
    if mask is None and isinstance(edit_latent.get("noise_mask"), torch.Tensor):
        mask = edit_latent["noise_mask"]  # core Set Latent Noise Mask on the edit latent, as KSampler honours it
    guider = InstructPix2PixGuider(model, text_cfg, image_cfg, formula)
    text_only = with_image(positive, torch.zeros_like(samples)) if formula == INSTRUCTDIFFUSION else None
    guider.set_edit_conds(text_image, image_only, uncond, text_only)
    region = edit_mask(node, mask, batch, int(samples.shape[-2]), int(samples.shape[-1]))
    guider.set_region(region, samples)
    return guider, batch


TEXT_CFG_TOOLTIP = "Instruction guidance s_T (paper: 7.5). Higher follows the instruction harder."
IMAGE_CFG_TOOLTIP = ("Image guidance s_I (paper: 1.5). Higher stays closer to the input image; "
                     "1.0 drops the unconditional branch (faster, same formula).")


def guidance_inputs() -> list:
    return [
        io.Model.Input("model", tooltip="The InstructPix2Pix model (8-channel UNet)."),
        io.Conditioning.Input("positive", tooltip="The encoded instruction, e.g. 'make it snowy'."),
        io.Conditioning.Input("negative", tooltip="The encoded empty prompt (the paper's unconditional text)."),
        io.Latent.Input("edit_latent", tooltip="The image to edit, from 'InstructPix2Pix Encode Image'."),
    ]


MASK_TOOLTIP = ("Optional: edit only here (1 = edit, soft values blend; any size, batch 1 for every item). Outside "
                "the mask the latent follows the input image's latent and ends on it exactly. A mask drawn on the "
                "original picture is fitted as the Encode node fits the picture. A noise_mask on edit_latent (core "
                "Set Latent Noise Mask) counts as this mask.")
NOISE_TOOLTIP = ("per item: item k of a batch gets the seed's k-th noise, as KSampler does (item 0 equals the single "
                 "edit for deterministic samplers). same for all: every item gets item 0's noise at the start and at "
                 "every step, so each item equals its single edit with this seed: consistent variants, video frames.")


FORMULA_TOOLTIP = ("instructpix2pix: u + text_cfg (c - i) + image_cfg (i - u), for InstructPix2Pix, MagicBrush, HIVE, "
                   "SDXL-InstructPix2Pix and CosXL. instructdiffusion: 0.5 (i + t) + text_cfg (c - i) + image_cfg (c - t) "
                   "with t = instruction and zero image (InstructDiffusion's; its defaults are 5.0 / 1.25).")


def mask_input() -> Any:
    return io.Mask.Input("mask", optional=True, tooltip=MASK_TOOLTIP)


def formula_input() -> Any:
    return io.Combo.Input("formula", options=list(FORMULAS), default=INSTRUCTPIX2PIX, optional=True, tooltip=FORMULA_TOOLTIP)


class Guider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=GUIDER,
            display_name="InstructPix2Pix Guider",
            category="instructpix2pix",
            description=(
                "InstructPix2Pix guidance, u + text_cfg (c - i) + image_cfg (i - u), as a GUIDER for "
                "SamplerCustomAdvanced. Sample into the edit's size (the Conditioning node's latent output). "
                "With a mask only the masked region is edited (a noise_mask on the sampled latent counts too)."
            ),
            inputs=guidance_inputs() + [
                io.Float.Input("text_cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=TEXT_CFG_TOOLTIP),
                io.Float.Input("image_cfg", default=1.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=IMAGE_CFG_TOOLTIP),
                mask_input(),
                formula_input(),
            ],
            outputs=[io.Guider.Output(tooltip="Connect to SamplerCustomAdvanced's guider.")],
        )

    @classmethod
    def execute(cls, model: Any, positive: list, negative: list, edit_latent: dict, text_cfg: float,
                image_cfg: float, mask: torch.Tensor | None = None, formula: str = INSTRUCTPIX2PIX) -> io.NodeOutput:
        guider, _ = build_guider(GUIDER, model, positive, negative, edit_latent, text_cfg, image_cfg, mask, formula)
        return io.NodeOutput(guider)


def check_sampling_names(node: str, sampler_name: str, scheduler: str) -> None:
    """Refuse a sampler or scheduler this ComfyUI does not have (a workflow saved on another version;
    some hosts do not check a V3 node's option lists, and KSampler would silently swap in its first)."""
    for input_name, value, known in (("sampler_name", sampler_name, comfy.samplers.KSampler.SAMPLERS),
                                     ("scheduler", scheduler, comfy.samplers.KSampler.SCHEDULERS)):
        if value not in known:
            raise input_error(node, input_name, f"is {value!r}, which this ComfyUI does not have",
                              f"one of {', '.join(known)}",
                              "pick one from the list (the workflow was saved with another ComfyUI version)")


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


def run_edit(node: str, model: Any, positive: list, negative: list, edit_latent: dict, *, seed: int, steps: int,
             text_cfg: Scale, image_cfg: Scale, sampler_name: str, scheduler: str, denoise: float,
             mask: torch.Tensor | None = None, noise_mode: str = "per item", batch: int | None = None,
             callback: Any = None, formula: str = INSTRUCTPIX2PIX) -> torch.Tensor:
    """Sample one edit (KSampler's way: sigmas, start, noise) and return the latent, unscaled.

    `batch` forces the batch (a sweep samples one image as many cells); `callback` replaces the
    default progress bar with previews.
    """
    check_sampling_names(node, sampler_name, scheduler)
    if mask is None and isinstance(edit_latent.get("noise_mask"), torch.Tensor):
        mask = edit_latent["noise_mask"]
    mask = as_mask(node, mask) if mask is not None else None
    guider, edit_batch = build_guider(node, model, positive, negative, edit_latent, text_cfg, image_cfg, mask, formula)
    batch = batch or edit_batch
    image_latent = edit_latent["samples"]
    if denoise >= 1.0:
        start = torch.zeros((batch, *image_latent.shape[1:]), dtype=image_latent.dtype)
    else:
        start = comfy.utils.resize_to_batch_size(image_latent, batch).clone()
    sigmas = edit_sigmas(model, scheduler, steps, denoise, sampler_name)
    if sigmas.numel() < 2:  # denoise 0: nothing to sample, the input comes back (as core KSampler)
        return start
    start = comfy.sample.fix_empty_latent_channels(model, start)
    sampler = sampler_for(sampler_name, noise_mode, tuple(start.shape), seed, sigmas, model.load_device)
    if sampler is None:
        # A sampler whose step noise the pack cannot share over a batch: one run per item, each
        # with the seed's own noise, which is what "same for all" means.
        parts = []
        for index in range(batch):
            comfy.model_management.throw_exception_if_processing_interrupted()
            part_latent = {"samples": image_latent[index:index + 1] if image_latent.shape[0] > 1 else image_latent,
                           "noise_mask": None}
            part_mask = mask[index:index + 1] if mask is not None and mask.shape[0] > 1 else mask
            parts.append(run_edit(
                node, model, item_of(positive, index, batch), negative, part_latent, seed=seed, steps=steps,
                text_cfg=text_cfg[index] if isinstance(text_cfg, tuple) else text_cfg,
                image_cfg=image_cfg[index] if isinstance(image_cfg, tuple) else image_cfg,
                sampler_name=sampler_name, scheduler=scheduler, denoise=denoise, mask=part_mask, batch=1,
                callback=callback, formula=formula,
            ))
        return torch.cat(parts)
    noise = initial_noise(start, seed, noise_mode, edit_latent.get("batch_index"))
    if callback is None:
        callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    samples = guider.sample(noise, start, sampler, sigmas, denoise_mask=None, callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return samples.to(comfy.model_management.intermediate_device())


class Edit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=EDIT,
            display_name="InstructPix2Pix Edit",
            category="instructpix2pix",
            description=(
                "Edits the image as the instruction says: InstructPix2Pix guidance and sampling in one node. "
                "Defaults are the paper's (100 Euler-ancestral steps, normal schedule, 7.5 / 1.5). Decode the "
                "LATENT with VAE Decode, or feed it to the next edit's edit_latent (no VAE round trip). With a "
                "mask only the masked region changes."
            ),
            inputs=guidance_inputs() + [
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="The noise seed."),
                io.Int.Input("steps", default=100, min=1, max=10000,
                             tooltip="Sampling steps (paper: 100). 20-30 are usually enough for a preview."),
                io.Float.Input("text_cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=TEXT_CFG_TOOLTIP),
                io.Float.Input("image_cfg", default=1.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=IMAGE_CFG_TOOLTIP),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler_ancestral",
                               tooltip="The sampler (paper: Euler ancestral)."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="The noise schedule (paper: the k-diffusion schedule, 'normal')."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="1.0: start from noise, as the paper. Below 1: start from the input image's "
                                       "latent, partly noised, which keeps more of its layout."),
                mask_input(),
                io.Combo.Input("noise", options=list(NOISE_MODES), default="per item", optional=True, tooltip=NOISE_TOOLTIP),
                formula_input(),
            ],
            outputs=[io.Latent.Output(tooltip="The edited latent (the VAE's unscaled space, like edit_latent): decode it "
                                              "with VAE Decode or chain it into another edit.")],
        )

    @classmethod
    def execute(cls, model: Any, positive: list, negative: list, edit_latent: dict, seed: int, steps: int,
                text_cfg: float, image_cfg: float, sampler_name: str, scheduler: str, denoise: float,
                mask: torch.Tensor | None = None, noise: str = "per item", formula: str = INSTRUCTPIX2PIX) -> io.NodeOutput:
        if noise not in NOISE_MODES:
            raise input_error(EDIT, "noise", f"is {noise!r}", f"one of {', '.join(NOISE_MODES)}",
                              "choose 'per item' or 'same for all'")
        samples = run_edit(EDIT, model, positive, negative, edit_latent, seed=seed, steps=steps, text_cfg=text_cfg,
                           image_cfg=image_cfg, sampler_name=sampler_name, scheduler=scheduler, denoise=denoise,
                           mask=mask, noise_mode=noise, formula=formula)
        return io.NodeOutput({"samples": samples})
