"""One edit through the real HTTP server: upload, POST /prompt, poll /history, GET /view."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from helpers import WORKFLOWS, small_edit_prompt
from ipx2p_tools.layout import PACK_DIR_NAME
from ipx2p_tools.workflow import load_ui, ui_to_api
from test_host_import import import_problems


@pytest.mark.floor
def test_edit_through_http_server(server, ip2p_ckpt, tmp_path):
    assert import_problems(server.log_text()) == [], server.log_tail()
    assert PACK_DIR_NAME in server.log_text()

    source = tmp_path / "photo.png"
    Image.new("RGB", (80, 64), (200, 60, 60)).save(source)
    uploaded = server.upload_image(source)

    object_info = server.get_json("/object_info")
    api = small_edit_prompt(object_info, ip2p_ckpt.name, uploaded, steps=2, resize="original", resolution=64)
    api.set("instruction", "text", "make it snowy")
    queued = server.queue(api.prompt)
    assert queued["http_status"] == 200, queued
    entry = server.wait_history(queued["prompt_id"], timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]

    images = [image for output in entry["outputs"].values() for image in output.get("images", [])]
    assert len(images) == 1
    png = server.view(images[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.size == (64, 64)


def test_server_rejects_an_invalid_prompt(server, ip2p_ckpt):
    # A bad prompt comes back as a 400 with the node's error, and the server keeps serving.
    api = ui_to_api(load_ui(WORKFLOWS / "ip2p_edit.json"), server.get_json("/object_info"))
    api.set("checkpoint", "ckpt_name", "missing.safetensors")
    queued = server.queue(api.prompt)
    assert queued["http_status"] == 400
    assert "missing.safetensors" in str(queued.get("node_errors"))
    assert server.get_json("/system_stats")["system"]


@pytest.mark.floor
@pytest.mark.parametrize("name", ["ip2p_custom_sampler.json", "ip2p_controlnet.json", "ip2p_lora.json"])
def test_shipped_workflow_through_http(server, ip2p_ckpt, controlnet_ckpt, lora_file, tmp_path, name):
    # The host's node definitions convert the UI file (as the frontend does; test_browser checks
    # they agree), and the server runs it on random weights.
    source = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (20, 90, 160)).save(source)
    api = small_edit_prompt(server.get_json("/object_info"), ip2p_ckpt.name, server.upload_image(source), steps=2,
                            workflow=WORKFLOWS / name)
    if "controlnet" in api.roles:
        api.set("controlnet", "control_net_name", controlnet_ckpt.name)
    if "lora" in api.roles:
        api.set("lora", "lora_name", lora_file)
    queued = server.queue(api.prompt)
    assert queued["http_status"] == 200, queued
    entry = server.wait_history(queued["prompt_id"], timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    image = next(img for out in entry["outputs"].values() for img in out.get("images", []))
    with Image.open(io.BytesIO(server.view(image))) as picture:
        assert picture.size == (64, 48)
