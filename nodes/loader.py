"""Load InstructPix2Pix Checkpoint: MODEL, CLIP, VAE from an LDM single file, EMA weights by default."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfy.patcher_extension
import comfy.sd
import comfy.utils
import folder_paths
import torch

from ..ipx2p_core.checkpoint import UNET_PREFIX, WEIGHT_MODES, inspect_checkpoint, plan_weights
from ._comfy import io
from .common import OFFICIAL_HINT, input_error

log = logging.getLogger(__name__)
NODE = "IPX2P_CheckpointLoader"


SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


def unet_stand_in(shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor of the right shape and dtype that holds no memory (a zero-stride view of one zero).
    The host detects and builds the model from shapes and dtypes; the values come afterwards."""
    return torch.zeros((), dtype=dtype).expand(*shape)


def load_safetensors_low_memory(path: str, mode: str, load: Callable[[dict, dict | None], Any]) -> tuple[Any, bool]:
    """(what `load` returned, used EMA), never holding the UNet twice.

    The host's loader copies a state dict into a freshly built model, so the file's UNet and the
    model's would both be in memory (8.6 GB at the peak for an fp32 SD1.5 file). Here the host
    gets shape-only stand-ins for the UNet tensors (text encoder and VAE as usual), then each UNet
    tensor is read from the file and swapped into the model one at a time. If the built model does
    not take a tensor by name and shape (a host that renames keys), falls back to the plain path.
    """
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as handle:
        slices = {key: handle.get_slice(key) for key in handle.keys()}
        shapes = {key: value.get_shape() for key, value in slices.items()}
        check_unet(path, shapes)
        plan = plan_weights(shapes.keys(), mode, who=f"{NODE}: input 'weights'")
        unet = {t: s for t, s in plan.sources.items() if t.startswith(UNET_PREFIX)}
        dtypes = {t: SAFETENSORS_DTYPES.get(slices[s].get_dtype()) for t, s in unet.items()}
        if any(dtype is None for dtype in dtypes.values()):  # quantized or unusual storage: the host's path
            state_dict = {t: handle.get_tensor(s) for t, s in plan.sources.items()}
            return load(state_dict, handle.metadata()), plan.use_ema
        state_dict = {t: handle.get_tensor(s) for t, s in plan.sources.items() if t not in unet}
        state_dict.update({t: unet_stand_in(shapes[s], dtypes[t]) for t, s in unet.items()})
        loaded = load(state_dict, handle.metadata())
        del state_dict
        targets = dict(loaded[0].model.diffusion_model.named_parameters())
        targets.update(dict(loaded[0].model.diffusion_model.named_buffers()))
        names = {t: t[len(UNET_PREFIX):] for t in unet}
        if all(name in targets and list(targets[name].shape) == list(shapes[unet[t]]) for t, name in names.items()):
            with torch.no_grad():
                for target, name in names.items():
                    destination = targets[name]
                    destination.data = handle.get_tensor(unet[target]).to(dtype=destination.dtype, device=destination.device)
            return loaded, plan.use_ema
        log.warning("%s: this ComfyUI renames UNet weights; loading %s the plain way", NODE, Path(path).name)
        del loaded
        state_dict = {t: handle.get_tensor(s) for t, s in plan.sources.items()}
        return load(state_dict, handle.metadata()), plan.use_ema


def load_ckpt_file(path: str, mode: str, load: Callable[[dict, dict | None], Any]) -> tuple[Any, bool]:
    """.ckpt and other pickles: only through the host's safe (weights-only) loader."""
    full, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    check_unet(path, {key: tuple(value.shape) for key, value in full.items() if hasattr(value, "shape")})
    plan = plan_weights(full.keys(), mode, who=f"{NODE}: input 'weights'")
    state_dict = {target: full[source] for target, source in plan.sources.items()}
    del full
    return load(state_dict, metadata), plan.use_ema


def check_unet(path: str, shapes: dict[str, Any]) -> None:
    info = inspect_checkpoint(shapes)
    if info.unet_in_channels != 8:
        raise input_error(
            NODE, "ckpt_name", f"is {Path(path).name}, which holds {info.describe()}",
            "an 8-channel InstructPix2Pix UNet",
            f"load {OFFICIAL_HINT}; for text-to-image models use the core 'Load Checkpoint' node",
        )


class CheckpointLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Load InstructPix2Pix Checkpoint",
            category="instructpix2pix",
            description=(
                "Loads an InstructPix2Pix checkpoint (8-channel UNet) with its text encoder and VAE. "
                "By default it uses the EMA weights when the file has them, as the original samples."
            ),
            inputs=[
                io.Combo.Input("ckpt_name", options=folder_paths.get_filename_list("checkpoints"),
                               tooltip="The InstructPix2Pix checkpoint in models/checkpoints."),
                io.Combo.Input("weights", options=list(WEIGHT_MODES), default="auto",
                               tooltip="auto: the EMA weights when the file has them (what the paper samples with), "
                                       "else the plain ones. ema: require them. non-ema: the raw trained weights."),
            ],
            outputs=[
                io.Model.Output(tooltip="The InstructPix2Pix diffusion model."),
                io.Clip.Output(tooltip="The CLIP text encoder, to encode the instruction."),
                io.Vae.Output(tooltip="The VAE, to encode the input image and decode the result."),
            ],
        )

    @classmethod
    def execute(cls, ckpt_name: str, weights: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)

        def load(state_dict: dict, metadata: dict | None) -> Any:
            loaded = comfy.sd.load_state_dict_guess_config(
                state_dict, output_vae=True, output_clip=True,
                embedding_directory=folder_paths.get_folder_paths("embeddings"), metadata=metadata,
            )
            if loaded is None or loaded[0] is None:
                raise RuntimeError(f"{NODE}: ComfyUI could not detect the model in {ckpt_name}; is the file complete?")
            return loaded

        if path.lower().endswith((".safetensors", ".sft")):
            loaded, used_ema = load_safetensors_low_memory(path, weights, load)
        else:
            loaded, used_ema = load_ckpt_file(path, weights, load)
        model, clip, vae = loaded[0], loaded[1], loaded[2]
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, IMAGE_CHECK_KEY, require_edit_image)
        log.info("%s: loaded %s with its %s UNet weights", NODE, ckpt_name, "EMA" if used_ema else "non-EMA")
        return io.NodeOutput(model, clip, vae)


IMAGE_CHECK_KEY = "ipx2p_require_edit_image"


def _carries_image(cond: dict) -> bool:
    concat = cond.get("model_conds", {}).get("c_concat")
    tensor = getattr(concat, "cond", None)
    return isinstance(tensor, torch.Tensor) and bool(torch.count_nonzero(tensor))


def require_edit_image(executor: Any, model: Any, conds: list, x_in: torch.Tensor, timestep: Any, model_options: dict) -> Any:
    """CALC_COND_BATCH wrapper on the loaded model: refuse a step in which no branch carries the
    input image. Core samplers would otherwise run the 8-channel UNet on a zero image, silently
    generating instead of editing. Checked across all branches of a step, since the
    unconditional branch legitimately has a zero image."""
    if not any(_carries_image(cond) for branch in conds if branch for cond in branch):
        raise ValueError(
            f"{NODE}: the InstructPix2Pix MODEL is being sampled with conditionings that carry no input image "
            "(no concat_latent_image in any branch), so it would generate instead of editing; expected the image "
            "latent in the conditioning. Fix: use 'InstructPix2Pix Edit' or 'InstructPix2Pix Guider', or pass "
            "positive/negative through 'InstructPix2Pix Conditioning' (or core InstructPixToPixConditioning)."
        )
    return executor(model, conds, x_in, timestep, model_options)
