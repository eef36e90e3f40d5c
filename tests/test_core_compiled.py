"""ipx2p_core.compiled: which UNet calls the compiled path may take, and its book of sizes."""
from __future__ import annotations

import torch

from ipx2p_core.compiled import CompileBook, describe, passed_options, relative_l2, signature, why_not

OWN = "ipx2p_compiled_unet"
HOST_OPTIONS = {"callbacks": {}, "cond_or_uncond": [0, 1, 1], "uuids": ["a", "b", "c"], "sigmas": torch.ones(3),
                "sample_sigmas": torch.ones(21), "prefetch_dynamic_vbars": True,
                "wrappers": {"diffusion_model": {OWN: [object()]}, "apply_model": {"guard": [object()]}}}


def test_a_plain_host_call_can_run_compiled():
    assert why_not(HOST_OPTIONS, None, [], OWN) is None
    assert why_not({**HOST_OPTIONS, "patches": {"attn1_patch": []}, "patches_replace": {}}, None, [], OWN) is None


def test_what_the_compiled_unet_would_drop_is_named():
    assert "ControlNet" in why_not(HOST_OPTIONS, {"output": [torch.zeros(1)]}, [], OWN)
    assert "extra inputs (num_video_frames)" in why_not(HOST_OPTIONS, None, ["num_video_frames"], OWN)
    replaced = {**HOST_OPTIONS, "patches_replace": {"attn2": {("input", 1): object()}}}
    assert "attention replacement (IP-Adapter, attention couple, ...) (patches_replace: attn2)" in why_not(
        replaced, None, [], OWN)
    assert "model patch inside the UNet's blocks (patches: output_block_patch)" in why_not(
        {**HOST_OPTIONS, "patches": {"output_block_patch": [object()], "attn1_patch": []}}, None, [], OWN)
    wrapped = {**HOST_OPTIONS, "wrappers": {"diffusion_model": {OWN: [object()], "other_pack": [object()]}}}
    assert "another node wraps the UNet (other_pack)" in why_not(wrapped, None, [], OWN)
    assert "would drop (rope_options)" in why_not({**HOST_OPTIONS, "rope_options": {}}, None, [], OWN)


def test_only_the_attention_choice_is_passed_on():
    choice = object()
    assert passed_options({**HOST_OPTIONS, "optimized_attention_override": choice}) == {
        "optimized_attention_override": choice}
    assert passed_options(HOST_OPTIONS) == {}


def test_the_book_counts_sizes_and_stops_at_its_limit():
    book = CompileBook(limit=2)
    three = signature(torch.zeros(3, 8, 64, 64, dtype=torch.float16), torch.zeros(3), None)
    two = signature(torch.zeros(2, 8, 64, 64, dtype=torch.float16), torch.zeros(2), None)
    six = signature(torch.zeros(6, 8, 64, 64, dtype=torch.float16), torch.zeros(6), None)
    assert describe(three) == "batch 3, 8x64x64, float16 on cpu"
    for sig in (three, two, three, three, two):
        assert book.admits(sig)
        book.served(sig, None if book.knows(sig) else 0.0)
    assert book.compilations == 2 and book.calls == {three: 3, two: 2}
    assert not book.admits(six) and book.admits(three)


def test_relative_l2():
    a = torch.tensor([3.0, 4.0])
    assert relative_l2(a, a) == 0.0
    assert abs(relative_l2(a * 1.01, a) - 0.01) < 1e-6  # a * 1.01 is rounded to float32
