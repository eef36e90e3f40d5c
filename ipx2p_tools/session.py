"""One in-process ComfyUI for running edit workflows, the way the CLI edit and the batch runner do.

A session boots the selected host once (the pack loaded as a custom node), with its own input,
output and temp folders, and runs API-format prompts through the host's validator and executor.
Running prompt after prompt keeps the model loaded: the host's cache keeps every node whose
inputs did not change (the checkpoint loader, the text encoder for a repeated instruction).

Workflows are found by role: the pack's UI-format workflows mark their nodes with
`properties.ipx2p_role`; an API-format workflow (what ComfyUI's "Export (API)" saves) names them
by node title (`_meta.title`), so a user's own workflow becomes a job by titling its nodes.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ipx2p_tools.layout import selected_host
from ipx2p_tools.workflow import ApiWorkflow, WorkflowError, load_ui, ui_to_api


class SessionError(Exception):
    """A problem the user can fix; the message says how."""


def load_workflow(path: Path, object_info: dict[str, dict[str, Any]]) -> ApiWorkflow:
    """A workflow file as an API prompt with roles: UI format (roles from properties.ipx2p_role)
    or API format (roles from node titles)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise SessionError(f"--workflow {path}: not a readable JSON file ({error})") from None
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        return ui_to_api(load_ui(path), object_info)
    if not isinstance(data, dict) or not data or not all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise SessionError(f"--workflow {path}: neither a UI-format workflow nor an API-format one "
                           "(export it from ComfyUI with 'Export (API)')")
    missing = sorted({node["class_type"] for node in data.values() if node["class_type"] not in object_info})
    if missing:
        raise SessionError(f"--workflow {path}: missing node types (install the packs that provide them): {', '.join(missing)}")
    roles: dict[str, str] = {}
    for node_id, node in data.items():
        title = str((node.get("_meta") or {}).get("title", "")).strip()
        if title:
            if title in roles:
                raise SessionError(f"--workflow {path}: two nodes are titled {title!r} (nodes {roles[title]} and {node_id}); "
                                   "give each node a row fills its own title")
            roles[title] = str(node_id)
    return ApiWorkflow({str(k): v for k, v in data.items()}, roles)


class EditSession:
    """A booted in-process host with its own folders under `work_dir`."""

    def __init__(self, work_dir: Path, checkpoint_dirs: list[Path] | None = None) -> None:
        from ipx2p_tools.host import InProcessHost

        self.host_name, tree = selected_host()
        if not (tree / "main.py").exists():
            raise SessionError(f"no ComfyUI at {tree}: run `make setup` first (or set COMFYUI_PATH to your ComfyUI)")
        self.work_dir = Path(work_dir)
        self.input_dir = self.work_dir / "input"
        model_dirs = {"checkpoints": list(checkpoint_dirs)} if checkpoint_dirs else None
        self.host = InProcessHost(tree, input_dir=self.input_dir, output_dir=self.work_dir / "output",
                                  temp_dir=self.work_dir / "temp", model_dirs=model_dirs)
        self.host.boot()
        problems = self.host.pack_import_problems("ComfyUI-IPX2P")
        if problems:
            raise SessionError("the pack failed to load in ComfyUI:\n" + "\n".join(problems))
        self.object_info = self.host.all_object_info()

    @property
    def version(self) -> str:
        return self.host.version

    def workflow(self, path: Path) -> ApiWorkflow:
        try:
            return load_workflow(path, self.object_info)
        except WorkflowError as error:
            raise SessionError(f"--workflow {path}: {error}") from None

    def add_input(self, source: Path, name: str) -> str:
        """Put a file into the host's input folder as `name` (a link where the file system allows,
        else a copy) and return the name LoadImage takes."""
        target = self.input_dir / name
        if target.is_symlink() or target.exists():
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        return name

    def run(self, workflow: ApiWorkflow) -> list[Path]:
        """Run the prompt; the files its save nodes wrote, or SessionError with the host's words."""
        result = self.host.run(workflow.prompt)
        if not result.success:
            raise SessionError("ComfyUI reported:\n" + result.error_text())
        return self.host.output_files(result)


def configure(workflow: ApiWorkflow, settings: dict[str, dict[str, object]], required: tuple[str, ...] = ()) -> None:
    """Set widget values by role; roles a workflow does not have are skipped, except `required` ones."""
    for role in required:
        workflow.node(role)
    for role, values in settings.items():
        if role in workflow.roles:
            for name, value in values.items():
                workflow.set(role, name, value)
