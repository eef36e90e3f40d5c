"""Make Any SD1.5 Model Editable: InstructPix2Pix plus what a fine-tune changed in its base."""
from __future__ import annotations

from typing import Any

from ._comfy import io
from .common import input_error, model_in_channels, model_unet_config

NODE = "IPX2P_MakeEditable"
CONV_IN = "diffusion_model.input_blocks.0.0.weight"  # 8 channels in IP2P, 4 in the others: kept from IP2P


def context_dim(model: Any) -> Any:
    return model_unet_config(model).get("context_dim")


class MakeEditable(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Make Any SD1.5 Model Editable",
            category="instructpix2pix",
            description=(
                "Adds what a fine-tuned SD1.5 model learned (fine-tune - its base) to InstructPix2Pix, so the edit "
                "model draws in the fine-tune's style: ip2p + multiplier x (finetune - base) for every UNet weight but "
                "the 8-channel first convolution, which stays InstructPix2Pix's. Merge the text encoders the same way "
                "with core CLIPMergeSubtract and CLIPMergeAdd; save with core Save Checkpoint."
            ),
            inputs=[
                io.Model.Input("ip2p_model", tooltip="The InstructPix2Pix model (8-channel SD1.5 UNet)."),
                io.Model.Input("finetune_model", tooltip="The SD1.5 fine-tune whose style to add (4-channel UNet)."),
                io.Model.Input("base_model", tooltip="The model the fine-tune was trained from (usually SD1.5 itself)."),
                io.Float.Input("multiplier", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="How much of the fine-tune's change to add (1.0: all of it)."),
            ],
            outputs=[io.Model.Output(tooltip="The editable model: use it like any InstructPix2Pix MODEL.")],
        )

    @classmethod
    def execute(cls, ip2p_model: Any, finetune_model: Any, base_model: Any, multiplier: float) -> io.NodeOutput:
        if model_in_channels(ip2p_model) != 8:
            raise input_error(NODE, "ip2p_model", f"has a {model_in_channels(ip2p_model)}-channel UNet",
                              "the 8-channel InstructPix2Pix UNet", "connect the MODEL of 'Load InstructPix2Pix Checkpoint'")
        for name, model in (("finetune_model", finetune_model), ("base_model", base_model)):
            if context_dim(model) != context_dim(ip2p_model) or model_in_channels(model) not in (4, 8):
                raise input_error(NODE, name, f"is a model with cross-attention width {context_dim(model)}",
                                  f"an SD1.5 model like the InstructPix2Pix one (width {context_dim(ip2p_model)})",
                                  "connect SD1.5 models (core Load Checkpoint)")
        finetune = finetune_model.get_key_patches("diffusion_model.")
        base = base_model.get_key_patches("diffusion_model.")
        own = ip2p_model.get_key_patches("diffusion_model.")
        differing = sorted(k for k in finetune if k != CONV_IN and (k not in base or k not in own))
        if differing:
            raise input_error(NODE, "base_model", f"lacks weights the fine-tune has (e.g. {differing[0]})",
                              "the same SD1.5 architecture for all three models", "connect the fine-tune's own base model")
        merged = ip2p_model.clone()
        for key in finetune:
            if key == CONV_IN:
                continue
            # host weight patches: w = 1 * w + strength * patch, so w = ip2p + m finetune - m base
            merged.add_patches({key: finetune[key]}, multiplier, 1.0)
            merged.add_patches({key: base[key]}, -multiplier, 1.0)
        return io.NodeOutput(merged)
