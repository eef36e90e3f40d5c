"""Checkpoint inspection and EMA selection (ipx2p_core.checkpoint) on key/shape tables."""
from __future__ import annotations

import pytest

from ipx2p_core.checkpoint import ema_name, ema_pairs, inspect_checkpoint, plan_weights

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
