"""Every probe of the host's version in the loaders, the engine and messages: what newer ComfyUI
versions have and older ones lack is asked here, once, so a dropped old host is one place to clean up.
(The node API's own version choice is nodes/_comfy.py.)"""
from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

import comfy.model_management
import comfy.sd


def executing_node(default: str) -> str:
    """The node the host is running now, as 'KSampler (node 5)', for messages raised from code that
    several nodes run (model wrappers); `default` where the host cannot say."""
    try:
        from comfy_execution.progress import get_progress_state
        from comfy_execution.utils import get_executing_context

        context = get_executing_context()
        node = get_progress_state().dynprompt.get_node(context.node_id)
        return f"{node['class_type']} (node {context.node_id})"
    except Exception:  # an older host, or called outside a running prompt
        return default


def host_loads_dynamically() -> bool:
    """True when this ComfyUI loads models with its dynamic-VRAM patcher (NVIDIA, newer hosts). It
    then assigns the state dict's tensors as the parameters and reloads them from the file's
    storage markers, which only its own file loader sets: the pack loads such files the host's way."""
    memory = sys.modules.get("comfy.memory_management")
    return bool(getattr(memory, "aimdo_enabled", False)) and comfy.model_management.get_torch_device().type != "cpu"


def guess_config_options(disable_dynamic: bool) -> dict[str, Any]:
    """Extra keyword arguments for comfy.sd.load_state_dict_guess_config: `disable_dynamic=True`
    where asked and the host has the parameter (hosts with dynamic VRAM), else none."""
    if disable_dynamic and "disable_dynamic" in inspect.signature(comfy.sd.load_state_dict_guess_config).parameters:
        return {"disable_dynamic": True}
    return {}


def register_reload(model: Any, factory: Callable[..., Any], arguments: tuple) -> None:
    """Tell the host how to load this MODEL afresh (newer ComfyUI's `cached_patcher_init`, which its
    own checkpoint loader sets): with dynamic VRAM it builds a non-dynamic copy that way when
    conditionings carry hooks (e.g. Create Hook LoRA), and for torch.compile. The host calls
    factory(*arguments, disable_dynamic=True)."""
    if hasattr(model, "cached_patcher_init"):
        model.cached_patcher_init = (factory, arguments)


def sampling_memory(model: Any, batch_shape: list[int]) -> tuple[float, float] | None:
    """(bytes a model call on a batch of `batch_shape` needs, bytes free for it on the model's
    device, the model's unloaded part set aside), from the host's own estimates; None where this
    host's model objects do not say."""
    try:
        needed = float(model.model.memory_required(batch_shape))
        free = float(comfy.model_management.get_free_memory(model.load_device))
        free -= max(0.0, float(model.model_size()) - float(model.loaded_size()))
    except (AttributeError, TypeError):
        return None
    return needed, free


def clone_resident(model: Any, override: Any = None) -> Any:
    """A clone of a dynamic-VRAM MODEL on the host's standard patcher (weights resident in VRAM once
    loaded), as core's TorchCompileModel makes one: by reloading the model through its reload
    factory (`cached_patcher_init`), or on the weights of `override` (an earlier such clone's
    get_clone_model_override()) without reading the file again. TypeError on hosts without
    `disable_dynamic`, RuntimeError where the model has no reload factory."""
    parameters = inspect.signature(model.clone).parameters
    if "disable_dynamic" not in parameters:
        raise TypeError("this ComfyUI cannot clone a model without dynamic VRAM")
    if override is not None and "model_override" in parameters:
        return model.clone(disable_dynamic=True, model_override=override)
    return model.clone(disable_dynamic=True)
