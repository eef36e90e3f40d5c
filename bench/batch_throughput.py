"""Throughput of the batch runner (python -m ipx2p_tools.batch): rows per minute for the local
engine and the Ray engine with 1 and 2 workers, and what Ray adds per row.

    .venv/bin/python bench/batch_throughput.py                  # 128 px, 4 steps, 4 and 12 rows per engine
    .venv/bin/python bench/batch_throughput.py --size 64 --steps 2 --rows 2,6   # quicker

Each engine runs the same job twice, with a few and with more rows (fresh output folders, so
nothing is skipped); the wall time's slope over the row count is the time per row once the
workers are up, its intercept the start-up (host boot, model load, Ray's cluster and actors).
rows/min = 60 / slope. "Ray adds per row" = Ray's slope (1 worker, 1 thread) - the local slope at
one thread. Random
weights of the true SD1.5-InstructPix2Pix layout; each row its own random picture.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ipx2p_tools.checkpoints import ensure_synthetic  # noqa: E402
from ipx2p_tools.layout import CACHE_DIR, selected_host  # noqa: E402

# local: the default threads (all cores); local_1t and the Ray rows: one thread per worker (with 2 workers
# on 2 cores, the fastest setting; a Ray worker's default would also be all cores)
ENGINES = {"local": [], "local_1t": ["--threads", "1"], "ray_1": ["--engine", "ray", "--workers", "1", "--threads", "1"],
           "ray_2": ["--engine", "ray", "--workers", "2", "--threads", "1"]}


def pictures(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        pixels = np.random.default_rng(index).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{index:03d}.png")


def timed_job(work: Path, rows: int, size: int, steps: int, extra: list[str], checkpoint: Path) -> float:
    source = work / f"in_{rows}"
    if not source.exists():
        pictures(source, rows, size)
    output = work / f"out_{len(list(work.glob('out_*')))}"
    command = [sys.executable, "-m", "ipx2p_tools.batch", "--input", str(source), "--instruction", "make it snowy",
               "--checkpoint", str(checkpoint), "--output", str(output), "--steps", str(steps), "--resize", "keep",
               "--resolution", str(size), "--quiet", *extra]
    env = {**os.environ, "IPX2P_HOST": selected_host()[0], "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    started = time.monotonic()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(extra) or 'local'}: the job failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rows", default="4,12", help="the two row counts (default 4,12)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    args = parser.parse_args()
    few, many = (int(v) for v in args.rows.split(","))
    checkpoint = ensure_synthetic("ip2p", CACHE_DIR / "ckpt")
    print(f"| engine | wall s, {few} rows | wall s, {many} rows | s per row (slope) | rows/min | start-up s (intercept) |")
    print("| --- | --- | --- | --- | --- | --- |")
    slopes = {}
    with tempfile.TemporaryDirectory(prefix="ipx2p-batch-bench-") as tmp:
        for engine in args.engines.split(","):
            work = Path(tmp) / engine
            work.mkdir()
            a = timed_job(work, few, args.size, args.steps, ENGINES[engine], checkpoint)
            b = timed_job(work, many, args.size, args.steps, ENGINES[engine], checkpoint)
            slope = (b - a) / (many - few)
            slopes[engine] = slope
            print(f"| {engine} | {a:.1f} | {b:.1f} | {slope:.2f} | {60.0 / slope:.1f} | {a - few * slope:.1f} |", flush=True)
    if "local_1t" in slopes and "ray_1" in slopes:
        print(f"\nRay adds per row (ray_1 slope - local_1t slope): {slopes['ray_1'] - slopes['local_1t']:+.2f} s")


if __name__ == "__main__":
    main()
