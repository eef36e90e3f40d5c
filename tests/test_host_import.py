"""The pack imports cleanly into the real host: in-process, and through main.py as users start it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ipx2p_tools.layout import PACK_DIR_NAME


def import_problems(log: str) -> list[str]:
    markers = ("IMPORT FAILED", "Cannot import", "Error while calling comfy_entrypoint", "Skip ")
    return [line for line in log.splitlines() if PACK_DIR_NAME in line and any(m in line for m in markers)]


@pytest.mark.floor
def test_pack_loads_in_process(host):
    assert host.pack_import_problems(PACK_DIR_NAME) == []
    import nodes

    loaded = [path for path in nodes.LOADED_MODULE_DIRS.values() if path.endswith(PACK_DIR_NAME)]
    assert len(loaded) == 1


@pytest.mark.floor
def test_main_py_quick_test_imports_the_pack(host_tree):
    # main.py exits 0 even when a custom node pack fails, so the log is what tells.
    done = subprocess.run(
        [sys.executable, "main.py", "--cpu", "--quick-test-for-ci"],
        cwd=host_tree, capture_output=True, text=True, timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert PACK_DIR_NAME in log, "the pack was not even attempted: is it linked into custom_nodes? (make setup)"
    assert import_problems(log) == [], log[-3000:]


def test_log_check_catches_a_failed_import():
    # The check must be able to fail: this is what the host prints for a broken pack.
    sample = (
        f"Cannot import /x/custom_nodes/{PACK_DIR_NAME} module for custom nodes: boom\n"
        f"   0.0 seconds (IMPORT FAILED): /x/custom_nodes/{PACK_DIR_NAME}\n"
        "   0.1 seconds: /x/custom_nodes/other_pack\n"
    )
    assert len(import_problems(sample)) == 2
