"""Random-weight checkpoints of the true layouts, generated once into .cache/ckpt and reused."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ipx2p_core import sd15_layout
from ipx2p_core.synthetic import GENERATOR_VERSION, write_random_checkpoint
from ipx2p_tools.layout import CACHE_DIR

log = logging.getLogger(__name__)

DEMO_CHECKPOINT_NAME = "ipx2p-demo-random-weights.safetensors"


@dataclass(frozen=True)
class SyntheticCheckpoint:
    kind: str
    description: str
    seed: int
    with_ema: bool = False
    dtype: torch.dtype = torch.float16

    def layout(self) -> sd15_layout.Layout:
        if self.kind.startswith("ip2p"):
            return sd15_layout.sd15_checkpoint_layout(unet_in_channels=8)
        if self.kind == "sd15":
            return sd15_layout.sd15_checkpoint_layout(unet_in_channels=4)
        if self.kind == "controlnet":
            return sd15_layout.controlnet_layout()
        raise KeyError(self.kind)

    @property
    def filename(self) -> str:
        return f"{self.kind}-g{GENERATOR_VERSION}-s{self.seed}.safetensors"


SYNTHETIC = {
    spec.kind: spec
    for spec in (
        SyntheticCheckpoint("ip2p", "SD1.5 InstructPix2Pix (8-channel UNet), CLIP-L, VAE", seed=1),
        SyntheticCheckpoint("ip2p_fp32", "SD1.5 InstructPix2Pix stored in fp32 (benchmarks)", seed=1,
                            dtype=torch.float32),
        SyntheticCheckpoint("ip2p_ema", "SD1.5 InstructPix2Pix with LDM model_ema.* weights", seed=1, with_ema=True),
        SyntheticCheckpoint("sd15", "plain SD1.5 (4-channel UNet), CLIP-L, VAE", seed=2),
        SyntheticCheckpoint("controlnet", "SD1.5 ControlNet 1.x", seed=3),
    )
}


def ensure_synthetic(kind: str, directory: Path | None = None) -> Path:
    """Path of the cached random-weight checkpoint of `kind`, generating it on first use."""
    spec = SYNTHETIC[kind]
    directory = directory or CACHE_DIR / "ckpt"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / spec.filename
    if not path.exists():
        started = time.monotonic()
        write_random_checkpoint(path, spec.layout(), spec.seed, spec.dtype, spec.with_ema, spec.description)
        log.info("generated %s (%s) in %.1f s", path.name, spec.description, time.monotonic() - started)
    return path


def link_into(source: Path, directory: Path, name: str) -> Path:
    """Make `directory/name` point at `source` (a symlink; replaced if it points elsewhere)."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / name
    if link.is_symlink() and link.resolve() == source.resolve():
        return link
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a link this tool made; move it away")
    link.symlink_to(source.resolve())
    return link
