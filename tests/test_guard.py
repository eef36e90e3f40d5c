"""The edit model's guard (nodes/guard.py) in the real host: a NaN prediction stops the run with its
cause, and on a device where reading waits (a GPU) the verdicts are read every N steps and at the
end of the run, not at every step. Driven on the CPU by setting N."""
from __future__ import annotations

import sys

import pytest

from helpers import encode_text, pixels


def pack_parts(pack):
    root = pack.__name__.rsplit(".", 2)[0]  # the pack's package (its engine is <root>.nodes.engine)
    return sys.modules[root + ".nodes.guard"], sys.modules[root + ".ipx2p_core.finite"].FiniteWatch


def count_reads(pack, monkeypatch, every: int) -> list:
    """Make the guard read every `every` steps; returns the list of the step counts at each read."""
    guard, finite_watch = pack_parts(pack)
    monkeypatch.setattr(guard, "check_every", lambda device: every)
    reads = []
    original = finite_watch.first_bad_sigma

    def counted(self):
        if self._pending:
            reads.append(self.steps)
        return original(self)

    monkeypatch.setattr(finite_watch, "first_bad_sigma", counted)
    return reads


def poisoned(model, bad_call: int, calls: list):
    """A clone of `model` whose UNet output turns NaN at call `bad_call` (1-based)."""
    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        calls.append(float(args["timestep"].flatten()[0]))
        return out * float("nan") if len(calls) == bad_call else out

    clone = model.clone()
    clone.set_model_unet_function_wrapper(wrapper)
    return clone


@pytest.mark.parametrize(("every", "steps", "calls_made", "reads_at"), [
    (3, 5, 3, [3]),  # found at the first read after the bad step, the run stops there
    (1000, 3, 3, [3]),  # only the end-of-run read: found when the run ends
    (1, 5, 2, [1, 2]),  # the CPU's default: every step is read
])
def test_a_nan_prediction_is_found_with_few_reads(host, pack, loaded, monkeypatch, every, steps, calls_made, reads_at):
    model, clip, vae = loaded
    reads = count_reads(pack, monkeypatch, every)
    calls: list[float] = []
    with pytest.raises(ValueError, match="predicted NaN or infinite values at sigma") as error:
        pack.run_edit("test", poisoned(model, 2, calls), encode_text(clip, "make it snowy"), encode_text(clip, ""),
                      {"samples": vae.encode(pixels((48, 32)))}, seed=0, steps=steps, text_cfg=7.5, image_cfg=1.5,
                      sampler_name="euler", scheduler="normal", denoise=1.0)
    assert f"at sigma {calls[1]:.4g}," in str(error.value)  # the step that went bad, not the one that found it
    assert "weights are finite" in str(error.value)
    assert len(calls) == calls_made
    assert reads == reads_at


def test_a_finite_run_reads_once_per_n_steps(host, pack, loaded, monkeypatch):
    model, clip, vae = loaded
    reads = count_reads(pack, monkeypatch, 4)
    latent = pack.run_edit("test", model, encode_text(clip, "make it snowy"), encode_text(clip, ""),
                           {"samples": vae.encode(pixels((48, 32)))}, seed=0, steps=6, text_cfg=7.5, image_cfg=1.5,
                           sampler_name="euler", scheduler="normal", denoise=1.0)
    assert latent.isfinite().all()
    assert reads == [4, 6]  # steps 1-4 in one read, 5-6 at the end of the run
