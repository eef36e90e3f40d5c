"""InstructPix2Pix Edit: guidance and sampling in one node."""
from __future__ import annotations

from typing import Any

import comfy.samplers
import torch

from ..ipx2p_core.guidance import INSTRUCTPIX2PIX
from ..ipx2p_core.relevance import DEFAULT_THRESHOLD, DEFAULT_UNTIL
from ._comfy import io
from .engine import EditRequest, Sampling, edit
from .schema_parts import fast_input, formula_input, guidance_inputs, guidance_map_inputs, localize_inputs, mask_input, \
    noise_input, scale_inputs, schedule_input

EDIT = "IPX2P_Edit"


def region_pixels(region: torch.Tensor | None, samples: torch.Tensor) -> torch.Tensor:
    """The edit's region [B,1,h,w] (latent size; None: everywhere) as a MASK [B,H,W] at the edit
    image's size: each latent position's weight over the 8x8 px it decodes to, which is what the
    sampler used (a smooth upscale would move the 0.5 outline by up to 4 px into the kept part)."""
    batch, height, width = int(samples.shape[0]), int(samples.shape[-2]) * 8, int(samples.shape[-1]) * 8
    if region is None:
        return torch.ones((batch, height, width))
    region = region.float().cpu().expand(batch, -1, -1, -1) if region.shape[0] == 1 else region.float().cpu()
    pixels = torch.nn.functional.interpolate(region, size=(height, width), mode="nearest-exact")
    return pixels[:, 0].clamp(0.0, 1.0)


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
                *scale_inputs(),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler_ancestral",
                               tooltip="The sampler (paper: Euler ancestral)."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="The noise schedule (paper: the k-diffusion schedule, 'normal')."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="1.0: start from noise, as the paper. Below 1: start from the input image's "
                                       "latent, partly noised, which keeps more of its layout."),
                mask_input(),
                noise_input(),
                formula_input(),
                fast_input(),
                *guidance_map_inputs(),
                schedule_input(),
                *localize_inputs(),
            ],
            outputs=[io.Latent.Output(tooltip="The edited latent (the VAE's unscaled space, like edit_latent): decode it "
                                              "with VAE Decode or chain it into another edit."),
                     io.Mask.Output("region", display_name="region",
                                    tooltip="Where the edit was allowed to change the picture, at the edit image's size: "
                                            "the region localize found, the mask, or both (their product); all ones "
                                            "without either. Feed it to Paste Back's mask to paste at full resolution.")],
        )

    @classmethod
    def execute(cls, model: Any, positive: list, negative: list, edit_latent: dict, seed: int, steps: int,
                text_cfg: float, image_cfg: float, sampler_name: str, scheduler: str, denoise: float,
                mask: torch.Tensor | None = None, noise: str = "per item", formula: str = INSTRUCTPIX2PIX,
                fast: bool = False, guidance_map: torch.Tensor | None = None, text_cfg_outside: float = 3.0,
                image_cfg_outside: float = 2.0, schedule: Any = None, localize: str = "off",
                localize_until: float = DEFAULT_UNTIL, localize_threshold: float = DEFAULT_THRESHOLD) -> io.NodeOutput:
        sampling = Sampling(seed, steps, sampler_name, scheduler, denoise, noise).checked(EDIT)
        request = EditRequest.checked(EDIT, model, positive, negative, edit_latent, text_cfg, image_cfg, mask, formula,
                                      fast, guidance_map=guidance_map, text_cfg_outside=text_cfg_outside,
                                      image_cfg_outside=image_cfg_outside, schedule=schedule, localize=localize,
                                      localize_until=localize_until, localize_threshold=localize_threshold)
        report: dict = {}
        samples = edit(request, sampling, report=report)
        return io.NodeOutput({"samples": samples}, region_pixels(report.get("region"), samples))
