"""Soak: many edits in one host process, and many queued prompts through the HTTP server.

CI runs a small count; by hand, the issue's: IPX2P_SOAK_EDITS=50 IPX2P_SOAK_QUEUE=20
    IPX2P_SOAK_EDITS=50 IPX2P_SOAK_QUEUE=20 .venv/bin/python -m pytest tests/test_soak.py
"""
from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from helpers import Graph, edit_node, encode_graph, small_edit_prompt, write_picture

pytestmark = pytest.mark.soak

EDITS = int(os.environ.get("IPX2P_SOAK_EDITS", "10"))
QUEUED = int(os.environ.get("IPX2P_SOAK_QUEUE", "5"))
WARM_UP = 3


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_consecutive_edits_keep_memory_flat_and_the_model_loaded(host, ip2p_ckpt):
    picture = write_picture(host.input_dir, "soak_64x48.png", (64, 48))
    loads_before = host.logs.text().count("IPX2P_CheckpointLoader: loaded")
    samples = []
    for index in range(EDITS):
        g = Graph()
        loader, positive, negative, encoded = encode_graph(g, ip2p_ckpt.name, picture)
        decoded = g.add("VAEDecode", samples=(edit_node(g, loader, positive, negative, encoded, seed=index, steps=2), 0),
                        vae=(loader, 2))
        g.add("SaveImage", images=(decoded, 0), filename_prefix=f"soak_{index:03d}")
        result = host.run(g.prompt)
        assert result.success, f"edit {index}: {result.error_text()}"
        assert len(host.output_files(result)) == 1
        samples.append(rss_bytes())
    loads = host.logs.text().count("IPX2P_CheckpointLoader: loaded") - loads_before
    assert loads <= 1, f"the checkpoint was loaded {loads} times over {EDITS} edits"
    settled = samples[min(WARM_UP, len(samples) - 1):]
    growth = max(settled) / settled[0]
    print(f"RSS after each edit (GiB): {[round(s / 2**30, 3) for s in samples]}; growth after warm-up {growth:.4f}")
    assert growth <= 1.05, f"RSS grew by {100 * (growth - 1):.1f}% after warm-up: {samples}"


def test_queued_prompts_through_the_server_all_finish(server, ip2p_ckpt, tmp_path):
    source = tmp_path / "soak.png"
    Image.new("RGB", (64, 48), (30, 160, 90)).save(source)
    uploaded = server.upload_image(source)
    object_info = server.get_json("/object_info")
    queued = []
    for index in range(QUEUED):  # all queued before the first finishes
        api = small_edit_prompt(object_info, ip2p_ckpt.name, uploaded, steps=1, seed=index)
        answer = server.queue(api.prompt)
        assert answer["http_status"] == 200, answer
        queued.append(answer["prompt_id"])
    written = set()
    for prompt_id in queued:
        entry = server.wait_history(prompt_id, timeout=600)
        assert entry["status"]["status_str"] == "success", entry["status"]
        images = [image for output in entry["outputs"].values() for image in output.get("images", [])]
        assert len(images) == 1
        with Image.open(io.BytesIO(server.view(images[0]))) as picture:
            assert picture.size == (64, 48)
        written.add(images[0]["filename"])
    assert len(written) == QUEUED  # none lost, none overwritten
