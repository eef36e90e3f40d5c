"""What a batch job has done: one record per finished row, kept so a stopped job resumes where it stopped.

Rows finish into a journal (results.jsonl, appended and synced row by row), so stopping the job at any moment loses
no finished row. At the end the records become a table (results.parquet, one row per manifest row). On resume,
`finished` trusts a record only while its output file still exists with the same sha256, and `plan` skips exactly the
rows whose settings key (see manifest.settings_key) matches such a record. pyarrow is used when installed; without it
the pure-Python writer in batch.parquet makes the table, so the local engine needs nothing beyond the pack.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ipx2p_tools.batch import parquet
from ipx2p_tools.batch.manifest import Row

RESULT_COLUMNS: list[tuple[str, str]] = [
    ("index", "int64"), ("name", "string"), ("image", "string"), ("instruction", "string"), ("mask", "string"),
    ("seed", "int64"), ("text_cfg", "double"), ("image_cfg", "double"), ("steps", "int64"), ("resize", "string"),
    ("resolution", "int64"), ("extra", "string"), ("status", "string"), ("error", "string"), ("seconds", "double"),
    ("output", "string"), ("sha256", "string"), ("key", "string"), ("worker", "string"),
]
STATUSES = ("ok", "failed")
JOURNAL_NAME = "results.jsonl"
TABLE_NAME = "results.parquet"
_CHUNK = 1 << 20


def record_for(row: Row, key: str, status: str, error: str = "", seconds: float = 0.0, output: str = "", sha256: str = "",
               worker: str = "") -> dict[str, Any]:
    """The result record of one row, with exactly the RESULT_COLUMNS keys.

    mask is "" when the row has none, extra is JSON text, status is "ok" or "failed"; `output` is the output file's
    path relative to the output folder, `sha256` its digest, `worker` who ran it (free text).
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    return {
        "index": row.index, "name": row.name, "image": row.image, "instruction": row.instruction, "mask": row.mask or "",
        "seed": row.settings["seed"], "text_cfg": row.settings["text_cfg"], "image_cfg": row.settings["image_cfg"],
        "steps": row.settings["steps"], "resize": row.settings["resize"], "resolution": row.settings["resolution"],
        "extra": json.dumps(row.extra, sort_keys=True, default=str), "status": status, "error": error,
        "seconds": float(seconds), "output": output, "sha256": sha256, "key": key, "worker": worker,
    }


def _fsync_dir(folder: Path) -> None:
    """Make a new directory entry durable where the platform allows it (POSIX); elsewhere a no-op."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


class Journal:
    """results.jsonl in the output folder: one JSON record per finished row, appended and flushed (os.fsync) as rows
    finish, so a job stopped at any moment keeps every row it finished."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / JOURNAL_NAME

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one record and sync it to disk before returning.

        If an earlier run was killed mid-write the file ends without a newline; the record then starts on a new line
        so the torn fragment stays alone (and is skipped by `records`) instead of spoiling this record too.
        """
        text = json.dumps(dict(record), ensure_ascii=False)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (an undecodable file name): escape it so the line stays UTF-8
            data = json.dumps(dict(record)).encode("ascii")
        line = data + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with self.path.open("ab") as handle:
            if handle.tell() > 0:
                with self.path.open("rb") as reader:
                    reader.seek(-1, os.SEEK_END)
                    if reader.read(1) != b"\n":
                        line = b"\n" + line
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_dir(self.path.parent)

    def records(self) -> list[dict[str, Any]]:
        """Every record in order; a line that is not a whole JSON object (a write torn by a kill) is skipped."""
        if not self.path.exists():
            return []
        out = []
        with self.path.open("rb") as handle:
            for raw in handle:
                try:
                    record = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    continue
                if isinstance(record, dict):
                    out.append(record)
        return out


def file_sha256(path: str | Path) -> str:
    """sha256 hex of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _pyarrow() -> tuple[Any, Any] | None:
    """(pyarrow, pyarrow.parquet) when installed, else None; imported here so the pack never needs it."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        return None
    return pyarrow, pyarrow.parquet


def finished(output_dir: Path) -> dict[str, dict[str, Any]]:
    """key -> record of every earlier "ok" record whose output file (output_dir / record["output"]) still exists with the
    recorded sha256. Records come from the journal and from results.parquet (read with pyarrow, or the pure reader when
    pyarrow is missing; an unreadable table is skipped, the journal holds the same rows). Failed records never count,
    so their rows run again on resume.
    """
    output_dir = Path(output_dir)
    records: list[dict[str, Any]] = []
    table = output_dir / TABLE_NAME
    if table.exists():
        with contextlib.suppress(Exception):  # pyarrow raises its own error types; a bad table must not stop a resume
            records += read_results(table)
    records += Journal(output_dir).records()
    digests: dict[Path, str | None] = {}
    done: dict[str, dict[str, Any]] = {}
    for record in records:
        key, output, sha256 = record.get("key"), record.get("output"), record.get("sha256")
        if record.get("status") != "ok" or not key or not output or not sha256:
            continue
        path = output_dir / str(output)
        if path not in digests:
            try:
                digests[path] = file_sha256(path) if path.is_file() else None
            except OSError:
                digests[path] = None
        if digests[path] == sha256:
            done[str(key)] = record
    return done


def plan(rows: list[Row], keys: list[str], done: Mapping[str, Mapping[str, Any]]) -> tuple[list[int], dict[int, dict[str, Any]]]:
    """(indices of the rows to run, {index: kept record}) for a resumed job.

    A row whose key is in `done` is skipped; its earlier record is kept, re-labelled with this row's index, name,
    image and mask (the key covers the files' bytes, so they may have been renamed); `output` keeps the earlier
    file's name. Rows with a problem always run (to fail with it): their settings hold stand-in defaults, so their key
    says nothing about them.
    """
    if len(rows) != len(keys):
        raise ValueError(f"plan needs one key per row, got {len(keys)} keys for {len(rows)} rows")
    to_run: list[int] = []
    kept: dict[int, dict[str, Any]] = {}
    for row, key in zip(rows, keys):
        if row.problem is None and key in done:
            record = dict(done[key])
            record.update(index=row.index, name=row.name, image=row.image, mask=row.mask or "")
            kept[row.index] = record
        else:
            to_run.append(row.index)
    return to_run, kept


def _table_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per index (the last record wins), sorted by index, with exactly the RESULT_COLUMNS keys."""
    by_index: dict[int, Mapping[str, Any]] = {}
    for record in records:
        if record.get("index") is None:
            raise ValueError(f"a result record has no index: {dict(record)!r}")
        by_index[int(record["index"])] = record
    rows = []
    for index in sorted(by_index):
        record = by_index[index]
        row: dict[str, Any] = {}
        for name, ctype in RESULT_COLUMNS:
            value = record.get(name)
            if ctype == "string" and isinstance(value, (dict, list)):
                value = json.dumps(value, sort_keys=True, default=str)
            elif ctype == "string" and value is not None and not isinstance(value, str):
                value = str(value)
            elif ctype == "double" and isinstance(value, int):
                value = float(value)
            row[name] = value
        row["index"] = index
        rows.append(row)
    return rows


def write_results(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """The results table at `path`: one row per index (the last record for an index wins), sorted by index, columns
    RESULT_COLUMNS, no nulls (None becomes 0, NaN or ""). Written to a temporary file beside it, synced, then moved over
    `path` (os.replace), so a reader never sees half a table. pyarrow writes it when installed, else batch.parquet.
    """
    path = Path(path)
    rows = _table_rows(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        modules = _pyarrow()
        if modules is None:
            parquet.write_table(temp, RESULT_COLUMNS, rows)
        else:
            pa, pq = modules
            types = {"int64": pa.int64(), "double": pa.float64(), "string": pa.string()}
            defaults: dict[str, Any] = {"int64": 0, "double": float("nan"), "string": ""}
            schema = pa.schema([pa.field(name, types[ctype], nullable=False) for name, ctype in RESULT_COLUMNS])
            filled = [{name: defaults[ctype] if row[name] is None else row[name] for name, ctype in RESULT_COLUMNS} for row in rows]
            pq.write_table(pa.Table.from_pylist(filled, schema=schema), temp)
        with temp.open("rb+") as synced:
            os.fsync(synced.fileno())
        umask = os.umask(0)
        os.umask(umask)
        temp.chmod(0o666 & ~umask)  # mkstemp's file is private (0600); the table is an ordinary output file
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_dir(path.parent)


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of a results table as dicts (pyarrow when installed, else batch.parquet, which reads what it wrote)."""
    modules = _pyarrow()
    if modules is None:
        return parquet.read_table(path)[1]
    rows: list[dict[str, Any]] = modules[1].read_table(path).to_pylist()
    return rows
