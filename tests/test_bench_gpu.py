"""bench/gpu.sh, the GPU benchmark and dynamic-VRAM check script, works: run on CPU at a tiny size.

On CPU the numbers mean nothing; what is checked is that one run produces the whole table (every
variant with a measured number of branches, s/step and peak memory) and that every check passes.
The hooked-conditioning check passes on CPU because the host's CPU patcher is never dynamic; on a
GPU with dynamic VRAM it is the one that shows whether the loader registers cached_patcher_init.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from ipx2p_tools.layout import REPO_ROOT

# variant -> UNet batch per step it must show (the pack's algebra; core 0.30.0 drops u at image_cfg 1)
EXPECTED_BRANCHES = {"floor": 3, "floor_2br": 2, "pack": 3, "pack_2br": 2, "pack_eq": 2, "core": 3, "core_2br": 2,
                     "pack_fast": 3, "pack_map": 3, "pack_sched": 3, "pack_local": 3}
EXPECTED_CHECKS = ("check: hooks: IPX2P_Edit", "check: hooks: IPX2P_Guider", "check: hooks: core (control)",
                   "check: loader: no stand-ins")
NUMBER = re.compile(r"^\d+(\.\d+)?$")


def parse_table(text: str) -> tuple[list[str], dict[tuple[str, str], dict[str, str]]]:
    """The markdown table the script prints: (header, {(dtype, variant): {column: cell}})."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    if not lines:
        return [], {}
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        row = dict(zip(header, cells))
        rows[(row.get("dtype", ""), row.get("variant", ""))] = row
    return header, rows


def table_problems(text: str, dtype: str, steps: list[int]) -> list[str]:
    """Everything wrong with the printed table for a run of these dtype and steps."""
    header, rows = parse_table(text)
    problems = []
    step_columns = [f"s/step @{s}" for s in steps]
    for column in ["dtype", "variant", "branches", *step_columns, "result"]:
        if column not in header:
            problems.append(f"no column {column!r} in {header}")
    memory = next((c for c in header if c.startswith("peak")), None)
    if memory is None:
        problems.append(f"no peak memory column in {header}")
    for variant, branches in EXPECTED_BRANCHES.items():
        row = rows.get((dtype, variant))
        if row is None:
            problems.append(f"no row for {variant}")
            continue
        if row.get("result") != "ok":
            problems.append(f"{variant}: {row.get('result')}")
        for column in step_columns + ([memory] if memory else []):
            value = row.get(column, "")
            if not NUMBER.match(value) or float(value) <= 0:
                problems.append(f"{variant}: {column} is {value!r}, not a positive number")
        if row.get("branches") != str(branches):
            problems.append(f"{variant}: {row.get('branches')} branches per step, expected {branches}")
    for check in EXPECTED_CHECKS:
        row = rows.get((dtype, check))
        if row is None:
            problems.append(f"no row for {check}")
        elif not row.get("result", "").startswith("PASS"):
            problems.append(f"{check}: {row.get('result')}")
    return problems


def test_cpu_run_prints_the_whole_table_and_the_checks_pass(ip2p_ckpt, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        ["bash", "bench/gpu.sh", "--device", "cpu", "--size", "64", "--steps", "2", "--guidance", "--keep-logs",
         str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env=env,
    )
    logs = "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("*.log"))
    report = f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}\n{logs}"
    assert table_problems(done.stdout, "fp32", [2]) == [], report
    assert done.returncode == 0, report
    assert "dynamic VRAM off (CPU)" in done.stdout, report
    # the fast rows run on a CPU too, through the standard path (the fast path is for NVIDIA GPUs)
    _, rows = parse_table(done.stdout)
    assert rows[("fp32", "pack_fast")]["compiled"].startswith("no: standard path"), report
    assert rows[("fp32", "check: fast: agrees with eager")]["result"].startswith(
        "n/a: relative L2 0.00e+00 after 2 steps"), report
    assert "core_compile" not in done.stdout, report  # not on a CPU (inductor on the full UNet takes many minutes)
    # the dropped branch must show in the ratios too: the pack at 2 branches against itself at 3
    assert re.search(r"fp32 s/step pack/pack_2br: @2 \d", done.stdout), report
    # --guidance: a guidance map, a schedule and localize, each against the plain edit
    for variant in ("pack_map", "pack_sched", "pack_local"):
        assert re.search(rf"fp32 s/step {variant}/pack: @2 \d.* \(<= 1.02\)", done.stdout), report


SAMPLE = """
| dtype | variant | branches | s/step @2 | peak RSS GiB | result |
| --- | --- | --- | --- | --- | --- |
| fp32 | floor | 3 | 0.9000 | 5.10 | ok |
| fp32 | floor_2br | 2 | 0.7000 | 5.10 | ok |
| fp32 | pack | 3 | 0.9100 | 5.90 | ok |
| fp32 | pack_2br | 3 | 0.9000 | 5.90 | ok |
| fp32 | pack_eq | 2 | - | 5.90 | skipped [2] steps (time budget) |
| fp32 | core_2br | 2 | 0.7000 | 8.00 | ok |
| fp32 | check: hooks: IPX2P_Edit | - | - | - | FAIL: RuntimeError: Cannot create non-dynamic delegate |
| fp32 | check: hooks: IPX2P_Guider | - | - | - | PASS: ran |
| fp32 | check: hooks: core (control) | - | - | - | PASS: ran, finite |
"""


@pytest.mark.parametrize("wrong", ["branches", "missing time", "missing row", "failed check", "missing check"])
def test_table_check_catches_each_kind_of_problem(wrong):
    # The check above must be able to fail: each defect of SAMPLE is reported.
    problems = "\n".join(table_problems(SAMPLE, "fp32", [2]))
    expected = {
        "branches": "pack_2br: 3 branches per step, expected 2",
        "missing time": "pack_eq: s/step @2 is '-'",
        "missing row": "no row for core",
        "failed check": "check: hooks: IPX2P_Edit: FAIL: RuntimeError: Cannot create non-dynamic delegate",
        "missing check": "no row for check: loader: no stand-ins",
    }[wrong]
    assert expected in problems
