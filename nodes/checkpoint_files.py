"""Reading checkpoint files through the host (pickles only with its weights-only loader), with
every failure said in words on the node that read the file."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import comfy.utils

from ..ipx2p_core.checkpoint import safetensors_problem
from ..ipx2p_core.loading import is_safetensors, pickle_refusal, safetensors_shapes, tensor_shapes
from .common import input_error


def check_safetensors(node: str, input_name: str, path: str) -> None:
    problem = safetensors_problem(path)
    if problem is not None:
        raise input_error(node, input_name, f"is {Path(path).name}, which {problem}", "a complete .safetensors checkpoint",
                          "download the file again (check its size against the publisher's)")


def read_checkpoint(node: str, input_name: str, path: str, return_metadata: bool = False) -> Any:
    """A whole checkpoint through the host's loader (pickles weights-only), with failures said in
    words: a pickle that would run code is refused (nothing in it runs), a damaged file is named."""
    name = Path(path).name
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
        return safetensors_shapes(path)
    return tensor_shapes(read_checkpoint(node, input_name, path))
