"""The NaN and missing-image guard every loaded edit model carries (a CALC_COND_BATCH wrapper)."""
from __future__ import annotations

from typing import Any

import comfy.patcher_extension
import torch

from .common import input_error
from .host_compat import executing_node

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


def guard(model: Any, source_name: str) -> None:
    """Put the guard on a freshly loaded MODEL (under one key, so a clone carries it once)."""
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, IMAGE_CHECK_KEY,
                               EditModelGuard(source_name))
