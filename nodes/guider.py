"""InstructPix2Pix Guider (for SamplerCustomAdvanced) and InstructPix2Pix Edit (the one-node path)."""
from __future__ import annotations

from typing import Any

import comfy.ldm.modules.attention as host_attention
import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy.cli_args import args

from ..ipx2p_core.guidance import IMAGE_ONLY, TEXT_IMAGE, UNCOND, plan_guidance
from ._comfy import io
from .common import edit_conditionings, require_ip2p_model

GUIDER = "IPX2P_Guider"
EDIT = "IPX2P_Edit"

# Branch -> key in the guider's conds. "positive"/"negative" are the keys the host and other packs
# treat as cond/uncond (area handling, conditioning hooks); the image-only branch is a negative-type
# prompt, as in core's DualCFGGuider.
COND_KEYS = {TEXT_IMAGE: "positive", IMAGE_ONLY: "image_only", UNCOND: "negative"}


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


def label_branches(executor: Any, x: torch.Tensor, t: torch.Tensor, c_concat: Any = None, c_crossattn: Any = None,
                   control: Any = None, transformer_options: dict = {}, **kwargs: Any) -> Any:
    """APPLY_MODEL wrapper: tell patches which batch chunks are cond (0) and uncond (1).

    The host fills transformer_options["cond_or_uncond"] with each chunk's index in the guider's
    list of conds; patches (IP-Adapter's attn2 replacement, SAG's attn1 capture, ...) read it with
    CFGGuider's meaning, 0 = cond, 1 = uncond, and some fail on any other value. The pack lists
    c first, so c is cond and the image-only and unconditional branches are uncond: an image
    prompt then acts like part of the instruction and scales with text_cfg.
    """
    indices = transformer_options.get("cond_or_uncond")
    if indices is not None:
        transformer_options = {**transformer_options, "cond_or_uncond": [0 if index == 0 else 1 for index in indices]}
    return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


class InstructPix2PixGuider(comfy.samplers.CFGGuider):
    """u + text_cfg (c - i) + image_cfg (i - u) at every step, evaluating only the branches the
    algebra needs (see ipx2p_core.guidance), all in one batched model call.

    Hooks written for plain CFG see a CFG step from the anchor (i, or u when i is not needed) to
    c at scale text_cfg, plus the image term (see ipx2p_core.guidance): sampler_cfg_function
    replaces the bracket, post-CFG functions receive the whole result with cond = c and
    uncond = the anchor, and a model option "disable_cfg1_optimization" makes every branch run.
    """

    def __init__(self, model_patcher: Any, text_cfg: float, image_cfg: float) -> None:
        model_patcher = model_patcher.clone()  # the caller's model is never changed
        model_patcher.model_options.setdefault("transformer_options", {}).update(attention_options(model_patcher))
        model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, BRANCH_LABELS_KEY, label_branches)
        super().__init__(model_patcher)
        self.text_cfg, self.image_cfg = float(text_cfg), float(image_cfg)
        self.plan = plan_guidance(self.text_cfg, self.image_cfg)

    def set_edit_conds(self, text_image: list, image_only: list, uncond: list) -> None:
        image_only = [[t, {**d, "prompt_type": "negative"}] for t, d in image_only]
        self.inner_set_conds({"positive": text_image, "image_only": image_only, "negative": uncond})

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict = {}, seed: Any = None
                      ) -> torch.Tensor:
        plan = self.plan
        if model_options.get("disable_cfg1_optimization", False) and len(plan.branches) < 3:
            plan = plan_guidance(self.text_cfg, self.image_cfg, skip_branches=False)
        conds = [self.conds.get(COND_KEYS[branch]) for branch in plan.branches]
        if "sampler_calc_cond_batch_function" in model_options:
            args = {"conds": conds, "input": x, "sigma": timestep, "model": self.inner_model, "model_options": model_options}
            out = model_options["sampler_calc_cond_batch_function"](args)
        else:
            out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        for fn in model_options.get("sampler_pre_cfg_function", []):
            args = {"conds": conds, "conds_out": out, "cond_scale": self.text_cfg, "timestep": timestep,
                    "input": x, "sigma": timestep, "model": self.inner_model, "model_options": model_options}
            out = fn(args)
        predictions = dict(zip(plan.branches, out))
        cond, anchor = predictions[TEXT_IMAGE], predictions[plan.anchor]
        cond_list, anchor_list = conds[0], conds[plan.branches.index(plan.anchor)]
        if "sampler_cfg_function" in model_options:
            args = {"cond": x - cond, "uncond": x - anchor, "cond_scale": self.text_cfg, "timestep": timestep,
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
            args = {"denoised": result, "cond": cond_list, "uncond": anchor_list, "cond_scale": self.text_cfg,
                    "model": self.inner_model, "uncond_denoised": anchor, "cond_denoised": cond, "sigma": timestep,
                    "model_options": model_options, "input": x}
            result = fn(args)
        return result


def build_guider(node: str, model: Any, positive: list, negative: list, edit_latent: dict,
                 text_cfg: float, image_cfg: float) -> tuple[InstructPix2PixGuider, int]:
    require_ip2p_model(node, model)
    text_image, image_only, uncond, batch = edit_conditionings(node, positive, negative, edit_latent)
    guider = InstructPix2PixGuider(model, text_cfg, image_cfg)
    guider.set_edit_conds(text_image, image_only, uncond)
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


class Guider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=GUIDER,
            display_name="InstructPix2Pix Guider",
            category="instructpix2pix",
            description=(
                "InstructPix2Pix guidance, u + text_cfg (c - i) + image_cfg (i - u), as a GUIDER for "
                "SamplerCustomAdvanced. Sample into the edit's size (the Conditioning node's latent output)."
            ),
            inputs=guidance_inputs() + [
                io.Float.Input("text_cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=TEXT_CFG_TOOLTIP),
                io.Float.Input("image_cfg", default=1.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=IMAGE_CFG_TOOLTIP),
            ],
            outputs=[io.Guider.Output(tooltip="Connect to SamplerCustomAdvanced's guider.")],
        )

    @classmethod
    def execute(cls, model: Any, positive: list, negative: list, edit_latent: dict, text_cfg: float,
                image_cfg: float) -> io.NodeOutput:
        guider, _ = build_guider(GUIDER, model, positive, negative, edit_latent, text_cfg, image_cfg)
        return io.NodeOutput(guider)


def edit_sigmas(model: Any, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """The sigmas KSampler would use (BasicScheduler's denoise rule: the last `steps` of a longer schedule)."""
    total = steps if denoise >= 1.0 else int(steps / denoise)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, total).cpu()
    return sigmas[-(steps + 1):]


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
                "LATENT with VAE Decode."
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
            ],
            outputs=[io.Latent.Output(tooltip="The edited latent: decode it with VAE Decode.")],
        )

    @classmethod
    def execute(cls, model: Any, positive: list, negative: list, edit_latent: dict, seed: int, steps: int,
                text_cfg: float, image_cfg: float, sampler_name: str, scheduler: str, denoise: float) -> io.NodeOutput:
        guider, batch = build_guider(EDIT, model, positive, negative, edit_latent, text_cfg, image_cfg)
        image_latent = edit_latent["samples"]
        if denoise >= 1.0:
            start = torch.zeros((batch, *image_latent.shape[1:]), dtype=image_latent.dtype)
        else:
            start = comfy.utils.resize_to_batch_size(image_latent, batch).clone()
        sigmas = edit_sigmas(model, scheduler, steps, denoise)
        if sigmas.numel() < 2:  # denoise 0: nothing to sample
            return io.NodeOutput({"samples": start})
        start = comfy.sample.fix_empty_latent_channels(model, start)
        noise = comfy.sample.prepare_noise(start, seed)
        callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
        samples = guider.sample(
            noise, start, comfy.samplers.sampler_object(sampler_name), sigmas, denoise_mask=None, callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
        )
        return io.NodeOutput({"samples": samples.to(comfy.model_management.intermediate_device())})
