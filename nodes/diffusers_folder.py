"""Diffusers pipeline folders: finding them, their UNet as the host's model (the host's
diffusers-to-LDM key map), and their text encoder(s) and VAE, or those of a chosen checkpoint."""
from __future__ import annotations

import os
from typing import Any

import comfy.model_detection
import comfy.sd
import comfy.utils
import folder_paths
import torch

from ..ipx2p_core.checkpoint import UNET_PREFIX, SafetensorsReader
from ..ipx2p_core.families import Family, family_by_key, unet_facts
from ..ipx2p_core.loading import (
    SAFETENSORS_DTYPES, hub_text_encoder, pipeline_folders, pipeline_parts, tensor_shapes, unet_stand_in,
)
from .checkpoint_files import read_checkpoint
from .common import input_error
from .host_compat import host_loads_dynamically, register_reload
from .model_loading import DIFFUSERS_NODE, finish, host_load, model_options_for, swap_in

FROM_FOLDER = "(from the folder)"
FOLDER_KINDS = ("diffusers", "checkpoints")  # the host's model folders searched for pipeline folders


def diffusers_folders() -> list[str]:
    """Folders with a model_index.json or a unet/ under models/diffusers and models/checkpoints,
    as 'diffusers/<relative path>' or 'checkpoints/<relative path>'."""
    found = []
    for kind in FOLDER_KINDS:
        try:
            roots = folder_paths.get_folder_paths(kind)
        except KeyError:  # a host without that folder kind
            continue
        for root in roots:
            found.extend(f"{kind}/{relative}" for relative in pipeline_folders(root))
    return sorted(set(found))


def resolve_folder(name: str) -> str:
    kind, _, relative = name.partition("/")
    for root in folder_paths.get_folder_paths(kind) if kind in FOLDER_KINDS else []:
        candidate = os.path.join(root, relative)
        if os.path.isdir(candidate):
            return candidate
    raise input_error(DIFFUSERS_NODE, "model_path", f"is {name!r}, which is not a folder here",
                      "a folder under models/diffusers or models/checkpoints", "pick a folder from the list (refresh it)")


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
    (under dynamic-VRAM loading: the host's own file loader and the whole state dict). Every family
    the diffusers loader takes (Family.diffusers_folder) is built by the host's own loader."""
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


def reload_diffusers_model(unet_path: str, family_key: str, weight_dtype: str, disable_dynamic: bool = False) -> Any:
    """The MODEL of a diffusers folder's UNet, loaded afresh as the diffusers loader loads it."""
    family = family_by_key(family_key)
    model = load_diffusers_unet(unet_path, family, model_options_for(weight_dtype, DIFFUSERS_NODE), disable_dynamic)
    finish(DIFFUSERS_NODE, model, family, unet_path)
    register_reload(model, reload_diffusers_model, (unet_path, family_key, weight_dtype))
    return model


def text_and_vae(folder: str, family: Family, clip_vae_from: str, model_path: str) -> tuple[Any, Any]:
    """CLIP and VAE of a pipeline folder, or of the checkpoint chosen in clip_vae_from."""
    if clip_vae_from != FROM_FOLDER:
        return text_and_vae_of_checkpoint(family, clip_vae_from)
    texts_paths, vae_path, lacking = pipeline_parts(folder, family.text_encoders)
    if lacking:
        raise input_error(DIFFUSERS_NODE, "clip_vae_from", f"is '{FROM_FOLDER}' but {model_path} lacks {', '.join(lacking)}",
                          "a folder with its text encoder(s) and VAE, or a checkpoint to take them from",
                          f"choose an {family.base} checkpoint in clip_vae_from")
    texts = [hub_text_encoder(read_checkpoint(DIFFUSERS_NODE, "model_path", path)) for path in texts_paths]
    clip = comfy.sd.load_text_encoder_state_dicts(texts, embedding_directory=folder_paths.get_folder_paths("embeddings"))
    check_text_encoders(clip, texts, model_path)
    vae = comfy.sd.VAE(sd=read_checkpoint(DIFFUSERS_NODE, "model_path", vae_path))
    return clip, vae


def text_and_vae_of_checkpoint(family: Family, clip_vae_from: str) -> tuple[Any, Any]:
    path = folder_paths.get_full_path_or_raise("checkpoints", clip_vae_from)
    state_dict, metadata = read_checkpoint(DIFFUSERS_NODE, "clip_vae_from", path, return_metadata=True)
    other = unet_facts(tensor_shapes(state_dict))
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
