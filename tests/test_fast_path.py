"""The fast path (nodes/fast_path.py) in the real host, on the CPU: a small InstructPix2Pix UNet of
SD1.5's true block structure, compiled by torch.compile as the GPU path compiles it (inductor; the
GPU adds CUDA graphs), agrees with the eager path; it is used only where it applies and otherwise
runs the standard path and says why; a change of branch count compiles once per shape, not per step.

On a CPU the node's `fast` input falls back (the path is for NVIDIA GPUs); the tests allow the CPU
through CompileSettings. Most use torch.compile's 'eager' backend (dynamo's tracing without code
generation: seconds), one uses inductor (about a minute and a half on two cores, once).
"""
from __future__ import annotations

import sys

import pytest
import torch

from helpers import relative_l2, tiny_inputs
from ipx2p_tools.testkit.tiny import tiny_ip2p_model

STEPS = 3
EDIT = dict(seed=0, steps=STEPS, text_cfg=7.5, image_cfg=1.5, sampler_name="euler", scheduler="normal", denoise=1.0)


@pytest.fixture(scope="module")
def fast_path(pack):
    return sys.modules[pack.__name__.rsplit(".", 1)[0] + ".fast_path"]


@pytest.fixture(scope="module")
def tiny():
    """(model, positive, negative, edit_latent): the small UNet, random text embeddings, a 64 px latent."""
    return tiny_inputs()


@pytest.fixture()
def on_cpu(fast_path, monkeypatch):
    """Let the fast path run on the CPU with the given backend; returns a setter."""
    def allow(backend="eager", limit=8):
        monkeypatch.setattr(fast_path, "SETTINGS", fast_path.CompileSettings(
            backend=backend, mode=None, devices=frozenset({"cpu", "cuda"}), limit=limit))
    return allow


def edit(pack, tiny, model=None, **overrides):
    base, positive, negative, latent = tiny
    settings = {**EDIT, **overrides}
    return pack.run_edit("IPX2P_Edit", model or base, positive, negative, latent, **settings)


def messages(host, since: int, text: str) -> list[str]:
    return [r.getMessage() for r in host.logs.records[since:] if text in r.getMessage()]


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them as traced."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


def test_on_a_cpu_the_fast_option_runs_the_standard_path_and_says_why(host, pack, tiny, fast_path):
    since = len(host.logs.records)
    assert torch.equal(edit(pack, tiny, fast=True), edit(pack, tiny))
    said = messages(host, since, "fast path off")
    assert said and "needs an NVIDIA GPU (CUDA) and this model runs on cpu" in said[0]
    assert "IPX2P_Edit" in said[0]
    assert fast_path.book_of(tiny[0]) is None  # nothing was compiled


def test_compiled_unet_agrees_with_eager_and_a_second_edit_reuses_it(pack, tiny, fast_path, on_cpu):
    """Inductor's code for the UNet (fp32 on the CPU) against the eager path: relative L2 of the
    final latent <= 1e-4 (measured ~1e-6); a second edit of the same size compiles nothing."""
    on_cpu("inductor")
    eager = edit(pack, tiny)
    compiled = edit(pack, tiny, fast=True)
    assert relative_l2(compiled, eager) <= 1e-4
    assert not torch.equal(compiled, eager)  # inductor's own kernels ran, not the eager UNet
    book = fast_path.book_of(tiny[0])
    assert book.compilations == 1 and sum(book.calls.values()) == STEPS
    first_call = dict(book.first_call_s)
    again = edit(pack, tiny, fast=True, seed=5)
    assert book.compilations == 1 and book.first_call_s == first_call  # reused, not compiled again
    assert sum(book.calls.values()) == 2 * STEPS
    assert relative_l2(again, edit(pack, tiny, seed=5)) <= 1e-4


def test_changing_the_branch_count_compiles_once_per_shape(pack, tiny, fast_path, on_cpu, monkeypatch):
    """image_cfg 1.5 (3 branches) <-> 1.0 (2 branches), four edits: two graphs, every call compiled;
    a size past the limit runs eager and says so."""
    on_cpu(limit=2)
    backend = CountingBackend()
    monkeypatch.setattr(fast_path, "SETTINGS", fast_path.CompileSettings(
        backend=backend, mode=None, devices=frozenset({"cpu"}), limit=2))
    guiders = []
    original = fast_path.CompiledUNet.__init__

    def remember(self, *args, **kwargs):
        original(self, *args, **kwargs)
        guiders.append(self)

    monkeypatch.setattr(fast_path.CompiledUNet, "__init__", remember)
    for image_cfg in (1.5, 1.0, 1.5, 1.0):
        result = edit(pack, tiny, fast=True, image_cfg=image_cfg)
        assert relative_l2(result, edit(pack, tiny, image_cfg=image_cfg)) <= 1e-6
    assert backend.graphs == 2
    assert [w.compiled_calls for w in guiders] == [STEPS] * 4 and all(w.eager_calls == 0 for w in guiders)
    book = fast_path.book_of(tiny[0])
    assert sorted(sig[0][0][0] for sig in book.first_call_s) == [2, 3]  # batch 2 and batch 3
    _, positive, negative, latent = tiny
    pair = {"samples": latent["samples"].repeat(2, 1, 1, 1)}
    pack.run_edit("IPX2P_Edit", tiny[0], positive, negative, pair, fast=True, **EDIT)  # batch 6: a third size
    assert backend.graphs == 2 and guiders[-1].eager_calls == STEPS
    assert "already compiled for 2 input sizes" in next(iter(guiders[-1].reported))


def test_a_region_mask_runs_compiled(pack, tiny, fast_path, on_cpu):
    on_cpu()
    mask = torch.zeros(1, 64, 64)
    mask[:, 8:40, 16:56] = 1.0
    compiled = edit(pack, tiny, fast=True, mask=mask)
    eager = edit(pack, tiny, mask=mask)
    assert relative_l2(compiled, eager) <= 1e-6
    assert fast_path.book_of(tiny[0]).calls  # the masked edit's steps ran compiled
    outside = (torch.nn.functional.interpolate(mask[:, None], size=(8, 8)) == 0).expand_as(compiled)
    assert torch.equal(compiled[outside], tiny[3]["samples"][outside])  # outside the mask: the image's latent


def test_an_attention_patch_makes_it_fall_back_with_the_reason(host, pack, tiny, fast_path, on_cpu):
    """IP-Adapter-style attn2 replacement: the compiled UNet would drop it, so the call runs eager."""
    on_cpu(backend=CountingBackend())
    patched = tiny[0].clone()

    def patch(q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        return optimized_attention(q, k, v, extra_options["n_heads"]) * 0.5

    patched.set_model_attn2_replace(patch, "input", 1)
    since = len(host.logs.records)
    fast = edit(pack, tiny, model=patched, fast=True)
    assert torch.equal(fast, edit(pack, tiny, model=patched))
    assert not torch.equal(fast, edit(pack, tiny))  # the patch took effect
    said = messages(host, since, "fast path not used")
    assert len(said) == 1 and "attention replacement (IP-Adapter" in said[0] and "patches_replace: attn2" in said[0]
    assert fast_path.SETTINGS.backend.graphs == 0


def test_a_failing_compiler_falls_back_with_its_error(host, pack, tiny, fast_path, on_cpu):
    def broken(graph_module, example_inputs):
        raise RuntimeError("no C++ compiler found")

    on_cpu(backend=broken)
    since = len(host.logs.records)
    assert torch.equal(edit(pack, tiny, fast=True, image_cfg=1.0), edit(pack, tiny, image_cfg=1.0))
    said = messages(host, since, "fast path not used")
    assert len(said) == 1 and "compiling the UNet failed" in said[0] and "no C++ compiler found" in said[0]


def test_the_nan_guard_still_names_a_nan_weight(pack, tiny, fast_path, on_cpu):
    on_cpu()
    model = tiny_ip2p_model(seed=1)
    sys.modules[pack.__name__.rsplit(".", 1)[0] + ".guard"].guard(model, "tiny.safetensors")  # as the loaders do
    with torch.no_grad():
        model.model.diffusion_model.out[2].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"has a UNet weight holding NaN or infinite values \(out\.2\.weight\)") as error:
        edit(pack, tiny, model=model, fast=True)
    assert "tiny.safetensors" in str(error.value) and "download it again" in str(error.value)
    assert fast_path.book_of(model).calls  # it was the compiled UNet that produced them
