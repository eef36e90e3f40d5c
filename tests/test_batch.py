"""The batch runner for real: `python -m ipx2p_tools.batch` in its own process (its own in-process
ComfyUI), on random-weight checkpoints and 64 px pictures; the Ray engine on a local cluster of 2
CPU workers bound to 127.0.0.1.

- bad rows (missing file, corrupt picture, bad setting) fail alone with a clear error;
- a job killed mid-way and started again redoes nothing that was done, and finishes the rest;
- a changed setting redoes exactly the rows it affects;
- the Ray engine gives the local engine's pictures and results, bit for bit, also when one of its
  workers is killed mid-job (no row lost, none twice);
- a workflow-driven job fills the titled nodes' inputs from the manifest's columns.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ipx2p_tools.batch.results import read_results
from ipx2p_tools.layout import REPO_ROOT

ROWS = 8  # good rows; three bad ones are added
SETTINGS = ["--steps", "2", "--resize", "keep", "--resolution", "64", "--quiet"]


def picture(path: Path, seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path.name


@pytest.fixture(scope="module")
def job(tmp_path_factory, ip2p_ckpt):
    """A manifest of ROWS good rows (one with a mask, seeds and scales varied) and three bad ones."""
    folder = tmp_path_factory.mktemp("batch_input")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(folder / "mask.png")
    rows = []
    for index in range(ROWS):
        rows.append({"image": picture(folder / f"p{index}.png", index), "instruction": f"make it snowy {index % 3}",
                     "seed": str(index), "text_cfg": "7.5" if index % 2 else "5", "image_cfg": "", "mask": ""})
    rows[3]["mask"] = "mask.png"
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    rows.insert(2, {"image": "missing.png", "instruction": "make it snowy", "seed": "", "text_cfg": "", "image_cfg": "",
                    "mask": ""})
    rows.insert(5, {"image": "broken.png", "instruction": "make it snowy", "seed": "", "text_cfg": "", "image_cfg": "",
                    "mask": ""})
    rows.insert(7, {"image": "p0.png", "instruction": "make it snowy", "seed": "abc", "text_cfg": "", "image_cfg": "",
                    "mask": "", "name": ""})
    manifest = folder / "edits.csv"
    write_csv(manifest, rows)
    return manifest, rows, ip2p_ckpt


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = ["image", "instruction", "seed", "text_cfg", "image_cfg", "mask"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def batch_command(manifest: Path, checkpoint: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ipx2p_tools.batch", "--input", str(manifest), "--checkpoint", str(checkpoint),
            "--output", str(output), *SETTINGS, *extra]


def environment(host_name: str) -> dict[str, str]:
    env = {**os.environ, "IPX2P_HOST": host_name, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


def run_batch(command: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def journal(output: Path) -> list[dict]:
    path = output / "results.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


def wait_for_records(output: Path, process: subprocess.Popen, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for r in journal(output) if r["status"] == "ok") < count:
        if process.poll() is not None:
            raise AssertionError(f"the job ended before {count} rows were done: {process.stdout.read() if process.stdout else ''}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no {count} rows done within {timeout} s")
        time.sleep(0.1)


def by_index(results: list[dict]) -> dict[int, dict]:
    indices = [r["index"] for r in results]
    assert len(indices) == len(set(indices)), f"a row appears twice: {sorted(indices)}"
    return {r["index"]: r for r in results}


def check_bad_rows(results: dict[int, dict], output: Path) -> None:
    assert results[2]["status"] == "failed" and "missing.png: no such file" in results[2]["error"]
    assert results[5]["status"] == "failed" and "broken.png: not a picture Pillow can read" in results[5]["error"]
    assert results[7]["status"] == "failed" and "seed" in results[7]["error"] and "'abc'" in results[7]["error"]
    good = [r for i, r in results.items() if i not in (2, 5, 7)]
    assert len(good) == ROWS and all(r["status"] == "ok" and r["error"] == "" for r in good), good
    for record in good:
        saved = output / record["output"]
        with Image.open(saved) as image:
            assert image.size == (64, 64)
            prompt = json.loads(image.info["prompt"])  # the settings, as ComfyUI's Save Image writes them
        edit = next(node for node in prompt.values() if node["class_type"] == "IPX2P_Edit")
        assert (edit["inputs"]["seed"], edit["inputs"]["text_cfg"], edit["inputs"]["steps"]) == \
            (record["seed"], record["text_cfg"], record["steps"]) == (record["seed"], record["text_cfg"], 2)
        assert (edit["inputs"].get("mask") is not None) == (record["mask"] != "")


@pytest.fixture(scope="module")
def local_run(job, tmp_path_factory, host_name):
    """The local engine, killed (SIGKILL) after its first finished row, then started again."""
    manifest, _, checkpoint = job
    output = tmp_path_factory.mktemp("batch_local")
    env = environment(host_name)
    # default threads (all cores) on both engines: the Ray test compares pictures bit for bit
    process = subprocess.Popen(batch_command(manifest, checkpoint, output), env=env, cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_records(output, process, 1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    before = {r["index"]: r for r in journal(output) if r["status"] == "ok"}
    resumed = run_batch(batch_command(manifest, checkpoint, output), env)
    return output, before, resumed


def test_a_killed_job_resumes_and_bad_rows_fail_alone(job, local_run):
    output, before, resumed = local_run
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr  # some rows failed
    total = ROWS + 3
    assert f"{total} rows: {len(before)} done earlier with the same settings (skipped), {total - len(before)} to edit" \
        in resumed.stdout, resumed.stdout
    records = journal(output)
    # nothing done before the kill was done again: each of those rows has exactly one record
    for index in before:
        assert [r["index"] for r in records].count(index) == 1
    results = by_index(read_results(output / "results.parquet"))
    assert sorted(results) == list(range(total))
    check_bad_rows(results, output)
    assert "failed" in resumed.stdout and "missing.png" in resumed.stdout


def test_ray_matches_local_and_loses_nothing_when_a_worker_dies(job, local_run, tmp_path, host_name):
    pytest.importorskip("ray")
    manifest, _, checkpoint = job
    local_output, _, _ = local_run
    output = tmp_path / "ray"
    env = environment(host_name)
    process = subprocess.Popen(batch_command(manifest, checkpoint, output, "--engine", "ray", "--workers", "2"), env=env,
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    try:
        wait_for_records(output, process, 1, timeout=400)
        workers = sorted((output / ".ipx2p-batch" / "workers").glob("*.json"))
        assert len(workers) == 2, workers
        killed = json.loads(workers[0].read_text())["pid"]
        os.kill(killed, signal.SIGKILL)  # the fault: a worker process dies mid-job
        log, _ = process.communicate(timeout=500)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, log
    assert "127.0.0.1" in log  # the local cluster stayed on the loopback interface
    started = sorted(int(p.stem) for p in (output / ".ipx2p-batch" / "workers").glob("*.json"))
    assert killed in started and len(started) >= 3, started  # Ray started a replacement worker
    total = ROWS + 3
    assert len(journal(output)) == total and sorted(r["index"] for r in journal(output)) == list(range(total))
    results = by_index(read_results(output / "results.parquet"))
    local = by_index(read_results(local_output / "results.parquet"))
    assert sorted(results) == list(range(total))
    check_bad_rows(results, output)
    for index, record in results.items():
        other = local[index]
        assert (record["status"], record["error"], record["output"], record["sha256"], record["key"]) == \
            (other["status"], other["error"], other["output"], other["sha256"], other["key"]), index
        if record["status"] == "ok":  # the same picture, bit for bit
            assert (output / record["output"]).read_bytes() == (local_output / other["output"]).read_bytes()


def test_a_changed_setting_redoes_exactly_its_rows(job, local_run, host_name, tmp_path):
    manifest, rows, checkpoint = job
    output, _, _ = local_run  # after the Ray test, which compares with this run's results
    earlier = by_index(read_results(output / "results.parquet"))
    changed = [dict(row) for row in rows]
    changed[4]["text_cfg"] = "6.5"  # row 4: a good row
    edited = tmp_path / "edits.csv"
    write_csv(edited, [{**row, "image": str(manifest.parent / row["image"]),
                        "mask": str(manifest.parent / row["mask"]) if row["mask"] else ""} for row in changed])
    count = len(journal(output))
    again = run_batch(batch_command(edited, checkpoint, output), environment(host_name))
    assert again.returncode == 1, again.stdout + again.stderr
    new = journal(output)[count:]
    # row 4, and the three failed rows (failed rows are tried again), nothing else
    assert sorted(r["index"] for r in new) == [2, 4, 5, 7], new
    results = by_index(read_results(output / "results.parquet"))
    assert results[4]["text_cfg"] == 6.5 and results[4]["sha256"] != earlier[4]["sha256"]
    for index in set(results) - {2, 4, 5, 7}:
        assert results[index]["sha256"] == earlier[index]["sha256"] and results[index]["key"] == earlier[index]["key"]


def test_a_workflow_fills_the_titled_nodes(job, tmp_path, host_name, host):
    from ipx2p_tools.workflow import load_ui, ui_to_api

    manifest, rows, checkpoint = job
    api = ui_to_api(load_ui(REPO_ROOT / "workflows" / "ip2p_edit.json"), host.all_object_info())
    for role, node_id in api.roles.items():
        api.prompt[node_id]["_meta"] = {"title": role}  # Export (API) keeps titles: a user titles the nodes
    workflow = tmp_path / "titled_api.json"
    workflow.write_text(json.dumps(api.prompt))
    edits = tmp_path / "edits.jsonl"
    lines = [{"image": str(manifest.parent / "p1.png"), "instruction": "make it snowy", "negative.text": "blurry",
              "edit.sampler_name": "euler", "name": "first"},
             {"image": str(manifest.parent / "p2.png"), "instruction": "make it snowy", "negative.text": "dark",
              "edit.sampler_name": "euler", "name": "second"},
             {"image": str(manifest.parent / "p2.png"), "instruction": "make it snowy", "nowhere.text": "x", "name": "third"}]
    edits.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    output = tmp_path / "out"
    done = run_batch(batch_command(edits, checkpoint, output, "--workflow", str(workflow)), environment(host_name))
    assert done.returncode == 1, done.stdout + done.stderr
    results = by_index(read_results(output / "results.parquet"))
    assert [results[i]["status"] for i in range(3)] == ["ok", "ok", "failed"]
    assert "no node titled 'nowhere'" in results[2]["error"]
    for index, negative in ((0, "blurry"), (1, "dark")):
        with Image.open(output / results[index]["output"]) as image:
            prompt = json.loads(image.info["prompt"])
        texts = {node["_meta"]["title"]: node["inputs"] for node in prompt.values() if "_meta" in node}
        assert texts["negative"]["text"] == negative and texts["edit"]["sampler_name"] == "euler"
        assert results[index]["output"] == ("first.png", "second.png")[index]
