"""Edit many pictures: one instruction over a folder, or a manifest with a row per edit.

    python -m ipx2p_tools.batch --input photos/ --instruction "make it golden hour" --checkpoint ip2p.safetensors --output out/
    python -m ipx2p_tools.batch --input edits.csv --checkpoint ip2p.safetensors --output out/ --engine ray --workers 2

Every row is recorded in OUTPUT/results.jsonl as it finishes and, at the end (also when stopped
with Ctrl-C), in OUTPUT/results.parquet, one row per input row. Running the same command again
skips every row already done with the same picture, mask, instruction, settings, checkpoint and
workflow, and does the rest (failed rows are tried again). Exit status: 0 all rows ok, 1 some
rows failed (see the results), 2 the job could not start (the message says why).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

from ipx2p_tools.batch.manifest import DEFAULTS, ManifestError, read_manifest, settings_key
from ipx2p_tools.batch.results import Journal, finished, plan, write_results
from ipx2p_tools.batch.worker import DEFAULT_WORKFLOW, JobConfig, file_id

EXIT_OK, EXIT_ROWS_FAILED, EXIT_USAGE = 0, 1, 2


class JobError(Exception):
    """The job cannot start; the message says why and how to fix it."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ipx2p-batch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, type=Path,
                        help="a folder of pictures (with --instruction) or a manifest: .csv, .jsonl or .parquet with columns "
                             "image, instruction and optionally mask, seed, text_cfg, image_cfg, steps, resize, resolution, name")
    parser.add_argument("--instruction", help="the instruction for every row (a folder), or for rows that leave it empty")
    parser.add_argument("--checkpoint", required=True, type=Path, help="the checkpoint file (any file the pack's loader takes)")
    parser.add_argument("--workflow", type=Path,
                        help="a workflow using the pack's nodes (API format: rows fill nodes by title; see the README's "
                             "'Many pictures'); default: workflows/ip2p_edit.json")
    parser.add_argument("--output", required=True, type=Path, help="folder for the pictures and results.parquet")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="for rows without a seed (default %(default)s)")
    parser.add_argument("--text-cfg", type=float, default=DEFAULTS["text_cfg"], help="default %(default)s")
    parser.add_argument("--image-cfg", type=float, default=DEFAULTS["image_cfg"], help="default %(default)s")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="default %(default)s")
    parser.add_argument("--resize", default=DEFAULTS["resize"], help="original, keep or long_side (default %(default)s)")
    parser.add_argument("--resolution", type=int, default=DEFAULTS["resolution"], help="default %(default)s")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: one in-process ComfyUI here; ray: an actor pool on a Ray cluster")
    parser.add_argument("--address", help="ray: the cluster to join ('auto' for the one `ray start` runs here); "
                                          "default: start a local one")
    parser.add_argument("--workers", type=int, default=1, help="ray: actors, each with its own ComfyUI and model (default 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs each actor reserves (default 0)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="ray: CPUs each actor reserves (default 1)")
    parser.add_argument("--batch-size", type=int, default=1, help="ray: rows per actor task (default 1)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per worker (default: all the cores of the worker's machine, on both engines, "
                             "so a row gives the same picture on either; several Ray workers on one machine run faster "
                             "with cores / workers)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def workflow_id(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare(args: argparse.Namespace) -> tuple[list[Any], list[str], JobConfig]:
    """The rows, their settings keys and the workers' config; JobError when the job cannot start."""
    if args.workers < 1 or args.batch_size < 1:
        raise JobError("--workers and --batch-size must be at least 1")
    checkpoint = args.checkpoint.expanduser().resolve()
    if not checkpoint.is_file():
        raise JobError(f"--checkpoint {args.checkpoint}: no such file")
    workflow = (args.workflow or DEFAULT_WORKFLOW).expanduser().resolve()
    if not workflow.is_file():
        raise JobError(f"--workflow {args.workflow}: no such file")
    defaults = {"seed": args.seed, "text_cfg": args.text_cfg, "image_cfg": args.image_cfg, "steps": args.steps,
                "resize": args.resize, "resolution": args.resolution}
    try:
        rows = read_manifest(args.input.expanduser(), args.instruction, defaults)
    except ManifestError as error:
        raise JobError(str(error)) from None
    if not rows:
        raise JobError(f"--input {args.input}: no rows (no pictures in the folder, or an empty manifest)")
    model, flow = file_id(checkpoint), workflow_id(workflow)
    keys = [settings_key(row, model, flow) for row in rows]
    if args.threads < 0:
        raise JobError(f"--threads {args.threads}: expected 0 (all cores) or more")
    return rows, keys, JobConfig(str(checkpoint), str(workflow), str(args.output.expanduser().resolve()), args.threads)


class Progress:
    """Rows done, with rate and ETA (tqdm, which the host already needs)."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="row", disable=quiet, dynamic_ncols=True)
        self.failed = 0

    def update(self, record: dict[str, Any]) -> None:
        if record["status"] != "ok":
            self.failed += 1
            self.bar.write(f"row {record['index']} ({record['name']}) failed: {record['error']}")
        self.bar.set_postfix(failed=self.failed)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_job(args: argparse.Namespace) -> int:
    rows, keys, config = prepare(args)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    todo, kept = plan(rows, keys, finished(output))
    records: dict[int, dict[str, Any]] = dict(kept)
    print(f"{len(rows)} rows: {len(kept)} done earlier with the same settings (skipped), {len(todo)} to edit "
          f"({args.engine} engine)", flush=True)
    journal = Journal(output)
    progress = Progress(len(todo), args.quiet)
    started = time.monotonic()

    def on_record(record: dict[str, Any]) -> None:
        journal.append(record)
        records[record["index"]] = record
        progress.update(record)

    try:
        if todo and args.engine == "local":
            from ipx2p_tools.batch.worker import BatchWorker

            worker = BatchWorker(config)
            for index in todo:
                on_record(worker.process(rows[index], keys[index]))
        elif todo:
            from ipx2p_tools.batch import engine_ray

            engine_ray.run([(rows[i], keys[i]) for i in todo], config, on_record, address=args.address,
                           workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                           cpus_per_worker=args.cpus_per_worker, batch_size=args.batch_size,
                           say=lambda line: print(line, flush=True))
    finally:
        progress.close()
        write_results(output / "results.parquet", records.values())
    elapsed = time.monotonic() - started
    failed = sum(1 for record in records.values() if record["status"] != "ok")
    rate = f", {60.0 * len(todo) / elapsed:.1f} rows/min" if todo and elapsed > 0 else ""
    print(f"done: {len(records) - failed} ok, {failed} failed, {len(todo)} edited in {elapsed:.1f} s{rate}; "
          f"results in {output / 'results.parquet'}", flush=True)
    return EXIT_ROWS_FAILED if failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run_job(args)
    except JobError as error:
        print(f"ipx2p-batch: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ipx2p-batch: stopped; the rows finished so far are in results.parquet; run the same command to go on",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
