"""A real ComfyUI imported into this process, running prompts with its own validator and executor.

Used by the `edit` command and by the tests. One host per process: ComfyUI keeps global state
(module names like `nodes`, `execution`, `folder_paths`), so two versions cannot share a process.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any


class HostLogCapture(logging.Handler):
    """Keeps every log record the host emits, so callers can check for import failures."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(record.getMessage() for record in self.records)


class HeadlessServer:
    """What the executor needs from PromptServer, recording every event it sends."""

    def __init__(self) -> None:
        self.client_id: str | None = "ipx2p-headless"
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.sockets_metadata: dict[str, Any] = {}
        self.events: list[tuple[str, Any]] = []

    def send_sync(self, event: Any, data: Any, sid: Any = None) -> None:
        self.events.append((event, data))

    def queue_updated(self) -> None:
        pass


@dataclass
class RunResult:
    """What one prompt did: validation, success, per-node UI outputs, the error if any."""

    prompt_id: str
    valid: bool
    success: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    validation_error: dict[str, Any] | None = None
    node_errors: dict[str, Any] = field(default_factory=dict)
    execution_error: dict[str, Any] | None = None
    events: list[tuple[str, Any]] = field(default_factory=list)
    progress: list[tuple[int, int, bool]] = field(default_factory=list)  # (value, total, had preview)

    def error_text(self) -> str:
        """Every error message the host reported, in one string (for assertions and the CLI)."""
        parts: list[str] = []
        if self.validation_error:
            parts.append(f"{self.validation_error.get('message', '')}: {self.validation_error.get('details', '')}")
        for node_id, node_error in self.node_errors.items():
            for error in node_error.get("errors", []):
                parts.append(f"node {node_id} ({node_error.get('class_type')}): {error.get('message')}: {error.get('details')}")
        if self.execution_error:
            parts.append(
                f"node {self.execution_error.get('node_id')} ({self.execution_error.get('node_type')}): "
                f"{self.execution_error.get('exception_type')}: {self.execution_error.get('exception_message')}"
            )
        return "\n".join(parts)


class InProcessHost:
    def __init__(
        self,
        tree: Path,
        *,
        input_dir: Path,
        output_dir: Path,
        temp_dir: Path,
        model_dirs: dict[str, list[Path]] | None = None,
        cli_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.tree = Path(tree).resolve()
        self.input_dir, self.output_dir, self.temp_dir = input_dir, output_dir, temp_dir
        self.model_dirs = model_dirs or {}
        # Attributes of comfy.cli_args.args, as the matching command-line flags would set them.
        self.cli_overrides = {"cpu": True, **(cli_overrides or {})}
        self.logs = HostLogCapture()
        self.server = HeadlessServer()
        self._progress: list[tuple[int, int, bool]] = []
        # Called with (value, total) at each progress update, before the interrupt check (tests use
        # it to interrupt at a chosen step, as the UI's Cancel button would).
        self.progress_listener: Callable[[int, int], None] | None = None
        self.booted = False

    # -- start-up -------------------------------------------------------------------------
    def boot(self) -> InProcessHost:
        if self.booted:
            return self
        if "nodes" in sys.modules and not getattr(sys.modules["nodes"], "__file__", "").startswith(str(self.tree)):
            raise RuntimeError("another module named 'nodes' is already imported; one ComfyUI per process")
        logging.getLogger().addHandler(self.logs)
        logging.getLogger().setLevel(logging.INFO)
        sys.path.insert(0, str(self.tree))
        # nodes.py later puts comfy/ first on sys.path, where a bare `import utils` would find
        # comfy/utils.py; binding the host's `utils` package first keeps main.py's import order.
        import utils.extra_config  # noqa: F401
        from comfy.cli_args import args

        for name, value in self.cli_overrides.items():
            if not hasattr(args, name):
                raise RuntimeError(f"this ComfyUI has no command-line option {name!r}")
            setattr(args, name, value)

        import folder_paths

        for directory in (self.input_dir, self.output_dir, self.temp_dir):
            Path(directory).mkdir(parents=True, exist_ok=True)
        folder_paths.set_input_directory(str(self.input_dir))
        folder_paths.set_output_directory(str(self.output_dir))
        folder_paths.set_temp_directory(str(self.temp_dir))
        for kind, directories in self.model_dirs.items():
            for directory in directories:
                folder_paths.add_model_folder_path(kind, str(directory), is_default=True)

        import comfy.utils
        import execution
        import nodes

        def progress_hook(value: int, total: int, preview: Any, prompt_id: Any = None, node_id: Any = None) -> None:
            import comfy.model_management

            # main.py's hook does this too: interrupts reach long loops through the progress bar.
            self._progress.append((int(value), int(total), preview is not None))
            if self.progress_listener is not None:
                self.progress_listener(int(value), int(total))
            comfy.model_management.throw_exception_if_processing_interrupted()

        comfy.utils.set_progress_bar_global_hook(progress_hook)
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        self._execution = execution
        self.nodes = nodes
        self.executor = execution.PromptExecutor(
            self.server, cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0}
        )
        self.booted = True
        return self

    @property
    def version(self) -> str:
        import comfyui_version

        return str(comfyui_version.__version__)

    def pack_import_problems(self, pack_dir_name: str) -> list[str]:
        """Log lines saying the pack failed to import or register (the host only logs these)."""
        markers = ("IMPORT FAILED", "Cannot import", "Error while calling comfy_entrypoint", "Skip ")
        return [
            record.getMessage()
            for record in self.logs.records
            if pack_dir_name in record.getMessage() and any(m in record.getMessage() for m in markers)
        ]

    # -- node definitions -----------------------------------------------------------------
    def object_info(self, class_type: str) -> dict[str, Any]:
        """The node definition as GET /object_info serves it."""
        node_class = self.nodes.NODE_CLASS_MAPPINGS[class_type]
        if hasattr(node_class, "GET_NODE_INFO_V1"):
            return dict(node_class.GET_NODE_INFO_V1())
        input_types = node_class.INPUT_TYPES()
        return {
            "input": input_types,
            "input_order": {key: list(value.keys()) for key, value in input_types.items()},
            "output": node_class.RETURN_TYPES,
            "output_name": getattr(node_class, "RETURN_NAMES", node_class.RETURN_TYPES),
            "name": class_type,
        }

    def all_object_info(self) -> dict[str, dict[str, Any]]:
        return {name: self.object_info(name) for name in self.nodes.NODE_CLASS_MAPPINGS}

    # -- running prompts ------------------------------------------------------------------
    def validate(self, prompt: dict[str, Any]) -> RunResult:
        """The host's validate_prompt alone (what the server does before queueing a prompt). Valid
        only when every output is: the host queues a prompt if any output validates, and reports
        the others in node_errors."""
        prompt_id = str(uuid.uuid4())
        valid, error, _, node_errors = asyncio.run(self._execution.validate_prompt(prompt_id, prompt, None))
        valid = bool(valid) and not node_errors
        return RunResult(prompt_id, valid=valid, success=valid, validation_error=None if valid else error,
                         node_errors=node_errors)

    def run(self, prompt: dict[str, Any], preview_method: str | None = None) -> RunResult:
        """Validate and execute an API-format prompt, as the server's queue would.

        preview_method ("latent2rgb", "taesd", ...) turns on latent previews for this prompt, as
        the --preview-method flag (0.3.75) or the frontend's per-prompt setting (newer) does.
        """
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = asyncio.run(self._execution.validate_prompt(prompt_id, prompt, None))
        if not valid:
            return RunResult(prompt_id, valid=False, success=False, validation_error=error, node_errors=node_errors)
        self.server.events = []
        self._progress = []
        self.server.last_prompt_id = prompt_id
        self.executor.history_result = {}
        extra_data: dict[str, Any] = {"client_id": self.server.client_id}
        from comfy.cli_args import LatentPreviewMethod, args

        previous_method = args.preview_method
        if preview_method:
            extra_data["preview_method"] = preview_method
            args.preview_method = LatentPreviewMethod(preview_method)
        try:
            self.executor.execute(prompt, prompt_id, extra_data, outputs)
        finally:
            args.preview_method = previous_method
        execution_error = None
        for event, data in self.executor.status_messages:
            if event == "execution_error":
                execution_error = data
        history = getattr(self.executor, "history_result", None) or {}
        return RunResult(
            prompt_id,
            valid=True,
            success=bool(self.executor.success),
            outputs=dict(history.get("outputs", {})),
            execution_error=execution_error,
            events=list(self.server.events),
            progress=list(self._progress),
        )

    def output_files(self, result: RunResult, node_ids: Collection[str] | None = None) -> list[Path]:
        """Paths of the images SaveImage-style nodes wrote for a result (only those of `node_ids`, when given)."""
        import folder_paths

        files: list[Path] = []
        for node_id, node_output in result.outputs.items():
            if node_ids is not None and node_id not in node_ids:
                continue
            for image in node_output.get("images", []):
                base = Path(folder_paths.get_directory_by_type(image.get("type", "output")))
                files.append(base / image.get("subfolder", "") / image["filename"])
        return files


def pack_module(host_nodes: Any, name: str) -> ModuleType:
    """The pack's submodule `name` of nodes/ (e.g. "engine") as the host imported it.

    host_nodes: the host's `nodes` module. The host imports the pack under a name of its own choosing
    (the folder, or its path), so the package is read off a registered node's module."""
    package = host_nodes.NODE_CLASS_MAPPINGS["IPX2P_Guider"].__module__.rsplit(".", 1)[0]
    qualified = f"{package}.{name}"
    module = sys.modules.get(qualified)
    return module if module is not None else importlib.import_module(qualified)
