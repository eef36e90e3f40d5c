"""Speed and memory of one edit on CPU, interleaved: the pack against the floor, core ComfyUI and diffusers.

    .venv/bin/python bench/bench_edit.py                        # 512 px, 2 timed steps, up to 12 rounds or 25 min
    .venv/bin/python bench/bench_edit.py --variants floor,pack,core,diffusers --rounds 20 --max-minutes 0
    .venv/bin/python bench/bench_edit.py --size 64 --rounds 2 --max-minutes 0   # smoke run
    .venv/bin/python bench/bench_edit.py --families             # also CosXL-layout edits (skipped if they would not fit)
    .venv/bin/python bench/bench_edit.py --variants none --families --family-dtype fp16 --family-variants xl_pack,xl_diffusers

Variants (SD1.5-InstructPix2Pix, random weights of the true layout, fp32 file; same picture and seed rules):
  floor        bare batched UNet calls over the 3 branches (model.apply_model on the pack's model, SDPA attention)
  pack         IPX2P_Edit, text_cfg 7.5 / image_cfg 1.5 (3 branches)
  pack_2br     IPX2P_Edit, image_cfg 1.0 (the identity drops the unconditional branch: 2 branches)
  pack_masked  IPX2P_Edit 7.5 / 1.5 with a mask over the middle quarter (region edit; must cost what pack costs)
  pack_id      IPX2P_Edit with formula "instructdiffusion" (3 branches c, i, t)
  pack_map     IPX2P_Edit 7.5 / 1.5 with a guidance_map over the middle quarter, 3.0 / 2.0 outside (3 branches)
  pack_sched   IPX2P_Edit with a Guidance Schedule 7.5 -> 5 / 1.5 -> 1.8, linear (3 branches every step)
  pack_local   IPX2P_Edit 7.5 / 1.5 with localize auto (relevance over the first 40 % of the steps, then the region)
  sweepK       IPX2P_GuidanceSweep over K cells (e.g. sweep4: 2 x 2), all in one run (cells_per_run = K)
  core         CheckpointLoaderSimple + InstructPixToPixConditioning + DualCFGGuider + SamplerCustomAdvanced
  core_sdpa    the same in a host started with --use-pytorch-cross-attention (own process; not in the default set)
  diffusers    StableDiffusionInstructPix2PixPipeline.from_single_file on the same file (3 branches)

How it measures. One long-lived worker process per framework, kept warm and driven over stdin/stdout JSON
lines: a ComfyUI host holding the pack's model (floor, pack*, sweep) and, unless --core-worker separate, core's
model too (one host per process is ComfyUI's rule; two models in one host are fine); and a diffusers process.
Each worker loads its models and runs every variant once (1 step) before timing. Then rounds: every variant
once per round, in the listed order on odd rounds and reversed on even rounds (A B C, C B A, ...), so slow
drift of the machine hits all variants alike. A measurement samples steps+1 steps with a new seed (only the
sampling node re-runs: the graph's loaders, encoders and image stay cached) and times the last `steps` of
them between the sampler's progress callbacks. Ratios are computed per round from that round's
measurements; their median, range and 95 % confidence interval (t, on log ratios) are reported, and how
many rounds the interval needed to get under +-2 %. Each worker also times every call of its UNet's forward
(one wrap of the UNet class), so every measurement splits into time inside the UNet and time around it
(guidance arithmetic, batching, sampler, wrappers). Ratios "with the UNet time equal" put one variant's
time around the UNet on the other's UNet time: what an implementation adds, without the UNet's own
round-to-round noise, which is what keeps the plain ratios from resolving 2 % on a noisy machine.

Peak RSS is each worker's maximum resident set (load included), read after each variant's first run: the
pack's figure is read after its first edit, before anything else ran in its worker; later readings of a
worker that holds two models say so. Each measurement also records its major page faults and how much CPU
the rest of the machine used meanwhile (/proc/stat minus the worker's own time), so a contended run shows.
Not a test: compare numbers only within one run.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_stats as stats  # noqa: E402

SD15_DEFAULT = ("floor", "pack", "pack_2br", "pack_masked", "pack_id", "sweep2", "core", "diffusers")
HOST_PACK = ("floor", "pack", "pack_2br", "pack_masked", "pack_id", "pack_map", "pack_sched", "pack_local")
TEXT_CFG, IMAGE_CFG = 7.5, 1.5
GUIDANCE_ROWS = {"pack_map": "map", "pack_sched": "schedule", "pack_local": "localize"}  # testkit.graph.guidance_inputs
INSTRUCTION = "make it snowy"
GIB = 1024**3


def sweep_cells(variant: str) -> int | None:
    match = re.fullmatch(r"(?:xl_)?sweep(\d+)", variant)
    return int(match.group(1)) if match else None


def branches(variant: str) -> int:
    base = variant.removeprefix("xl_")
    cells = sweep_cells(base)
    if cells:
        return 3 * cells
    return 2 if base == "pack_2br" else 3


# ======================================================================================================
# Workers (child processes)
# ======================================================================================================
def rss_gib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    return math.nan


def rss_parts_gib() -> dict[str, float]:
    """Anonymous and file-backed resident memory (weights mapped from the safetensors file count as file)."""
    parts = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("RssAnon:", "RssFile:")):
                parts[line.split(":")[0]] = int(line.split()[1]) / 1024**2
    return parts


def stage(name: str, began: float) -> dict[str, Any]:
    parts = rss_parts_gib()
    return {"stage": name, "s": time.perf_counter() - began, "rss_gib": rss_gib(), "peak_rss_gib": peak_rss_gib(),
            "anon_gib": parts.get("RssAnon", math.nan), "file_gib": parts.get("RssFile", math.nan)}


def major_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_majflt


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def machine_busy_seconds() -> float:
    """CPU time every process on the machine has used since boot (all cores; /proc/stat, minus idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def seconds_per_step(stamps: list[tuple[int, float]]) -> float:
    """(progress value, time) pairs of one run -> seconds per step between the first and last stamp
    (robust to a progress bar that throttles its updates)."""
    if len(stamps) < 2 or stamps[-1][0] <= stamps[0][0]:
        raise RuntimeError(f"too few progress stamps to time a step: {stamps}")
    return (stamps[-1][1] - stamps[0][1]) / (stamps[-1][0] - stamps[0][0])


class UNetTimer:
    """Wall-clock intervals of every forward call of one UNet class in this process. The class's forward is
    wrapped once (two clock reads per UNet call, the same in every variant of a worker), so a measurement
    can split its time per step into the UNet's own and everything around it (guidance arithmetic,
    batching, the sampler, wrappers): the part an implementation adds, which the UNet's noise hides."""

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []

    def install(self, cls: Any) -> None:
        original, intervals = cls.forward, self.intervals

        def forward(module: Any, *args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(module, *args, **kwargs)
            finally:
                intervals.append((began, time.perf_counter()))

        cls.forward = forward

    def inside(self, start: float, end: float) -> float:
        """Seconds spent inside UNet calls between two instants."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.intervals)

    def split(self, stamps: list[tuple[int, float]]) -> dict[str, float]:
        """The timed window of one run (first to last progress stamp): UNet seconds per step and calls."""
        (first, start), (last, end) = stamps[0], stamps[-1]
        calls = sum(1 for a, b in self.intervals if a >= start and b <= end)
        return {"unet_s_per_step": self.inside(start, end) / (last - first), "unet_calls_per_step": calls / (last - first)}


def make_picture(directory: Path, size: int) -> Path:
    from PIL import Image, ImageDraw

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bench_{size}.png"
    picture = Image.new("RGB", (size, size), (60, 120, 200))
    ImageDraw.Draw(picture).ellipse((size // 5, size // 5, size * 3 // 5, size * 4 // 5), fill=(240, 200, 50))
    picture.save(path)
    return path


class BenchFloor:
    """A node for the floor: `steps`+1 bare apply_model calls on a batch of 3 (c, i, u), with the attention
    the pack's guider picks, on the MODEL it is given (the pack's loader output, so no second copy)."""

    stamp: Any = None  # set by the worker: stamp(value, total)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"model": ("MODEL",), "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                             "steps": ("INT", {"default": 4, "min": 1, "max": 10000}),
                             "size": ("INT", {"default": 512, "min": 8, "max": 8192})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "bench"

    def run(self, model: Any, seed: int, steps: int, size: int) -> dict:
        import comfy.model_management
        import nodes
        import torch

        from ipx2p_tools.host import pack_module

        options = pack_module(nodes, "engine").attention_options(model)
        comfy.model_management.load_models_gpu([model])
        generator = torch.Generator().manual_seed(seed)
        latent = size // 8
        context_dim = int(model.model.model_config.unet_config.get("context_dim", 768))
        x = torch.randn(3, 4, latent, latent, generator=generator)
        c_concat = torch.randn(3, 4, latent, latent, generator=generator)
        context = torch.randn(3, 77, context_dim, generator=generator)
        sigma = torch.full((3,), 5.0)
        extra = {}
        adm = getattr(model.model, "adm_channels", None)
        if adm:  # SDXL layouts: the pooled text and size vector
            extra["y"] = torch.randn(3, int(adm), generator=generator)
        for index in range(steps + 1):
            model.model.apply_model(x, sigma, c_concat=c_concat, c_crossattn=context, transformer_options=dict(options),
                                    **extra)
            if BenchFloor.stamp is not None:
                BenchFloor.stamp(index, steps)
        return {}


@dataclass
class Target:
    """Where a variant lives in the combined prompt: its output node and the inputs a run sets."""

    output: str
    seed: tuple[str, str]
    steps: tuple[str, str]
    floor: bool = False


class HostWorker:
    """One ComfyUI host holding every variant's graph in one prompt (so running one variant keeps the
    others' cached loader outputs: the host's cache drops what the current prompt does not contain)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.variants = args.variants.split(",")
        self.size = args.size
        self.work = Path(tempfile.mkdtemp(prefix="ipx2p-bench-"))
        self.stamps: list[tuple[int, int, float]] = []
        self.timer = UNetTimer()
        self.prompt: dict[str, Any] = {}
        self.targets: dict[str, Target] = {}

    def boot(self) -> None:
        from ipx2p_tools.host import InProcessHost
        from ipx2p_tools.layout import selected_host

        ckpt = Path(self.args.ckpt)
        picture = make_picture(self.work / "in", self.size)
        _, tree = selected_host()
        overrides = json.loads(self.args.cli_overrides or "{}")
        self.host = InProcessHost(tree, input_dir=picture.parent, output_dir=self.work / "out", temp_dir=self.work / "tmp",
                                  model_dirs={"checkpoints": [ckpt.parent]}, cli_overrides=overrides).boot()
        self.host.nodes.NODE_CLASS_MAPPINGS["IPX2P_BenchFloor"] = BenchFloor
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

        self.timer.install(UNetModel)
        BenchFloor.stamp = lambda value, total: self.stamps.append((value, total, time.perf_counter()))
        self.host.progress_listener = lambda value, total: self.stamps.append((value, total, time.perf_counter()))
        self.build(ckpt.name, picture.name)
        checked = self.host.validate(self.prompt)
        if not checked.valid:
            raise RuntimeError("the bench graph does not validate:\n" + checked.error_text())

    def build(self, ckpt_name: str, picture_name: str) -> None:
        from ipx2p_tools.testkit.graph import Graph, guidance_inputs, middle_quarter

        g = Graph()
        image = g.add("LoadImage", image=picture_name)
        size, wanted = self.size, set(self.variants)
        loader_inputs: dict[str, Any] = {"ckpt_name": ckpt_name, "weights": "auto"}
        if self.args.weight_dtype != "default":
            loader_inputs["weight_dtype"] = self.args.weight_dtype
        pack_like = [v for v in self.variants if v.removeprefix("xl_") in HOST_PACK or sweep_cells(v)]
        if pack_like:
            loader = g.add("IPX2P_CheckpointLoader", **loader_inputs)
            positive = g.add("CLIPTextEncode", text=INSTRUCTION, clip=(loader, 1))
            negative = g.add("CLIPTextEncode", text="", clip=(loader, 1))
            encoded = g.add("IPX2P_EncodeImage", vae=(loader, 2), image=(image, 0), resize="keep", resolution=size)
            common = dict(model=(loader, 0), positive=(positive, 0), negative=(negative, 0), edit_latent=(encoded, 0),
                          seed=0, steps=1, sampler_name="euler", scheduler="normal")
            for variant in pack_like:
                base = variant.removeprefix("xl_")
                if base == "floor":
                    node = g.add("IPX2P_BenchFloor", model=(loader, 0), seed=0, steps=1, size=size)
                    self.targets[variant] = Target(node, (node, "seed"), (node, "steps"), floor=True)
                    continue
                cells = sweep_cells(base)
                if cells:
                    rows = max(d for d in range(1, int(math.isqrt(cells)) + 1) if cells % d == 0)
                    text_values = ", ".join(f"{5 + 2.5 * i:g}" for i in range(rows))
                    image_values = ", ".join(f"{1.2 + 0.3 * i:.1f}" for i in range(cells // rows))
                    node = g.add("IPX2P_GuidanceSweep", vae=(loader, 2), text_cfg_values=text_values,
                                 image_cfg_values=image_values, mode="grid", count=cells, cells_per_run=cells, **common)
                else:
                    extra: dict[str, Any] = {}
                    if base == "pack_masked":
                        extra["mask"] = middle_quarter(g, size)
                    if base in GUIDANCE_ROWS:
                        extra.update(guidance_inputs(g, GUIDANCE_ROWS[base], size, TEXT_CFG, IMAGE_CFG))
                    if base == "pack_id":
                        extra["formula"] = "instructdiffusion"
                    node = g.add("IPX2P_Edit", text_cfg=TEXT_CFG, image_cfg=1.0 if base == "pack_2br" else IMAGE_CFG,
                                 denoise=1.0, **common, **extra)
                out = g.add("SaveLatent", samples=(node, 0), filename_prefix=f"bench_{variant}")
                self.targets[variant] = Target(out, (node, "seed"), (node, "steps"))
        core_like = [v for v in self.variants if v.removeprefix("xl_") in ("core", "core_sdpa")]
        if core_like:
            loader = g.add("CheckpointLoaderSimple", ckpt_name=ckpt_name)
            positive = g.add("CLIPTextEncode", text=INSTRUCTION, clip=(loader, 1))
            negative = g.add("CLIPTextEncode", text="", clip=(loader, 1))
            conds = g.add("InstructPixToPixConditioning", positive=(positive, 0), negative=(negative, 0),
                          vae=(loader, 2), pixels=(image, 0))
            guider = g.add("DualCFGGuider", model=(loader, 0), cond1=(conds, 0), cond2=(conds, 1),
                           negative=(negative, 0), cfg_conds=TEXT_CFG, cfg_cond2_negative=IMAGE_CFG, style="regular")
            noise = g.add("RandomNoise", noise_seed=0)
            sigmas = g.add("BasicScheduler", model=(loader, 0), scheduler="normal", steps=1, denoise=1.0)
            node = g.add("SamplerCustomAdvanced", noise=(noise, 0), guider=(guider, 0),
                         sampler=(g.add("KSamplerSelect", sampler_name="euler"), 0), sigmas=(sigmas, 0),
                         latent_image=(conds, 2))
            out = g.add("SaveLatent", samples=(node, 0), filename_prefix="bench_core")
            for variant in core_like:
                self.targets[variant] = Target(out, (noise, "noise_seed"), (sigmas, "steps"))
        missing = wanted - set(self.targets)
        if missing:
            raise RuntimeError(f"this worker cannot run {sorted(missing)}")
        self.prompt = g.prompt

    def run(self, variant: str, seed: int, steps: int) -> dict[str, Any]:
        """Run one variant: `steps` sampler steps (the floor: steps + 1 UNet calls, timing `steps`)."""
        target = self.targets[variant]
        prompt = copy.deepcopy(self.prompt)
        prompt[target.seed[0]]["inputs"][target.seed[1]] = seed
        prompt[target.steps[0]]["inputs"][target.steps[1]] = steps - 1 if target.floor else steps
        self.stamps.clear()
        self.timer.intervals.clear()
        executor = self.host.executor
        prompt_id = str(uuid.uuid4())
        self.host.server.last_prompt_id = prompt_id
        executor.history_result = {}
        started = time.perf_counter()
        executor.execute(prompt, prompt_id, {"client_id": self.host.server.client_id}, [target.output])
        wall = time.perf_counter() - started
        if not executor.success:
            errors = [data for event, data in executor.status_messages if event == "execution_error"]
            raise RuntimeError(f"{variant} failed: {errors}")
        total = steps - 1 if target.floor else steps
        stamps = [(value, at) for value, size, at in self.stamps if size == total]
        return {"stamps": stamps, "wall_s": wall}

    def warm(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.boot()
        stages = [stage("boot", started)]
        for variant in self.variants:  # the coordinator orders them: the pack's single edit first
            began = time.perf_counter()
            self.run(variant, seed=0, steps=2 if variant.removeprefix("xl_") == "floor" else 1)
            stages.append(stage(variant, began))
        import comfyui_version
        import torch

        return {"stages": stages, "versions": {"comfyui": str(comfyui_version.__version__), "torch": torch.__version__,
                                               "torch_threads": torch.get_num_threads()}}

    def measure(self, variant: str, seed: int) -> dict[str, Any]:
        faults, cpu = major_faults(), cpu_seconds()
        result = self.run(variant, seed, self.args.steps + 1)
        return {"variant": variant, "s_per_step": seconds_per_step(result["stamps"]), "wall_s": result["wall_s"],
                "major_faults": major_faults() - faults, "cpu_s": cpu_seconds() - cpu, **self.timer.split(result["stamps"])}


class DiffusersWorker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="ipx2p-bench-diffusers-"))
        self.stamps: list[tuple[int, float]] = []
        self.timer = UNetTimer()

    def warm(self) -> dict[str, Any]:
        import diffusers
        import torch
        from PIL import Image

        from ipx2p_tools import peer_diffusers
        from ipx2p_tools.layout import selected_host

        started = time.perf_counter()
        self.timer.install(diffusers.UNet2DConditionModel)
        _, tree = selected_host()
        dtype = torch.float16 if self.args.weight_dtype == "fp16" else torch.float32
        ckpt = Path(self.args.ckpt)
        if self.args.family == "sdxl":
            self.pipe = peer_diffusers.load_sdxl_pipeline(ckpt, peer_diffusers.write_sdxl_config_folder(self.work / "cfg", tree),
                                                          dtype)
        else:
            self.pipe = peer_diffusers.load_pipeline(ckpt, peer_diffusers.write_config_folder(self.work / "cfg", tree), dtype)
        self.image = Image.open(make_picture(self.work / "in", self.args.size)).convert("RGB")
        stages = [stage("load", started)]
        began = time.perf_counter()
        self.edit(0, 1)
        stages.append(stage(self.args.variants.split(",")[0], began))
        return {"stages": stages, "versions": {"diffusers": diffusers.__version__, "torch": torch.__version__,
                                               "torch_threads": torch.get_num_threads()}}

    def edit(self, seed: int, steps: int) -> float:
        import torch

        def on_step(pipeline: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            self.stamps.append((step + 1, time.perf_counter()))
            return kwargs

        def on_step_legacy(step: int, timestep: Any, latents: Any) -> None:
            self.stamps.append((step + 1, time.perf_counter()))

        self.stamps.clear()
        self.timer.intervals.clear()
        extra: dict[str, Any] = {"height": self.args.size, "width": self.args.size} if self.args.family == "sdxl" else {}
        # The SDXL InstructPix2Pix pipeline still has only the older per-step callback.
        if "callback_on_step_end" in inspect.signature(self.pipe.__call__).parameters:
            extra["callback_on_step_end"] = on_step
        else:
            extra.update(callback=on_step_legacy, callback_steps=1)
        started = time.perf_counter()
        self.pipe(INSTRUCTION, image=self.image, num_inference_steps=steps, guidance_scale=TEXT_CFG,
                  image_guidance_scale=IMAGE_CFG, generator=torch.manual_seed(seed), output_type="latent", **extra)
        return time.perf_counter() - started

    def measure(self, variant: str, seed: int) -> dict[str, Any]:
        faults, cpu = major_faults(), cpu_seconds()
        wall = self.edit(seed, self.args.steps + 1)
        return {"variant": variant, "s_per_step": seconds_per_step(self.stamps), "wall_s": wall,
                "major_faults": major_faults() - faults, "cpu_s": cpu_seconds() - cpu, **self.timer.split(self.stamps)}


def worker_main(args: argparse.Namespace) -> None:
    """Serve JSON-line commands on stdin; replies go to the original stdout, everything else to stderr."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    worker: Any = DiffusersWorker(args) if args.worker == "diffusers" else HostWorker(args)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        try:
            if command["op"] == "warm":
                reply = worker.warm()
            else:
                reply = worker.measure(command["variant"], int(command["seed"]))
            reply["ok"] = True
        except Exception:  # reported to the coordinator, which decides
            reply = {"ok": False, "error": traceback.format_exc()}
        reply.update(rss_gib=rss_gib(), peak_rss_gib=peak_rss_gib())
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    shutil.rmtree(worker.work, ignore_errors=True)


# ======================================================================================================
# Coordinator
# ======================================================================================================
class WorkerFailed(RuntimeError):
    pass


class Worker:
    def __init__(self, name: str, kind: str, variants: list[str], ckpt: Path, args: argparse.Namespace, log_dir: Path,
                 *, family: str = "sd15", cli_overrides: dict | None = None, weight_dtype: str = "default") -> None:
        self.name, self.kind, self.variants = name, kind, variants
        self.log_path = log_dir / f"{name}.log"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--ckpt", str(ckpt),
                   "--size", str(args.size), "--steps", str(args.steps), "--variants", ",".join(variants),
                   "--family", family, "--weight-dtype", weight_dtype, "--cli-overrides", json.dumps(cli_overrides or {})]
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                        bufsize=1, cwd=REPO)
        self.warm_info: dict[str, Any] = {}

    def call(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.process.stdout.readline()
        if not line:
            raise WorkerFailed(f"worker {self.name} exited (code {self.process.wait()}); log tail:\n{self.log_tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise WorkerFailed(f"worker {self.name}: {reply.get('error')}")
        return reply

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=120)
            except (BrokenPipeError, subprocess.TimeoutExpired, OSError):
                self.process.kill()
                self.process.wait()
        self.log.close()


@dataclass
class Phase:
    """One set of workers measured together (SD1.5, or a family at one size)."""

    title: str
    size: int
    variants: list[str]
    workers: list[Worker] = field(default_factory=list)
    owner: dict[str, Worker] = field(default_factory=dict)
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # variant -> one entry per round
    rounds: int = 0
    round_seconds: list[float] = field(default_factory=list)
    warm_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def mem_available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    return math.nan


def start_phase(phase: Phase, groups: list[tuple[str, str, list[str], dict]], ckpt: Path, args: argparse.Namespace,
                log_dir: Path) -> None:
    """Start the workers one after another, each loaded and warm before the next starts (their load
    peaks do not overlap)."""
    started = time.perf_counter()
    for name, kind, variants, options in groups:
        if not variants:
            continue
        print(f"[{phase.title}] starting worker {name} ({', '.join(variants)}); MemAvailable {mem_available_gib():.1f} GiB",
              flush=True)
        worker = Worker(name, kind, variants, ckpt, args, log_dir, **options)
        phase.workers.append(worker)
        try:
            worker.warm_info = worker.call(op="warm")
        except WorkerFailed as error:
            print(f"[{phase.title}] worker {name} failed to warm up; its variants are dropped:\n{error}", flush=True)
            phase.notes.append(f"worker {name} failed to warm up ({', '.join(variants)} dropped)")
            worker.close()
            continue
        for variant in variants:
            phase.owner[variant] = worker
        for entry in worker.warm_info["stages"]:
            print(f"    {name}: after {entry['stage']:<12} {entry['s']:7.1f} s   RSS {entry['rss_gib']:.2f} GiB (anon "
                  f"{entry['anon_gib']:.2f}, file {entry['file_gib']:.2f}), peak {entry['peak_rss_gib']:.2f} GiB", flush=True)
    phase.variants = [v for v in phase.variants if v in phase.owner]
    phase.warm_seconds = time.perf_counter() - started


def run_rounds(phase: Phase, args: argparse.Namespace, deadline: float | None) -> None:
    for variant in phase.variants:
        phase.results[variant] = []
    for index in range(args.rounds):
        began = time.perf_counter()
        order = phase.variants if index % 2 == 0 else phase.variants[::-1]
        line = []
        try:
            for position, variant in enumerate(order):
                busy, began_at = machine_busy_seconds(), time.perf_counter()
                reply = phase.owner[variant].call(op="measure", variant=variant, seed=1 + 100 * index + position)
                # What the rest of the machine ran meanwhile, in cores (0: the worker had the machine to itself).
                elapsed = time.perf_counter() - began_at
                reply["other_cores"] = max(0.0, machine_busy_seconds() - busy - reply.get("cpu_s", 0.0)) / elapsed
                phase.results[variant].append(reply)
                line.append(f"{variant} {reply['s_per_step']:.3f}" + (f" ({reply['major_faults']} major faults)"
                                                                       if reply.get("major_faults") else "")
                            + (f" (others used {reply['other_cores']:.2f} cores)" if reply["other_cores"] > 0.1 else ""))
        except WorkerFailed as error:
            print(f"[{phase.title}] round {index + 1} failed; stopping the rounds here:\n{error}", flush=True)
            for variant in phase.variants:
                del phase.results[variant][index:]
            phase.notes.append(f"round {index + 1} failed: {str(error).splitlines()[0]}")
            break
        phase.rounds = index + 1
        phase.round_seconds.append(time.perf_counter() - began)
        print(f"[{phase.title}] round {index + 1} ({phase.round_seconds[-1]:.0f} s, s/step): " + ", ".join(line), flush=True)
        for label, values, _ in ratio_series(phase, args):
            if len(values) >= 2:
                print(f"      {label:<30} median {stats.median(values):.3f}, 95 % CI +-{100 * stats.ci_halfwidth_rel(values):.1f} %",
                      flush=True)
        if deadline is not None and index + 1 < args.rounds:
            per_round = stats.median(phase.round_seconds)
            if time.perf_counter() + per_round > deadline:
                phase.notes.append(f"stopped after {index + 1} of {args.rounds} rounds: --max-minutes reached")
                print(f"[{phase.title}] stopping: another round (~{per_round:.0f} s) would pass --max-minutes", flush=True)
                break


def ratio_series(phase: Phase, args: argparse.Namespace) -> list[tuple[str, list[float], str]]:
    """(label, per-round values, goal) for every ratio whose variants ran."""
    def per_step(variant: str) -> list[float] | None:
        entries = phase.results.get(variant)
        return [entry["s_per_step"] for entry in entries] if entries else None

    out: list[tuple[str, list[float], str]] = []

    def add(label: str, numerator: str, denominator: str, goal: str, scale: float = 1.0) -> None:
        a, b = per_step(numerator), per_step(denominator)
        if a and b:
            out.append((label, [x / (scale * y) for x, y in zip(a, b)], goal))

    prefix = "xl_" if phase.variants and phase.variants[0].startswith("xl_") else ""
    p = prefix + "pack"
    add("pack / floor", p, prefix + "floor", "<= 1.02")
    add("pack / core", p, prefix + "core", "<= 1.0")
    add("pack / core_sdpa", p, prefix + "core_sdpa", "")
    add("pack / diffusers", p, prefix + "diffusers", "<= 1.0")
    add("floor / diffusers", prefix + "floor", prefix + "diffusers", "")
    add("pack_masked / pack", prefix + "pack_masked", p, "<= 1.02")
    add("pack_id / pack", prefix + "pack_id", p, "<= 1.02")
    add("pack / pack_2br", p, prefix + "pack_2br", "")
    add("core / pack_2br", prefix + "core", prefix + "pack_2br", "")
    add("diffusers / pack_2br", prefix + "diffusers", prefix + "pack_2br", "")
    for variant in phase.variants:
        cells = sweep_cells(variant)
        if cells:
            add(f"{variant.removeprefix(prefix)} / ({cells} x pack)", variant, p, "<= 1.0", scale=cells)

    def split(variant: str) -> list[tuple[float, float]] | None:
        """Per round: (UNet s/step, the rest s/step) of one variant, where its worker timed the UNet."""
        entries = phase.results.get(variant)
        if not entries or any("unet_s_per_step" not in e for e in entries):
            return None
        return [(e["unet_s_per_step"], e["s_per_step"] - e["unet_s_per_step"]) for e in entries]

    def add_equal(label: str, numerator: str, denominator: str, goal: str) -> None:
        """The ratio with the UNet's time held at the denominator's own (same UNet calls per step): what
        the numerator adds around the UNet, free of the UNet's round-to-round noise."""
        a, b = split(numerator), split(denominator)
        if a and b:
            out.append((label, [(unet + rest_a) / (unet + rest_b) for (_, rest_a), (unet, rest_b) in zip(a, b)], goal))

    add_equal("pack / floor, UNet time equal", p, prefix + "floor", "<= 1.02")
    add_equal("pack / core, UNet time equal", p, prefix + "core", "")
    add_equal("pack / diffusers, UNet time equal", p, prefix + "diffusers", "<= 1.0")
    add_equal("pack_masked / pack, UNet time equal", prefix + "pack_masked", p, "<= 1.02")
    add_equal("pack_id / pack, UNet time equal", prefix + "pack_id", p, "<= 1.02")
    for variant in ("pack_map", "pack_sched", "pack_local"):
        add_equal(f"{variant} / pack, UNet time equal", prefix + variant, p, "<= 1.02")
    host_unet, diffusers_unet = split(p), split(prefix + "diffusers")
    if host_unet and diffusers_unet:
        out.append(("host UNet / diffusers UNet (s per step inside the UNet)",
                    [a[0] / b[0] for a, b in zip(host_unet, diffusers_unet)], ""))
    return out


def report(phase: Phase, args: argparse.Namespace, checkpoint_name: str) -> list[str]:
    """The phase's tables (Markdown) and reading, as lines."""
    lines = [f"### {phase.title}: {phase.size}x{phase.size} px, {args.steps} timed steps per measurement "
             f"({args.steps + 1} sampled), {phase.rounds} interleaved rounds, {checkpoint_name}", ""]
    for worker in phase.workers:
        info = worker.warm_info.get("versions", {})
        if info:
            lines.append(f"- worker `{worker.name}` ({', '.join(worker.variants)}): "
                         + ", ".join(f"{k} {v}" for k, v in info.items()))
    lines += ["", "| variant | branches / step | s / step (median) | min-max | IQR | warm run (median) | peak RSS | major faults "
              "| other load (cores, max) | inside the UNet, s / step (median) | around it, ms / step (median, min-max) "
              "| UNet calls / step |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for variant in phase.variants:
        entries = phase.results.get(variant) or []
        if not entries:
            continue
        s = stats.summary([e["s_per_step"] for e in entries])
        wall = stats.median([e["wall_s"] for e in entries])
        lines.append(f"| {variant} | {branches(variant)} | {s['median']:.3f} | {s['min']:.3f}-{s['max']:.3f} "
                     f"({100 * s['range_rel']:.1f} %) | {s['q1']:.3f}-{s['q3']:.3f} | {wall:.1f} s | {rss_text(phase, variant)} "
                     f"| {sum(e.get('major_faults', 0) for e in entries)} | {max(e.get('other_cores', 0) for e in entries):.2f} |"
                     + unet_cells(entries))
    measured = [e for v in phase.variants for e in phase.results.get(v, [])]
    if measured:
        busy = [e for e in measured if e.get("other_cores", 0) > 0.1]
        lines += ["", f"Other processes used more than 0.1 core during {len(busy)} of {len(measured)} measurements"
                  + (f" (at most {max(e['other_cores'] for e in busy):.2f} cores)." if busy else ".")]
    lines += ["", "| ratio (per round, s/step) | median | min-max | 95 % CI of the mean | rounds to +-2 % | goal | reading |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    needed: list[int | None] = []
    for label, values, goal in ratio_series(phase, args):
        half = stats.ci_halfwidth_rel(values)
        reached = stats.rounds_to_resolve(values, args.target)
        projected = stats.projected_rounds(values, args.target)
        rounds_text = (f"{reached}" if reached else
                       f"not in {len(values)} (~{projected} at this spread)" if projected else "n/a")
        if goal:
            needed.append(reached)
        bound = float(goal.split()[-1]) if goal else None
        reading = stats.verdict(values, bound) if bound else ""
        ci = f"+-{100 * half:.1f} %" if not math.isnan(half) else "n/a"
        lines.append(f"| {label} | {stats.median(values):.3f} | {min(values):.3f}-{max(values):.3f} | {ci} | {rounds_text} "
                     f"| {goal} | {reading} |")
    rss = rss_ratios(phase)
    if rss:
        lines += [""] + rss
    lines.append("")
    if needed and all(needed):
        lines.append(f"Rounds needed: every goal ratio's 95 % CI was within +-{100 * args.target:g} % from round "
                     f"{max(n for n in needed if n)} on (of {phase.rounds}).")
    elif needed:
        lines.append(f"Rounds needed: not every goal ratio reached +-{100 * args.target:g} % in {phase.rounds} rounds "
                     "(see the table for the projected count).")
    if phase.round_seconds:
        lines.append(f"Time: {phase.warm_seconds / 60:.1f} min to load and warm up, {sum(phase.round_seconds) / 60:.1f} min "
                     f"of rounds ({stats.median(phase.round_seconds):.0f} s per round).")
    lines += [f"Note: {note}" for note in phase.notes]
    return lines


def unet_cells(entries: list[dict[str, Any]]) -> str:
    """The variant's time inside the UNet and around it (its worker's UNetTimer), as table cells."""
    if any("unet_s_per_step" not in e for e in entries):
        return " | | |"
    rest = [1000 * (e["s_per_step"] - e["unet_s_per_step"]) for e in entries]
    return (f" {stats.median([e['unet_s_per_step'] for e in entries]):.3f} | {stats.median(rest):.1f} "
            f"({min(rest):.1f}-{max(rest):.1f}) | {stats.median([e['unet_calls_per_step'] for e in entries]):g} |")


def stage_peak(worker: Worker, stage: str) -> float | None:
    for entry in worker.warm_info.get("stages", []):
        if entry["stage"] == stage:
            return float(entry["peak_rss_gib"])
    return None


def rss_text(phase: Phase, variant: str) -> str:
    """The worker's peak RSS read after this variant's first run, and what that worker held then."""
    worker = phase.owner.get(variant)
    peak = stage_peak(worker, variant) if worker is not None else None
    if worker is None or peak is None:
        return ""
    if worker.variants[0] == variant:
        return f"{peak:.2f} GiB" + (" (first in its worker)" if len(worker.variants) > 1 else "")
    holds_pack = any(v.removeprefix("xl_") in HOST_PACK or sweep_cells(v) for v in worker.variants)
    if variant.removeprefix("xl_") in ("core", "core_sdpa") and holds_pack:
        return f"{peak:.2f} GiB (worker holds two models: the pack's and core's)"
    return f"{peak:.2f} GiB (worker after the runs above)"


def rss_ratios(phase: Phase) -> list[str]:
    prefix = "xl_" if phase.variants and phase.variants[0].startswith("xl_") else ""
    diffusers = phase.owner.get(prefix + "diffusers")
    pack = phase.owner.get(prefix + "pack")
    if diffusers is None or pack is None:
        return []
    reference = diffusers.warm_info["peak_rss_gib"]
    lines = [f"Peak RSS: pack {stage_peak(pack, prefix + 'pack'):.2f} GiB (its worker after the first edit, nothing else "
             f"loaded) / diffusers {reference:.2f} GiB = {stage_peak(pack, prefix + 'pack') / reference:.3f} (goal <= 1.1)."]
    core = phase.owner.get(prefix + "core")
    if core is not None and core is not pack:
        lines.append(f"Peak RSS core / diffusers: {core.warm_info['peak_rss_gib']:.2f} / {reference:.2f} GiB = "
                     f"{core.warm_info['peak_rss_gib'] / reference:.3f}.")
    elif core is not None:
        before = max(entry["peak_rss_gib"] for entry in pack.warm_info["stages"] if entry["stage"] != prefix + "core")
        lines.append(f"core shares the pack's worker (two models): loading it raised that worker's peak from {before:.2f} "
                     f"to {stage_peak(pack, prefix + 'core'):.2f} GiB (+{stage_peak(pack, prefix + 'core') - before:.2f}).")
    worker_peaks = ", ".join(f"{w.name} {w.warm_info.get('peak_rss_gib', math.nan):.2f} GiB" for w in phase.workers
                             if w.warm_info)
    lines.append(f"Workers' peak RSS after warm-up: {worker_peaks}.")
    return lines


# -- families ----------------------------------------------------------------------------------------------
def family_memory_gib(size: int, dtype: str, variants: list[str]) -> dict[str, float]:
    """A rough resident-memory estimate per worker for the CosXL / SDXL-IP2P layout, from the layout's
    parameter counts, calibrated on what this script measured: a process's runtime ~0.9 GiB; the pack's
    process holds the UNet in the dtype it keeps (read from the file into its own memory, no mapping
    kept), a copy of the text encoders and the VAE and ~1.5 GiB more (SD1.5 fp32 at 512 px, CosXL fp16
    weights at 64 px), with the text encoders' and VAE's file pages mapped while loading; core holds
    fp32 weights and, while loading, the whole state dict; diffusers maps the file and copies only to
    convert the dtype. Activations scale with pixels. Only the largest load transient counts: workers
    load one by one."""
    from ipx2p_tools.testkit import layouts

    counts = {"unet": 0, "text": 0, "vae": 0}
    for key, shape in layouts.sdxl_checkpoint_layout(8):
        part = "unet" if key.startswith("model.diffusion_model.") else "vae" if key.startswith("first_stage_model.") else "text"
        counts[part] += math.prod(shape)
    converts = dtype != "fp16"  # on CPU the host's default is fp32: a converted copy of the fp16 file's UNet
    file_gib = sum(counts.values()) * 2 / GIB  # the fp16 file
    activations = 1.0 * (size / 512) ** 2
    runtime = 0.9
    estimate = {}
    if {"xl_pack", "xl_floor"} & set(variants):  # one process; the text encoders' and VAE's pages mapped while loading
        held = counts["unet"] * (4 if converts else 2) / GIB
        estimate["pack"] = runtime + held + (counts["text"] * 2 + counts["vae"] * 4) / GIB + 1.5 + activations
        estimate["pack load transient"] = (counts["text"] + counts["vae"]) * 2 / GIB
    if "xl_core" in variants:  # CheckpointLoaderSimple has no dtype choice: fp32 on CPU, whole state dict at load
        estimate["core (steady)"] = runtime + (counts["unet"] * 4 + counts["text"] * 2 + counts["vae"] * 4) / GIB + activations
        estimate["core load transient"] = file_gib
    if "xl_diffusers" in variants:
        estimate["diffusers (steady)"] = runtime + activations + (sum(counts.values()) * 4 / GIB if converts else file_gib)
        if converts:
            estimate["diffusers load transient"] = file_gib
    return estimate


def run_families(args: argparse.Namespace, log_dir: Path, deadline: float | None, phases: list[Phase]) -> list[str]:
    lines = ["", "## Families (SDXL-InstructPix2Pix / CosXL Edit layout, fp16 file)", ""]
    budget = min(args.memory_budget, mem_total_gib())
    variants = [v for v in args.family_variants.split(",") if v]
    for size in [int(s) for s in args.family_sizes.split(",")]:
        estimate = family_memory_gib(size, args.family_dtype, variants)
        steady = sum(v for k, v in estimate.items() if "transient" not in k)
        peak = steady + max((v for k, v in estimate.items() if "transient" in k), default=0.0)
        detail = ", ".join(f"{k} {v:.1f}" for k, v in estimate.items())
        if peak > 0.9 * budget:
            message = (f"{size} px skipped: the interleaved workers would need about {peak:.0f} GiB ({detail} GiB) with "
                       f"{args.family_dtype} weights; the budget is {budget:.0f} GiB (--memory-budget, 10 % kept free). "
                       "Interleaving needs every worker loaded at once.")
            print(message, flush=True)
            lines.append(f"- {message}")
            continue
        from ipx2p_tools.checkpoints import ensure_synthetic
        from ipx2p_tools.layout import CACHE_DIR

        ckpt = ensure_synthetic("cosxl", CACHE_DIR / "ckpt")
        phase = Phase(f"CosXL layout {size} px", size, list(variants))
        phases.append(phase)
        size_args = argparse.Namespace(**{**vars(args), "size": size})
        options = {"family": "sdxl", "weight_dtype": args.family_dtype}
        groups = [("xl_diffusers", "diffusers", [v for v in variants if v == "xl_diffusers"], options),
                  ("xl_host", "host", [v for v in ("xl_pack", "xl_floor", "xl_core") if v in variants], options)]
        try:
            start_phase(phase, groups, ckpt, size_args, log_dir)
            run_rounds(phase, size_args, deadline)
        finally:
            for worker in phase.workers:
                worker.close()
        lines += report(phase, size_args, ckpt.name)
    return lines


def mem_total_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    return math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="picture size in px (default 512; 256 as before)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement (one more is sampled)")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds (at most; see --max-minutes)")
    parser.add_argument("--max-minutes", type=float, default=25.0,
                        help="start no round that would end after this many minutes from the start (0: no limit)")
    parser.add_argument("--variants", default=",".join(SD15_DEFAULT),
                        help="comma list; sweepK for a K-cell sweep (default: %(default)s)")
    parser.add_argument("--core-worker", choices=("shared", "separate"), default="shared",
                        help="core in the pack's host process (shared, less memory) or its own (its own peak RSS)")
    parser.add_argument("--target", type=float, default=0.02, help="the resolution to report rounds for (0.02 = 2 %%)")
    parser.add_argument("--families", action="store_true", help="also CosXL-layout edits (pack, core, diffusers)")
    parser.add_argument("--family-sizes", default="512,768")
    parser.add_argument("--family-variants", default="xl_pack,xl_core,xl_diffusers",
                        help="of xl_pack, xl_floor, xl_core, xl_diffusers (default: %(default)s)")
    parser.add_argument("--family-dtype", choices=("default", "fp16"), default="default",
                        help="weights the pack (weight_dtype) and diffusers (torch_dtype) hold for the families")
    parser.add_argument("--memory-budget", type=float, default=24.0, help="GiB the families part may use")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--worker", choices=("host", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    parser.add_argument("--family", default="sd15", help=argparse.SUPPRESS)
    parser.add_argument("--weight-dtype", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--cli-overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    from ipx2p_tools.checkpoints import ensure_synthetic
    from ipx2p_tools.layout import CACHE_DIR

    started = time.perf_counter()
    deadline = started + 60 * args.max_minutes if args.max_minutes else None  # 0: no limit
    variants = [v for v in args.variants.split(",") if v and v != "none"]  # "none": only the families
    known = set(HOST_PACK) | {"core", "core_sdpa", "diffusers"}
    unknown = [v for v in variants if v not in known and not sweep_cells(v)]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(known)} and sweepK")
    unknown = [v for v in args.family_variants.split(",") if v and v not in ("xl_pack", "xl_floor", "xl_core", "xl_diffusers")]
    if unknown:
        parser.error(f"unknown family variants {unknown}; known: xl_pack, xl_floor, xl_core, xl_diffusers")
    ckpt = ensure_synthetic("ip2p_fp32", CACHE_DIR / "ckpt") if variants else Path("(none)")
    # Warm-up order inside the host worker: the pack's single edit first (its peak RSS is read there),
    # the other single edits and the floor, then the sweep (a K-wide batch), then core (a second model).
    host_order = [v for v in ("pack", "pack_2br", "pack_masked", "pack_id", "pack_map", "pack_sched", "pack_local", "floor")
                  if v in variants]
    host_order += [v for v in variants if sweep_cells(v)]
    core_shared = args.core_worker == "shared"
    groups: list[tuple[str, str, list[str], dict]] = [
        ("diffusers", "diffusers", [v for v in variants if v == "diffusers"], {}),
        ("host", "host", host_order + (["core"] if core_shared and "core" in variants else []), {}),
        ("core", "host", ["core"] if not core_shared and "core" in variants else [], {}),
        ("core_sdpa", "host", [v for v in variants if v == "core_sdpa"], {"cli_overrides": {"use_pytorch_cross_attention": True}}),
    ]
    phase = Phase("SD1.5-InstructPix2Pix", args.size, variants)
    phases = [phase]
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ipx2p-bench-logs-") as logs:
        log_dir = Path(logs)
        if variants:
            try:
                start_phase(phase, groups, ckpt, args, log_dir)
                run_rounds(phase, args, deadline)
            finally:
                for worker in phase.workers:
                    worker.close()
            lines += report(phase, args, ckpt.name)
        if args.families:
            lines += run_families(args, log_dir, deadline, phases)
        else:
            lines += ["", "Families (CosXL / SDXL-IP2P) not run: pass --families (skipped there when the workers "
                      f"would not fit {args.memory_budget:g} GiB)."]
    lines.append(f"Total wall time {(time.perf_counter() - started) / 60:.1f} min.")
    print("\n" + "\n".join(lines), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "phases": [
            {"title": p.title, "size": p.size, "results": p.results, "warm": {w.name: w.warm_info for w in p.workers},
             "notes": p.notes} for p in phases]}, indent=1))


if __name__ == "__main__":
    main()
