"""Checkpoint inspection and EMA selection (ipx2p_core.checkpoint) on key/shape tables."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import file_mappings
from ipx2p_core.checkpoint import (
    SafetensorsReader, ema_name, ema_pairs, inspect_checkpoint, plan_weights, safetensors_problem,
)
from ipx2p_tools.testkit.synthetic import rewrite_safetensors_header

UNET = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 8, 3, 3),
    "model.diffusion_model.input_blocks.0.0.bias": (320,),
    "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
}
OTHER = {"first_stage_model.decoder.conv_out.weight": (3, 128, 3, 3)}
EMA = {ema_name(k): v for k, v in UNET.items()} | {"model_ema.decay": (), "model_ema.num_updates": ()}


def test_ema_names_follow_ldm_litema():
    assert ema_name("model.diffusion_model.input_blocks.0.0.weight") == "model_ema.diffusion_modelinput_blocks00weight"
    assert set(ema_pairs({**UNET, **EMA})) == set(UNET)


def test_inspect():
    info = inspect_checkpoint({**UNET, **OTHER, **EMA})
    assert (info.unet_in_channels, info.has_ema, info.ema_complete) == (8, True, True)
    plain = inspect_checkpoint({**UNET, "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)})
    assert (plain.unet_in_channels, plain.has_ema) == (4, False)
    assert "text-to-image" in plain.describe()
    assert inspect_checkpoint(OTHER).unet_in_channels is None
    assert inspect_checkpoint({"conv_in.weight": (320, 8, 3, 3)}).unet_in_channels == 8  # diffusers UNet


def test_auto_prefers_ema_and_drops_the_other_copy():
    plan = plan_weights({**UNET, **OTHER, **EMA}, "auto")
    assert plan.use_ema
    assert plan.sources == {**{k: ema_name(k) for k in UNET}, **{k: k for k in OTHER}}


def test_non_ema_keeps_plain_weights_and_reads_no_ema_tensor():
    plan = plan_weights({**UNET, **OTHER, **EMA}, "non-ema")
    assert not plan.use_ema
    assert plan.sources == {k: k for k in {**UNET, **OTHER}}


def test_auto_without_ema_uses_plain_weights():
    plan = plan_weights({**UNET, **OTHER}, "auto")
    assert not plan.use_ema and plan.sources == {k: k for k in {**UNET, **OTHER}}


def test_ema_required_but_missing_or_partial():
    with pytest.raises(ValueError, match="has no EMA weights"):
        plan_weights({**UNET, **OTHER}, "ema", who="IPX2P_CheckpointLoader: input 'weights'")
    partial = {**UNET, ema_name("model.diffusion_model.out.2.weight"): (4, 320, 3, 3)}
    with pytest.raises(ValueError, match="only 1 of 3"):
        plan_weights(partial, "ema")
    # auto does not take a partial EMA copy
    assert not plan_weights(partial, "auto").use_ema


def test_unknown_mode():
    with pytest.raises(ValueError, match="auto, ema, non-ema"):
        plan_weights(UNET, "fp8")


# -- reading tensors without a file mapping --------------------------------------------------------
def test_reader_returns_the_stored_tensors_and_maps_nothing(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 5, generator=generator),
        "f16": torch.randn(7, generator=generator).half(),
        "bf16": torch.randn(2, 2, 2, generator=generator).bfloat16(),
        "f64": torch.randn(4, generator=generator).double(),
        "i64": torch.arange(-3, 6),
        "u8": torch.arange(0, 250, 7, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path), metadata={"v_pred": "true"})
    expected = load_file(str(path))
    with SafetensorsReader(str(path)) as reader:
        assert reader.metadata == {"v_pred": "true"}
        assert sorted(reader.keys()) == sorted(tensors)
        got = {key: reader.read(key) for key in reader.keys()}
        assert reader.shape("f32") == [3, 5] and reader.dtype_name("bf16") == "BF16"
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype and got[key].shape == tensor.shape
        assert torch.equal(got[key], tensor), key
    assert all(t.is_contiguous() for t in got.values())
    del expected, tensor
    assert file_mappings(path) == 0  # the tensors own their memory


def test_reader_names_a_damaged_tensor(tmp_path):
    path = tmp_path / "bad.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(12))
    with SafetensorsReader(str(path)) as reader, pytest.raises(ValueError, match="holds 12 bytes.*needs 16"):
        reader.read("w")
    cut = tmp_path / "cut.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    cut.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with SafetensorsReader(str(cut)) as reader, pytest.raises(ValueError, match="ends inside tensor 'w'"):
        reader.read("w")


def set_entry(key: str, **fields):
    def change(header: dict) -> None:
        header[key].update(fields)
    return change


def test_a_header_that_does_not_fit_its_data_is_named(tmp_path):
    # safetensors itself says only "Error while deserializing header: invalid shape, data type, or
    # offset for tensor"; the check names the tensor, what the header claims and what the data holds.
    sound = tmp_path / "sound.safetensors"
    save_file({"conv_in.weight": torch.zeros(320, 8, 3, 3, dtype=torch.float16), "conv_in.bias": torch.zeros(320),
               "empty": torch.zeros(0, 4)}, str(sound), metadata={"format": "pt"})
    assert safetensors_problem(str(sound)) is None
    conv = load_file(str(sound))["conv_in.weight"]
    (sound_length,) = struct.unpack("<Q", sound.read_bytes()[:8])
    header_of, data = json.loads(sound.read_bytes()[8:8 + sound_length]), sound.read_bytes()[8 + sound_length:]
    begin, end = header_of["conv_in.weight"]["data_offsets"]
    assert begin > 0  # a tensor comes before it (save_file puts the larger dtypes first)
    cases = {
        "larger_shape": (set_entry("conv_in.weight", shape=[320, 8, 3, 4]),
                         f"tensor 'conv_in.weight' is F16 [320, 8, 3, 4], which needs {conv.numel() // 3 * 4 * 2} bytes, "
                         f"but gives it {end - begin} bytes"),
        "wider_dtype": (set_entry("conv_in.weight", dtype="F32"), f"is F32 [320, 8, 3, 3], which needs {conv.numel() * 4} bytes"),
        "gap": (set_entry("conv_in.weight", data_offsets=[begin + 8, end]), f"it should start at byte {begin}"),
        "overlap": (set_entry("conv_in.weight", data_offsets=[begin - 8, end]), "no gap, no overlap"),
        "half_bytes": (set_entry("conv_in.bias", dtype="F4", shape=[1279]), "not whole bytes"),
        "negative": (set_entry("conv_in.bias", shape=[-320]), "malformed entry for tensor 'conv_in.bias'"),
        "metadata": (lambda header: header.update(__metadata__={"format": 1}), "malformed __metadata__"),
    }
    for name, (change, words) in cases.items():
        damaged = tmp_path / f"{name}.safetensors"
        rewrite_safetensors_header(sound, damaged, change)
        (length,) = struct.unpack("<Q", damaged.read_bytes()[:8])
        assert damaged.read_bytes()[8 + length:] == data  # length field consistent: only the header's claims are wrong
        problem = safetensors_problem(str(damaged))
        assert problem is not None and words in problem, (name, problem)
        assert problem.startswith(("is damaged", "has a malformed")), (name, problem)
        with pytest.raises(Exception, match="Error while deserializing header"):  # what the library says instead
            load_file(str(damaged))
    extra = tmp_path / "extra.safetensors"
    extra.write_bytes(sound.read_bytes() + bytes(16))
    assert "16 bytes after its last tensor" in (safetensors_problem(str(extra)) or "")
    rewrite_safetensors_header(sound, tmp_path / "same.safetensors", lambda header: None)
    assert safetensors_problem(str(tmp_path / "same.safetensors")) is None
    assert torch.equal(load_file(str(tmp_path / "same.safetensors"))["conv_in.weight"], conv)


def test_a_dtype_the_check_does_not_know_is_left_to_the_library(tmp_path):
    # A name outside SAFETENSORS_DTYPE_BITS may be a newer format's: the check does not refuse it
    # (the loader then reports what the library says, on the node).
    sound = tmp_path / "sound.safetensors"
    save_file({"w": torch.zeros(4)}, str(sound))
    rewrite_safetensors_header(sound, tmp_path / "new.safetensors", set_entry("w", dtype="F2_FUTURE"))
    assert safetensors_problem(str(tmp_path / "new.safetensors")) is None
