"""InstructPix2Pix Guider: the pack's guidance as a GUIDER for SamplerCustomAdvanced."""
from __future__ import annotations

from typing import Any

import torch

from ..ipx2p_core.guidance import FORMULA_TEXT, INSTRUCTPIX2PIX
from ..ipx2p_core.relevance import DEFAULT_THRESHOLD, DEFAULT_UNTIL
from ._comfy import io
from .engine import EditRequest, guider_for
from .schema_parts import fast_input, formula_input, guidance_inputs, guidance_map_inputs, localize_inputs, mask_input, \
    scale_inputs, schedule_input

GUIDER = "IPX2P_Guider"


class Guider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=GUIDER,
            display_name="InstructPix2Pix Guider",
            category="instructpix2pix",
            description=(
                f"InstructPix2Pix guidance, {FORMULA_TEXT[INSTRUCTPIX2PIX]}, as a GUIDER for "
                "SamplerCustomAdvanced. Sample into the edit's size (the Conditioning node's latent output). "
                "With a mask only the masked region is edited (a noise_mask on the sampled latent counts too)."
            ),
            inputs=guidance_inputs() + scale_inputs() + [mask_input(), formula_input(), fast_input(), *guidance_map_inputs(),
                                                          schedule_input(), *localize_inputs()],
            outputs=[io.Guider.Output(tooltip="Connect to SamplerCustomAdvanced's guider.")],
        )

    @classmethod
    def execute(cls, model: Any, positive: list, negative: list, edit_latent: dict, text_cfg: float,
                image_cfg: float, mask: torch.Tensor | None = None, formula: str = INSTRUCTPIX2PIX,
                fast: bool = False, guidance_map: torch.Tensor | None = None, text_cfg_outside: float = 3.0,
                image_cfg_outside: float = 2.0, schedule: Any = None, localize: str = "off",
                localize_until: float = DEFAULT_UNTIL, localize_threshold: float = DEFAULT_THRESHOLD) -> io.NodeOutput:
        request = EditRequest.checked(GUIDER, model, positive, negative, edit_latent, text_cfg, image_cfg, mask, formula,
                                      fast, guidance_map=guidance_map, text_cfg_outside=text_cfg_outside,
                                      image_cfg_outside=image_cfg_outside, schedule=schedule, localize=localize,
                                      localize_until=localize_until, localize_threshold=localize_threshold)
        return io.NodeOutput(guider_for(request))
