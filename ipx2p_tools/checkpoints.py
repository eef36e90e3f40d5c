"""Random-weight checkpoints of the true layouts, generated once into .cache/ckpt and reused.

Single files (safetensors, streamed to disk), PyTorch Lightning pickles (.ckpt, as MagicBrush and
HIVE publish them), sparse files (the true layout and size, zeros, no disk: for tests that read
only the header) and diffusers pipeline folders (written by diffusers itself from a single file,
so their naming is diffusers' own, not ours).
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ipx2p_tools.testkit import layouts, sd15_layout
from ipx2p_tools.testkit.synthetic import GENERATOR_VERSION, random_state_dict, write_random_checkpoint
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
    file_format: str = "safetensors"  # safetensors | ckpt | sparse
    extra: tuple[tuple[str, float], ...] = ()

    def layout(self) -> sd15_layout.Layout:
        if self.kind in ("ip2p", "ip2p_fp32", "ip2p_ema", "magicbrush"):
            return sd15_layout.sd15_checkpoint_layout(unet_in_channels=8)
        if self.kind in ("sd15", "sd15_b"):
            return sd15_layout.sd15_checkpoint_layout(unet_in_channels=4)
        if self.kind == "controlnet":
            return sd15_layout.controlnet_layout()
        if self.kind == "hive_sd21":
            return layouts.sd21_checkpoint_layout(unet_in_channels=8)
        if self.kind == "sd21_base":
            return layouts.sd21_checkpoint_layout(unet_in_channels=4)
        if self.kind == "cosxl":
            return layouts.sdxl_checkpoint_layout(unet_in_channels=8)
        if self.kind == "sdxl_base":
            return layouts.sdxl_checkpoint_layout(unet_in_channels=4)
        raise KeyError(self.kind)

    def nbytes(self) -> int:
        """The size of the tensors the file holds (what it takes on disk, give or take a header)."""
        element = torch.empty((), dtype=self.dtype).element_size()
        ema = 2 if self.with_ema else 1  # the EMA copies repeat the UNet's tensors
        return element * sum(math.prod(shape) * (ema if key.startswith("model.diffusion_model.") else 1)
                             for key, shape in self.layout())

    @property
    def filename(self) -> str:
        suffix = "ckpt" if self.file_format == "ckpt" else "safetensors"
        return f"{self.kind}-g{GENERATOR_VERSION}-s{self.seed}.{suffix}"


SYNTHETIC = {
    spec.kind: spec
    for spec in (
        SyntheticCheckpoint("ip2p", "SD1.5 InstructPix2Pix (8-channel UNet), CLIP-L, VAE", seed=1),
        SyntheticCheckpoint("ip2p_fp32", "SD1.5 InstructPix2Pix stored in fp32 (benchmarks)", seed=1,
                            dtype=torch.float32),
        SyntheticCheckpoint("ip2p_ema", "SD1.5 InstructPix2Pix with LDM model_ema.* weights", seed=1, with_ema=True),
        SyntheticCheckpoint("sd15", "plain SD1.5 (4-channel UNet), CLIP-L, VAE", seed=2),
        SyntheticCheckpoint("sd15_b", "another plain SD1.5 (a base for Make Editable)", seed=5),
        SyntheticCheckpoint("controlnet", "SD1.5 ControlNet 1.x", seed=3),
        # MagicBrush: an InstructPix2Pix fine-tune, published as a PyTorch Lightning pickle. Same
        # values as "ip2p", so the two files can be compared tensor by tensor.
        SyntheticCheckpoint("magicbrush", "SD1.5 InstructPix2Pix as a Lightning .ckpt (MagicBrush's format)", seed=1,
                            file_format="ckpt"),
        SyntheticCheckpoint("hive_sd21", "SD2.1-base with an 8-channel UNet, OpenCLIP-H, VAE, as a Lightning .ckpt (HIVE)",
                            seed=8, file_format="ckpt"),
        SyntheticCheckpoint("sd21_base", "plain SD2.1 (4-channel UNet), header only", seed=9, file_format="sparse"),
        SyntheticCheckpoint("cosxl", "SDXL with an 8-channel UNet and EDM v-prediction markers (CosXL Edit's layout)",
                            seed=7, extra=tuple(layouts.COSXL_EDM_KEYS.items())),
        SyntheticCheckpoint("sdxl_base", "plain SDXL (4-channel UNet), header only", seed=10, file_format="sparse"),
    )
}


def ensure_synthetic(kind: str, directory: Path | None = None) -> Path:
    """Path of the cached random-weight checkpoint of `kind`, generating it on first use."""
    spec = SYNTHETIC[kind]
    directory = directory or CACHE_DIR / "ckpt"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / spec.filename
    if not path.exists():
        remove_stale(directory, f"{spec.kind}-g", keep=path.name)
        if spec.file_format != "sparse":
            need_free_disk(directory, spec.nbytes(), path.name)
        started = time.monotonic()
        if spec.file_format == "ckpt":
            write_lightning_checkpoint(path, spec)
        else:
            write_random_checkpoint(path, spec.layout(), spec.seed, spec.dtype, spec.with_ema, spec.description,
                                    extra=dict(spec.extra), sparse=spec.file_format == "sparse")
        log.info("generated %s (%s) in %.1f s", path.name, spec.description, time.monotonic() - started)
    return path


def need_free_disk(directory: Path, nbytes: int, what: str) -> None:
    """Refuse to start a file that cannot fit, with the numbers, rather than fail half-way with a
    bare OSError (and leave the disk full for whatever runs next). 1 GiB is kept in reserve."""
    free = shutil.disk_usage(directory).free
    reserve = 1 << 30
    if free < nbytes + reserve:
        raise OSError(f"writing the test fixture {what} needs {nbytes / 2**30:.1f} GiB (+1 GiB reserve) free in "
                      f"{directory}, which has {free / 2**30:.1f} GiB. Free some disk (the fixture cache "
                      f"{directory} can be deleted as a whole: it is made again on use) and run again")


def remove_stale(directory: Path, prefix: str, keep: str) -> None:
    """Delete cached fixtures `prefix*` other than `keep`: files of an older generator version or
    seed, and pieces a killed run left (*.partial). Each fixture is kept once."""
    for item in directory.glob(f"{prefix}*"):
        if item.name == keep:
            continue
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
        log.info("removed the stale fixture %s", item.name)


def write_lightning_checkpoint(path: Path, spec: SyntheticCheckpoint) -> None:
    """A .ckpt as PyTorch Lightning writes one: the weights under "state_dict" beside training
    bookkeeping (plain numbers and strings, which the host's weights-only loader accepts)."""
    checkpoint = {
        "epoch": 52,
        "global_step": 4999,
        "pytorch-lightning_version": "1.6.5",
        "state_dict": random_state_dict(spec.layout(), spec.seed, spec.dtype),
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    partial.replace(path)


# -- diffusers pipeline folders ----------------------------------------------------------------------------
DIFFUSERS = {"sd15_ip2p": "ip2p", "sdxl_ip2p": "cosxl"}  # folder kind -> the single file it is made from


def ensure_diffusers(kind: str, directory: Path | None = None) -> Path:
    """A diffusers pipeline folder with the same weights as the single file DIFFUSERS[kind] (its
    EMA-less weights), written by diffusers' own single-file conversion and save_pretrained."""
    from ipx2p_tools import peer_diffusers
    from ipx2p_tools.layout import selected_host

    directory = directory or CACHE_DIR / "diffusers"
    source = ensure_synthetic(DIFFUSERS[kind])
    target = directory / f"{kind}-g{GENERATOR_VERSION}"
    if (target / "model_index.json").exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale(directory, f"{kind}-g", keep=target.name)
    scratch = directory / f".{target.name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    need_free_disk(directory, SYNTHETIC[DIFFUSERS[kind]].nbytes(), target.name)
    started = time.monotonic()
    _, host_tree = selected_host()
    configs = directory / f".{kind}-configs"
    if kind == "sd15_ip2p":
        pipe = peer_diffusers.load_pipeline(source, peer_diffusers.write_config_folder(configs, host_tree), torch.float16)
    else:
        pipe = peer_diffusers.load_sdxl_pipeline(source, peer_diffusers.write_sdxl_config_folder(configs, host_tree),
                                                 torch.float16)
    pipe.save_pretrained(str(scratch), safe_serialization=True)
    del pipe
    shutil.rmtree(configs, ignore_errors=True)
    scratch.replace(target)
    log.info("wrote the diffusers folder %s in %.1f s", target.name, time.monotonic() - started)
    return target


def unet_only_folder(source: Path, directory: Path) -> Path:
    """A folder holding just a diffusers UNet (a link to `source`'s), as people download one."""
    target = directory / f"{source.name}-unet-only"
    (target / "unet").mkdir(parents=True, exist_ok=True)
    for item in (source / "unet").iterdir():
        link = target / "unet" / item.name
        if not link.exists():
            link.symlink_to(item.resolve())
    return target


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
