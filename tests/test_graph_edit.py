"""The shipped edit workflow runs through the host's own validator and executor."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers import small_edit_prompt


@pytest.mark.floor
def test_edit_workflow_runs_and_stays_finite(host, ip2p_ckpt, input_image):
    api = small_edit_prompt(host.all_object_info(), ip2p_ckpt.name, input_image, size=(64, 48), steps=3)
    # Also save the sampled latent so its values can be checked (PNG saving would hide NaNs).
    sampler_id = next(i for i, n in api.prompt.items() if n["class_type"] == "SamplerCustomAdvanced")
    api.prompt["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler_id, 0], "filename_prefix": "ipx2p_test"}}

    result = host.run(api.prompt)
    assert result.success, result.error_text()
    images = [p for p in host.output_files(result)]
    assert len(images) == 1
    with Image.open(images[0]) as picture:
        assert picture.size == (64, 48)
    latent_info = result.outputs["900"]["latents"][0]
    latent = load_file(str(host.output_dir / latent_info["subfolder"] / latent_info["filename"]))["latent_tensor"]
    assert latent.shape == (1, 4, 6, 8)
    assert torch.isfinite(latent).all() and latent.abs().max() < 1e3
    # The progress bar reported every sampling step.
    assert [value for value, total, _ in result.progress if total == 3][-1] == 3


def test_validation_errors_are_reported(host, ip2p_ckpt, input_image):
    api = small_edit_prompt(host.all_object_info(), "no-such-file.safetensors", input_image)
    result = host.run(api.prompt)
    assert not result.valid and not result.success
    assert "no-such-file.safetensors" in result.error_text()
