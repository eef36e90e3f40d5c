"""The fast path: the edit's UNet compiled for its branch batch and replayed as CUDA graphs.

An eager step on a GPU is bound by launching ~1,000 kernels from Python (and, with dynamic VRAM,
by casting each layer's weights on the way), not by arithmetic. The fast path, when a node's
`fast` input asks for it, runs the UNet through torch.compile (inductor, "reduce-overhead": CUDA
graphs) with the weights resident in VRAM, one graph per batch shape (3 or 2 branches, times the
batch), so a step is one graph replay.

Every choice and check of that path is here (ipx2p_core.compiled keeps the bookkeeping):
- `fast_model(model, node)`: the guider's clone of the MODEL that runs compiled, or a plain clone
  and the reason why not (no NVIDIA GPU, no Triton, --lowvram, a model the host cannot reload
  with resident weights). Dynamic-VRAM models get a resident copy, loaded once per model.
- `CompiledUNet`: the diffusion-model wrapper on that clone. Each call runs compiled when it is the
  plain UNet (ipx2p_core.compiled.why_not) and eager otherwise (ControlNet, IP-Adapter's attention
  replacement, other patches, weights not wholly in VRAM), saying once per run why.
Nothing global changes: the compile happens on the guider's own clone, the host's settings and
the user's other models stay as they are.
"""
from __future__ import annotations

import logging
import time
import types
import weakref
from dataclasses import dataclass
from typing import Any

import comfy.model_management
import comfy.patcher_extension
import torch

from ..ipx2p_core.compiled import CompileBook, describe, passed_options, signature, why_not
from .host_compat import clone_resident, executing_node

FAST_WRAPPER_KEY = "ipx2p_compiled_unet"
FAST_TOOLTIP = (
    "NVIDIA GPUs: run the UNet compiled, as CUDA graphs, with its weights kept in VRAM: steps several times faster "
    "after a one-time compile (about a minute per image size and branch count; later edits of that size reuse it). "
    "Same result as off, to fp16 rounding. Falls back to the standard path, saying why in the console, on CPUs, "
    "other GPUs, without Triton, and for calls with ControlNet or attention patches (IP-Adapter).")


@dataclass(frozen=True)
class CompileSettings:
    """How the fast path compiles: torch.compile's backend and mode, the device types it runs on,
    and how many input sizes one model may be compiled for. Tests on a CPU use backend 'eager' or
    'inductor' with 'cpu' among the devices."""

    backend: Any = "inductor"
    mode: str | None = "reduce-overhead"
    devices: frozenset[str] = frozenset({"cuda"})
    limit: int = 8

    @property
    def cudagraphs(self) -> bool:
        return self.mode == "reduce-overhead" or self.backend == "cudagraphs"


SETTINGS = CompileSettings()


def _triton_missing() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return True
    return not has_triton()


def unavailable(model: Any) -> str | None:
    """Why the fast path cannot run this MODEL here at all, or None."""
    device = getattr(model, "load_device", None)
    kind = getattr(device, "type", str(device))
    if kind not in SETTINGS.devices:
        return f"it needs an NVIDIA GPU (CUDA) and this model runs on {device}"
    if kind == "cuda" and getattr(torch.version, "hip", None):
        return "it needs an NVIDIA GPU and this one is AMD (ROCm); torch.compile's CUDA graphs are not used there"
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile (torch 2.1 or newer is needed)"
    if kind == "cuda" and SETTINGS.backend == "inductor" and _triton_missing():
        return "Triton is not installed (pip install triton; on Windows: pip install triton-windows)"
    vram = getattr(comfy.model_management, "vram_state", None)
    if kind == "cuda" and vram in (comfy.model_management.VRAMState.LOW_VRAM, comfy.model_management.VRAMState.NO_VRAM):
        return "ComfyUI was started with --lowvram / --novram, so the UNet is not kept in VRAM"
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    if not callable(getattr(unet, "_forward", None)):
        return "this ComfyUI's UNet has no _forward method to compile"
    return None


def _fresh_runner() -> Any:
    """A copy of `_run_unet` with a code object of its own: the compiler keeps its cache and its
    recompile limit per code object, so each model gets its own."""
    code = _run_unet.__code__.replace()
    return types.FunctionType(code, _run_unet.__globals__, "_run_unet")


def _run_unet(unet: Any, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None,
              y: torch.Tensor | None, options: dict) -> torch.Tensor:
    return unet._forward(x, timesteps, context=context, y=y, control=None, transformer_options=dict(options))


class _Compiled:
    """One UNet's compiled call and its book (sizes compiled, first-call seconds, calls)."""

    def __init__(self) -> None:
        self.settings = SETTINGS
        self.book = CompileBook(limit=SETTINGS.limit)
        self.call = torch.compile(_fresh_runner(), backend=SETTINGS.backend, mode=SETTINGS.mode, dynamic=False)
        self.broken: str | None = None


_COMPILED: weakref.WeakKeyDictionary[Any, _Compiled] = weakref.WeakKeyDictionary()
_RESIDENT: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def compiled_for(unet: Any) -> _Compiled:
    """The compiled call of this UNet module (made on first use, dropped with the module)."""
    entry = _COMPILED.get(unet)
    if entry is None or entry.settings != SETTINGS:
        entry = _COMPILED[unet] = _Compiled()
    return entry


def book_of(model: Any) -> CompileBook | None:
    """The compile book of a MODEL's UNet, None when it never ran compiled."""
    entry = _COMPILED.get(getattr(model.model, "diffusion_model", None))
    return entry.book if entry is not None else None


class CompiledUNet:
    """DIFFUSION_MODEL wrapper: the plain UNet call compiled, any other call eager (said once per reason)."""

    def __init__(self, node: str, base_model: Any) -> None:
        self.node = node
        self._model = weakref.ref(base_model)
        self.reported: set[str] = set()
        self.compiled_calls = 0
        self.eager_calls = 0

    def _residency(self) -> str | None:
        model = self._model()
        if model is not None and getattr(model, "model_lowvram", False):
            return "the UNet is only partly in VRAM (ComfyUI streams its weights), so they cannot be captured"
        return None

    def fall_back(self, reason: str) -> None:
        self.eager_calls += 1
        if reason not in self.reported:
            self.reported.add(reason)
            logging.warning("%s: fast path not used for this model call, running the standard path: %s.",
                            executing_node(self.node), reason)

    def __call__(self, executor: Any, x: torch.Tensor, timesteps: torch.Tensor | None = None, context: Any = None,
                 y: Any = None, control: Any = None, transformer_options: dict = {}, **kwargs: Any) -> Any:
        unet = executor.class_obj
        reason = why_not(transformer_options, control, kwargs, FAST_WRAPPER_KEY) or self._residency()
        entry = sig = None
        if reason is None:
            entry = compiled_for(unet)
            sig = signature(x, timesteps, context, y)
            if entry.broken:
                reason = entry.broken
            elif not entry.book.admits(sig):
                reason = (f"this model is already compiled for {entry.book.limit} input sizes (a new size or batch "
                          "compiles again); load the model afresh to start over")
        if reason is not None or entry is None or sig is None:
            self.fall_back(reason or "")
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        return self._run(entry, sig, unet, x, timesteps, context, y, passed_options(transformer_options))

    def _run(self, entry: _Compiled, sig: tuple, unet: Any, x: torch.Tensor, timesteps: Any, context: Any, y: Any,
             options: dict) -> torch.Tensor:
        first = not entry.book.knows(sig)
        started = time.perf_counter() if first else None
        if first:
            logging.info("%s: compiling the UNet for %s (once for this size and branch count).",
                         executing_node(self.node), describe(sig))
        if entry.settings.cudagraphs and x.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # earlier outputs are clones: the buffers may be reused
        try:
            out = entry.call(unet, x, timesteps, context, y, options)
        except Exception as error:  # the compiler failed: this model runs eager from now on, and says why
            if not first:
                raise
            entry.broken = f"compiling the UNet failed ({_root_cause(error)})"
            self.fall_back(entry.broken)
            return unet._forward(x, timesteps, context=context, y=y, control=None, transformer_options=dict(options))
        if entry.settings.cudagraphs and x.device.type == "cuda":
            out = out.clone()  # the graph's output buffer is overwritten by its next replay
        if first and x.device.type == "cuda":
            torch.cuda.synchronize(x.device)  # the one-time cost includes the first replay
        entry.book.served(sig, started)
        self.compiled_calls += 1
        if first:
            logging.info("%s: UNet compiled for %s in %.1f s; later calls of this size replay it.",
                         executing_node(self.node), describe(sig), entry.book.first_call_s[sig])
        return out


def _root_cause(error: BaseException) -> str:
    """The innermost error of a compiler failure (torch wraps the backend's own), in one line."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if not isinstance(inner, BaseException):
            break
        error = inner
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def _resident(model: Any) -> Any:
    """A clone of `model` whose weights stay in VRAM once loaded (the host's standard patcher).

    A standard-patcher MODEL is simply cloned. A dynamic-VRAM MODEL is reloaded once with resident
    weights (its reload factory reads the file again), kept as an anchor while the model lives;
    each edit gets a clone with the model's current patches and options on the anchor's weights.
    The clone's parent is the anchor, so after the edit the host keeps the weights loaded under it
    (as it does for a cached MODEL) and the next edit finds them in place: its CUDA graphs replay
    on the same weight buffers instead of being captured again.
    """
    if not getattr(model, "is_dynamic", lambda: False)():
        return model.clone()
    anchor = _RESIDENT.get(model.model)
    if anchor is None:
        anchor = clone_resident(model)
        anchor.parent = None  # no reference back to the dynamic MODEL, which may then be freed
        _RESIDENT[model.model] = anchor
    clone = clone_resident(model, anchor.get_clone_model_override())
    clone.parent = anchor
    return clone


def fast_model(model: Any, node: str) -> tuple[Any, str | None]:
    """(the guider's clone of `model`, None) with its UNet compiled, or (a plain clone, why not)."""
    reason = unavailable(model)
    if reason is not None:
        return model.clone(), reason
    try:
        clone = _resident(model)
    except (RuntimeError, TypeError, AttributeError) as error:
        return model.clone(), f"the host cannot make a copy of this model with resident weights ({error})"
    wrapper = CompiledUNet(node, clone.model)
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, FAST_WRAPPER_KEY, wrapper)
    return clone, None


def wrapper_of(model: Any) -> CompiledUNet | None:
    """The fast path's wrapper on a MODEL (the guider's clone), None when it runs the standard path."""
    for wrapper in model.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, FAST_WRAPPER_KEY):
        if isinstance(wrapper, CompiledUNet):
            return wrapper
    return None
