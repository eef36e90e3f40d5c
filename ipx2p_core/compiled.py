"""Bookkeeping of the compiled UNet path (nodes/fast_path.py runs it): which model calls it can take,
why it cannot take the others, and which input sizes it has compiled.

The compiled path calls the UNet with the step's tensors (x, timesteps, context, y) and nothing
else, so it may only take a call whose other inputs leave the UNet's arithmetic as it is: no
ControlNet residuals, no extra model inputs, no patches inside the UNet. `why_not` says, in words,
what a call carries that the compiled path would drop; None means the call is the plain UNet.
"""
from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

# transformer_options keys the host fills for every model call that the UNet's arithmetic does not
# read: the batch's labels and ids, the schedule, wrapper and callback tables, the host's flags.
BOOKKEEPING_KEYS = frozenset({
    "callbacks", "cond_or_uncond", "uuids", "sigmas", "sample_sigmas", "prefetch_dynamic_vbars", "wrappers",
    "multigpu_thread_device", "original_shape", "transformer_index", "block",
})
# keys the compiled call passes on to the UNet as they are (the pack's own attention choice on CPUs)
PASSED_KEYS = frozenset({"optimized_attention_override"})
# keys holding patches the UNet runs inside its blocks, by what users know them as
PATCH_KEYS = {
    "patches": "a model patch inside the UNet's blocks",
    "patches_replace": "an attention replacement (IP-Adapter, attention couple, ...)",
    "block_modifiers": "a block modifier",
}
DIFFUSION_MODEL_WRAPPERS = "diffusion_model"


def _non_empty(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_non_empty(v) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return len(value) > 0
    return value is not None


def why_not(transformer_options: Mapping[str, Any], control: Any, extra_inputs: Iterable[str],
            own_wrapper: str) -> str | None:
    """Why a UNet call cannot run compiled, or None when it can.

    `control`: the call's ControlNet residuals (None without one); `extra_inputs`: names of model
    inputs other than x, timesteps, context and y; `own_wrapper`: the key of the compiled path's own
    diffusion-model wrapper, which is the only one allowed (another would be skipped).
    """
    if control is not None:
        return "a ControlNet / T2I-Adapter is attached (its residuals are added inside the UNet)"
    extras = sorted(extra_inputs)
    if extras:
        return f"the model call carries extra inputs ({', '.join(extras)})"
    for key, what in PATCH_KEYS.items():
        value = transformer_options.get(key)
        if _non_empty(value):
            names = [str(n) for n, v in sorted(value.items(), key=lambda item: str(item[0])) if _non_empty(v)] \
                if isinstance(value, Mapping) else []
            detail = f" ({key}: {', '.join(names)})" if names else f" ({key})"
            return f"{what}{detail} is on the model"
    wrappers = transformer_options.get("wrappers", {})
    if isinstance(wrappers, Mapping):
        others = sorted(k for k, v in dict(wrappers.get(DIFFUSION_MODEL_WRAPPERS, {})).items()
                        if k != own_wrapper and _non_empty(v))
        if others:
            return f"another node wraps the UNet ({', '.join(others)})"
    unknown = sorted(k for k in transformer_options if k not in BOOKKEEPING_KEYS | PASSED_KEYS | set(PATCH_KEYS))
    if unknown:
        return f"the model carries options the compiled UNet would drop ({', '.join(unknown)})"
    return None


def passed_options(transformer_options: Mapping[str, Any]) -> dict[str, Any]:
    """The options the compiled call hands to the UNet."""
    return {k: transformer_options[k] for k in PASSED_KEYS if k in transformer_options}


def signature(*tensors: torch.Tensor | None) -> tuple:
    """What a compiled graph is specialised on: each input's shape and dtype, and the device."""
    parts: list[Hashable] = []
    for tensor in tensors:
        parts.append(None if tensor is None else (tuple(tensor.shape), str(tensor.dtype), str(tensor.device)))
    return tuple(parts)


def describe(sig: tuple) -> str:
    """A signature in words: 'batch 3, 8x64x64, float16 on cuda:0'."""
    first = sig[0]
    if first is None:
        return "no input"
    shape, dtype, device = first
    return f"batch {shape[0]}, {'x'.join(str(s) for s in shape[1:])}, {dtype.replace('torch.', '')} on {device}"


@dataclass
class CompileBook:
    """The sizes one model has been compiled for, how long each first call took (compilation and
    capture) and how many calls each size served; at most `limit` sizes, then new sizes run eager
    (each size is a graph kept in memory; the compiler stops specialising after a few)."""

    limit: int = 8
    first_call_s: dict[tuple, float] = field(default_factory=dict)
    calls: dict[tuple, int] = field(default_factory=dict)

    def knows(self, sig: tuple) -> bool:
        return sig in self.first_call_s

    def admits(self, sig: tuple) -> bool:
        return self.knows(sig) or len(self.first_call_s) < self.limit

    @property
    def compilations(self) -> int:
        return len(self.first_call_s)

    def served(self, sig: tuple, started: float | None) -> None:
        """Count a call of `sig`; `started` (time.perf_counter at its start) for a first call."""
        if started is not None and sig not in self.first_call_s:
            self.first_call_s[sig] = time.perf_counter() - started
        self.calls[sig] = self.calls.get(sig, 0) + 1


def relative_l2(result: torch.Tensor, reference: torch.Tensor) -> float:
    """||result - reference|| / ||reference||, in float64."""
    a, b = result.double(), reference.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))
