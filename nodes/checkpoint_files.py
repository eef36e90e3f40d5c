"""Reading checkpoint files through the host (pickles only with its weights-only loader), with
every failure said in words on the node that read the file."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import comfy.utils

from ..ipx2p_core.checkpoint import safetensors_problem
from ..ipx2p_core.loading import TEXT_ENCODER_FOLDERS, is_safetensors, pickle_refusal, safetensors_shapes, tensor_shapes
from .common import input_error

PIPELINE_PARTS = ("unet", "vae", *TEXT_ENCODER_FOLDERS)


def file_name(path: str) -> str:
    """A file as messages name it: its name, after its part folder for a file of a diffusers
    pipeline folder ("unet/diffusion_pytorch_model.safetensors"), where every part's file has one name."""
    file = Path(path)
    return f"{file.parent.name}/{file.name}" if file.parent.name in PIPELINE_PARTS else file.name


def check_safetensors(node: str, input_name: str, path: str) -> None:
    problem = safetensors_problem(path)
    if problem is not None:
        raise input_error(node, input_name, f"is {file_name(path)}, which {problem}", "a complete .safetensors checkpoint",
                          "download the file again (check its size against the publisher's)")


def read_checkpoint(node: str, input_name: str, path: str, return_metadata: bool = False) -> Any:
    """A whole checkpoint through the host's loader (pickles weights-only), with failures said in
    words: a pickle that would run code is refused (nothing in it runs), a damaged file is named."""
    name = file_name(path)
    if is_safetensors(path):
        check_safetensors(node, input_name, path)
    try:
        return comfy.utils.load_torch_file(path, safe_load=True, return_metadata=return_metadata)
    except MemoryError:
        raise
    except pickle.UnpicklingError as error:
        refused, called = pickle_refusal(str(error))  # torch names the refused global only in its text
        if refused:
            what = f" (it calls {called})" if called else ""
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


def file_shapes(node: str, input_name: str, path: str) -> dict[str, list[int]]:
    """key -> shape of a checkpoint, reading only the header of a safetensors file. For pickles the
    whole file goes through the host's weights-only loader (a pickle that would run code is refused)."""
    if is_safetensors(path):
        check_safetensors(node, input_name, path)
        try:
            return safetensors_shapes(path)
        except MemoryError:
            raise
        except Exception as error:  # a fault the check above leaves to the library (e.g. a dtype it does not know)
            raise input_error(node, input_name, f"is {file_name(path)}, which the safetensors library cannot read ({error})",
                              "a complete .safetensors checkpoint",
                              "download the file again; if it is of a newer format, update the safetensors package") from None
    return tensor_shapes(read_checkpoint(node, input_name, path))
