"""The pack's guider: a host CFGGuider whose step is ipx2p_core's guidance and region step.

Everything here is how the host is asked to run that math: one batched model call for the planned
branches (calc_cond_batch, so ControlNet, IP-Adapter and hooks compose), the host's CFG hook points,
the host's noising for the region, an attention choice for CPUs, and the branch labels patches
read. The math itself (which branches, their weights, the blend) is in ipx2p_core.
"""
from __future__ import annotations

import logging
from typing import Any

import comfy.ldm.modules.attention as host_attention
import comfy.patcher_extension
import comfy.sampler_helpers
import comfy.samplers
import comfy.utils
import torch
from comfy.cli_args import args

from ..ipx2p_core import region
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
    """The formula's result at every step (ipx2p_core.guidance: u + text_cfg (c - i) + image_cfg (i - u)
    or InstructDiffusion's), evaluating only the branches the plan needs, all in one batched model call.

    Hooks written for plain CFG see a CFG step from the anchor (i, or u when i is not needed) to
    c at scale text_cfg, plus the image term (see ipx2p_core.guidance): sampler_cfg_function
    replaces the bracket, post-CFG functions receive the whole result with cond = c and
    uncond = the anchor, and a model option "disable_cfg1_optimization" makes every branch run.
    """

    def __init__(self, model_patcher: Any, text_cfg: Scale, image_cfg: Scale, formula: str = INSTRUCTPIX2PIX,
                 node: str = "IPX2P_Guider", fast: bool = False, where: GuidanceMap | None = None) -> None:
        self.text_cfg: Scale = text_cfg if isinstance(text_cfg, tuple) else float(text_cfg)
        self.image_cfg: Scale = image_cfg if isinstance(image_cfg, tuple) else float(image_cfg)
        self.formula, self.node, self.where = formula, node, where
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
        return region.final_latent(samples, target, mask)

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict = {}, seed: Any = None
                 ) -> torch.Tensor:
        """One step of the region edit (ipx2p_core.region), with the host's noising of the target."""
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

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict = {}, seed: Any = None
                      ) -> torch.Tensor:
        """The planned branches in one host call, the host's pre-CFG, CFG and post-CFG hook points,
        and the formula from ipx2p_core (GuidancePlan.combine)."""
        plan = self.plan
        if model_options.get("disable_cfg1_optimization", False) and len(plan.branches) < 3:
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
