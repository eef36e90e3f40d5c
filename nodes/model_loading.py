"""Building the host's MODEL, CLIP and VAE for a detected family: the family's load route (the
host's own loader, or the SD2 InstructPix2Pix config), single files without holding the UNet
twice, diffusers UNets through the host's key map, the checks after loading, and the factories
the host calls to load a MODEL afresh."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfy.model_base
import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import folder_paths
import torch

from ..ipx2p_core.checkpoint import UNET_PREFIX, SafetensorsReader, plan_weights
from ..ipx2p_core.families import HOST_GUESS_CONFIG, SD2_IP2P_CONFIG, Family, detect_unet
from ..ipx2p_core.loading import SAFETENSORS_DTYPES, is_safetensors, unet_stand_in
from .checkpoint_files import file_shapes, read_checkpoint
from .common import input_error
from .guard import guard
from .host_compat import guess_config_options, host_loads_dynamically, register_reload

log = logging.getLogger(__name__)
NODE = "IPX2P_CheckpointLoader"
DIFFUSERS_NODE = "IPX2P_DiffusersLoader"
WEIGHT_DTYPES = {"default": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
Loaded = tuple[Any, Any, Any]  # MODEL, CLIP, VAE (CLIP and VAE None when not asked for)


def model_options_for(weight_dtype: str, node: str) -> dict:
    if weight_dtype not in WEIGHT_DTYPES:
        raise input_error(node, "weight_dtype", f"is {weight_dtype!r}", f"one of {', '.join(WEIGHT_DTYPES)}",
                          "choose default unless you need a precision")
    dtype = WEIGHT_DTYPES[weight_dtype]
    return {} if dtype is None else {"dtype": dtype}


# -- the load routes (Family.load_route) --------------------------------------------------------------------
def host_load(state_dict: dict, metadata: dict | None, model_options: dict, clip_and_vae: bool = True,
              disable_dynamic: bool = False) -> Loaded:
    """MODEL, CLIP, VAE through the host's own loader. The family was detected by the pack before
    (newer hosts no longer return None for an undetected file: they load a bare diffusion model)."""
    loaded = comfy.sd.load_state_dict_guess_config(
        state_dict, output_vae=clip_and_vae, output_clip=clip_and_vae,
        embedding_directory=folder_paths.get_folder_paths("embeddings"), metadata=metadata, model_options=model_options,
        **guess_config_options(disable_dynamic),
    )
    if loaded is None or loaded[0] is None or (clip_and_vae and loaded[1] is None):
        raise RuntimeError("ComfyUI could not build the model from this file; is it complete?")
    return loaded[0], loaded[1], loaded[2]


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


def load_sd2(state_dict: dict, metadata: dict | None, model_options: dict) -> Loaded:
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


def _sd2_route(state_dict: dict, metadata: dict | None, model_options: dict, clip_and_vae: bool = True,
               disable_dynamic: bool = False) -> Loaded:
    # Always with text encoder and VAE (load_sd2 builds them first); the host's disable_dynamic does
    # not apply: the model is the pack's own ModelPatcher.
    return load_sd2(state_dict, metadata, model_options)


ROUTES: dict[str, Callable[..., Loaded]] = {HOST_GUESS_CONFIG: host_load, SD2_IP2P_CONFIG: _sd2_route}
# Routes that may build from zero-memory stand-ins and take the file's tensors afterwards (swap_in).
STAND_IN_ROUTES = frozenset({HOST_GUESS_CONFIG})


def build(family: Family, state_dict: dict, metadata: dict | None, model_options: dict, clip_and_vae: bool = True,
          disable_dynamic: bool = False) -> Loaded:
    """MODEL, CLIP, VAE of a state dict by the family's load route."""
    route = ROUTES.get(family.load_route)
    if route is None:
        raise RuntimeError(f"{family.name}: load route {family.load_route!r} is not one the pack knows. Fix: update the pack.")
    return route(state_dict, metadata, model_options, clip_and_vae, disable_dynamic)


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


def load_single_file(path: str, family: Family, plan_mode: str, model_options: dict, clip_and_vae: bool = True,
                     disable_dynamic: bool = False) -> tuple[Loaded, bool]:
    """(MODEL, CLIP, VAE), used EMA. safetensors: the UNet is never held twice (stand-ins, then the
    file's tensors swapped in one at a time), except under the host's dynamic-VRAM loading, which
    gets the host's own file loader; pickles only through the host's weights-only loader."""
    def load(state_dict: dict, metadata: dict | None) -> Loaded:
        return build(family, state_dict, metadata, model_options, clip_and_vae, disable_dynamic)

    if not is_safetensors(path) or (host_loads_dynamically() and not disable_dynamic):
        # the host's own file loader: pickles (weights-only), and every file under dynamic VRAM
        full, metadata = read_checkpoint(NODE, "ckpt_name", path, return_metadata=True)
        plan = plan_weights(full.keys(), plan_mode, who=f"{NODE}: input 'weights'")
        state_dict = {target: full[source] for target, source in plan.sources.items()}
        del full
        return load(state_dict, metadata), plan.use_ema
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as handle:
        slices = {key: handle.get_slice(key) for key in handle.keys()}
        plan = plan_weights(slices.keys(), plan_mode, who=f"{NODE}: input 'weights'")
        unet = {t: s for t, s in plan.sources.items() if t.startswith(UNET_PREFIX)}
        dtypes = {t: SAFETENSORS_DTYPES.get(slices[s].get_dtype()) for t, s in unet.items()}
        metadata = handle.metadata()
        if family.load_route not in STAND_IN_ROUTES or any(dtype is None for dtype in dtypes.values()):
            return load({t: handle.get_tensor(s) for t, s in plan.sources.items()}, metadata), plan.use_ema
        state_dict = {t: handle.get_tensor(s) for t, s in plan.sources.items() if t not in unet}
        state_dict.update({t: unet_stand_in(slices[s].get_shape(), dtypes[t]) for t, s in unet.items()})  # type: ignore[arg-type]
        loaded = load(state_dict, metadata)
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
    return load(state_dict, metadata), plan.use_ema


# -- after loading -----------------------------------------------------------------------------------------
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
    guard(model, source_name)


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


def reload_checkpoint_model(ckpt_path: str, weights: str, weight_dtype: str, disable_dynamic: bool = False) -> Any:
    """The MODEL of a single-file checkpoint, loaded afresh as the checkpoint loader loads it."""
    family, _ = detect_unet(file_shapes(NODE, "ckpt_name", ckpt_path))
    (model, _, _), _ = load_single_file(ckpt_path, family, weights, model_options_for(weight_dtype, NODE),
                                        clip_and_vae=False, disable_dynamic=disable_dynamic)
    finish(NODE, model, family, Path(ckpt_path).name)
    register_reload(model, reload_checkpoint_model, (ckpt_path, weights, weight_dtype))
    return model

