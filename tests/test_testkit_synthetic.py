"""Random-weight checkpoint writer: valid safetensors, deterministic, fp16-exact, LDM EMA names."""
from __future__ import annotations

import hashlib
import math

import pytest
import torch
from safetensors import safe_open

from ipx2p_core.checkpoint import ema_name
from ipx2p_tools.testkit import sd15_layout
from ipx2p_tools.testkit.synthetic import random_tensor, write_random_checkpoint

SMALL_LAYOUT = [
    ("model.diffusion_model.input_blocks.0.0.weight", (8, 8, 3, 3)),
    ("model.diffusion_model.input_blocks.0.0.bias", (8,)),
    ("model.diffusion_model.out.0.weight", (8,)),
    ("first_stage_model.encoder.conv_in.weight", (4, 3, 3, 3)),
]


def test_layout_sizes_match_the_published_models():
    # SD1.5: 1130 tensors, 1.066 B parameters; ControlNet 1.x: 340 tensors, 361 M parameters.
    def params(layout):
        return sum(torch.Size(shape).numel() for _, shape in layout)

    full = sd15_layout.sd15_checkpoint_layout(8)
    assert len(full) == 1130 and len({k for k, _ in full}) == 1130
    assert params(full) == 1_066_246_827
    assert dict(full)["model.diffusion_model.input_blocks.0.0.weight"] == (320, 8, 3, 3)
    assert dict(sd15_layout.sd15_checkpoint_layout(4))["model.diffusion_model.input_blocks.0.0.weight"] == (320, 4, 3, 3)
    assert len(sd15_layout.controlnet_layout()) == 340
    assert params(sd15_layout.controlnet_layout()) == 361_279_120


def test_written_file_reads_back(tmp_path):
    path = tmp_path / "small.safetensors"
    write_random_checkpoint(path, SMALL_LAYOUT, seed=5, dtype=torch.float32)
    with safe_open(str(path), "pt") as f:
        assert sorted(f.keys()) == sorted(k for k, _ in SMALL_LAYOUT)
        for key, shape in SMALL_LAYOUT:
            tensor = f.get_tensor(key)
            assert tuple(tensor.shape) == shape
            torch.testing.assert_close(tensor, random_tensor(key, shape, 5), rtol=0, atol=0)
        assert "RANDOM WEIGHTS" in f.metadata()["ipx2p_synthetic"]


def test_deterministic_and_fp16_exact(tmp_path):
    digests = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.safetensors"
        write_random_checkpoint(path, SMALL_LAYOUT, seed=7)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    value = random_tensor("model.diffusion_model.input_blocks.0.0.weight", (8, 8, 3, 3), 7)
    torch.testing.assert_close(value, value.half().float(), rtol=0, atol=0)
    other_seed = random_tensor("model.diffusion_model.input_blocks.0.0.weight", (8, 8, 3, 3), 8)
    assert not torch.equal(value, other_seed)


def test_value_ranges_by_role():
    weight = random_tensor("x.proj.weight", (64, 256), 1)
    assert weight.abs().max() <= 1 / 16 + 1e-3  # +-1/sqrt(fan_in)
    norm = random_tensor("x.norm.weight", (64,), 1)
    assert (norm - 1).abs().max() <= 0.1 + 1e-3
    bias = random_tensor("x.proj.bias", (64,), 1)
    assert bias.abs().max() <= 0.02 + 1e-4


def test_ema_copies_use_ldm_names_and_differ(tmp_path):
    path = tmp_path / "ema.safetensors"
    write_random_checkpoint(path, SMALL_LAYOUT, seed=3, with_ema=True)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert ema_name(key) == "model_ema.diffusion_modelinput_blocks00weight"
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        assert {"model_ema.decay", "model_ema.num_updates", ema_name(key)} <= keys
        assert not any(k.startswith("model_ema.") and "first_stage" in k for k in keys)  # UNet only
        assert not torch.equal(f.get_tensor(key), f.get_tensor(ema_name(key)))


def test_sparse_by_key_leaves_holes_and_writes_the_rest(tmp_path):
    """The NaN-weight test's file: the picked tensors are zeros that take no disk, the others are
    the random values, and the file has its full size."""
    layout = sd15_layout.sd15_checkpoint_layout(unet_in_channels=8)
    path = tmp_path / "partly_sparse.safetensors"
    write_random_checkpoint(path, layout, 1, sparse=lambda key: key.startswith("model.diffusion_model."))
    tensors = dict(layout)
    unet_bytes = 2 * sum(math.prod(shape) for key, shape in layout if key.startswith("model.diffusion_model."))
    total_bytes = 2 * sum(math.prod(shape) for shape in tensors.values())
    assert path.stat().st_size > total_bytes
    assert path.stat().st_blocks * 512 < total_bytes - unet_bytes + (64 << 20)  # the UNet is holes
    with safe_open(str(path), "pt") as handle:
        assert set(handle.keys()) == set(tensors)
        last = "model.diffusion_model.out.2.weight"
        assert torch.count_nonzero(handle.get_tensor(last)) == 0
        vae = "first_stage_model.decoder.conv_out.weight"
        assert torch.equal(handle.get_tensor(vae), random_tensor(vae, tensors[vae], 1).to(torch.float16))


def test_fixture_cache_refuses_what_cannot_fit_and_keeps_each_fixture_once(tmp_path):
    from ipx2p_tools.checkpoints import need_free_disk, remove_stale

    with pytest.raises(OSError, match=r"needs 1048576\.0 GiB .* free in .* which has .* GiB\. Free some disk"):
        need_free_disk(tmp_path, 1 << 50, "huge.safetensors")
    need_free_disk(tmp_path, 1 << 20, "small.safetensors")  # fits: no error
    for name in ("ip2p-g1-s1.safetensors", "ip2p-g0-s1.safetensors", "ip2p-g1-s1.safetensors.partial",
                 "ip2p_ema-g0-s1.safetensors", "sd15-g0-s2.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    remove_stale(tmp_path, "ip2p-g", keep="ip2p-g1-s1.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ip2p-g1-s1.safetensors", "ip2p_ema-g0-s1.safetensors",
                                                          "sd15-g0-s2.safetensors"]
