"""What a batch job edits: one Row per picture, read from a folder or a manifest file (CSV, JSONL or Parquet).

Why rows carry their own `problem`: one bad cell (a seed of "abc", an empty instruction) must fail only its row, with a
message that names the column and row to fix, while the rest of the job runs. Problems with the whole job (a missing
file, an unknown column, no rows) raise ManifestError instead. Picture files are not opened here: the runner reports a
missing picture on its row. `settings_key` fingerprints everything that decides a row's output, so a resumed job can
skip rows it has already finished and redo exactly those whose inputs changed.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ipx2p_core.image import RESIZE_MODES

DEFAULTS: dict[str, Any] = {"seed": 0, "text_cfg": 7.5, "image_cfg": 1.5, "steps": 100, "resize": "original", "resolution": 512}
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
KNOWN_COLUMNS = ("image", "instruction", "mask", *DEFAULTS, "name")

# Per setting: (kind, lowest, highest, what the message says is expected).
_RULES: dict[str, tuple[str, float, float, str]] = {
    "seed": ("whole", 0, 2**63 - 1, "a whole number >= 0 and < 2**63"),
    "steps": ("whole", 1, 10000, "a whole number from 1 to 10000"),
    "resolution": ("whole", 64, 8192, "a whole number from 64 to 8192"),
    "text_cfg": ("number", 0.0, 100.0, "a number from 0 to 100"),
    "image_cfg": ("number", 0.0, 100.0, "a number from 0 to 100"),
}
_INT_TEXT = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_FLOAT_TEXT = re.compile(r"[+-]?(([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)")  # a dot or an exponent
_PANDAS_INDEX = re.compile(r"__index_level_[0-9]+__")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_CHUNK = 1 << 20


class ManifestError(ValueError):
    """A problem with the whole job; the message names the file, what is wrong and how to fix it."""


@dataclass(frozen=True)
class Row:
    """One picture to edit.

    index: 0-based position in the manifest (or the sorted folder listing); name: the output file stem, unique within
    the job; image/mask: absolute paths (mask None when absent); settings: exactly the DEFAULTS keys, typed;
    extra: "Title.input" -> value, filling input `input` of the workflow node titled `Title`;
    problem: why this row cannot run (it then fails alone with this text), else None.
    """

    index: int
    name: str
    image: str
    instruction: str
    mask: str | None
    settings: dict[str, Any]
    extra: dict[str, Any]
    problem: str | None = None


def _is_empty(value: Any) -> bool:
    """Empty cell, missing key, None or NaN: the row takes the default."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def _convert(key: str, value: Any) -> tuple[Any, str | None]:
    """(typed value, None) or (None, what was expected). Strings come from CSV; numbers from JSONL and Parquet."""
    if key == "resize":
        mode = value.strip().lower() if isinstance(value, str) else None
        if mode in RESIZE_MODES:
            return mode, None
        return None, "one of " + ", ".join(RESIZE_MODES)
    kind, low, high, expected = _RULES[key]
    if isinstance(value, bool):
        return None, expected
    if kind == "whole":
        number: Any = None
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str):
            try:
                exact = Decimal(value.strip())  # exact for big seeds, and "3.0" is 3 while "3.5" is not whole
            except InvalidOperation:
                exact = None
            if exact is not None and exact.is_finite() and exact == exact.to_integral_value():
                number = int(exact)
        if number is None or not low <= number <= high:
            return None, expected
        return number, None
    real: float | None = None
    if isinstance(value, (int, float)):
        real = float(value)
    elif isinstance(value, str):
        try:
            real = float(value.strip())
        except ValueError:
            real = None
    if real is None or not math.isfinite(real) or not low <= real <= high:
        return None, expected
    return real, None


def _merged_defaults(defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """DEFAULTS with the caller's (the CLI's --seed etc.) over them; None means "not given"."""
    merged = dict(DEFAULTS)
    for key, value in (defaults or {}).items():
        if key not in DEFAULTS:
            raise ValueError(f"unknown default {key!r}; the settings are {', '.join(DEFAULTS)}")
        if value is None:
            continue
        typed, expected = _convert(key, value)
        if expected is not None:
            raise ManifestError(f"the default {key} is {value!r}; expected {expected} (fix the {key} option)")
        merged[key] = typed
    return merged


def _absolute(text: str, base: Path) -> str:
    """`~` expanded, relative paths taken from `base` (the manifest's folder), normalised without resolving links."""
    path = Path(os.path.expanduser(text))
    return os.path.abspath(path if path.is_absolute() else base / path)


def _safe_name(text: str) -> str:
    """Only [A-Za-z0-9._-] (others become "_"), no leading dots (no hidden files, no "..")."""
    return _UNSAFE_NAME.sub("_", text).lstrip(".")


def _unique_names(names: list[str]) -> list[str]:
    """Repeats get _2, _3, ... in row order; compared case-insensitively, as macOS and Windows folders do."""
    used: set[str] = set()
    out = []
    for name in names:
        candidate, number = name, 1
        while candidate.lower() in used:
            number += 1
            candidate = f"{name}_{number}"
        used.add(candidate.lower())
        out.append(candidate)
    return out


def _csv_number(text: str) -> Any:
    """A CSV cell for a workflow input: int or float when it reads as one (not "007", which stays text), else text."""
    stripped = text.strip()
    if _INT_TEXT.fullmatch(stripped):
        return int(stripped)
    if _FLOAT_TEXT.fullmatch(stripped):
        return float(stripped)
    return text


def _column_kind(name: str) -> str | None:
    """"known", "extra" (Title.input), "ignored" (pandas' saved index) or None (unknown)."""
    if name in KNOWN_COLUMNS:
        return "known"
    title, dot, field = name.rpartition(".")
    if dot and title.strip() and field.strip():
        return "extra"
    if _PANDAS_INDEX.fullmatch(name):
        return "ignored"
    return None


def _check_column(path: Path, name: str, where: str = "") -> None:
    if _column_kind(name) is None:
        raise ManifestError(
            f"{path}: unknown column {name!r}{where}. Known columns: {', '.join(KNOWN_COLUMNS)}, and 'Title.input' columns "
            "that fill input `input` of the workflow node titled `Title`. Rename or remove the column.")


def _require_columns(path: Path, columns: set[str], instruction: str | None) -> None:
    if "image" not in columns:
        raise ManifestError(f"{path}: no image column; add a column named image with each picture's path "
                            "(relative paths start at the manifest's folder)")
    if "instruction" not in columns and instruction is None:
        raise ManifestError(f"{path}: no instruction column; add one, or pass --instruction to use one instruction for every row")


def _csv_records(path: Path) -> tuple[set[str], list[tuple[str, dict[str, Any], str | None]]]:
    """(columns, [(where, record, problem)]); data rows are numbered 1, 2, ... after the header, blank lines skipped."""
    records: list[tuple[str, dict[str, Any], str | None]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: spreadsheets often write a BOM
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise ManifestError(f"{path}: the file is empty; its first line must name the columns (image,instruction,...)")
            names = [cell.strip() for cell in header]
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ManifestError(f"{path}: column {name!r} appears twice in the header; keep one")
                if name:
                    _check_column(path, name)
                    seen.add(name)
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                where = f"row {len(records) + 1}"
                record: dict[str, Any] = {}
                for column, (name, cell) in enumerate(zip(names, cells), 1):
                    if name:
                        record[name] = cell
                    elif cell.strip():
                        raise ManifestError(f"{path}: {where} has a value in column {column}, which has no name in the header; "
                                            "name the column or empty it")
                problem = None
                if any(cell.strip() for cell in cells[len(names):]):
                    problem = (f"{where} has {len(cells)} cells but the header names {len(names)} columns "
                               "(put quotes around cells that contain commas)")
                records.append((where, record, problem))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    except csv.Error as error:
        raise ManifestError(f"{path}: not readable as CSV ({error}); save it as plain comma-separated UTF-8") from None
    return seen, records


def _jsonl_records(path: Path) -> tuple[set[str], list[tuple[str, dict[str, Any], str | None]]]:
    """(columns, [(where, record, None)]) with one record per non-blank line, numbered by line."""
    records: list[tuple[str, dict[str, Any], str | None]] = []
    columns: set[str] = set()
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ManifestError(f"{path}: line {number} is not valid JSON ({error.msg}); "
                                        "write one JSON object per line, like {\"image\": \"a.png\", \"instruction\": \"...\"}") from None
                if not isinstance(record, dict):
                    raise ManifestError(f"{path}: line {number} is a JSON {type(record).__name__}, not an object; "
                                        "write one JSON object per line, like {\"image\": \"a.png\", \"instruction\": \"...\"}")
                for name in record:
                    _check_column(path, name, f" on line {number}")
                columns.update(record)
                records.append((f"line {number}", record, None))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text; save the JSONL file as UTF-8") from None
    return columns, records


def _parquet_records(path: Path) -> tuple[set[str], list[tuple[str, dict[str, Any], str | None]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ManifestError(f"{path}: reading Parquet manifests needs pyarrow: pip install 'comfyui-ipx2p[batch]' "
                            "(or pip install pyarrow), or save the manifest as CSV or JSONL") from None
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises its own error types (ArrowInvalid, OSError) for unreadable files
        raise ManifestError(f"{path}: not readable as Parquet ({error}); write it again or save the manifest as CSV") from None
    columns = set(table.column_names)
    for name in table.column_names:
        _check_column(path, name)
    return columns, [(f"row {number}", record, None) for number, record in enumerate(table.to_pylist(), 1)]


def _row(index: int, where: str, record: Mapping[str, Any], base: Path, instruction: str | None, defaults: dict[str, Any],
         from_csv: bool, problem: str | None) -> tuple[Row, str]:
    """The Row for one record and its wanted (not yet unique) name; every bad value adds to the row's problem."""
    problems = [problem] if problem else []

    def fix(column: str) -> str:
        return f"fix the manifest's {column} column in {where}"

    image = ""
    raw = record.get("image")
    if _is_empty(raw):
        problems.append(f"image is empty; expected a picture's path ({fix('image')})")
    elif not isinstance(raw, str):
        problems.append(f"image is {raw!r}; expected a picture's path ({fix('image')})")
    else:
        image = _absolute(raw.strip(), base)

    text = ""
    raw = record.get("instruction")
    if not _is_empty(raw):
        if isinstance(raw, str):
            text = raw.strip()
        else:
            problems.append(f"instruction is {raw!r}; expected text ({fix('instruction')})")
    elif instruction is not None:
        text = instruction
    else:
        problems.append(f"instruction is empty; write one in the manifest's instruction column in {where}, or pass --instruction")

    mask = None
    raw = record.get("mask")
    if not _is_empty(raw):
        if isinstance(raw, str):
            mask = _absolute(raw.strip(), base)
        else:
            problems.append(f"mask is {raw!r}; expected a picture's path or an empty cell ({fix('mask')})")

    settings = dict(defaults)
    for key in DEFAULTS:
        raw = record.get(key)
        if _is_empty(raw):
            continue
        typed, expected = _convert(key, raw)
        if expected is None:
            settings[key] = typed
        else:  # the setting keeps its default so the row stays well-typed; the problem fails the row
            problems.append(f"{key} is {raw!r}; expected {expected} ({fix(key)})")

    extra = {}
    for name, value in record.items():
        if _column_kind(name) != "extra" or _is_empty(value):
            continue
        extra[name] = _csv_number(value) if from_csv and isinstance(value, str) else value

    raw = record.get("name")
    wanted = "" if _is_empty(raw) else _safe_name(str(raw).strip())
    if not wanted and image:
        wanted = _safe_name(Path(image).stem)
    wanted = wanted or f"row{index + 1}"
    row = Row(index=index, name=wanted, image=image, instruction=text, mask=mask, settings=settings, extra=extra,
              problem="; ".join(problems) or None)
    return row, wanted


def _folder_rows(folder: Path, instruction: str | None, defaults: dict[str, Any]) -> list[Row]:
    if instruction is None:
        raise ManifestError(f"{folder} is a folder of pictures; pass --instruction to say what to do to every picture "
                            "(or use a CSV/JSONL manifest with an instruction column)")
    pictures = sorted((path for path in folder.iterdir()
                       if path.is_file() and path.suffix.lower() in PICTURE_SUFFIXES and not path.name.startswith(".")),
                      key=lambda path: path.name)
    if not pictures:
        raise ManifestError(f"{folder}: no pictures directly in this folder (looked for {', '.join(PICTURE_SUFFIXES)}); "
                            "pass the folder that holds them")
    names = _unique_names([_safe_name(path.stem) or f"row{number + 1}" for number, path in enumerate(pictures)])
    return [Row(index=number, name=name, image=os.path.abspath(path), instruction=instruction, mask=None,
                settings=dict(defaults), extra={})
            for number, (path, name) in enumerate(zip(pictures, names))]


def read_manifest(source: str | Path, instruction: str | None = None, defaults: Mapping[str, Any] | None = None) -> list[Row]:
    """The job's rows from a folder of pictures or a .csv, .jsonl or .parquet manifest.

    `instruction` (the CLI's --instruction) is required for a folder and fills empty instruction cells in a manifest.
    `defaults` (the CLI's --seed etc., None for "not given") go over DEFAULTS and fill empty setting cells.
    Raises ManifestError for problems with the whole job; a bad cell sets that row's `problem` instead.
    """
    if instruction is not None and not instruction.strip():
        instruction = None
    elif instruction is not None:
        instruction = instruction.strip()
    merged = _merged_defaults(defaults)
    path = Path(os.path.expanduser(str(source)))
    path = Path(os.path.abspath(path))
    if not path.exists():
        raise ManifestError(f"{path} does not exist; pass a folder of pictures or a .csv, .jsonl or .parquet manifest")
    if path.is_dir():
        return _folder_rows(path, instruction, merged)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        columns, records = _csv_records(path)
    elif suffix == ".jsonl":
        columns, records = _jsonl_records(path)
    elif suffix == ".parquet":
        columns, records = _parquet_records(path)
    else:
        raise ManifestError(f"{path}: manifests must be {', '.join(MANIFEST_SUFFIXES)} files (or pass a folder of pictures); "
                            f"{suffix or 'no suffix'} is not one of them")
    _require_columns(path, columns, instruction)
    if not records:
        raise ManifestError(f"{path}: no rows; add one row per picture to edit")
    base = path.parent
    built = [_row(index, where, record, base, instruction, merged, suffix == ".csv", problem)
             for index, (where, record, problem) in enumerate(records)]
    names = _unique_names([wanted for _, wanted in built])
    return [Row(index=row.index, name=name, image=row.image, instruction=row.instruction, mask=row.mask,
                settings=row.settings, extra=row.extra, problem=row.problem)
            for (row, _), name in zip(built, names)]


def _file_part(path: str | None, absent: str) -> str:
    """A file's sha256 (read in chunks), "missing:<path>" when it cannot be read, `absent` when there is no path."""
    if path is None:
        return absent
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return f"missing:{path}"
    return "sha256:" + digest.hexdigest()


def settings_key(row: Row, model_id: str, workflow_id: str) -> str:
    """A sha256 hex over everything that decides the row's output: the picture's and mask's bytes (not their paths, so
    renaming a file keeps its key), the instruction, settings, extra inputs, the model id and the workflow id.

    Each part goes in with its length so no two different inputs can run together into the same bytes.
    """
    parts = [
        _file_part(row.image or None, "missing:"),
        _file_part(row.mask, "none"),
        row.instruction,
        json.dumps(row.settings, sort_keys=True),
        json.dumps(row.extra, sort_keys=True, default=str),
        model_id,
        workflow_id,
    ]
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", errors="surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
