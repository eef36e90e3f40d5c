"""The loaders: Load InstructPix2Pix Checkpoint (single files) and Load InstructPix2Pix (diffusers
folder). Both detect the family from tensor names and shapes (ipx2p_core.families), build the
host's own model objects, and say what they loaded in `info`."""
from __future__ import annotations

import inspect
import logging
import os
import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfy.model_base
import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sd
import comfy.supported_models
import comfy.utils
import folder_paths
import torch

from ..ipx2p_core.checkpoint import UNET_PREFIX, WEIGHT_MODES, SafetensorsReader, plan_weights, safetensors_problem
from ..ipx2p_core.families import Family, UnsupportedModel, detect_family, family_by_key, info_text, unet_facts
from ._comfy import io
from .common import executing_node, input_error

log = logging.getLogger(__name__)
NODE = "IPX2P_CheckpointLoader"
DIFFUSERS_NODE = "IPX2P_DiffusersLoader"

SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
WEIGHT_DTYPES = {"default": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
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


def model_options_for(weight_dtype: str, node: str) -> dict:
    if weight_dtype not in WEIGHT_DTYPES:
        raise input_error(node, "weight_dtype", f"is {weight_dtype!r}", f"one of {', '.join(WEIGHT_DTYPES)}",
                          "choose default unless you need a precision")
    dtype = WEIGHT_DTYPES[weight_dtype]
    return {} if dtype is None else {"dtype": dtype}


def unet_stand_in(shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor of the right shape and dtype that holds no memory (a zero-stride view of one zero).
    The host detects and builds the model from shapes and dtypes; the values come afterwards."""
    return torch.zeros((), dtype=dtype).expand(*shape)


def swap_in(model: Any, fetch: dict[str, Callable[[], torch.Tensor]]) -> bool:
    """Replace the built UNet's tensors one at a time (`fetch`: UNet key without prefix -> loader).
    False, touching nothing, when the model does not take every tensor by name and shape."""
    targets = dict(model.model.diffusion_model.named_parameters())
    targets.update(dict(model.model.diffusion_model.named_buffers()))
    if not all(name in targets for name in fetch):
        return False
    with torch.no_grad():
        for name, load in fetch.items():
            destination = targets[name]
            tensor = load()
            if list(tensor.shape) != list(destination.shape):
                raise RuntimeError(f"{name}: file has {list(tensor.shape)}, the model {list(destination.shape)}")
            destination.data = tensor.to(dtype=destination.dtype, device=destination.device)
    return True


# -- SD2.x InstructPix2Pix: set up with the host's own classes ------------------------------------------
class SD2InstructPix2Pix(comfy.supported_models.SD20):
    """SD2.x with an 8-channel UNet (HIVE). ComfyUI has no class for it and detects such files as
    SD2 inpainting models; this is the host's SD20 configuration with InstructPix2Pix's image input
    (the host's model_base.SD15_instructpix2pix, which adds nothing SD1.5-specific)."""

    unet_config = {**comfy.supported_models.SD20.unet_config, "in_channels": 8}
    prediction = comfy.model_base.ModelType.EPS

    def get_model(self, state_dict: dict, prefix: str = "", device: Any = None) -> Any:
        return comfy.model_base.SD15_instructpix2pix(self, model_type=self.prediction, device=device)


def sd2_prediction(state_dict: dict) -> Any:
    """v when the file says so (ComfyUI's v_pred marker, or the host's own SD2 v-prediction test on
    the trained weights), else eps (SD2.1-base, which HIVE is built on)."""
    if "v_pred" in state_dict:
        return comfy.model_base.ModelType.V_PREDICTION
    probe = comfy.supported_models.SD20({**comfy.supported_models.SD20.unet_config, "in_channels": 4})
    return probe.model_type(state_dict, UNET_PREFIX)


def load_sd2(state_dict: dict, metadata: dict | None, model_options: dict) -> tuple[Any, Any, Any]:
    """MODEL, CLIP, VAE of an SD2.x InstructPix2Pix single file."""
    loaded = comfy.sd.load_state_dict_guess_config(
        state_dict, output_vae=True, output_clip=True, output_model=False,
        embedding_directory=folder_paths.get_folder_paths("embeddings"), metadata=metadata,
    )
    if loaded is None or loaded[1] is None:
        raise RuntimeError("ComfyUI could not build the text encoder of this SD2.x file; is it complete?")
    clip, vae = loaded[1], loaded[2]
    unet_config = comfy.model_detection.detect_unet_config(state_dict, UNET_PREFIX)
    config = SD2InstructPix2Pix(unet_config)
    config.prediction = sd2_prediction(state_dict)
    parameters = comfy.utils.calculate_parameters(state_dict, UNET_PREFIX)
    stored = comfy.utils.weight_dtype(state_dict, UNET_PREFIX)
    load_device = comfy.model_management.get_torch_device()
    unet_dtype = model_options.get("dtype") or comfy.model_management.unet_dtype(
        model_params=parameters, supported_dtypes=list(config.supported_inference_dtypes), weight_dtype=stored)
    manual_cast = comfy.model_management.unet_manual_cast(unet_dtype, load_device, config.supported_inference_dtypes)
    config.set_inference_dtype(unet_dtype, manual_cast)
    model = config.get_model(state_dict, UNET_PREFIX, device=comfy.model_management.unet_inital_load_device(parameters, unet_dtype))
    model.load_model_weights(state_dict, UNET_PREFIX)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                               offload_device=comfy.model_management.unet_offload_device())
    return patcher, clip, vae


# -- loading a state dict with the host ---------------------------------------------------------------
def host_load(state_dict: dict, metadata: dict | None, model_options: dict, clip_and_vae: bool = True,
              disable_dynamic: bool = False) -> tuple[Any, Any, Any]:
    """MODEL, CLIP, VAE through the host's own loader. The family was detected by the pack before
    (newer hosts no longer return None for an undetected file: they load a bare diffusion model)."""
    extra = {}
    if disable_dynamic and "disable_dynamic" in inspect.signature(comfy.sd.load_state_dict_guess_config).parameters:
        extra["disable_dynamic"] = True
    loaded = comfy.sd.load_state_dict_guess_config(
        state_dict, output_vae=clip_and_vae, output_clip=clip_and_vae,
        embedding_directory=folder_paths.get_folder_paths("embeddings"), metadata=metadata, model_options=model_options,
        **extra,
    )
    if loaded is None or loaded[0] is None or (clip_and_vae and loaded[1] is None):
        raise RuntimeError("ComfyUI could not build the model from this file; is it complete?")
    return loaded[0], loaded[1], loaded[2]


def host_loads_dynamically() -> bool:
    """True when this ComfyUI loads models with its dynamic-VRAM patcher (NVIDIA, newer hosts). It
    then assigns the state dict's tensors as the parameters and reloads them from the file's
    storage markers, which only its own file loader sets: the pack loads such files the host's way."""
    memory = sys.modules.get("comfy.memory_management")
    return bool(getattr(memory, "aimdo_enabled", False)) and comfy.model_management.get_torch_device().type != "cpu"


def load_single_file(path: str, family: Family, plan_mode: str, model_options: dict, clip_and_vae: bool = True,
                     disable_dynamic: bool = False) -> tuple[tuple[Any, Any, Any], bool]:
    """(MODEL, CLIP, VAE), used EMA. safetensors: the UNet is never held twice (stand-ins, then the
    file's tensors swapped in one at a time), except under the host's dynamic-VRAM loading, which
    gets the host's own file loader; pickles only through the host's weights-only loader."""
    whole_file = not path.lower().endswith((".safetensors", ".sft")) or (host_loads_dynamically() and not disable_dynamic)
    if whole_file:  # the host's own file loader: pickles (weights-only), and every file under dynamic VRAM
        full, metadata = read_checkpoint(NODE, "ckpt_name", path, return_metadata=True)
        plan = plan_weights(full.keys(), plan_mode, who=f"{NODE}: input 'weights'")
        state_dict = {target: full[source] for target, source in plan.sources.items()}
        del full
        if family.base == "SD2.x":
            return load_sd2(state_dict, metadata, model_options), plan.use_ema
        return host_load(state_dict, metadata, model_options, clip_and_vae, disable_dynamic), plan.use_ema
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as handle:
        slices = {key: handle.get_slice(key) for key in handle.keys()}
        plan = plan_weights(slices.keys(), plan_mode, who=f"{NODE}: input 'weights'")
        unet = {t: s for t, s in plan.sources.items() if t.startswith(UNET_PREFIX)}
        dtypes = {t: SAFETENSORS_DTYPES.get(slices[s].get_dtype()) for t, s in unet.items()}
        metadata = handle.metadata()
        if family.base == "SD2.x" or any(dtype is None for dtype in dtypes.values()):
            state_dict = {t: handle.get_tensor(s) for t, s in plan.sources.items()}
            if family.base == "SD2.x":
                return load_sd2(state_dict, metadata, model_options), plan.use_ema
            return host_load(state_dict, metadata, model_options, clip_and_vae, disable_dynamic), plan.use_ema
        state_dict = {t: handle.get_tensor(s) for t, s in plan.sources.items() if t not in unet}
        state_dict.update({t: unet_stand_in(slices[s].get_shape(), dtypes[t]) for t, s in unet.items()})  # type: ignore[arg-type]
        loaded = host_load(state_dict, metadata, model_options, clip_and_vae, disable_dynamic)
        del state_dict, slices
    # The file's mapping is gone with the handle and the views of it (the host copied text encoder and
    # VAE): the UNet's tensors are read into memory of their own, so no page of the file stays resident.
    with SafetensorsReader(path) as reader:
        fetch = {t[len(UNET_PREFIX):]: (lambda s=s: reader.read(s)) for t, s in unet.items()}
        if swap_in(loaded[0], fetch):
            return loaded, plan.use_ema
    log.warning("%s: this ComfyUI renames UNet weights; loading %s the plain way", NODE, Path(path).name)
    del loaded
    with safe_open(path, framework="pt", device="cpu") as handle:
        state_dict = {t: handle.get_tensor(s) for t, s in plan.sources.items()}
    return host_load(state_dict, metadata, model_options, clip_and_vae, disable_dynamic), plan.use_ema


def read_checkpoint(node: str, input_name: str, path: str, return_metadata: bool = False) -> Any:
    """A whole checkpoint through the host's loader (pickles weights-only), with failures said in
    words: a pickle that would run code is refused (nothing in it runs), a damaged file is named."""
    name = Path(path).name
    if path.lower().endswith((".safetensors", ".sft")):
        check_safetensors(node, input_name, path)
    try:
        return comfy.utils.load_torch_file(path, safe_load=True, return_metadata=return_metadata)
    except MemoryError:
        raise
    except pickle.UnpicklingError as error:
        text = str(error)
        called = re.search(r"GLOBAL ([\w.]+)", text)
        if "Weights only load failed" in text and (called or "Unsupported global" in text):
            what = f" (it calls {called.group(1)})" if called else ""
            raise input_error(node, input_name, f"is {name}, a pickle that would run code when loaded{what}; ComfyUI's safe "
                              "loader refused it and nothing in it ran", "a checkpoint that holds only tensors",
                              "get this model as .safetensors (or a plain weights .ckpt) from its publisher; do not load "
                              "files you do not trust") from None
        raise input_error(node, input_name, f"is {name}, which is not a readable checkpoint (damaged or another format)",
                          "a complete .ckpt / .safetensors checkpoint", "download the file again") from None
    except Exception as error:  # zip, EOF and format errors of a damaged or foreign file
        size = os.path.getsize(path)
        state = "is empty (0 bytes)" if size == 0 else f"is not a readable checkpoint ({type(error).__name__} while reading)"
        raise input_error(node, input_name, f"is {name}, which {state}", "a complete .ckpt / .safetensors checkpoint",
                          "download the file again, or pick another file") from None


def check_safetensors(node: str, input_name: str, path: str) -> None:
    problem = safetensors_problem(path)
    if problem is not None:
        raise input_error(node, input_name, f"is {Path(path).name}, which {problem}", "a complete .safetensors checkpoint",
                          "download the file again (check its size against the publisher's)")


def file_shapes(path: str) -> tuple[dict[str, list[int]], dict | None]:
    """key -> shape of a checkpoint, reading only the header of a safetensors file. For pickles the
    whole file goes through the host's weights-only loader (a pickle that would run code is refused)."""
    if path.lower().endswith((".safetensors", ".sft")):
        from safetensors import safe_open

        check_safetensors(NODE, "ckpt_name", path)
        with safe_open(path, framework="pt", device="cpu") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}, None
    full = read_checkpoint(NODE, "ckpt_name", path)
    return {key: list(value.shape) for key, value in full.items() if hasattr(value, "shape")}, None


# -- after loading -----------------------------------------------------------------------------------------
IMAGE_CHECK_KEY = "ipx2p_require_edit_image"


def _carries_image(cond: dict) -> bool:
    concat = cond.get("model_conds", {}).get("c_concat")
    tensor = getattr(concat, "cond", None)
    return isinstance(tensor, torch.Tensor) and bool(torch.count_nonzero(tensor))


class EditModelGuard:
    """CALC_COND_BATCH wrapper on a loaded edit model, for every sampler that runs it (the pack's,
    core KSampler, SamplerCustomAdvanced):
    - refuse a step in which no branch carries the input image: core samplers would otherwise run
      the 8-channel UNet on a zero image, silently generating instead of editing (checked across
      all branches, since the unconditional branch legitimately has a zero image);
    - refuse a non-finite prediction at once, naming its cause (a damaged weight, or an overflow),
      instead of finishing the run into a NaN picture."""

    def __init__(self, source_name: str) -> None:
        self.source_name = source_name

    def __call__(self, executor: Any, model: Any, conds: list, x_in: torch.Tensor, timestep: Any, model_options: dict) -> Any:
        if not any(_carries_image(cond) for branch in conds if branch for cond in branch):
            raise input_error(
                executing_node("the sampler"), "positive",
                "and 'negative' carry no input image (no concat_latent_image in any branch), so the InstructPix2Pix MODEL "
                "would generate a picture instead of editing one", "the image latent in the conditioning",
                "use 'InstructPix2Pix Edit' or 'InstructPix2Pix Guider', or pass positive/negative through "
                "'InstructPix2Pix Conditioning' (or core InstructPixToPixConditioning)")
        out = executor(model, conds, x_in, timestep, model_options)
        if not all(bool(torch.isfinite(prediction).all()) for prediction in out if isinstance(prediction, torch.Tensor)):
            raise self.non_finite(model, float(timestep.flatten()[0]))
        return out

    def non_finite(self, model: Any, sigma: float) -> ValueError:
        damaged = next((name for name, weight in model.diffusion_model.named_parameters()
                        if not bool(torch.isfinite(weight).all())), None)
        who = executing_node("the sampler")
        if damaged is not None:
            return input_error(who, "model", f"(from {self.source_name}) has a UNet weight holding NaN or infinite values "
                               f"({damaged})", "finite weights", "the checkpoint file is damaged: download it again")
        return input_error(who, "model", f"(from {self.source_name}) predicted NaN or infinite values at sigma {sigma:.4g}, "
                           "though its weights are finite (a computation overflowed)", "finite predictions",
                           "load it with weight_dtype fp32 or bf16 (fp16 activations overflow in some models), or start "
                           "ComfyUI with --force-fp32")


def prediction_text(model: Any) -> str:
    model_type = getattr(model.model, "model_type", None)
    name = getattr(model_type, "name", str(model_type))
    sampling = model.get_model_object("model_sampling")
    span = f", sigma {float(sampling.sigma_min):g}-{float(sampling.sigma_max):g}"
    text = {"EPS": "eps", "V_PREDICTION": "v", "V_PREDICTION_EDM": "v (EDM)"}.get(name, name.lower())
    return text + span


def dtype_text(model: Any, stored: str) -> str:
    weights = model.model.get_dtype()
    compute = getattr(model.model, "manual_cast_dtype", None) or weights
    return f"stored {stored}; UNet weights {str(weights).replace('torch.', '')}, computing in {str(compute).replace('torch.', '')}"


def finish(node: str, model: Any, family: Family, source_name: str) -> None:
    """Check the host built the family's own class, and guard the model against sampling without
    the image. Raises RuntimeError when this ComfyUI builds something else."""
    built = type(model.model).__name__
    model_type = getattr(getattr(model.model, "model_type", None), "name", "")
    if built != family.host_class or (family.edm and model_type != "V_PREDICTION_EDM"):
        raise RuntimeError(
            f"{node}: {source_name} is {family.name}, but this ComfyUI built {built} ({model_type}); expected "
            f"{family.host_class}{' with EDM v-prediction' if family.edm else ''}. Fix: update ComfyUI."
        )
    stand_ins = [name for name, tensor in [*model.model.diffusion_model.named_parameters(),
                                           *model.model.diffusion_model.named_buffers()]
                 if tensor.numel() > 1 and 0 in tensor.stride()]
    if stand_ins:
        raise RuntimeError(f"{node}: {len(stand_ins)} UNet tensors of {source_name} were not loaded (e.g. {stand_ins[0]}): "
                           "this ComfyUI loads weights in a way the pack does not know. Fix: update the pack and report it.")
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, IMAGE_CHECK_KEY,
                               EditModelGuard(source_name))


def register_reload(model: Any, factory: Callable[..., Any], arguments: tuple) -> None:
    """Tell the host how to load this MODEL afresh (newer ComfyUI's `cached_patcher_init`, which its
    own checkpoint loader sets): with dynamic VRAM it builds a non-dynamic copy that way when
    conditionings carry hooks (e.g. Create Hook LoRA), and for torch.compile. The host calls
    factory(*arguments, disable_dynamic=True)."""
    if hasattr(model, "cached_patcher_init"):
        model.cached_patcher_init = (factory, arguments)


def reload_checkpoint_model(ckpt_path: str, weights: str, weight_dtype: str, disable_dynamic: bool = False) -> Any:
    """The MODEL of a single-file checkpoint, loaded afresh as the checkpoint loader loads it."""
    shapes, _ = file_shapes(ckpt_path)
    family = detect_family(unet_facts(shapes))
    (model, _, _), _ = load_single_file(ckpt_path, family, weights, model_options_for(weight_dtype, NODE),
                                        clip_and_vae=False, disable_dynamic=disable_dynamic)
    finish(NODE, model, family, Path(ckpt_path).name)
    register_reload(model, reload_checkpoint_model, (ckpt_path, weights, weight_dtype))
    return model


def reload_diffusers_model(unet_path: str, family_key: str, weight_dtype: str, disable_dynamic: bool = False) -> Any:
    """The MODEL of a diffusers folder's UNet, loaded afresh as the diffusers loader loads it."""
    family = family_by_key(family_key)
    model = load_diffusers_unet(unet_path, family, model_options_for(weight_dtype, DIFFUSERS_NODE), disable_dynamic)
    finish(DIFFUSERS_NODE, model, family, unet_path)
    register_reload(model, reload_diffusers_model, (unet_path, family_key, weight_dtype))
    return model


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
        shapes, _ = file_shapes(path)
        facts = unet_facts(shapes)
        try:
            family = detect_family(facts)
        except UnsupportedModel as error:
            raise input_error(NODE, "ckpt_name", f"is {ckpt_name}, which holds {str(error).split('; expected')[0]}",
                              "an 8-channel InstructPix2Pix-style UNet", str(error).split("Fix: ")[-1]) from None
        assert facts is not None
        if weights not in WEIGHT_MODES:
            raise input_error(NODE, "weights", f"is {weights!r}", f"one of {', '.join(WEIGHT_MODES)}", "choose auto")
        if not any(key.startswith(UNET_PREFIX) for key in shapes):
            naming = "diffusers'" if facts.layout == "diffusers" else "a bare UNet's"
            raise input_error(NODE, "ckpt_name", f"is {ckpt_name}, which holds only a {family.name} UNet in {naming} naming "
                              "(no text encoder, no VAE)", "a full single-file checkpoint (model.diffusion_model.*, text "
                              "encoder, VAE)", "load the full checkpoint; for a diffusers UNet put it in a folder's unet/ "
                              "and use 'Load InstructPix2Pix (diffusers folder)' with clip_vae_from set to a checkpoint")
        (model, clip, vae), used_ema = load_single_file(path, family, weights, model_options)
        finish(NODE, model, family, ckpt_name)
        register_reload(model, reload_checkpoint_model, (path, weights, weight_dtype))
        has_ema = any(key.startswith("model_ema.") for key in shapes)
        weights_text = ("EMA (model_ema.*)" if used_ema else
                        "non-EMA (the file's EMA copy is not used)" if has_ema else "the file's only copy (no EMA)")
        stored = _stored_from_file(path)
        info = info_text(family, facts, weights_text, dtype_text(model, stored), prediction_text(model))
        log.info("%s: loaded %s as %s with its %s weights", NODE, ckpt_name, family.name, "EMA" if used_ema else "non-EMA")
        return io.NodeOutput(model, clip, vae, info)


def _stored_from_file(path: str) -> str:
    if path.lower().endswith((".safetensors", ".sft")):
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as handle:
            counts: dict[str, int] = {}
            for key in handle.keys():
                if key.startswith(UNET_PREFIX):
                    dtype = handle.get_slice(key).get_dtype()
                    counts[dtype] = counts.get(dtype, 0) + 1
        name = max(counts, key=lambda k: counts[k]) if counts else "unknown"
        return {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}.get(name, name.lower())
    return "pickle (.ckpt)"


# -- diffusers folders ---------------------------------------------------------------------------------------
FROM_FOLDER = "(from the folder)"
UNET_FILES = ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors",
              "diffusion_pytorch_model.fp16.bin", "diffusion_pytorch_model.bin")
TEXT_FILES = ("model.fp16.safetensors", "model.safetensors", "pytorch_model.fp16.bin", "pytorch_model.bin")


def diffusers_folders() -> list[str]:
    """Folders with a model_index.json or a unet/ under models/diffusers and models/checkpoints,
    as 'diffusers/<relative path>' or 'checkpoints/<relative path>'."""
    found = []
    for kind in ("diffusers", "checkpoints"):
        try:
            roots = folder_paths.get_folder_paths(kind)
        except KeyError:
            continue
        for root in roots:
            if not os.path.isdir(root):
                continue
            for current, dirs, files in os.walk(root, followlinks=True):
                depth = os.path.relpath(current, root).count(os.sep)
                if depth > 2:
                    dirs[:] = []
                    continue
                if "model_index.json" in files or (os.path.isdir(os.path.join(current, "unet")) and current != root):
                    found.append(f"{kind}/{os.path.relpath(current, root)}")
                    dirs[:] = []
    return sorted(set(found))


def resolve_folder(name: str) -> str:
    kind, _, relative = name.partition("/")
    for root in folder_paths.get_folder_paths(kind) if kind in ("diffusers", "checkpoints") else []:
        candidate = os.path.join(root, relative)
        if os.path.isdir(candidate):
            return candidate
    raise input_error(DIFFUSERS_NODE, "model_path", f"is {name!r}, which is not a folder here",
                      "a folder under models/diffusers or models/checkpoints", "pick a folder from the list (refresh it)")


def first_file(folder: str, names: tuple[str, ...]) -> str | None:
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def diffusers_unet_config(shapes_only: dict[str, torch.Tensor]) -> dict:
    """The host's UNet config for a diffusers UNet. The host knows the 8-channel SDXL layout but not
    the 8-channel SD1.5 one; for that, its config of the same UNet with 4 input channels is taken
    and given 8 (the key map does not depend on the input channels)."""
    config = comfy.model_detection.unet_config_from_diffusers_unet(shapes_only)
    if config is None and "conv_in.weight" in shapes_only:
        conv_in = shapes_only["conv_in.weight"]
        proxy = {**shapes_only, "conv_in.weight": unet_stand_in([conv_in.shape[0], 4, *conv_in.shape[2:]], conv_in.dtype)}
        config = comfy.model_detection.unet_config_from_diffusers_unet(proxy)
        if config is not None:
            config = {**config, "in_channels": int(conv_in.shape[1])}
    if config is None:
        raise RuntimeError(f"{DIFFUSERS_NODE}: this ComfyUI does not know the layout of this diffusers UNet")
    return config


def load_diffusers_unet(unet_path: str, family: Family, model_options: dict, disable_dynamic: bool = False) -> Any:
    """The UNet of a diffusers folder as the host's model: the host's diffusers-to-LDM key map
    (comfy.utils.unet_to_diffusers), the model built from stand-ins, the file's tensors swapped in
    (under dynamic-VRAM loading: the host's own file loader and the whole state dict)."""
    from safetensors import safe_open

    if not unet_path.endswith(".safetensors") or (host_loads_dynamically() and not disable_dynamic):
        stored = read_checkpoint(DIFFUSERS_NODE, "model_path", unet_path)
        unet_config = diffusers_unet_config(stored)
        key_map = comfy.utils.unet_to_diffusers(unet_config)
        state_dict = {UNET_PREFIX + key_map[k]: v for k, v in stored.items() if k in key_map}
        return host_load(state_dict, None, model_options, clip_and_vae=False, disable_dynamic=disable_dynamic)[0]
    with safe_open(unet_path, framework="pt", device="cpu") as handle:
        slices = {key: handle.get_slice(key) for key in handle.keys()}
        shapes_only = {k: unet_stand_in(s.get_shape(), SAFETENSORS_DTYPES.get(s.get_dtype(), torch.float32))
                       for k, s in slices.items()}
        unet_config = diffusers_unet_config(shapes_only)
        # The host's map names every tensor such a UNet can have; a given UNet has a subset.
        key_map = {k: v for k, v in comfy.utils.unet_to_diffusers(unet_config).items() if k in slices}
        state_dict = {UNET_PREFIX + key_map[k]: shapes_only[k] for k in key_map}
        model = host_load(state_dict, None, model_options, clip_and_vae=False, disable_dynamic=disable_dynamic)[0]
        expected = set(dict(model.model.diffusion_model.named_parameters()))
        missing = sorted(expected - set(key_map.values()))
        if missing:
            raise input_error(DIFFUSERS_NODE, "model_path", f"has a UNet without {len(missing)} of its tensors "
                              f"(e.g. {missing[0]})", "a complete diffusers UNet", "download the unet folder again")
    with SafetensorsReader(unet_path) as reader:  # memory of their own, no file mapping kept (see load_single_file)
        fetch = {key_map[k]: (lambda k=k: reader.read(k)) for k in key_map}
        if not swap_in(model, fetch):
            raise RuntimeError(f"{DIFFUSERS_NODE}: this ComfyUI's UNet does not take the converted weights by name")
    return model


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
        if unet_path.endswith(".safetensors"):
            from safetensors import safe_open

            check_safetensors(DIFFUSERS_NODE, "model_path", unet_path)
            with safe_open(unet_path, framework="pt", device="cpu") as handle:
                shapes = {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
        else:
            shapes = {k: list(v.shape) for k, v in read_checkpoint(DIFFUSERS_NODE, "model_path", unet_path).items()}
        facts = unet_facts(shapes)
        try:
            family = detect_family(facts)
        except UnsupportedModel as error:
            raise input_error(DIFFUSERS_NODE, "model_path", f"is {model_path}, whose unet/ holds "
                              f"{str(error).split('; expected')[0]}", "an 8-channel InstructPix2Pix-style UNet",
                              str(error).split("Fix: ")[-1]) from None
        assert facts is not None
        if family.base not in ("SD1.5", "SDXL"):
            raise input_error(DIFFUSERS_NODE, "model_path", f"is {family.name}", "an SD1.5 or SDXL pipeline folder",
                              "load SD2.x edit models as single files with 'Load InstructPix2Pix Checkpoint'")
        model = load_diffusers_unet(unet_path, family, model_options)
        finish(DIFFUSERS_NODE, model, family, model_path)
        register_reload(model, reload_diffusers_model, (unet_path, family.key, weight_dtype))
        clip, vae = cls.text_and_vae(folder, family, clip_vae_from, model_path)
        stored = {"F16": "fp16", "F32": "fp32", "BF16": "bf16"}.get(_stored_from_diffusers(unet_path), "unknown")
        info = info_text(family, facts, "the folder's (diffusers folders keep no EMA copy)", dtype_text(model, stored),
                         prediction_text(model))
        return io.NodeOutput(model, clip, vae, info)

    @staticmethod
    def text_and_vae(folder: str, family: Family, clip_vae_from: str, model_path: str) -> tuple[Any, Any]:
        if clip_vae_from != FROM_FOLDER:
            path = folder_paths.get_full_path_or_raise("checkpoints", clip_vae_from)
            state_dict, metadata = read_checkpoint(DIFFUSERS_NODE, "clip_vae_from", path, return_metadata=True)
            other = unet_facts({k: list(v.shape) for k, v in state_dict.items() if hasattr(v, "shape")})
            if other is not None and other.base != family.base:
                raise input_error(DIFFUSERS_NODE, "clip_vae_from", f"is {clip_vae_from}, an {other.base} checkpoint",
                                  f"an {family.base} checkpoint (the UNet's base)", f"choose an {family.base} checkpoint")
            loaded = comfy.sd.load_state_dict_guess_config(
                state_dict, output_vae=True, output_clip=True, output_model=False,
                embedding_directory=folder_paths.get_folder_paths("embeddings"), metadata=metadata)
            if loaded is None or loaded[1] is None:  # newer hosts load an undetected file as a bare diffusion model
                raise input_error(DIFFUSERS_NODE, "clip_vae_from", f"is {clip_vae_from}, which has no text encoder ComfyUI "
                                  "recognises", f"an {family.base} checkpoint with its text encoder and VAE",
                                  f"choose a full {family.base} checkpoint")
            return loaded[1], loaded[2]
        encoders = [first_file(os.path.join(folder, name), TEXT_FILES) for name in ("text_encoder", "text_encoder_2")]
        vae_path = first_file(os.path.join(folder, "vae"), UNET_FILES)
        wanted = 2 if family.base == "SDXL" else 1
        lacking = [name for name, path in (("text_encoder/", encoders[0]), ("text_encoder_2/", encoders[1]), ("vae/", vae_path))
                   if path is None and (name != "text_encoder_2/" or wanted == 2)]
        if lacking:
            raise input_error(DIFFUSERS_NODE, "clip_vae_from", f"is '{FROM_FOLDER}' but {model_path} lacks {', '.join(lacking)}",
                              "a folder with its text encoder(s) and VAE, or a checkpoint to take them from",
                              f"choose an {family.base} checkpoint in clip_vae_from")
        texts = [hub_text_encoder(read_checkpoint(DIFFUSERS_NODE, "model_path", p)) for p in encoders[:wanted] if p]
        clip = comfy.sd.load_text_encoder_state_dicts(texts, embedding_directory=folder_paths.get_folder_paths("embeddings"))
        check_text_encoders(clip, texts, model_path)
        vae = comfy.sd.VAE(sd=read_checkpoint(DIFFUSERS_NODE, "model_path", vae_path))
        return clip, vae


def hub_text_encoder(state_dict: dict) -> dict:
    """A Hugging Face CLIP text encoder's tensors as the hub's files name them ("text_model.*").
    transformers 5 saves them without that prefix, which ComfyUI's text encoder loader does not
    recognise (it would leave the encoder unloaded)."""
    if any(key.startswith("text_model.") for key in state_dict) or "embeddings.token_embedding.weight" not in state_dict:
        return state_dict
    return {(key if key == "text_projection.weight" else f"text_model.{key}"): value for key, value in state_dict.items()}


def check_text_encoders(clip: Any, texts: list[dict], model_path: str) -> None:
    """Refuse a text encoder the host did not fill: its token embedding must be the file's."""
    loaded = clip.cond_stage_model.state_dict()
    for text in texts:
        expected = text.get("text_model.embeddings.token_embedding.weight")
        if expected is None:
            continue
        match = any(key.endswith("embeddings.token_embedding.weight") and value.shape == expected.shape
                    and torch.equal(value.float(), expected.float()) for key, value in loaded.items())
        if not match:
            raise input_error(DIFFUSERS_NODE, "model_path", f"is {model_path}, whose text encoder ComfyUI did not load",
                              "Hugging Face CLIP text encoder files", "choose a checkpoint in clip_vae_from instead")


def _stored_from_diffusers(unet_path: str) -> str:
    if not unet_path.endswith(".safetensors"):
        return "pickle"
    from safetensors import safe_open

    with safe_open(unet_path, framework="pt", device="cpu") as handle:
        keys = list(handle.keys())
        return handle.get_slice(keys[0]).get_dtype() if keys else "unknown"
