"""Static checks: ipx2p_core stays host-free, shipped JSON parses, packaging metadata agrees."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ipx2p_tools.layout import REPO_ROOT

HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "nodes", "folder_paths", "server",
                "execution", "node_helpers", "latent_preview", "comfyui_version"}


def imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_core_imports_no_host_module():
    offenders = {}
    for path in sorted((REPO_ROOT / "ipx2p_core").rglob("*.py")):
        bad = imported_top_modules(path) & HOST_MODULES
        if bad:
            offenders[str(path.relative_to(REPO_ROOT))] = sorted(bad)
    assert offenders == {}


def test_ast_check_catches_a_host_import(tmp_path):
    # The check above must be able to fail: a file importing the host is caught.
    sample = tmp_path / "bad.py"
    sample.write_text("import os\nfrom comfy.model_management import get_torch_device\nimport folder_paths as fp\n")
    assert imported_top_modules(sample) & HOST_MODULES == {"comfy", "folder_paths"}


def test_core_imports_without_comfyui_in_a_fresh_interpreter():
    # A clean interpreter with only the repo on sys.path: importing every core module must work
    # and must not pull in any host module (the test process itself may have a host loaded).
    code = (
        "import importlib, pkgutil, sys, ipx2p_core\n"
        "for m in pkgutil.iter_modules(ipx2p_core.__path__): importlib.import_module('ipx2p_core.' + m.name)\n"
        f"bad = sorted(set(sys.modules) & set({sorted(HOST_MODULES)!r}))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "workflows").glob("*.json")), ids=lambda p: p.name)
def test_workflow_json_parses(path):
    data = json.loads(path.read_text())
    assert data["nodes"] and isinstance(data["links"], list)


def test_requirements_agree_with_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    requirements = (REPO_ROOT / "requirements.txt").read_text().split()
    assert sorted(project["project"]["dependencies"]) == sorted(requirements)
    assert not any(req.lower().startswith(("torch", "comfy")) for req in requirements)
    assert project["tool"]["comfy"]["requires-comfyui"] == ">=0.3.75"
