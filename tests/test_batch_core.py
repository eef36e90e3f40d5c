"""The batch runner's plain-Python core: manifests, settings keys, the journal, resume planning and the results table.

No host and no ray: these run anywhere. pyarrow-based checks skip when pyarrow is not installed; the pure-Python
Parquet path is checked with pyarrow hidden.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ipx2p_tools.batch import parquet, results
from ipx2p_tools.batch.manifest import DEFAULTS, ManifestError, Row, read_manifest, settings_key
from ipx2p_tools.batch.results import RESULT_COLUMNS, Journal, finished, plan, read_results, record_for, write_results

REPO = Path(__file__).resolve().parents[1]


def _pyarrow() -> Any:
    return pytest.importorskip("pyarrow")


def _picture(path: Path, content: bytes = b"picture") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def _write_parquet_manifest(path: Path, records: list[dict[str, Any]]) -> Path:
    pa = _pyarrow()
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def _nan_safe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN != NaN, so compare NaN as a marker."""
    return [{key: "NaN" if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()} for row in rows]


def test_modules_import_nothing_heavy():
    """Importing the batch core loads no ComfyUI, torch, ray or pyarrow (pyarrow only inside the functions that use it)."""
    code = ("import sys; import ipx2p_tools.batch.manifest, ipx2p_tools.batch.results, ipx2p_tools.batch.parquet; "
            "heavy = ('torch', 'ray', 'pyarrow', 'comfy', 'nodes', 'folder_paths', 'comfy_api'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------------------------------
# Folders


def test_folder_rows_are_the_pictures_sorted_by_name(tmp_path):
    for name in ("b.png", "a.JPG", "c.webp", "notes.txt", ".hidden.png"):
        _picture(tmp_path / name)
    _picture(tmp_path / "sub" / "d.png")
    rows = read_manifest(tmp_path, instruction="make it snowy")
    assert [row.name for row in rows] == ["a", "b", "c"]
    assert [row.index for row in rows] == [0, 1, 2]
    assert rows[0].image == str(tmp_path / "a.JPG")
    assert all(row.instruction == "make it snowy" and row.settings == DEFAULTS and row.problem is None for row in rows)
    assert all(row.mask is None and row.extra == {} for row in rows)


def test_folder_takes_defaults(tmp_path):
    _picture(tmp_path / "a.png")
    (row,) = read_manifest(tmp_path, instruction="x", defaults={"seed": 7, "steps": "20", "text_cfg": None})
    assert row.settings == {**DEFAULTS, "seed": 7, "steps": 20}


def test_folder_needs_an_instruction(tmp_path):
    _picture(tmp_path / "a.png")
    with pytest.raises(ManifestError, match="--instruction"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError, match="--instruction"):
        read_manifest(tmp_path, instruction="  ")


def test_folder_without_pictures_is_a_job_error(tmp_path):
    _picture(tmp_path / "notes.txt")
    with pytest.raises(ManifestError, match="no pictures"):
        read_manifest(tmp_path, instruction="x")


def test_missing_source_and_unknown_suffix(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "m.json").write_text("[]")
    with pytest.raises(ManifestError, match=".jsonl"):
        read_manifest(tmp_path / "m.json")


def test_bad_default_is_a_job_error(tmp_path):
    _picture(tmp_path / "a.png")
    with pytest.raises(ManifestError, match="steps"):
        read_manifest(tmp_path, instruction="x", defaults={"steps": 0})
    with pytest.raises(ValueError, match="unknown default"):
        read_manifest(tmp_path, instruction="x", defaults={"cfg": 1})


# --------------------------------------------------------------------------------------------------------------------
# Manifest files

RECORDS: list[dict[str, Any]] = [
    {"image": "pics/a.png", "instruction": "make it snowy", "mask": "masks/a.png", "seed": 3, "text_cfg": 6.5, "image_cfg": 1.25,
     "steps": 20, "resize": "keep", "resolution": 768, "name": "first", "Sampler.denoise": 0.5, "Note.text": "hello"},
    {"image": "pics/b.png", "instruction": "make it sunny", "mask": None, "seed": None, "text_cfg": None, "image_cfg": None,
     "steps": None, "resize": None, "resolution": None, "name": None, "Sampler.denoise": None, "Note.text": "x y"},
]


def _csv_cell(value: Any) -> str:
    return "" if value is None else str(value)


def _manifest(tmp_path: Path, kind: str, records: list[dict[str, Any]]) -> Path:
    if kind == "csv":
        header = list(records[0])
        return _write_csv(tmp_path / "m.csv", header, [[_csv_cell(record.get(key)) for key in header] for record in records])
    if kind == "jsonl":
        return _write_jsonl(tmp_path / "m.jsonl", [{k: v for k, v in record.items() if v is not None} for record in records])
    return _write_parquet_manifest(tmp_path / "m.parquet", records)


def _parquet_or_skip(kind: str) -> None:
    if kind == "parquet":
        _pyarrow()


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_manifest_formats_give_the_same_rows(tmp_path, kind):
    _parquet_or_skip(kind)
    rows = read_manifest(_manifest(tmp_path, kind, RECORDS))
    expected = [
        Row(index=0, name="first", image=str(tmp_path / "pics" / "a.png"), instruction="make it snowy",
            mask=str(tmp_path / "masks" / "a.png"),
            settings={"seed": 3, "text_cfg": 6.5, "image_cfg": 1.25, "steps": 20, "resize": "keep", "resolution": 768},
            extra={"Sampler.denoise": 0.5, "Note.text": "hello"}),
        Row(index=1, name="b", image=str(tmp_path / "pics" / "b.png"), instruction="make it sunny", mask=None,
            settings=dict(DEFAULTS), extra={"Note.text": "x y"}),
    ]
    assert rows == expected
    assert type(rows[0].settings["seed"]) is int and type(rows[0].settings["text_cfg"]) is float


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_defaults_fill_empty_cells(tmp_path, kind):
    _parquet_or_skip(kind)
    records = [{"image": "a.png", "instruction": "x", "seed": 5, "text_cfg": 2.0},
               {"image": "b.png", "instruction": "y", "seed": None, "text_cfg": math.nan if kind == "parquet" else None}]
    rows = read_manifest(_manifest(tmp_path, kind, records), defaults={"seed": 11, "text_cfg": 4, "steps": 30, "resize": None})
    assert rows[0].settings == {**DEFAULTS, "seed": 5, "text_cfg": 2.0, "steps": 30}
    assert rows[1].settings == {**DEFAULTS, "seed": 11, "text_cfg": 4.0, "steps": 30}
    assert rows[1].problem is None


def test_instruction_argument_fills_empty_instruction_cells(tmp_path):
    path = _write_csv(tmp_path / "m.csv", ["image", "instruction"], [["a.png", ""], ["b.png", "own words"]])
    rows = read_manifest(path, instruction="default words")
    assert [row.instruction for row in rows] == ["default words", "own words"]
    path = _write_csv(tmp_path / "n.csv", ["image"], [["a.png"]])
    assert read_manifest(path, instruction="x")[0].instruction == "x"


@pytest.mark.parametrize(("column", "value", "expected"), [
    ("seed", "abc", "a whole number >= 0"),
    ("seed", "-1", "a whole number >= 0"),
    ("seed", "3.5", "a whole number >= 0"),
    ("seed", str(2**63), "a whole number >= 0"),
    ("steps", "0", "a whole number from 1 to 10000"),
    ("steps", "10001", "a whole number from 1 to 10000"),
    ("resolution", "63", "a whole number from 64 to 8192"),
    ("resolution", "8200", "a whole number from 64 to 8192"),
    ("text_cfg", "nan", "a number from 0 to 100"),
    ("text_cfg", "100.5", "a number from 0 to 100"),
    ("image_cfg", "-0.5", "a number from 0 to 100"),
    ("image_cfg", "lots", "a number from 0 to 100"),
    ("resize", "huge", "one of original, keep, long_side"),
])
def test_a_bad_value_fails_only_its_row(tmp_path, column, value, expected):
    cells = [["a.png", "x", ""], ["b.png", "y", value], ["c.png", "z", ""]]
    rows = read_manifest(_write_csv(tmp_path / "m.csv", ["image", "instruction", column], cells))
    assert rows[0].problem is None and rows[2].problem is None
    assert rows[1].problem is not None
    assert f"{column} is {value!r}; expected {expected}" in rows[1].problem
    assert f"fix the manifest's {column} column in row 2" in rows[1].problem
    assert rows[1].settings == DEFAULTS  # stand-in defaults keep the row well-typed


def test_bad_value_in_jsonl_names_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"image": "a.png", "instruction": "x"}\n\n{"image": "b.png", "instruction": "y", "steps": true}\n')
    rows = read_manifest(path)
    assert rows[0].problem is None
    assert rows[1].problem is not None and "steps is True" in rows[1].problem and "line 3" in rows[1].problem


@pytest.mark.parametrize(("column", "value", "typed"), [
    ("seed", "3.0", 3), ("seed", " 42 ", 42), ("seed", str(2**63 - 1), 2**63 - 1), ("steps", "1e2", 100),
    ("text_cfg", "0", 0.0), ("image_cfg", "100", 100.0), ("resize", "Long_Side", "long_side"), ("resolution", "64", 64),
])
def test_good_values_are_typed(tmp_path, column, value, typed):
    (row,) = read_manifest(_write_csv(tmp_path / "m.csv", ["image", "instruction", column], [["a.png", "x", value]]))
    assert row.problem is None
    assert row.settings[column] == typed and type(row.settings[column]) is type(typed)


def test_empty_image_or_instruction_is_a_row_problem(tmp_path):
    path = _write_csv(tmp_path / "m.csv", ["image", "instruction"], [["a.png", "x"], ["", "y"], ["c.png", " "]])
    rows = read_manifest(path)
    assert rows[0].problem is None
    assert rows[1].problem is not None and "image is empty" in rows[1].problem and "row 2" in rows[1].problem
    assert rows[2].problem is not None and "instruction is empty" in rows[2].problem and "--instruction" in rows[2].problem
    assert len({row.name for row in rows}) == 3


def test_extra_cells_in_a_csv_row_are_a_row_problem(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("image,instruction\na.png,make it red, and blue\nb.png,ok\n")
    rows = read_manifest(path)
    assert rows[0].problem is not None and "quotes" in rows[0].problem
    assert rows[1].problem is None


def test_csv_extra_values_become_numbers_when_they_read_as_numbers(tmp_path):
    path = _write_csv(tmp_path / "m.csv", ["image", "instruction", "A.i", "A.f", "A.s", "A.z"],
                      [["a.png", "x", "12", "0.25", "abc", "007"]])
    assert read_manifest(path)[0].extra == {"A.i": 12, "A.f": 0.25, "A.s": "abc", "A.z": "007"}
    path = _write_csv(tmp_path / "n.csv", ["image", "instruction", "A.e", "A.n", "A.t"], [["a.png", "x", "1e3", "-4", " 5 "]])
    assert read_manifest(path)[0].extra == {"A.e": 1000.0, "A.n": -4, "A.t": 5}


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_unknown_column_is_a_job_error(tmp_path, kind):
    _parquet_or_skip(kind)
    with pytest.raises(ManifestError, match="unknown column 'prompt'.*Known columns: image, instruction"):
        read_manifest(_manifest(tmp_path, kind, [{"image": "a.png", "instruction": "x", "prompt": "y"}]))


def test_unknown_jsonl_key_names_its_line(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "instruction": "x"}, {"image": "b.png", "instruction": "y", "sed": 1}])
    with pytest.raises(ManifestError, match="'sed' on line 2"):
        read_manifest(path)


def test_required_columns(tmp_path):
    with pytest.raises(ManifestError, match="no image column"):
        read_manifest(_write_csv(tmp_path / "a.csv", ["instruction"], [["x"]]))
    with pytest.raises(ManifestError, match="no instruction column.*--instruction"):
        read_manifest(_write_csv(tmp_path / "b.csv", ["image"], [["a.png"]]))
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(_write_csv(tmp_path / "c.csv", ["image", "instruction"], []))


@pytest.mark.parametrize(("text", "line"), [('{"image": "a.png", "instruction": "x"}\n{"image": \n', 2), ('\n\n["a.png"]\n', 3)])
def test_jsonl_line_that_is_not_an_object_is_a_job_error(tmp_path, text, line):
    path = tmp_path / "m.jsonl"
    path.write_text(text)
    with pytest.raises(ManifestError, match=f"line {line}"):
        read_manifest(path)


def test_parquet_manifest_without_pyarrow(tmp_path, monkeypatch):
    (tmp_path / "m.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ManifestError, match="needs pyarrow: pip install"):
        read_manifest(tmp_path / "m.parquet")


def test_names_are_safe_and_unique(tmp_path):
    cells = [["x/a.png", ""], ["y/a.png", ""], ["z/A.png", ""], ["b.png", "a_2"], ["c.png", "my picture/../1"], ["d.png", ".."],
             ["e.png", "a"]]
    rows = read_manifest(_write_csv(tmp_path / "m.csv", ["image", "name"], cells), instruction="x")
    assert [row.name for row in rows] == ["a", "a_2", "A_3", "a_2_2", "my_picture_.._1", "d", "a_4"]


def test_relative_paths_start_at_the_manifest_folder(tmp_path, monkeypatch):
    folder = tmp_path / "job"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = _write_csv(folder / "m.csv", ["image", "mask", "instruction"],
                      [["pics/a.png", "../masks/a.png", "x"], ["~/b.png", "", "y"], [str(tmp_path / "c.png"), "", "z"]])
    rows = read_manifest(os.path.relpath(path))
    assert rows[0].image == str(folder / "pics" / "a.png")
    assert rows[0].mask == str(tmp_path / "masks" / "a.png")
    assert rows[1].image == str(tmp_path / "home" / "b.png") and rows[1].mask is None
    assert rows[2].image == str(tmp_path / "c.png")


# --------------------------------------------------------------------------------------------------------------------
# Settings keys


def _row(image: Path, mask: Path | None = None, **changes: Any) -> Row:
    settings = {**DEFAULTS, **{key: value for key, value in changes.items() if key in DEFAULTS}}
    return Row(index=0, name="a", image=str(image), instruction=changes.get("instruction", "make it snowy"),
               mask=str(mask) if mask else None, settings=settings, extra=changes.get("extra", {}))


def test_settings_key_changes_exactly_when_it_should(tmp_path):
    image = _picture(tmp_path / "a.png", b"pixels")
    mask = _picture(tmp_path / "m.png", b"mask")
    base = settings_key(_row(image), "model", "workflow")
    assert settings_key(_row(image), "model", "workflow") == base
    variants = {
        "seed": settings_key(_row(image, seed=1), "model", "workflow"),
        "text_cfg": settings_key(_row(image, text_cfg=7.0), "model", "workflow"),
        "image_cfg": settings_key(_row(image, image_cfg=1.0), "model", "workflow"),
        "steps": settings_key(_row(image, steps=50), "model", "workflow"),
        "resize": settings_key(_row(image, resize="keep"), "model", "workflow"),
        "resolution": settings_key(_row(image, resolution=768), "model", "workflow"),
        "instruction": settings_key(_row(image, instruction="make it sunny"), "model", "workflow"),
        "extra": settings_key(_row(image, extra={"A.b": 1}), "model", "workflow"),
        "mask": settings_key(_row(image, mask), "model", "workflow"),
        "model": settings_key(_row(image), "other model", "workflow"),
        "workflow": settings_key(_row(image), "model", "other workflow"),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)

    mask.write_bytes(b"other mask")
    assert settings_key(_row(image, mask), "model", "workflow") != variants["mask"]
    image.write_bytes(b"other pixels")
    changed = settings_key(_row(image), "model", "workflow")
    assert changed != base
    renamed = image.rename(tmp_path / "renamed.png")
    assert settings_key(_row(renamed), "model", "workflow") == changed
    assert settings_key(_row(tmp_path / "gone.png"), "model", "workflow") != changed  # missing: keyed by its path


# --------------------------------------------------------------------------------------------------------------------
# Journal, finished, plan


def _record(index: int, key: str, status: str = "ok", output: str = "", sha256: str = "") -> dict[str, Any]:
    row = Row(index=index, name=f"r{index}", image=f"/in/{index}.png", instruction="x", mask=None, settings=dict(DEFAULTS), extra={})
    return record_for(row, key, status, output=output, sha256=sha256, seconds=1.5, worker="w0")


def test_record_for():
    row = Row(index=3, name="a", image="/in/a.png", instruction="x", mask=None, settings=dict(DEFAULTS), extra={"B.c": 2, "A.b": "z"})
    record = record_for(row, "k", "failed", error="boom", seconds=2)
    assert list(record) == [name for name, _ in RESULT_COLUMNS]
    assert record["mask"] == "" and record["extra"] == '{"A.b": "z", "B.c": 2}' and record["seconds"] == 2.0
    assert record["seed"] == 0 and record["resize"] == "original" and record["status"] == "failed" and record["error"] == "boom"
    with pytest.raises(ValueError, match="status"):
        record_for(row, "k", "done")


def test_journal_keeps_records_and_skips_a_torn_line(tmp_path):
    journal = Journal(tmp_path / "out")
    assert journal.records() == []
    journal.append(_record(0, "k0"))
    journal.append(_record(1, "k1", "failed"))
    with journal.path.open("ab") as handle:  # a kill in the middle of a write
        handle.write(b'{"index": 2, "name": "r2", "sta')
    assert [record["index"] for record in journal.records()] == [0, 1]
    journal.append(_record(3, "k3"))  # a resumed job appends after the fragment
    assert [record["index"] for record in journal.records()] == [0, 1, 3]
    assert journal.records()[0] == _record(0, "k0")
    assert journal.path.read_bytes().endswith(b"}\n")


def test_journal_keeps_unicode(tmp_path):
    journal = Journal(tmp_path)
    record = {**_record(0, "k"), "instruction": "mach es schneebedeckt ☃", "image": "/in/\udcff.png"}
    journal.append(record)
    assert journal.records() == [record]


def _output(folder: Path, name: str, content: bytes) -> str:
    (folder / name).write_bytes(content)
    return results.file_sha256(folder / name)


def test_finished_trusts_only_ok_records_with_their_file(tmp_path):
    journal = Journal(tmp_path)
    journal.append(_record(0, "good", output="good.png", sha256=_output(tmp_path, "good.png", b"1")))
    journal.append(_record(1, "failed", status="failed", output="failed.png", sha256=_output(tmp_path, "failed.png", b"2")))
    journal.append(_record(2, "missing", output="missing.png", sha256=_output(tmp_path, "missing.png", b"3")))
    (tmp_path / "missing.png").unlink()
    journal.append(_record(3, "changed", output="changed.png", sha256=_output(tmp_path, "changed.png", b"4")))
    (tmp_path / "changed.png").write_bytes(b"edited by hand")
    journal.append(_record(4, "no output"))
    done = finished(tmp_path)
    assert sorted(done) == ["good"]
    assert done["good"]["output"] == "good.png"


def test_finished_reads_the_results_table_too(tmp_path, engine):
    record = _record(0, "k", output="a.png", sha256=_output(tmp_path, "a.png", b"1"))
    write_results(tmp_path / "results.parquet", [record, _record(1, "f", status="failed")])
    assert not (tmp_path / "results.jsonl").exists()
    assert list(finished(tmp_path)) == ["k"]
    (tmp_path / "results.parquet").write_bytes(b"not parquet")
    assert finished(tmp_path) == {}


def test_plan_skips_exactly_the_done_rows(tmp_path):
    rows = [Row(index=i, name=f"n{i}", image=f"/new/{i}.png", instruction="x", mask=None, settings=dict(DEFAULTS), extra={},
                problem="seed is 'abc'" if i == 4 else None) for i in range(5)]
    keys = ["k0", "k1", "k2", "k3", "k4"]
    done = {"k0": _record(7, "k0", output="old_name.png", sha256="s0"), "k2": _record(9, "k2", output="n2.png", sha256="s2"),
            "k4": _record(4, "k4", output="n4.png", sha256="s4"), "gone": _record(5, "gone")}
    to_run, kept = plan(rows, keys, done)
    assert to_run == [1, 3, 4]
    assert sorted(kept) == [0, 2]
    assert kept[0]["index"] == 0 and kept[0]["name"] == "n0" and kept[0]["output"] == "old_name.png"
    assert kept[0]["image"] == "/new/0.png" and kept[0]["key"] == "k0" and kept[0]["sha256"] == "s0"
    assert kept[2]["index"] == 2 and kept[2]["output"] == "n2.png"
    assert done["k0"]["index"] == 7  # the caller's records are not changed
    with pytest.raises(ValueError):
        plan(rows, keys[:2], done)


# --------------------------------------------------------------------------------------------------------------------
# Results table and the pure Parquet writer


@pytest.fixture(params=["pyarrow", "pure"])
def engine(request, monkeypatch):
    """Run a test with pyarrow (skipped when not installed) and with pyarrow hidden, so the pure writer/reader is used."""
    if request.param == "pyarrow":
        _pyarrow()
        assert results._pyarrow() is not None
    else:
        monkeypatch.setitem(sys.modules, "pyarrow", None)
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
        assert results._pyarrow() is None
    return request.param


def test_results_round_trip(tmp_path, engine):
    first = _record(2, "k2", output="b.png", sha256="s")
    records = [first, _record(0, "k0"), {**_record(1, "k1", "failed"), "error": "boom ☃", "seconds": math.nan},
               {**first, "status": "failed", "error": "again"}]
    path = tmp_path / "out" / "results.parquet"
    write_results(path, records)
    write_results(path, records)  # replaces the file
    assert [p.name for p in path.parent.iterdir()] == ["results.parquet"]  # no temporary file left behind
    rows = read_results(path)
    assert [row["index"] for row in rows] == [0, 1, 2]
    assert rows[2]["error"] == "again" and rows[1]["error"] == "boom ☃" and math.isnan(rows[1]["seconds"])
    expected = [records[1], records[2], records[3]]
    assert _nan_safe(rows) == _nan_safe(expected)
    if engine == "pure":
        assert parquet.read_table(path)[0] == RESULT_COLUMNS


def test_results_fill_missing_values(tmp_path, engine):
    write_results(tmp_path / "r.parquet", [{"index": 4, "name": "a", "seed": None}])
    (row,) = read_results(tmp_path / "r.parquet")
    assert row["index"] == 4 and row["name"] == "a" and row["seed"] == 0 and row["mask"] == "" and math.isnan(row["text_cfg"])


COLUMNS = [("i", "int64"), ("d", "double"), ("s", "string")]
TABLES = {
    "mixed": [{"i": -5, "d": math.nan, "s": "schnee ☃ 雪"}, {"i": 2**63 - 1, "d": -0.5, "s": ""},
              {"i": -(2**63), "d": 1e300, "s": "a\nb"}],
    "empty": [],
    "one": [{"i": 0, "d": 0.0, "s": "x"}],
    "thousand": [{"i": i * 7919 - 3_000_000, "d": i / 7, "s": "é" * (i % 13)} for i in range(1000)],
}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_pure_writer_is_read_by_pyarrow(tmp_path, table):
    _pyarrow()
    import pyarrow.parquet as pq

    rows = TABLES[table]
    parquet.write_table(tmp_path / "t.parquet", COLUMNS, rows)
    read = pq.read_table(tmp_path / "t.parquet")
    assert [(field.name, str(field.type), field.nullable) for field in read.schema] == [
        ("i", "int64", False), ("d", "double", False), ("s", "string", False)]
    assert _nan_safe(read.to_pylist()) == _nan_safe(rows)
    assert read.num_rows == len(rows)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_pure_writer_and_reader_round_trip(tmp_path, table):
    parquet.write_table(tmp_path / "t.parquet", COLUMNS, TABLES[table])
    columns, rows = parquet.read_table(tmp_path / "t.parquet")
    assert columns == COLUMNS
    assert _nan_safe(rows) == _nan_safe(TABLES[table])


def test_pure_writer_fills_none_and_refuses_wrong_types(tmp_path):
    parquet.write_table(tmp_path / "t.parquet", COLUMNS, [{"i": None, "d": None, "s": None}, {}])
    assert _nan_safe(parquet.read_table(tmp_path / "t.parquet")[1]) == [{"i": 0, "d": "NaN", "s": ""}] * 2
    for row in ({"i": "1"}, {"i": 2**63}, {"d": "x"}, {"s": 3}):
        with pytest.raises(parquet.ParquetError):
            parquet.write_table(tmp_path / "bad.parquet", COLUMNS, [row])
    with pytest.raises(parquet.ParquetError, match="type"):
        parquet.write_table(tmp_path / "bad.parquet", [("b", "bool")], [])


def test_pure_reader_reads_plain_pyarrow_files_and_refuses_others(tmp_path):
    pa = _pyarrow()
    import pyarrow.parquet as pq

    rows = TABLES["mixed"]
    schema = pa.schema([pa.field("i", pa.int64(), nullable=False), pa.field("d", pa.float64(), nullable=False),
                        pa.field("s", pa.string(), nullable=False)])
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, tmp_path / "plain.parquet", compression="none", use_dictionary=False)
    assert _nan_safe(parquet.read_table(tmp_path / "plain.parquet")[1]) == _nan_safe(rows)

    pq.write_table(table, tmp_path / "snappy.parquet", compression="snappy", use_dictionary=False)
    with pytest.raises(parquet.ParquetError, match="SNAPPY"):
        parquet.read_table(tmp_path / "snappy.parquet")
    pq.write_table(table, tmp_path / "dict.parquet", compression="none", use_dictionary=True)
    with pytest.raises(parquet.ParquetError, match="dictionary"):
        parquet.read_table(tmp_path / "dict.parquet")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "nullable.parquet", compression="none", use_dictionary=False)
    with pytest.raises(parquet.ParquetError, match="optional"):
        parquet.read_table(tmp_path / "nullable.parquet")


def test_pure_reader_refuses_non_parquet(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"hello world, not parquet")
    with pytest.raises(parquet.ParquetError, match="not a Parquet file"):
        parquet.read_table(tmp_path / "x.parquet")
    parquet.write_table(tmp_path / "t.parquet", COLUMNS, TABLES["one"])
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[:20] + data[-8:])
    with pytest.raises(parquet.ParquetError):
        parquet.read_table(tmp_path / "cut.parquet")
