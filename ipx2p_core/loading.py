"""What the loaders need that no host does: reading a file's tensor shapes and stored dtypes, the
names inside a diffusers pipeline folder, stand-in tensors, and the words of the info output.

Checkpoints are read through the host in `nodes/` (its weights-only loader for pickles); this
module reads safetensors headers and folders only.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from .checkpoint import EMA_PREFIX, UNET_PREFIX

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
# safetensors dtype names the host builds models in; a UNet stored otherwise is loaded whole
SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
STORED_DTYPE_TEXT = {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}

# diffusers pipeline folders: weight files in the order a loader prefers them
UNET_FILES = ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors",
              "diffusion_pytorch_model.fp16.bin", "diffusion_pytorch_model.bin")
TEXT_FILES = ("model.fp16.safetensors", "model.safetensors", "pytorch_model.fp16.bin", "pytorch_model.bin")
TEXT_ENCODER_FOLDERS = ("text_encoder", "text_encoder_2")
PIPELINE_DEPTH = 2  # how deep under a models folder pipeline folders are looked for


def is_safetensors(path: str) -> bool:
    return path.lower().endswith(SAFETENSORS_SUFFIXES)


def safetensors_shapes(path: str) -> dict[str, list[int]]:
    """key -> shape of a .safetensors file, from its header alone."""
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as handle:
        return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}


def tensor_shapes(state_dict: Mapping[str, Any]) -> dict[str, list[int]]:
    """key -> shape of a loaded state dict (entries without a shape, e.g. metadata, left out)."""
    return {key: list(value.shape) for key, value in state_dict.items() if hasattr(value, "shape")}


def stored_dtype_text(path: str) -> str:
    """The dtype most of a single file's UNet tensors are stored in ("fp16", "bf16", "fp32", ...);
    "pickle (.ckpt)" for a pickle, whose dtypes are known only after loading."""
    if not is_safetensors(path):
        return "pickle (.ckpt)"
    from safetensors import safe_open

    counts: dict[str, int] = {}
    with safe_open(path, framework="pt", device="cpu") as handle:
        for key in handle.keys():
            if key.startswith(UNET_PREFIX):
                dtype = handle.get_slice(key).get_dtype()
                counts[dtype] = counts.get(dtype, 0) + 1
    name = max(counts, key=lambda k: counts[k]) if counts else "unknown"
    return STORED_DTYPE_TEXT.get(name, name.lower())


def diffusers_stored_dtype_text(unet_path: str) -> str:
    """The stored dtype of a diffusers UNet file, read off its first tensor ("unknown" for pickles)."""
    if not unet_path.endswith(".safetensors"):
        return "unknown"
    from safetensors import safe_open

    with safe_open(unet_path, framework="pt", device="cpu") as handle:
        keys = list(handle.keys())
        name = handle.get_slice(keys[0]).get_dtype() if keys else "unknown"
    return STORED_DTYPE_TEXT.get(name, "unknown")


def unet_stand_in(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor of the right shape and dtype that holds no memory (a zero-stride view of one zero).
    The host detects and builds the model from shapes and dtypes; the values come afterwards."""
    return torch.zeros((), dtype=dtype).expand(*shape)


def has_full_checkpoint_unet(keys: Iterable[str]) -> bool:
    """Whether a file names its UNet as a single-file checkpoint does (model.diffusion_model.*)."""
    return any(key.startswith(UNET_PREFIX) for key in keys)


def has_ema_copy(keys: Iterable[str]) -> bool:
    return any(key.startswith(EMA_PREFIX) for key in keys)


def weights_text(used_ema: bool, has_ema: bool) -> str:
    """The info output's 'weights' line for a single file."""
    if used_ema:
        return "EMA (model_ema.*)"
    return "non-EMA (the file's EMA copy is not used)" if has_ema else "the file's only copy (no EMA)"


def pickle_refusal(message: str) -> tuple[bool, str | None]:
    """(whether torch's weights-only loader refused a pickle that would run code, the global it
    names). torch says so only in its UnpicklingError's text ("Weights only load failed ...
    Unsupported global: GLOBAL module.name")."""
    called = re.search(r"GLOBAL ([\w.]+)", message)
    refused = "Weights only load failed" in message and (called is not None or "Unsupported global" in message)
    return refused, called.group(1) if called else None


# -- diffusers pipeline folders ----------------------------------------------------------------------------
def first_file(folder: str, names: Sequence[str]) -> str | None:
    """The first of `names` that is a file in `folder`."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def pipeline_folders(root: str) -> list[str]:
    """Folders under `root` (at most PIPELINE_DEPTH levels down) with a model_index.json or a unet/,
    relative to root; a found folder's own subfolders are not searched."""
    found: list[str] = []
    if not os.path.isdir(root):
        return found
    for current, dirs, files in os.walk(root, followlinks=True):
        if os.path.relpath(current, root).count(os.sep) > PIPELINE_DEPTH:
            dirs[:] = []
            continue
        if "model_index.json" in files or (os.path.isdir(os.path.join(current, "unet")) and current != root):
            found.append(os.path.relpath(current, root))
            dirs[:] = []
    return found


def pipeline_parts(folder: str, text_encoders: int) -> tuple[list[str], str | None, list[str]]:
    """(text encoder files, VAE file, what is lacking as 'text_encoder/', 'vae/', ...) of a pipeline
    folder whose family has `text_encoders` text encoders."""
    encoders = [first_file(os.path.join(folder, name), TEXT_FILES) for name in TEXT_ENCODER_FOLDERS[:text_encoders]]
    vae = first_file(os.path.join(folder, "vae"), UNET_FILES)
    lacking = [f"{name}/" for name, path in zip(TEXT_ENCODER_FOLDERS, encoders) if path is None]
    if vae is None:
        lacking.append("vae/")
    return [path for path in encoders if path is not None], vae, lacking


def hub_text_encoder(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face CLIP text encoder's tensors as the hub's files name them ("text_model.*").
    transformers 5 saves them without that prefix, which ComfyUI's text encoder loader does not
    recognise (it would leave the encoder unloaded)."""
    if any(key.startswith("text_model.") for key in state_dict) or "embeddings.token_embedding.weight" not in state_dict:
        return state_dict
    return {(key if key == "text_projection.weight" else f"text_model.{key}"): value for key, value in state_dict.items()}
