"""The NaN and missing-image guard every loaded edit model carries (a CALC_COND_BATCH wrapper,
with an OUTER_SAMPLE wrapper around each sampling run), without a host-device wait every step."""
from __future__ import annotations

import weakref
from typing import Any

import comfy.patcher_extension
import torch

from ..ipx2p_core.finite import FiniteWatch
from .common import input_error
from .host_compat import executing_node

IMAGE_CHECK_KEY = "ipx2p_require_edit_image"
# On an accelerator, the steps' finiteness verdicts are read once per this many steps and at the end
# of the run (one host-device wait each); on the CPU every step, where reading costs nothing.
CHECK_EVERY = 10


def check_every(device: torch.device) -> int:
    """Steps between reads of the verdicts on this device."""
    return 1 if device.type == "cpu" else CHECK_EVERY


class _Run:
    """One sampling run's watch, and the model it ran (to name a damaged weight)."""

    def __init__(self) -> None:
        self.watch = FiniteWatch()
        self.model: Any = None


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
        self._runs: list[_Run] = []
        # id of a concat tensor -> (a weak reference to it, it holds a picture): a run's conds are the
        # same tensors at every step, so each is counted once (counting waits for the device)
        self._has_picture: dict[int, tuple[weakref.ref, bool]] = {}

    def _carries_image(self, cond: dict) -> bool:
        concat = cond.get("model_conds", {}).get("c_concat")
        tensor = getattr(concat, "cond", None)
        if not isinstance(tensor, torch.Tensor):
            return False
        known = self._has_picture.get(id(tensor))
        if known is None or known[0]() is not tensor:
            if len(self._has_picture) > 64:  # forget tensors that are gone
                self._has_picture = {key: entry for key, entry in self._has_picture.items() if entry[0]() is not None}
            known = self._has_picture[id(tensor)] = (weakref.ref(tensor), bool(torch.count_nonzero(tensor)))
        return known[1]

    def outer_sample(self, executor: Any, *args: Any, **kwargs: Any) -> Any:
        """Around one sampling run: the verdicts still unread at its end are read before its result
        is returned."""
        run = _Run()
        self._runs.append(run)
        try:
            out = executor(*args, **kwargs)
        finally:
            self._runs.remove(run)
        self._check(run)
        return out

    def _check(self, run: _Run) -> None:
        sigma = run.watch.first_bad_sigma()
        if sigma is not None:
            raise self.non_finite(run.model, sigma)

    def __call__(self, executor: Any, model: Any, conds: list, x_in: torch.Tensor, timestep: Any, model_options: dict) -> Any:
        if not any(self._carries_image(cond) for branch in conds if branch for cond in branch):
            raise input_error(
                executing_node("the sampler"), "positive",
                "and 'negative' carry no input image (no concat_latent_image in any branch), so the InstructPix2Pix MODEL "
                "would generate a picture instead of editing one", "the image latent in the conditioning",
                "use 'InstructPix2Pix Edit' or 'InstructPix2Pix Guider', or pass positive/negative through "
                "'InstructPix2Pix Conditioning' (or core InstructPixToPixConditioning)")
        out = executor(model, conds, x_in, timestep, model_options)
        run = self._runs[-1] if self._runs else _Run()  # sampled outside a run the host wraps: checked at once
        if run.model is None:
            run.model = model
            run.watch.every = check_every(x_in.device) if self._runs else 1
        sigma = timestep if isinstance(timestep, torch.Tensor) else torch.tensor(float(timestep))
        run.watch.record((prediction for prediction in out if isinstance(prediction, torch.Tensor)), sigma)
        if run.watch.due:
            self._check(run)
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


def guard(model: Any, source_name: str) -> None:
    """Put the guard on a freshly loaded MODEL (under one key, so a clone carries it once)."""
    watcher = EditModelGuard(source_name)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, IMAGE_CHECK_KEY, watcher)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, IMAGE_CHECK_KEY, watcher.outer_sample)
