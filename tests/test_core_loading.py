"""The loaders' host-free helpers (ipx2p_core.loading) on synthetic safetensors files and folders."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from ipx2p_core.loading import (
    UNET_FILES,
    diffusers_stored_dtype_text,
    first_file,
    has_ema_copy,
    has_full_checkpoint_unet,
    hub_text_encoder,
    is_safetensors,
    pickle_refusal,
    pipeline_folders,
    pipeline_parts,
    safetensors_shapes,
    stored_dtype_text,
    tensor_shapes,
    unet_stand_in,
    weights_text,
)


def test_shapes_come_from_the_header(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.a": torch.zeros(2, 3), "b": torch.zeros(4)}, str(path))
    assert safetensors_shapes(str(path)) == {"model.diffusion_model.a": [2, 3], "b": [4]}
    assert tensor_shapes({"a": torch.zeros(1, 2), "meta": "text"}) == {"a": [1, 2]}


def test_stored_dtype_is_the_unet_majority(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.a": torch.zeros(2, dtype=torch.float16),
               "model.diffusion_model.b": torch.zeros(2, dtype=torch.float16),
               "cond_stage_model.c": torch.zeros(2), "cond_stage_model.d": torch.zeros(2), "first_stage_model.e": torch.zeros(2)},
              str(path))
    assert stored_dtype_text(str(path)) == "fp16"
    assert stored_dtype_text(str(tmp_path / "model.ckpt")) == "pickle (.ckpt)"
    unet = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({"conv_in.weight": torch.zeros(2, dtype=torch.bfloat16)}, str(unet))
    assert diffusers_stored_dtype_text(str(unet)) == "bf16"
    assert diffusers_stored_dtype_text(str(tmp_path / "diffusion_pytorch_model.bin")) == "unknown"


def test_a_stand_in_has_the_shape_and_no_memory():
    stand_in = unet_stand_in([320, 8, 3, 3], torch.float16)
    assert list(stand_in.shape) == [320, 8, 3, 3] and stand_in.dtype == torch.float16
    assert stand_in.stride() == (0, 0, 0, 0) and stand_in.untyped_storage().nbytes() == 2


def test_unet_naming_and_ema_words():
    assert has_full_checkpoint_unet(["model.diffusion_model.out.2.weight"])
    assert not has_full_checkpoint_unet(["conv_in.weight", "input_blocks.0.0.weight"])
    assert has_ema_copy(["model_ema.decay"]) and not has_ema_copy(["model.diffusion_model.x"])
    assert weights_text(True, True) == "EMA (model_ema.*)"
    assert weights_text(False, True) == "non-EMA (the file's EMA copy is not used)"
    assert weights_text(False, False) == "the file's only copy (no EMA)"


def test_a_refused_pickle_is_told_from_a_damaged_one():
    refused = "Weights only load failed. ... Unsupported global: GLOBAL os.system was not an allowed global"
    assert pickle_refusal(refused) == (True, "os.system")
    assert pickle_refusal("Weights only load failed. Unsupported global: something") == (True, None)
    damaged = str(pickle.UnpicklingError("invalid load key, 'x'."))
    assert pickle_refusal(damaged) == (False, None)


def pipeline(root, name, parts):
    folder = root / name
    for part, file_name in parts.items():
        (folder / part).mkdir(parents=True, exist_ok=True)
        (folder / part / file_name).write_bytes(b"")
    return folder


def test_pipeline_folders_are_found_two_levels_down(tmp_path):
    pipeline(tmp_path, "ip2p", {"unet": UNET_FILES[1]})
    (tmp_path / "hub" / "sdxl").mkdir(parents=True)
    (tmp_path / "hub" / "sdxl" / "model_index.json").write_text("{}")
    pipeline(tmp_path, "a/b/c/too_deep", {"unet": UNET_FILES[1]})
    assert sorted(pipeline_folders(str(tmp_path))) == ["hub/sdxl", "ip2p"]
    assert pipeline_folders(str(tmp_path / "missing")) == []


def test_pipeline_parts_name_what_is_lacking(tmp_path):
    folder = pipeline(tmp_path, "sdxl", {"text_encoder": "model.safetensors", "vae": UNET_FILES[0]})
    texts, vae, lacking = pipeline_parts(str(folder), 2)
    assert lacking == ["text_encoder_2/"] and vae == str(folder / "vae" / UNET_FILES[0])
    assert texts == [str(folder / "text_encoder" / "model.safetensors")]
    assert pipeline_parts(str(folder), 1)[2] == []
    assert first_file(str(folder / "vae"), ("missing.bin", UNET_FILES[0])) == vae
    assert pipeline_parts(str(tmp_path / "empty"), 1)[2] == ["text_encoder/", "vae/"]


def test_transformers_5_text_encoder_names_get_the_hub_prefix():
    bare = {"embeddings.token_embedding.weight": torch.zeros(1), "text_projection.weight": torch.zeros(1)}
    assert set(hub_text_encoder(bare)) == {"text_model.embeddings.token_embedding.weight", "text_projection.weight"}
    hub = {"text_model.embeddings.token_embedding.weight": torch.zeros(1)}
    assert hub_text_encoder(hub) is hub


@pytest.mark.parametrize("name", ["x.safetensors", "X.SFT"])
def test_safetensors_suffixes(name):
    assert is_safetensors(name) and not is_safetensors("x.ckpt")
