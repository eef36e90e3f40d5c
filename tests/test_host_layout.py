"""The random-weight test checkpoints have the true layouts: the host's own loaders take every
tensor, leave none over, and detect the right model types."""
from __future__ import annotations

import gc
import logging

import pytest

from ipx2p_tools.testkit import sd15_layout


def strip(layout, prefix):
    return {key[len(prefix):]: tuple(shape) for key, shape in layout if key.startswith(prefix)}


def shapes(module):
    return {key: tuple(tensor.shape) for key, tensor in module.state_dict().items()}


@pytest.fixture()
def debug_logs(host):
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.DEBUG)
    start = len(host.logs.records)
    # (level, message) of what the host logged since the test started
    yield lambda: [(r.levelno, r.getMessage()) for r in host.logs.records[start:]]
    root.setLevel(previous)


@pytest.mark.floor
@pytest.mark.parametrize(("kind", "in_channels", "config_name"), [("ip2p", 8, "SD15_instructpix2pix"), ("sd15", 4, "SD15")])
def test_checkpoint_layout_matches_host(host, request, debug_logs, kind, in_channels, config_name):
    import comfy.model_management
    import comfy.sd

    path = request.getfixturevalue(f"{kind}_ckpt")
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    try:
        # SD1.5 files never hold CLIP's logit_scale/text_projection: the host logs those at debug
        # level; a real mismatch is a warning, and leftovers mean tensors the host did not take.
        problems = [
            m for level, m in debug_logs()
            if (level >= logging.WARNING and ("missing" in m or "unexpected" in m)) or "left over" in m or "Leftover" in m
        ]
        assert problems == []
        assert type(model.model.model_config).__name__ == config_name
        layout = sd15_layout.sd15_checkpoint_layout(in_channels)
        assert shapes(model.model.diffusion_model) == strip(layout, sd15_layout.UNET_PREFIX)
        assert shapes(vae.first_stage_model) == strip(layout, sd15_layout.VAE_PREFIX)
        clip_shapes = {
            key[len("clip_l.transformer.text_model."):]: shape
            for key, shape in shapes(clip.cond_stage_model).items()
            if key.startswith("clip_l.transformer.text_model.")
        }
        expected_clip = strip(layout, sd15_layout.CLIP_PREFIX)
        # The host adds position_ids-like buffers of its own; every file tensor must be there.
        assert {k: clip_shapes.get(k) for k in expected_clip} == expected_clip
    finally:
        del model, clip, vae
        comfy.model_management.unload_all_models()
        gc.collect()


def test_controlnet_layout_matches_host(host, controlnet_ckpt, debug_logs):
    import comfy.controlnet

    control = comfy.controlnet.load_controlnet(str(controlnet_ckpt))
    problems = [m for _, m in debug_logs() if "controlnet keys" in m]
    assert problems == []
    assert shapes(control.control_model) == strip(sd15_layout.controlnet_layout(), sd15_layout.CONTROLNET_PREFIX)
    del control
    gc.collect()
