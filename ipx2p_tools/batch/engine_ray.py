"""The Ray engine of a batch job: Ray Data reads the rows, `map_batches` runs them on an actor pool
(each actor one BatchWorker: an in-process ComfyUI with the model loaded once), the driver records
each result as it arrives. The only module of the pack that imports Ray.

Fault tolerance is Ray's: Ray Data creates the pool's actors with max_restarts=-1 (a worker
process that dies, by a kill or out of memory, is started again and loads the model again) and
their tasks with max_task_retries=-1 (the rows of a task that died with its worker run again on
the restarted one); these are its defaults for actor pools (ActorPoolMapOperator), which the pack
relies on rather than passing them through `ray_remote_args`, deprecated since Ray 2.60. Ray Data
keeps only the output of a task that finished, and every row is its own block, so each row's
record reaches the driver once; the driver also keeps one record per row index.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from ipx2p_tools.batch.manifest import Row
from ipx2p_tools.batch.worker import BatchWorker, JobConfig, row_from_json, row_to_json
from ipx2p_tools.layout import REPO_ROOT

# Environment the workers need to find the pack and the same host as the driver.
PASSED_ENV = ("IPX2P_HOST", "COMFYUI_PATH", "IPX2P_CACHE")


def worker_class(config: JobConfig) -> type:
    """The actor class map_batches instantiates: one BatchWorker per actor process. The config
    travels inside the class (no constructor arguments in the object store, which a restarted
    actor could find gone)."""
    settings = config.to_dict()

    class RayBatchWorker:
        def __init__(self) -> None:
            self.worker = BatchWorker(JobConfig(**settings))

        def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
            records = [json.dumps(self.worker.process(row_from_json(str(row)), str(key)))
                       for row, key in zip(batch["row"], batch["key"])]
            return {"record": records}

    return RayBatchWorker


def runtime_env() -> dict[str, Any]:
    """Workers import the pack from this checkout (the same path on every node of a cluster:
    install the pack there the same way) and use the driver's host choice."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, **{name: os.environ[name] for name in PASSED_ENV if name in os.environ}}
    return {"env_vars": env}


def connect(address: str | None, workers: int, cpus_per_worker: float) -> str:
    """Join the cluster at `address` ("auto": the one `ray start` runs here), or start a local one
    on the loopback interface sized for the workers; returns a line for the log."""
    import ray

    if ray.is_initialized():
        return "Ray: already connected"
    if address:
        ray.init(address=address, runtime_env=runtime_env(), log_to_driver=False)
        return f"Ray: connected to {address}"
    # A local cluster binds to the machine's interface address unless told otherwise; keep it on
    # 127.0.0.1 (nothing outside this machine needs to reach it).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    cpus = max(os.cpu_count() or 1, int(workers * cpus_per_worker + 0.999))
    ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env(), log_to_driver=False,
             _node_ip_address="127.0.0.1")
    return f"Ray: started a local cluster on 127.0.0.1 with {cpus} CPUs"


def run(rows: list[tuple[Row, str]], config: JobConfig, on_record: Callable[[dict[str, Any]], None], *,
        address: str | None = None, workers: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
        batch_size: int = 1, say: Callable[[str], None] = print) -> None:
    """Edit `rows` (each with its settings key) on `workers` actors; `on_record` gets each row's
    record once, in the order they finish."""
    import ray
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-dataset INFO lines; errors still show
    say(connect(address, workers, cpus_per_worker))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver's own bar counts rows
    items = [{"row": row_to_json(row), "key": key} for row, key in rows]
    if not items:
        return
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    results = dataset.map_batches(worker_class(config), batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                                  num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)
    seen: set[int] = set()
    for record in _records(results):
        if record["index"] in seen:  # never expected (Ray keeps finished tasks' output once); kept once anyway
            continue
        seen.add(record["index"])
        on_record(record)


def _records(results: Any) -> Iterator[dict[str, Any]]:
    for item in results.iter_rows():
        yield json.loads(item["record"])
