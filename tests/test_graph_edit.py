"""The shipped workflows run through the host's own validator and executor."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers import WORKFLOWS, small_edit_prompt


def save_latent_of(api, node_id: str) -> None:
    """Also save a node's LATENT output, so its values can be checked (a PNG would hide NaNs)."""
    api.prompt["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [node_id, 0], "filename_prefix": "ipx2p_test"}}


def saved_latent(host, result) -> torch.Tensor:
    info = result.outputs["900"]["latents"][0]
    return load_file(str(host.output_dir / info["subfolder"] / info["filename"]))["latent_tensor"]


@pytest.mark.floor
@pytest.mark.parametrize("input_image", [(64, 48)], indirect=True)
@pytest.mark.parametrize("workflow", ["ip2p_edit.json", "ip2p_custom_sampler.json"])
def test_shipped_workflow_runs_and_stays_finite(host, ip2p_ckpt, input_image, workflow):
    api = small_edit_prompt(host.all_object_info(), ip2p_ckpt.name, input_image, steps=3, workflow=WORKFLOWS / workflow)
    sampler = api.roles.get("edit") or next(i for i, n in api.prompt.items() if n["class_type"] == "SamplerCustomAdvanced")
    save_latent_of(api, sampler)

    result = host.run(api.prompt)
    assert result.success, result.error_text()
    images = host.output_files(result)
    assert len(images) == 1
    with Image.open(images[0]) as picture:
        assert picture.size == (64, 48)
    latent = saved_latent(host, result)
    assert latent.shape == (1, 4, 6, 8)
    assert torch.isfinite(latent).all() and latent.abs().max() < 1e3
    # The progress bar reported every sampling step.
    assert [value for value, total, _ in result.progress if total == 3][-1] == 3


def test_validation_errors_are_reported(host, ip2p_ckpt, input_image):
    api = small_edit_prompt(host.all_object_info(), "no-such-file.safetensors", input_image)
    result = host.run(api.prompt)
    assert not result.valid and not result.success
    assert "no-such-file.safetensors" in result.error_text()


@pytest.mark.floor
@pytest.mark.parametrize("input_image", [(64, 48)], indirect=True)
def test_controlnet_workflow_runs(host, ip2p_ckpt, controlnet_ckpt, input_image):
    api = small_edit_prompt(host.all_object_info(), ip2p_ckpt.name, input_image, steps=2,
                            workflow=WORKFLOWS / "ip2p_controlnet.json")
    api.set("controlnet", "control_net_name", controlnet_ckpt.name)
    result = host.run(api.prompt)
    assert result.success, result.error_text()
    with Image.open(host.output_files(result)[0]) as picture:
        assert picture.size == (64, 48)


@pytest.mark.floor
def test_lora_workflow_runs(host, ip2p_ckpt, lora_file, input_image):
    api = small_edit_prompt(host.all_object_info(), ip2p_ckpt.name, input_image, steps=2,
                            workflow=WORKFLOWS / "ip2p_lora.json")
    api.set("lora", "lora_name", lora_file)
    result = host.run(api.prompt)
    assert result.success, result.error_text()
    assert len(host.output_files(result)) == 1


def test_ipadapter_workflow_needs_only_ipadapter_plus(host):
    # IPAdapter_plus is an external pack: without it exactly its two nodes are missing; everything
    # else in the workflow is the host's or ours, and converts with its definitions added.
    from ipx2p_tools.build_workflows import IPADAPTER_NODES
    from ipx2p_tools.workflow import WorkflowError, load_ui, ui_to_api

    ui = load_ui(WORKFLOWS / "ip2p_ipadapter.json")
    with pytest.raises(WorkflowError, match="missing node types .*: IPAdapter, IPAdapterUnifiedLoader$"):
        ui_to_api(ui, host.all_object_info())
    api = ui_to_api(ui, {**host.all_object_info(), **IPADAPTER_NODES})
    assert api.node("ipadapter")["inputs"]["model"] == [api.roles["ipadapter_loader"], 0]
    assert api.node("edit")["inputs"]["model"] == [api.roles["ipadapter"], 0]


def rgba_picture(directory, name: str, size, hole) -> str:
    """A picture whose alpha is 0 on `hole` (x, y, w, h): Load Image's MASK is 1 there (what the
    mask editor paints)."""
    from PIL import Image, ImageDraw

    width, height = size
    picture = Image.new("RGBA", (width, height), (40, 110, 190, 255))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((width // 5, height // 6, width // 2, height * 5 // 6), fill=(240, 200, 50, 255))
    x, y, w, h = hole
    draw.rectangle((x, y, x + w - 1, y + h - 1), fill=(200, 60, 60, 0))
    picture.save(directory / name)
    return name


# Each editing workflow, set up for a fast run: (picture size, settings by role, expected size of the saved picture)
EDITING_WORKFLOWS = {
    "ip2p_masked.json": ((64, 48), {"grow_mask": {"expand": 2}}, (64, 48)),
    "ip2p_paste_back.json": ((64, 48), {"paste": {"resize": "keep", "resolution": 64}}, (64, 48)),
    "ip2p_crop_stitch.json": ((160, 120), {"crop": {"resolution": 128}, "encode": {"resize": "original", "resolution": 128}},
                              (160, 120)),
    "ip2p_sweep.json": ((64, 48), {"sweep": {"steps": 1, "text_cfg_values": "5", "image_cfg_values": "1, 1.5"}}, None),
    "ip2p_batch.json": ((64, 48), {"instructions": {"instructions": "make it snowy\nturn it red"}}, (64, 48)),
    "ip2p_iterative.json": ((64, 48), {"edit2": {"steps": 1}}, (64, 48)),
    "ip2p_guidance_map.json": ((64, 48), {"grow_mask": {"expand": 2}}, (64, 48)),
    "ip2p_schedule.json": ((64, 48), {"edit": {"steps": 3}}, (64, 48)),
    "ip2p_localize.json": ((64, 48), {"edit": {"steps": 3}, "paste": {"resize": "keep", "resolution": 64}}, (64, 48)),
}


@pytest.mark.floor
@pytest.mark.parametrize("workflow", sorted(EDITING_WORKFLOWS))
def test_editing_workflows_run(host, ip2p_ckpt, workflow):
    size, settings, saved_size = EDITING_WORKFLOWS[workflow]
    picture = rgba_picture(host.input_dir, f"masked_{size[0]}x{size[1]}.png", size, (size[0] // 4, size[1] // 4, 24, 20))
    api = small_edit_prompt(host.all_object_info(), ip2p_ckpt.name, picture, steps=1, workflow=WORKFLOWS / workflow)
    for role, values in settings.items():
        for name, value in values.items():
            api.set(role, name, value)
    result = host.run(api.prompt)
    assert result.success, result.error_text()
    files = host.output_files(result)
    assert files
    with Image.open(files[-1]) as saved:
        if saved_size is not None:
            assert saved.size == saved_size
    if workflow == "ip2p_batch.json":
        assert len(result.outputs[api.roles["save"]]["images"]) == 2


@pytest.mark.parametrize("workflow", ["cosxl_edit.json", "sdxl_ip2p.json", "make_editable.json"])
def test_family_workflows_validate_in_the_host(host, synthetic, diffusers_folder, ip2p_ckpt, sd15_ckpt, input_image,
                                               workflow):
    # Running them costs SDXL loads and a saved checkpoint (tests/test_families.py runs those paths);
    # here the host's own validator checks every node, link and widget value of the shipped files.
    from ipx2p_tools.workflow import load_ui, ui_to_api

    api = ui_to_api(load_ui(WORKFLOWS / workflow), host.all_object_info())
    api.set("image", "image", input_image)
    if workflow == "cosxl_edit.json":
        api.set("checkpoint", "ckpt_name", synthetic("cosxl").name)
    elif workflow == "sdxl_ip2p.json":
        api.set("checkpoint", "model_path", f"diffusers/{diffusers_folder('sdxl_ip2p').name}")
    else:
        api.set("checkpoint", "ckpt_name", ip2p_ckpt.name)
        api.set("finetune", "ckpt_name", sd15_ckpt.name)
        api.set("base", "ckpt_name", synthetic("sd15_b").name)
    result = host.validate(api.prompt)
    assert result.valid, result.error_text()
    # and the validator does refuse a wrong value (the check can fail)
    api.set("encode", "resize", "no-such-mode")
    assert not host.validate(api.prompt).valid
