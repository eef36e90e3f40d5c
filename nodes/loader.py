"""The loaders: Load InstructPix2Pix Checkpoint (single files) and Load InstructPix2Pix (diffusers
folder). Both detect the family from tensor names and shapes (ipx2p_core.families), build the
host's own model objects (nodes/model_loading.py, nodes/diffusers_folder.py), and say what they
loaded in `info`."""
from __future__ import annotations

import logging
import os
from typing import Any

import folder_paths

from ..ipx2p_core.checkpoint import WEIGHT_MODES
from ..ipx2p_core.families import UnsupportedModel, detect_unet, diffusers_bases, info_text
from ..ipx2p_core.loading import (
    UNET_FILES, diffusers_stored_dtype_text, first_file, has_ema_copy, has_full_checkpoint_unet, stored_dtype_text, weights_text,
)
from ._comfy import io
from .checkpoint_files import file_shapes
from .common import input_error
from .diffusers_folder import FROM_FOLDER, diffusers_folders, load_diffusers_unet, reload_diffusers_model, resolve_folder, text_and_vae
from .host_compat import register_reload
from .model_loading import (
    DIFFUSERS_NODE, NODE, WEIGHT_DTYPES, dtype_text, finish, load_single_file, model_options_for, prediction_text,
    reload_checkpoint_model,
)

log = logging.getLogger(__name__)
WEIGHT_DTYPE_TOOLTIP = ("default: what ComfyUI picks for this device (fp32 on CPU, fp16/bf16 on GPUs). fp16 / bf16 / fp32: "
                        "store the UNet weights so; ComfyUI computes in a dtype the device supports.")


def weight_dtype_input() -> Any:
    return io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default", optional=True,
                          tooltip=WEIGHT_DTYPE_TOOLTIP)


def loader_outputs() -> list:
    """What both loaders return (outputs are a contract: the order never changes)."""
    return [
        io.Model.Output(tooltip="The InstructPix2Pix diffusion model."),
        io.Clip.Output(tooltip="The text encoder(s), to encode the instruction."),
        io.Vae.Output(tooltip="The VAE, to encode the input image and decode the result."),
        io.String.Output("info", display_name="info",
                         tooltip="What was loaded: family, base, prediction, weights, dtype, recommended settings."),
    ]


class CheckpointLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Load InstructPix2Pix Checkpoint",
            category="instructpix2pix",
            description=(
                "Loads an InstructPix2Pix-family checkpoint (8-channel UNet) with its text encoder(s) and VAE: SD1.5 "
                "InstructPix2Pix and its fine-tunes (MagicBrush, HIVE, InstructDiffusion), HIVE SD2.1, CosXL Edit. "
                "The family is detected from the tensors and reported in info. By default it uses the EMA weights when "
                "the file has them, as the original samples."
            ),
            inputs=[
                io.Combo.Input("ckpt_name", options=folder_paths.get_filename_list("checkpoints"),
                               tooltip="The checkpoint in models/checkpoints (.safetensors, or .ckpt through ComfyUI's "
                                       "weights-only loader)."),
                io.Combo.Input("weights", options=list(WEIGHT_MODES), default="auto",
                               tooltip="auto: the EMA weights when the file has them (what the paper samples with), "
                                       "else the plain ones. ema: require them. non-ema: the raw trained weights."),
                weight_dtype_input(),
            ],
            outputs=loader_outputs(),
        )

    @classmethod
    def execute(cls, ckpt_name: str, weights: str, weight_dtype: str = "default") -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        model_options = model_options_for(weight_dtype, NODE)
        shapes = file_shapes(NODE, "ckpt_name", path)
        try:
            family, facts = detect_unet(shapes)
        except UnsupportedModel as error:
            raise input_error(NODE, "ckpt_name", f"is {ckpt_name}, which holds {error.given}", error.expected, error.fix) from None
        if weights not in WEIGHT_MODES:
            raise input_error(NODE, "weights", f"is {weights!r}", f"one of {', '.join(WEIGHT_MODES)}", "choose auto")
        if not has_full_checkpoint_unet(shapes):
            naming = "diffusers'" if facts.layout == "diffusers" else "a bare UNet's"
            raise input_error(NODE, "ckpt_name", f"is {ckpt_name}, which holds only a {family.name} UNet in {naming} naming "
                              "(no text encoder, no VAE)", "a full single-file checkpoint (model.diffusion_model.*, text "
                              "encoder, VAE)", "load the full checkpoint; for a diffusers UNet put it in a folder's unet/ "
                              "and use 'Load InstructPix2Pix (diffusers folder)' with clip_vae_from set to a checkpoint")
        (model, clip, vae), used_ema = load_single_file(path, family, weights, model_options)
        finish(NODE, model, family, ckpt_name)
        register_reload(model, reload_checkpoint_model, (path, weights, weight_dtype))
        info = info_text(family, facts, weights_text(used_ema, has_ema_copy(shapes)),
                         dtype_text(model, stored_dtype_text(path)), prediction_text(model))
        log.info("%s: loaded %s as %s with its %s weights", NODE, ckpt_name, family.name, "EMA" if used_ema else "non-EMA")
        return io.NodeOutput(model, clip, vae, info)


class DiffusersLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=DIFFUSERS_NODE,
            display_name="Load InstructPix2Pix (diffusers folder)",
            category="instructpix2pix",
            description=(
                "Loads an InstructPix2Pix pipeline folder in diffusers' layout (unet/, text_encoder/, [text_encoder_2/], "
                "vae/, model_index.json), e.g. timbrooks/instruct-pix2pix or diffusers/sdxl-instructpix2pix-768 as "
                "downloaded from the hub, into ComfyUI's own model objects. A folder with only a unet/ takes the text "
                "encoder and VAE from a checkpoint you choose."
            ),
            inputs=[
                io.Combo.Input("model_path", options=diffusers_folders(),
                               tooltip="A folder with model_index.json or unet/ under models/diffusers or models/checkpoints."),
                io.Combo.Input("clip_vae_from", options=[FROM_FOLDER] + folder_paths.get_filename_list("checkpoints"),
                               default=FROM_FOLDER,
                               tooltip="Where the text encoder and VAE come from: the folder's text_encoder/ and vae/, or "
                                       "a single-file checkpoint of the same base (for a UNet-only folder)."),
                weight_dtype_input(),
            ],
            outputs=loader_outputs(),
        )

    @classmethod
    def execute(cls, model_path: str, clip_vae_from: str, weight_dtype: str = "default") -> io.NodeOutput:
        folder = resolve_folder(model_path)
        model_options = model_options_for(weight_dtype, DIFFUSERS_NODE)
        unet_path = first_file(os.path.join(folder, "unet"), UNET_FILES)
        if unet_path is None:
            raise input_error(DIFFUSERS_NODE, "model_path", f"is {model_path}, which has no unet/ weights",
                              f"a folder with unet/{UNET_FILES[1]}",
                              "download the pipeline's unet folder (and text_encoder/, vae/), or pick another folder")
        try:
            family, facts = detect_unet(file_shapes(DIFFUSERS_NODE, "model_path", unet_path))
        except UnsupportedModel as error:
            raise input_error(DIFFUSERS_NODE, "model_path", f"is {model_path}, whose unet/ holds {error.given}", error.expected,
                              error.fix) from None
        if not family.diffusers_folder:
            raise input_error(DIFFUSERS_NODE, "model_path", f"is {family.name}", f"an {' or '.join(diffusers_bases())} pipeline "
                              "folder", f"load {family.base} edit models as single files with 'Load InstructPix2Pix Checkpoint'")
        model = load_diffusers_unet(unet_path, family, model_options)
        finish(DIFFUSERS_NODE, model, family, model_path)
        register_reload(model, reload_diffusers_model, (unet_path, family.key, weight_dtype))
        clip, vae = text_and_vae(folder, family, clip_vae_from, model_path)
        info = info_text(family, facts, "the folder's (diffusers folders keep no EMA copy)",
                         dtype_text(model, diffusers_stored_dtype_text(unet_path)), prediction_text(model))
        return io.NodeOutput(model, clip, vae, info)
