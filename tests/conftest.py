"""Fixtures: the in-process host, random-weight checkpoints of true layouts, the HTTP server.

The host under test is chosen by COMFYUI_PATH (your own ComfyUI) or IPX2P_HOST (a version that
`make setup` fetched; default 0.30.0). One host per pytest process.
"""
from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ipx2p_tools.checkpoints import ensure_diffusers, ensure_synthetic
from ipx2p_tools.host import InProcessHost
from ipx2p_tools.layout import CACHE_DIR, HOST_SOURCES, host_frontend_root, selected_host
from ipx2p_tools.server import HostServer

CHECKPOINT_DIR = CACHE_DIR / "ckpt"
DIFFUSERS_DIR = CACHE_DIR / "diffusers"
LORA_DIR = CACHE_DIR / "loras"


def pytest_report_header(config: pytest.Config) -> str:
    name, tree = selected_host()
    return f"ComfyUI host: {name} at {tree}"


@pytest.fixture(scope="session")
def host_tree() -> Path:
    name, tree = selected_host()
    if not (tree / "main.py").exists():
        pytest.exit(f"no ComfyUI at {tree} (host {name}); run `make setup` first", returncode=2)
    return tree


@pytest.fixture(scope="session")
def host_name() -> str:
    return selected_host()[0]


@pytest.fixture(scope="session")
def host(host_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> InProcessHost:
    """ComfyUI booted in this process with the pack loaded, models from the checkpoint cache."""
    work = tmp_path_factory.mktemp("host")
    CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
    instance = InProcessHost(
        host_tree,
        input_dir=work / "input",
        output_dir=work / "output",
        temp_dir=work / "temp",
        model_dirs={"checkpoints": [CHECKPOINT_DIR], "controlnet": [CHECKPOINT_DIR], "loras": [LORA_DIR],
                    "diffusers": [DIFFUSERS_DIR]},
    )
    return instance.boot()


@pytest.fixture(scope="session")
def ip2p_ckpt() -> Path:
    """SD1.5-InstructPix2Pix, random weights, true layout (8-channel UNet), fp16."""
    return ensure_synthetic("ip2p", CHECKPOINT_DIR)


@pytest.fixture(scope="session")
def ip2p_ema_ckpt() -> Path:
    """SD1.5-InstructPix2Pix with LDM `model_ema.*` copies of the UNet weights (which differ)."""
    return ensure_synthetic("ip2p_ema", CHECKPOINT_DIR)


@pytest.fixture(scope="session")
def sd15_ckpt() -> Path:
    """Plain SD1.5 (4-channel UNet), random weights: what users load by mistake."""
    return ensure_synthetic("sd15", CHECKPOINT_DIR)


@pytest.fixture(scope="session")
def synthetic():
    """The other random-weight files of true layouts, by kind (see ipx2p_tools.checkpoints), made on first use."""
    return lambda kind: ensure_synthetic(kind, CHECKPOINT_DIR)


@pytest.fixture(scope="session")
def diffusers_folder():
    """diffusers pipeline folders written by diffusers from the single files (sd15_ip2p, sdxl_ip2p)."""
    return lambda kind: ensure_diffusers(kind, DIFFUSERS_DIR)


@pytest.fixture(scope="session")
def controlnet_ckpt() -> Path:
    """SD1.5 ControlNet 1.x, random weights."""
    return ensure_synthetic("controlnet", CHECKPOINT_DIR)


@pytest.fixture(scope="session")
def lora_file() -> str:
    """A small SD1.5 LoRA in kohya's LDM naming: attention and projection layers of the UNet, one
    text-encoder layer, and the UNet's first convolution with SD1.5's 4 input channels, which an
    8-channel IP2P UNet cannot take."""
    directory = LORA_DIR
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(11)
    rank = 4
    shapes = {
        "lora_unet_input_blocks_1_1_proj_in": ((rank, 320, 1, 1), (320, rank, 1, 1)),
        "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k": ((rank, 768), (1280, rank)),
        "lora_unet_output_blocks_11_1_transformer_blocks_0_attn1_to_q": ((rank, 320), (320, rank)),
        "lora_unet_input_blocks_0_0": ((rank, 4, 3, 3), (320, rank, 1, 1)),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": ((rank, 768), (768, rank)),
    }
    tensors = {}
    for name, (down, up) in shapes.items():
        tensors[f"{name}.lora_down.weight"] = torch.randn(down, generator=generator) * 0.5
        tensors[f"{name}.lora_up.weight"] = torch.randn(up, generator=generator) * 0.5
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(directory / "test_lora.safetensors"))
    return "test_lora.safetensors"


@pytest.fixture(scope="module")
def clean_host(host):
    """For modules that load large models: nothing left over from earlier modules stays in memory."""
    from helpers import release_models

    release_models(host)
    yield
    release_models(host)


@pytest.fixture(scope="module")
def pack(host):
    """The pack's engine module (nodes/engine.py) as the host loaded it, to drive edits directly."""
    return sys.modules[host.nodes.NODE_CLASS_MAPPINGS["IPX2P_Guider"].__module__.rsplit(".", 1)[0] + ".engine"]


@pytest.fixture(scope="module")
def loaded(host, ip2p_ckpt):
    """(model, clip, vae) from the pack's loader node, called directly in the host process;
    released at the end of each module that uses it."""
    out = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"].execute(ckpt_name=ip2p_ckpt.name, weights="auto")
    yield out.result[:3]
    del out
    gc.collect()


@pytest.fixture()
def input_image(host: InProcessHost, request: pytest.FixtureRequest) -> str:
    """A small picture in the host's input folder; returns its name for LoadImage."""
    from PIL import Image, ImageDraw

    width, height = getattr(request, "param", (96, 64))
    picture = Image.new("RGB", (width, height), (40, 110, 190))
    ImageDraw.Draw(picture).ellipse((width // 5, height // 6, width // 2, height * 5 // 6), fill=(240, 200, 50))
    name = f"test_{width}x{height}.png"
    picture.save(Path(host.input_dir) / name)
    return name


@pytest.fixture(scope="module")
def server(host_tree: Path, host_name: str, ip2p_ckpt: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real HTTP server, `main.py --cpu` on a free loopback port, serving the pack. One per
    module: a server that has run edits holds a model (~5 GiB) the later modules need."""
    front_end = None
    if host_name in HOST_SOURCES and HOST_SOURCES[host_name].own_frontend:
        front_end = host_frontend_root(host_name)
    instance = HostServer(
        host_tree,
        tmp_path_factory.mktemp("server"),
        model_paths={"checkpoints": CHECKPOINT_DIR, "controlnet": CHECKPOINT_DIR, "loras": LORA_DIR},
        front_end_root=front_end,
    )
    instance.start()
    yield instance
    instance.stop()
