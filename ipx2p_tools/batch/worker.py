"""The per-row work of a batch job, the same on both engines: one in-process ComfyUI (the session
the CLI edit uses), the model loaded once, one prompt per row.

A row never raises out of `BatchWorker.process`: whatever stops it (a missing or unreadable
picture, a bad setting, the host's own refusal) becomes a "failed" record with the error text,
and the next row runs. Only the process dying stops a worker (the Ray engine then restarts it).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ipx2p_tools.batch.manifest import Row
from ipx2p_tools.batch.results import file_sha256, record_for
from ipx2p_tools.layout import REPO_ROOT

DEFAULT_WORKFLOW = REPO_ROOT / "workflows" / "ip2p_edit.json"
# What a row fills, by role (UI format: properties.ipx2p_role; API format: the node's title).
ROW_ROLES = ("checkpoint", "image", "instruction", "encode", "edit", "mask", "save")
WORKERS_DIR = ".ipx2p-batch/workers"


class RowFailed(Exception):
    """Why one row could not be edited, in words; the row is recorded as failed."""


@dataclass(frozen=True)
class JobConfig:
    """What every worker of a job needs: plain values, so Ray can ship it to other machines."""

    checkpoint: str  # absolute path of the checkpoint file
    workflow: str  # absolute path of the workflow file
    output_dir: str
    threads: int = 0  # torch threads per worker (0: all the cores of the machine it runs on)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_id(path: Path, head_bytes: int = 1 << 20) -> str:
    """A content id of a (large) file without reading all of it: its size and the sha256 of its
    first MiB (a checkpoint's header and first tensors) and last MiB."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(head_bytes))
        if size > 2 * head_bytes:
            handle.seek(size - head_bytes)
            digest.update(handle.read(head_bytes))
    return digest.hexdigest()


def row_to_json(row: Row) -> str:
    return json.dumps(asdict(row), sort_keys=True, default=str)


def row_from_json(text: str) -> Row:
    return Row(**json.loads(text))


def check_picture(kind: str, path: str) -> None:
    """RowFailed unless `path` is a picture Pillow can decode."""
    from PIL import Image

    file = Path(path)
    if not file.is_file():
        raise RowFailed(f"{kind} {path}: no such file")
    try:
        with Image.open(file) as picture:
            picture.load()
    except Exception as error:  # Pillow raises many types for damaged files
        raise RowFailed(f"{kind} {path}: not a picture Pillow can read ({type(error).__name__}: {error})") from None


class BatchWorker:
    """One worker: a booted host with the job's workflow; `process` edits one row."""

    def __init__(self, config: JobConfig) -> None:
        from ipx2p_tools.session import EditSession

        import torch

        # The same thread count on both engines by default (a Ray actor would otherwise get one thread
        # per reserved CPU): float sums split over another count of threads round differently, and a
        # row must give the same picture locally and on Ray.
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.work = Path(tempfile.mkdtemp(prefix="ipx2p-batch-"))
        checkpoint = Path(config.checkpoint)
        self.session = EditSession(self.work, checkpoint_dirs=[checkpoint.parent])
        import comfy.utils

        comfy.utils.set_progress_bar_enabled(False)  # the job's own bar counts rows; the host's would count steps
        self.template = self.session.workflow(Path(config.workflow))
        self.checkpoint_name = checkpoint.name
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        # Each worker process says it is there (tests and operators find workers by process id).
        registry = self.output_dir / WORKERS_DIR
        registry.mkdir(parents=True, exist_ok=True)
        (registry / f"{os.getpid()}.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                                  "started": time.time()}))

    def process(self, row: Row, key: str) -> dict[str, Any]:
        """The row's record: "ok" with the output's file name and sha256, or "failed" with why."""
        started = time.monotonic()
        try:
            output, digest = self._edit(row)
        except RowFailed as error:
            return record_for(row, key, "failed", error=str(error), seconds=time.monotonic() - started, worker=self.name)
        except Exception as error:  # the host's refusal (SessionError) or anything else: this row only
            text = str(error) if type(error).__name__ == "SessionError" else f"{type(error).__name__}: {error}"
            return record_for(row, key, "failed", error=text, seconds=time.monotonic() - started, worker=self.name)
        return record_for(row, key, "ok", seconds=time.monotonic() - started, output=output, sha256=digest, worker=self.name)

    def _edit(self, row: Row) -> tuple[str, str]:
        from ipx2p_tools.session import configure
        from ipx2p_tools.workflow import WorkflowError

        if row.problem:
            raise RowFailed(row.problem)
        check_picture("image", row.image)
        if row.mask:
            check_picture("mask", row.mask)
        workflow = copy.deepcopy(self.template)
        image = Path(row.image)
        inputs = [self.session.add_input(image, f"{row.name}{image.suffix.lower()}")]
        settings = row.settings
        try:
            configure(workflow, {
                "checkpoint": {"ckpt_name": self.checkpoint_name},
                "image": {"image": inputs[0]},
                "instruction": {"text": row.instruction},
                "encode": {"resize": settings["resize"], "resolution": settings["resolution"]},
                "edit": {"seed": settings["seed"], "steps": settings["steps"], "text_cfg": settings["text_cfg"],
                         "image_cfg": settings["image_cfg"]},
                "guider": {"text_cfg": settings["text_cfg"], "image_cfg": settings["image_cfg"]},
                "noise": {"noise_seed": settings["seed"]},
                "scheduler": {"steps": settings["steps"]},
                "save": {"filename_prefix": f"ipx2p_batch_{row.name}"},
            }, required=("checkpoint", "image", "instruction"))
            if row.mask:
                inputs.append(self.session.add_input(Path(row.mask), f"{row.name}_mask{Path(row.mask).suffix.lower()}"))
                self._set_mask(workflow, inputs[-1])
            for column, value in row.extra.items():
                title, _, input_name = column.partition(".")
                if title not in workflow.roles:
                    raise RowFailed(f"column {column!r}: the workflow has no node titled {title!r} "
                                    f"(titled nodes: {', '.join(sorted(workflow.roles)) or 'none'})")
                if input_name not in workflow.node(title)["inputs"] and not self._declares(workflow, title, input_name):
                    raise RowFailed(f"column {column!r}: node {title!r} ({workflow.node(title)['class_type']}) has no "
                                    f"input {input_name!r}")
                workflow.set(title, input_name, value)
        except WorkflowError as error:
            raise RowFailed(str(error)) from None
        try:
            files = self._saved(workflow)
        finally:
            for name in inputs:
                (self.session.input_dir / name).unlink(missing_ok=True)
        if len(files) != 1:
            for file in files:
                file.unlink(missing_ok=True)
            raise RowFailed(f"the workflow saved {len(files)} pictures for this row; a row makes one (title the node "
                            "whose picture is the row's result 'save', and give it a batch of one)")
        target = self.output_dir / f"{row.name}.png"
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        partial.write_bytes(files[0].read_bytes())
        os.replace(partial, target)  # a reader never sees half a picture
        files[0].unlink(missing_ok=True)
        return target.name, file_sha256(target)

    def _declares(self, workflow: Any, role: str, input_name: str) -> bool:
        node = workflow.node(role)
        info = self.session.object_info.get(node["class_type"], {}).get("input", {})
        return any(input_name in info.get(section, {}) for section in ("required", "optional"))

    def _set_mask(self, workflow: Any, name: str) -> None:
        """The row's mask file on the workflow's node titled "mask" (a LoadImageMask or LoadImage);
        the built-in edit gets one: LoadImageMask (red channel: white = edit) on the Edit's mask."""
        if "mask" in workflow.roles:
            workflow.set("mask", "image", name)
            return
        if "edit" not in workflow.roles or workflow.node("edit")["class_type"] != "IPX2P_Edit":
            raise RowFailed("the row has a mask but the workflow has no node titled 'mask' (add a Load Image (as Mask) "
                            "node titled mask, linked to the edit's mask input)")
        node_id = "ipx2p_batch_mask"
        workflow.prompt[node_id] = {"class_type": "LoadImageMask", "inputs": {"image": name, "channel": "red"},
                                    "_meta": {"title": "mask"}}
        workflow.node("edit")["inputs"]["mask"] = [node_id, 0]

    def _saved(self, workflow: Any) -> list[Path]:
        """Run the row's prompt; the pictures of its "save" node (or of every save node when none
        is titled so)."""
        result = self.session.host.run(workflow.prompt)
        if not result.success:
            raise RowFailed("ComfyUI reported: " + result.error_text().strip())
        files = self.session.host.output_files(result)
        if "save" in workflow.roles:
            kept = self.session.host.output_files(result, {workflow.roles["save"]})
            for file in files:
                if file not in kept:
                    file.unlink(missing_ok=True)
            files = kept
        return files
