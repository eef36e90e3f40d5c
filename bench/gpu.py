"""GPU benchmark and dynamic-VRAM checks: the pack against core ComfyUI, diffusers and the floor, in one run.

    bench/gpu.sh                                   # NVIDIA GPU: 512x512 px, 100 steps, fp16 and bf16
    bench/gpu.sh --patchers dynamic,legacy --budget-s 560   # both patchers in one run
    bench/gpu.sh --device cpu --size 64 --steps 2  # CPU, tiny: proves the script works (CI runs this)
    bench/gpu.sh --bundle DIR                      # here, online: what a GPU machine without network needs

Made for a machine with one NVIDIA GPU, PyTorch installed and no network. It needs the ComfyUI
host tree (COMFYUI_PATH, IPX2P_HOST, or --comfyui) and the Python packages the host imports beyond
torch; `--wheels DIR` installs those from wheels the caller copied along (pip --no-index, into
.cache/gpu-site) when they do not import. `--bundle DIR` prepares both on a machine with network
(bench/README.md lists them with their sizes). It generates the random-weight SD1.5-InstructPix2Pix
checkpoint itself (ipx2p_tools.checkpoints), then runs one process per dtype, each:

  floor        bare batched UNet calls over the 3 branches (c, i, u): the cost nobody can avoid
  floor_2br    the same over 2 branches
  pack         IPX2P_Edit, text_cfg 7.5 / image_cfg 1.5 (3 branches), through the host's executor
  pack_2br     IPX2P_Edit 7.5 / 1.0: the unconditional branch is dropped (2 branches)
  pack_eq      IPX2P_Edit 1.5 / 1.5: text_cfg = image_cfg drops the image-only branch (2 branches)
  core         CheckpointLoaderSimple + InstructPixToPixConditioning + DualCFGGuider + SamplerCustomAdvanced, 7.5 / 1.5
  core_2br     the same at 7.5 / 1.0
  pack_fast    IPX2P_Edit 7.5 / 1.5 with `fast` on: the UNet compiled (inductor, CUDA graphs), weights resident
  pack_fast_2br, pack_fast_eq   the same at 7.5 / 1.0 and 1.5 / 1.5 (2 branches)
  core_compile core's TorchCompileModel (inductor) + DualCFGGuider 7.5 / 1.5: what a user can do without the pack
  diffusers    StableDiffusionInstructPix2PixPipeline 7.5 / 1.5 (only when diffusers imports)

and, with --guidance (or named in --variants): what a guidance map, a schedule and localize cost per step:
  pack_map     IPX2P_Edit 7.5 / 1.5 with a guidance_map over the middle quarter, 3.0 / 2.0 outside
  pack_sched   IPX2P_Edit with an IPX2P_GuidanceSchedule 7.5 -> 5 / 1.5 -> 1.8, linear
  pack_local   IPX2P_Edit 7.5 / 1.5 with localize auto

and the checks (PASS / FAIL with the error text):
  hooks: ...   a hooked conditioning (core CreateHookLoraModelOnly + ConditioningSetProperties) sampled
               with the pack's MODEL through IPX2P_Edit and through IPX2P_Guider + SamplerCustomAdvanced
               (under ComfyUI's dynamic-VRAM patcher this needs the loader to register
               cached_patcher_init), and with core's loader and DualCFGGuider as a control. PASS needs a
               finite result that differs from the unhooked edit (the hook took effect).
  loader: ...  after the pack's loader (and again after sampling): model.is_dynamic(), and no UNet
               tensor is a zero-stride stand-in (any stride 0 with more than one element).
  fast: ...    the fast path's 20-step latent against the eager path's (same seed): relative L2
               (PASS <= FAST_AGREEMENT), and that its calls ran compiled; n/a where it falls back (CPU).

Columns: "cold s" is the variant's first (2-step) run, loading included; for the fast and compiled
rows it holds the one-time compilation and capture. "compiled" (fast rows): the input sizes the
UNet was compiled for during the variant, "+N warm" the ones compiled during its warm runs
(0: later edits of the size reuse the first compile), and the path the edit took.

On CUDA dynamic VRAM is switched on as ComfyUI's main.py does it (comfy-aimdo, ModelPatcherDynamic),
unless --no-dynamic-vram. s/step: time between the first and last step callbacks of a warm run
(CUDA synchronised at both) divided by the steps between them, median of --repeats runs. Peak
memory: torch.cuda.max_memory_allocated, reset before each variant (every model unloaded first);
on CPU the process's peak RSS so far (it cannot be reset). Numbers compare only within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ipx2p_tools.layout import CACHE_DIR, PACK_DIR_NAME, selected_host  # noqa: E402  (standard library only)

DTYPES = ("fp16", "bf16", "fp32")
PATCHERS = ("dynamic", "legacy", "cpu")  # ComfyUI's dynamic-VRAM patcher (its default on NVIDIA), --no-dynamic-vram
CHECKPOINT_KIND = "ip2p"  # fp16 file; the loaders store the UNet in the dtype under test
INSTRUCTION = "make it snowy"
SAMPLER, SCHEDULER = "euler", "normal"
CHECK_STEPS = 2
FAST_AGREEMENT = 0.05  # relative L2 of the 20-step fp16 latent, compiled against eager (kernels round differently)
SYNC_STEPS = 20  # the edit whose host-device waits are counted (torch.cuda.set_sync_debug_mode)
# What ComfyUI 0.30.0's import (and the pack's) needs beyond torch, torchvision, torchaudio and the
# usual scientific stack; checked against the packages of a CUDA PyTorch image (bench/README.md).
HOST_MODULES = ("av", "comfy_aimdo", "comfy_kitchen", "torchsde", "simpleeval", "blake3", "yaml", "safetensors",
                "einops", "transformers", "tokenizers", "sentencepiece", "aiohttp", "PIL", "scipy", "psutil", "tqdm",
                "requests")
# Wheels `--bundle` fetches: (distribution, platform kind). comfy-kitchen's pure-Python wheel (its
# eager and Triton backends) is 0.15 MB; its CUDA-kernel wheel is 45 MB and would not fit.
BUNDLE_WHEELS = (("av", "binary"), ("comfy-aimdo", "binary"), ("comfy-kitchen", "pure"), ("torchsde", "pure"),
                 ("trampoline", "pure"), ("simpleeval", "pure"), ("blake3", "binary"))
DIFFUSERS_WHEELS = (("diffusers", "pure"),)  # on Python >= 3.8 it needs no importlib-metadata
BUNDLE_LIMIT = 64 * 1024**2


@dataclass(frozen=True)
class Variant:
    family: str  # floor | pack | core | diffusers
    text_cfg: float
    image_cfg: float
    what: str
    floor_branches: int = 3
    fast: bool = False  # pack: IPX2P_Edit's `fast`; core: TorchCompileModel before the guider
    guidance: str = ""  # pack: "map" | "schedule" | "localize" (issue 18's per-step costs)


VARIANTS: dict[str, Variant] = {
    "floor": Variant("floor", 0, 0, "bare batched UNet calls over c, i, u", 3),
    "floor_2br": Variant("floor", 0, 0, "bare batched UNet calls over 2 branches", 2),
    "pack": Variant("pack", 7.5, 1.5, "IPX2P_Edit 7.5 / 1.5"),
    "pack_2br": Variant("pack", 7.5, 1.0, "IPX2P_Edit 7.5 / 1.0 (image_cfg 1 drops u)"),
    "pack_eq": Variant("pack", 1.5, 1.5, "IPX2P_Edit 1.5 / 1.5 (text_cfg = image_cfg drops i)"),
    "core": Variant("core", 7.5, 1.5, "InstructPixToPixConditioning + DualCFGGuider + SamplerCustomAdvanced 7.5 / 1.5"),
    "core_2br": Variant("core", 7.5, 1.0, "core's path at 7.5 / 1.0"),
    "pack_fast": Variant("pack", 7.5, 1.5, "IPX2P_Edit 7.5 / 1.5, fast on (compiled UNet, CUDA graphs)", fast=True),
    "pack_fast_2br": Variant("pack", 7.5, 1.0, "IPX2P_Edit 7.5 / 1.0, fast on", fast=True),
    "pack_fast_eq": Variant("pack", 1.5, 1.5, "IPX2P_Edit 1.5 / 1.5, fast on", fast=True),
    "core_compile": Variant("core", 7.5, 1.5, "core TorchCompileModel (inductor) + DualCFGGuider 7.5 / 1.5", fast=True),
    "diffusers": Variant("diffusers", 7.5, 1.5, "diffusers StableDiffusionInstructPix2PixPipeline 7.5 / 1.5"),
    "pack_map": Variant("pack", 7.5, 1.5, "IPX2P_Edit 7.5 / 1.5 with a guidance_map over the middle quarter, "
                        "3.0 / 2.0 outside", guidance="map"),
    "pack_sched": Variant("pack", 7.5, 1.5, "IPX2P_Edit with a Guidance Schedule 7.5 -> 5 / 1.5 -> 1.8, linear",
                          guidance="schedule"),
    "pack_local": Variant("pack", 7.5, 1.5, "IPX2P_Edit 7.5 / 1.5 with localize auto", guidance="localize"),
}
# Not in the default run (it must finish inside 8 minutes): --guidance adds them
GUIDANCE_VARIANTS = ("pack_map", "pack_sched", "pack_local")
CHECKS = ("hooks: IPX2P_Edit", "hooks: IPX2P_Guider", "hooks: core (control)", "loader: no stand-ins",
          "fast: agrees with eager")


def gib(n_bytes: float) -> float:
    return n_bytes / 1024**3


def emit(kind: str, payload: dict) -> None:
    """One result line for the parent process (stdout is the channel; logs go to stderr)."""
    print(f"{kind} {json.dumps(payload)}", flush=True)


# == child process: one dtype ===========================================================================
class Child:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = args.device
        self.dtype = args.dtype
        self.size = args.size
        self.steps = [int(s) for s in args.steps.split(",")]
        self.repeats = args.repeats
        self.deadline = args.deadline
        self.ckpt = Path(args.ckpt)
        self.tree = Path(args.tree)
        self.work = Path(args.work)
        self.variants = [v for v in args.variants.split(",") if v]
        self.torch: Any = None
        self.host: Any = None
        self.unets: set[int] = set()
        self.unet_items = 0
        self.unet_calls = 0
        self.unhooked: Any = None
        self.patcher = "cpu" if self.device == "cpu" else "legacy" if args.no_dynamic_vram else "dynamic"
        # the fast path's agreement is stated after SYNC_STEPS steps; a CPU (where it falls back) runs 2
        self.check_steps = SYNC_STEPS if self.device == "cuda" else CHECK_STEPS

    # -- start-up -----------------------------------------------------------------------------------
    def cli_overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {"cpu": self.device == "cpu"}
        # Core's loader picks the UNet dtype from these flags; the pack's loader gets weight_dtype.
        overrides[{"fp16": "fp16_unet", "bf16": "bf16_unet", "fp32": "fp32_unet"}[self.dtype]] = True
        return overrides

    def enable_dynamic_vram(self) -> str:
        """What ComfyUI's main.py does before it loads anything (0.30.0 and newer): comfy-aimdo's
        allocator and ModelPatcherDynamic as the CoreModelPatcher. Runs before torch is imported,
        as in main.py. Returns a description of the outcome."""
        from comfy.cli_args import args

        if self.device != "cuda" or self.args.no_dynamic_vram:
            return "off (" + ("--no-dynamic-vram" if self.args.no_dynamic_vram else "CPU") + ")"
        try:
            from comfy.cli_args import enables_dynamic_vram
        except ImportError:
            return "off (this ComfyUI has no dynamic VRAM)"
        if not enables_dynamic_vram():
            return "off (disabled by this ComfyUI's flags)"
        torch_first = "torch" in sys.modules
        import comfy_aimdo.control

        headroom = None if getattr(args, "reserve_vram", None) is None else int(args.reserve_vram * 1024**3)
        try:
            comfy_aimdo.control.init(simple_vram_headroom=headroom,
                                     nvml_pressure=not getattr(args, "disable_nvml_pressure", False))
        except TypeError:  # older comfy-aimdo protocols, as main.py falls back
            try:
                comfy_aimdo.control.init(simple_vram_headroom=headroom)
            except TypeError:
                comfy_aimdo.control.init()
        import comfy.memory_management
        import comfy.model_management as mm
        import comfy.model_patcher

        if not mm.is_nvidia() or mm.is_wsl():
            return "off (not an NVIDIA device, or WSL)"
        torch_version = getattr(mm, "torch_version_numeric", (99, 0))
        if torch_version < (2, 8):
            return f"off (torch {torch_version} < 2.8)"
        headroom_gb = getattr(args, "vram_headroom", 0) or 0
        devices = mm.get_all_torch_devices()
        try:
            ready = comfy_aimdo.control.init_devices((d.index, int(headroom_gb * 1024**3)) for d in devices)
        except TypeError:
            ready = comfy_aimdo.control.init_devices(d.index for d in devices)
        if not ready:
            return "off (comfy-aimdo did not initialise)"
        # The same two assignments main.py makes; nothing else changes.
        comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
        comfy.memory_management.aimdo_enabled = True
        return "on (comfy-aimdo, ModelPatcherDynamic)" + (" [torch was imported first]" if torch_first else "")

    def boot(self) -> dict:
        from ipx2p_tools.host import InProcessHost

        overrides = self.cli_overrides()
        # Flags first, exactly as InProcessHost.boot sets them, so that dynamic VRAM sees them.
        sys.path.insert(0, str(self.tree))
        import utils.extra_config  # noqa: F401  (binds the host's `utils` before comfy/ is on sys.path)
        from comfy.cli_args import args

        for name, value in overrides.items():
            setattr(args, name, value)
        dynamic = self.enable_dynamic_vram()
        self.write_lora()
        self.host = InProcessHost(self.tree, input_dir=self.work / "in", output_dir=self.work / "out",
                                  temp_dir=self.work / "tmp", model_dirs={"checkpoints": [self.ckpt.parent],
                                                                          "loras": [self.work / "loras"]},
                                  cli_overrides=overrides).boot()
        import comfy.model_management as mm
        import torch

        self.torch = torch
        self.make_picture()
        device = mm.get_torch_device()
        return {"dtype": self.dtype, "device": mm.get_torch_device_name(device), "torch": torch.__version__,
                "comfyui": self.host.version, "dynamic_vram": dynamic,
                "core_patcher": getattr(sys.modules["comfy.model_patcher"].CoreModelPatcher, "__name__", "?"),
                "problems": self.host.pack_import_problems(PACK_DIR_NAME)}

    def write_lora(self) -> None:
        """A small LoRA in kohya's LDM naming on two UNet layers, for the hook checks."""
        import torch
        from safetensors.torch import save_file

        generator = torch.Generator().manual_seed(5)
        rank = 4
        shapes = {"lora_unet_input_blocks_1_1_proj_in": ((rank, 320, 1, 1), (320, rank, 1, 1)),
                  "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k": ((rank, 768), (1280, rank))}
        tensors = {}
        for name, (down, up) in shapes.items():
            tensors[f"{name}.lora_down.weight"] = torch.randn(down, generator=generator) * 0.1
            tensors[f"{name}.lora_up.weight"] = torch.randn(up, generator=generator) * 0.1
            tensors[f"{name}.alpha"] = torch.tensor(float(rank))
        (self.work / "loras").mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(self.work / "loras" / "ipx2p_bench_hook.safetensors"))

    def make_picture(self) -> None:
        from PIL import Image, ImageDraw

        size = self.size
        picture = Image.new("RGB", (size, size), (60, 120, 200))
        ImageDraw.Draw(picture).ellipse((size // 5, size // 5, size * 3 // 5, size * 4 // 5), fill=(240, 200, 50))
        picture.save(self.work / "in" / "bench.png")

    # -- measuring ------------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def time_left(self) -> float:
        return self.deadline - time.time()

    def free(self, drop_cache: bool = False) -> None:
        """Every model off the device and the peak counter reset; drop_cache: the executor's cached
        outputs (which hold the loaded models) dropped too, so the next prompt loads from disk."""
        import gc

        import comfy.model_management as mm

        mm.unload_all_models()
        if drop_cache and self.host is not None:
            self.host.executor.reset()
        gc.collect()
        mm.soft_empty_cache()
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        if self.device == "cuda":
            return gib(self.torch.cuda.max_memory_allocated())
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux

    def device_used_gib(self) -> float | None:
        """Memory in use on the whole device (every allocator: torch's cache, comfy-aimdo's weights,
        the CUDA context), read after a variant's runs. torch's own peak misses what aimdo maps."""
        if self.device != "cuda":
            return None
        free, total = self.torch.cuda.mem_get_info()
        return gib(total - free)

    def count_unet_calls(self, module: Any) -> None:
        if id(module) in self.unets:
            return
        self.unets.add(id(module))

        def pre_hook(_module: Any, inputs: tuple) -> None:
            if inputs and hasattr(inputs[0], "shape"):
                self.unet_items += int(inputs[0].shape[0])
                self.unet_calls += 1

        module.register_forward_pre_hook(pre_hook)

    def watch_loaded_unets(self) -> None:
        import comfy.model_management as mm

        for loaded in list(mm.current_loaded_models):
            base = getattr(loaded.model, "model", None)
            unet = getattr(base, "diffusion_model", None)
            if unet is not None:
                self.count_unet_calls(unet)

    def row(self, name: str, per_step: dict[int, float | None], branches: float | None, result: str = "ok",
            syncs: int | None = None, cold_s: float | None = None, compiled: str | None = None) -> None:
        emit("ROW", {"dtype": self.dtype, "patcher": self.patcher, "variant": name, "branches": branches,
                     "s_per_step": {str(k): v for k, v in per_step.items()}, "peak_gib": self.peak_gib(),
                     "device_gib": self.device_used_gib(), "result": result, "syncs": syncs, "cold_s": cold_s,
                     "compiled": compiled})

    def count_syncs(self, build: Any) -> int | None:
        """Host-device waits in one SYNC_STEPS-step run of the graph (CUDA only): the warnings
        torch.cuda.set_sync_debug_mode("warn") gives for each synchronizing operation."""
        if self.device != "cuda" or self.time_left() <= 0:
            return None
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.torch.cuda.set_sync_debug_mode("warn")
            try:
                self.run_graph(build(seed=9, steps=SYNC_STEPS))
            finally:
                self.torch.cuda.set_sync_debug_mode("default")
        return sum(1 for warning in caught if "synchroniz" in str(warning.message).lower())

    def error_row(self, name: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        emit("ROW", {"dtype": self.dtype, "patcher": self.patcher, "variant": name, "branches": None,
                     "s_per_step": {}, "peak_gib": None, "result": "error: " + text})

    def check(self, name: str, passed: bool | None, detail: str) -> None:
        emit("CHECK", {"dtype": self.dtype, "patcher": self.patcher, "check": name,
                       "result": "n/a" if passed is None else "PASS" if passed else "FAIL", "detail": detail})

    # -- graphs ---------------------------------------------------------------------------------------
    def pack_inputs(self, g: Any) -> tuple[str, str, str, str]:
        loader = g.add("IPX2P_CheckpointLoader", ckpt_name=self.ckpt.name, weights="auto", weight_dtype=self.dtype)
        image = g.add("LoadImage", image="bench.png")
        positive = g.add("CLIPTextEncode", text=INSTRUCTION, clip=(loader, 1))
        negative = g.add("CLIPTextEncode", text="", clip=(loader, 1))
        encoded = g.add("IPX2P_EncodeImage", vae=(loader, 2), image=(image, 0), resize="keep", resolution=self.size)
        return loader, positive, negative, encoded

    def hooked(self, g: Any, positive: str) -> str:
        hooks = g.add("CreateHookLoraModelOnly", lora_name="ipx2p_bench_hook.safetensors", strength_model=1.0)
        return g.add("ConditioningSetProperties", cond_NEW=(positive, 0), strength=1.0, set_cond_area="default",
                     hooks=(hooks, 0))

    def pack_graph(self, variant: Variant, seed: int, steps: int, hooks: str = "") -> Any:
        from ipx2p_tools.testkit.graph import Graph, guidance_inputs, save_latent

        g = Graph()
        loader, positive, negative, encoded = self.pack_inputs(g)
        if hooks:
            positive = self.hooked(g, positive)
        if hooks == "guider":
            guider = g.add("IPX2P_Guider", model=(loader, 0), positive=(positive, 0), negative=(negative, 0),
                           edit_latent=(encoded, 0), text_cfg=variant.text_cfg, image_cfg=variant.image_cfg)
            conds = g.add("IPX2P_Conditioning", positive=(positive, 0), negative=(negative, 0), edit_latent=(encoded, 0))
            out = g.add("SamplerCustomAdvanced", noise=(g.add("RandomNoise", noise_seed=seed), 0), guider=(guider, 0),
                        sampler=(g.add("KSamplerSelect", sampler_name=SAMPLER), 0),
                        sigmas=(g.add("BasicScheduler", model=(loader, 0), scheduler=SCHEDULER, steps=steps,
                                      denoise=1.0), 0),
                        latent_image=(conds, 3))
        else:
            out = g.add("IPX2P_Edit", model=(loader, 0), positive=(positive, 0), negative=(negative, 0),
                        edit_latent=(encoded, 0), seed=seed, steps=steps, text_cfg=variant.text_cfg,
                        image_cfg=variant.image_cfg, sampler_name=SAMPLER, scheduler=SCHEDULER, denoise=1.0,
                        **({"fast": True} if variant.fast else {}),
                        **(guidance_inputs(g, variant.guidance, self.size, variant.text_cfg, variant.image_cfg)
                           if variant.guidance else {}))
        save_latent(g, out)
        return g

    def core_graph(self, variant: Variant, seed: int, steps: int, hooks: bool = False) -> Any:
        from ipx2p_tools.testkit.graph import Graph, save_latent

        g = Graph()
        loader = g.add("CheckpointLoaderSimple", ckpt_name=self.ckpt.name)
        image = g.add("LoadImage", image="bench.png")
        positive = g.add("CLIPTextEncode", text=INSTRUCTION, clip=(loader, 1))
        negative = g.add("CLIPTextEncode", text="", clip=(loader, 1))
        if hooks:
            positive = self.hooked(g, positive)
        conds = g.add("InstructPixToPixConditioning", positive=(positive, 0), negative=(negative, 0), vae=(loader, 2),
                      pixels=(image, 0))
        model = (g.add("TorchCompileModel", model=(loader, 0), backend="inductor"), 0) if variant.fast else (loader, 0)
        guider = g.add("DualCFGGuider", model=model, cond1=(conds, 0), cond2=(conds, 1), negative=(negative, 0),
                       cfg_conds=variant.text_cfg, cfg_cond2_negative=variant.image_cfg, style="regular")
        out = g.add("SamplerCustomAdvanced", noise=(g.add("RandomNoise", noise_seed=seed), 0), guider=(guider, 0),
                    sampler=(g.add("KSamplerSelect", sampler_name=SAMPLER), 0),
                    sigmas=(g.add("BasicScheduler", model=(loader, 0), scheduler=SCHEDULER, steps=steps, denoise=1.0), 0),
                    latent_image=(conds, 2))
        save_latent(g, out)
        return g

    def run_graph(self, graph: Any) -> Any:
        result = self.host.run(graph.prompt)
        if not result.success:
            raise RuntimeError(result.error_text() or "the prompt failed without an error message")
        return result

    def saved_latent(self, result: Any) -> Any:
        from ipx2p_tools.testkit.graph import read_saved_latent

        node_id = next(k for k, v in result.outputs.items() if "latents" in v)
        return read_saved_latent(self.host, result, node_id)

    # -- variants through the executor ----------------------------------------------------------------
    def bench_graph_variant(self, name: str, build: Any) -> None:
        """Cold run (loads everything, compiles where the variant compiles), then warm runs per step
        count; only the sampler reruns."""
        self.free()
        books_before = self.compile_books()
        started = time.perf_counter()
        self.run_graph(build(seed=1, steps=2))
        self.sync()
        cold_s = time.perf_counter() - started
        books_cold = self.compile_books()
        self.watch_loaded_unets()
        per_step: dict[int, float | None] = {}
        branches: float | None = None
        for steps in self.steps:
            if self.time_left() <= 0:
                per_step[steps] = None
                continue
            samples = []
            for repeat in range(self.repeats):
                marks: list[tuple[int, float]] = []

                def listener(value: int, total: int, marks: list = marks, steps: int = steps) -> None:
                    if total == steps:
                        self.sync()
                        marks.append((value, time.perf_counter()))

                self.host.progress_listener = listener
                self.unet_items = self.unet_calls = 0
                try:
                    self.run_graph(build(seed=2 + repeat, steps=steps))
                finally:
                    self.host.progress_listener = None
                if branches is None and self.unet_calls:
                    branches = self.unet_items / steps
                if len(marks) >= 2 and marks[-1][0] > marks[0][0]:
                    samples.append((marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0]))
            per_step[steps] = statistics.median(samples) if samples else None
        books_warm = self.compile_books()
        skipped = [s for s, v in per_step.items() if v is None]
        syncs = self.count_syncs(build)
        compiled = self.compiled_summary(books_before, books_cold, books_warm) if VARIANTS[name].family == "pack" \
            and VARIANTS[name].fast else None
        self.row(name, per_step, branches, "ok" if not skipped else f"skipped {skipped} steps (time budget)", syncs,
                 cold_s, compiled)

    def compile_books(self) -> tuple[int, int]:
        """(input sizes compiled, compiled calls) over every UNet the pack's fast path has compiled."""
        from ipx2p_tools.host import pack_module

        try:
            fast_path = pack_module(self.host.nodes, "fast_path")
        except (KeyError, ModuleNotFoundError, AttributeError):
            return 0, 0
        books = [entry.book for entry in list(fast_path._COMPILED.values())]
        return sum(b.compilations for b in books), sum(sum(b.calls.values()) for b in books)

    def compiled_summary(self, before: tuple[int, int], cold: tuple[int, int], warm: tuple[int, int]) -> str:
        if warm[1] == before[1]:
            return "no: standard path (see the log for why)"
        return f"{cold[0] - before[0]} size(s), +{warm[0] - cold[0]} warm"

    def pack_phase(self) -> None:
        self.free(drop_cache=True)
        names = [n for n in self.variants if VARIANTS[n].family == "pack"]
        for name in names:
            self.guarded(name, lambda name=name: self.bench_graph_variant(
                name, lambda seed, steps: self.pack_graph(VARIANTS[name], seed, steps)))
        if not self.args.no_checks:
            self.hook_checks_pack()
            if "pack_fast" in self.variants:
                self.fast_check()

    def fast_check(self) -> None:
        """The fast path's 20-step latent against the eager path's, same seed and inputs."""
        name = CHECKS[4]
        if self.time_left() <= 0:
            self.check(name, None, "skipped (time budget)")
            return
        try:
            before = self.compile_books()
            fast = self.saved_latent(self.run_graph(self.pack_graph(VARIANTS["pack_fast"], 4, self.check_steps)))
            ran_compiled = self.compile_books()[1] > before[1]
            eager = self.saved_latent(self.run_graph(self.pack_graph(VARIANTS["pack"], 4, self.check_steps)))
        except Exception as error:
            self.check(name, False, f"{type(error).__name__}: {error}".strip())
            return
        change = self.relative(fast, eager)
        detail = f"relative L2 {change:.2e} after {self.check_steps} steps ({self.dtype})"
        if not ran_compiled:
            self.check(name, None, detail + "; the fast path fell back to the standard path here")
        else:
            self.check(name, bool(self.torch.isfinite(fast).all()) and change <= FAST_AGREEMENT, detail)

    def core_phase(self) -> None:
        self.free(drop_cache=True)
        for name in [n for n in self.variants if VARIANTS[n].family == "core"]:
            self.guarded(name, lambda name=name: self.bench_graph_variant(
                name, lambda seed, steps: self.core_graph(VARIANTS[name], seed, steps)))
        if not self.args.no_checks:
            self.hook_check(CHECKS[2], lambda: self.core_graph(VARIANTS["core"], 3, CHECK_STEPS, hooks=True),
                            reference=None)

    def guarded(self, name: str, job: Any) -> None:
        import logging

        logging.getLogger("ipx2p.gpu").info("variant %s (%.0f s of the budget left)", name, self.time_left())
        if self.time_left() <= 0:
            self.error_row(name, "skipped (time budget)")
            return
        try:
            job()
        except Exception as error:  # one failing variant must not lose the others' numbers
            import traceback

            traceback.print_exc()
            self.error_row(name, error)

    # -- checks ---------------------------------------------------------------------------------------
    def relative(self, a: Any, b: Any) -> float:
        a, b = a.double(), b.double()
        return float((a - b).norm() / b.norm().clamp_min(1e-12))

    def hook_checks_pack(self) -> None:
        try:
            self.unhooked = self.saved_latent(self.run_graph(self.pack_graph(VARIANTS["pack"], 3, CHECK_STEPS)))
        except Exception as error:
            self.unhooked = None
            for name in CHECKS[:2]:
                self.check(name, False, f"the unhooked reference edit failed: {type(error).__name__}: {error}")
            return
        self.hook_check(CHECKS[0], lambda: self.pack_graph(VARIANTS["pack"], 3, CHECK_STEPS, hooks="edit"),
                        self.unhooked)
        self.hook_check(CHECKS[1], lambda: self.pack_graph(VARIANTS["pack"], 3, CHECK_STEPS, hooks="guider"),
                        self.unhooked)

    def hook_check(self, name: str, build: Any, reference: Any) -> None:
        if self.time_left() <= 0:
            self.check(name, None, "skipped (time budget)")
            return
        try:
            latent = self.saved_latent(self.run_graph(build()))
        except Exception as error:
            self.check(name, False, f"{type(error).__name__}: {error}".strip())
            return
        if not bool(self.torch.isfinite(latent).all()):
            self.check(name, False, "the hooked edit ran but its latent is not finite")
            return
        if reference is None:
            self.check(name, True, "ran, finite")
            return
        change = self.relative(latent, reference)
        if change < 1e-3:
            self.check(name, False, f"ran, but equals the unhooked edit (relative change {change:.1e}): the hook was ignored")
        else:
            self.check(name, True, f"ran; the hook changed the edit by {change:.2f} (relative L2)")

    def stand_ins(self, model: Any) -> list[str]:
        """UNet tensors that are zero-stride stand-ins (a view of one value, not real weights)."""
        unet = model.model.diffusion_model
        tensors = list(unet.named_parameters()) + list(unet.named_buffers())
        return [name for name, t in tensors if t.numel() > 1 and 0 in t.stride()]

    # -- the floor ------------------------------------------------------------------------------------
    def floor_phase(self) -> None:
        names = [n for n in self.variants if VARIANTS[n].family == "floor"]
        if not names and self.args.no_checks:
            return
        import comfy.model_management as mm

        torch = self.torch
        self.free(drop_cache=True)
        loader = self.host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"]
        try:
            with torch.inference_mode():
                model = loader.execute(ckpt_name=self.ckpt.name, weights="auto", weight_dtype=self.dtype).result[0]
        except Exception as error:
            for name in names:
                self.error_row(name, f"the pack's loader failed: {type(error).__name__}: {error}")
            if not self.args.no_checks:
                self.check(CHECKS[3], False, f"the pack's loader failed: {type(error).__name__}: {error}")
            return
        dynamic = model.is_dynamic() if hasattr(model, "is_dynamic") else None
        factory = "registered" if getattr(model, "cached_patcher_init", None) is not None else "not registered"
        after_load = self.stand_ins(model)
        from ipx2p_tools.host import pack_module

        engine = pack_module(self.host.nodes, "engine")
        options = engine.attention_options(model) if hasattr(engine, "attention_options") else {}
        sampled_ok = True
        for name in names or ["floor"]:
            if self.time_left() <= 0:
                self.error_row(name, "skipped (time budget)")
                continue
            try:
                self.floor_variant(name, model, options, record=name in names)
            except Exception as error:
                import traceback

                traceback.print_exc()
                sampled_ok = False
                self.error_row(name, error)
        if not self.args.no_checks:
            after_use = self.stand_ins(model)
            found = sorted(set(after_load) | set(after_use))
            detail = (f"is_dynamic={dynamic if dynamic is not None else 'n/a (no such method)'}, "
                      f"cached_patcher_init {factory}, ")
            if found:
                self.check(CHECKS[3], False, detail + f"{len(found)} zero-stride stand-ins, e.g. {found[0]}"
                           + (" (after loading)" if after_load else " (after sampling)"))
            else:
                self.check(CHECKS[3], True, detail + "no zero-stride stand-ins after loading"
                           + (" and after UNet calls" if sampled_ok else " (UNet calls failed)"))
        del model
        mm.unload_all_models()

    def floor_variant(self, name: str, model: Any, options: dict, record: bool) -> None:
        import logging

        import comfy.model_management as mm

        logging.getLogger("ipx2p.gpu").info("variant %s (%.0f s of the budget left)", name, self.time_left())

        torch = self.torch
        self.free()
        # The loader ran under inference mode, as the host's executor runs nodes: its tensors are
        # inference tensors, which the legacy patcher (--no-dynamic-vram) may only move and patch
        # inside inference mode ("Inference tensors do not track version counter" otherwise).
        with torch.inference_mode():
            mm.load_models_gpu([model])
        branches = VARIANTS[name].floor_branches
        device = model.load_device
        latent = self.size // 8
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(branches, 4, latent, latent, generator=generator).to(device)
        c_concat = torch.randn(branches, 4, latent, latent, generator=generator).to(device)
        context = (torch.randn(branches, 77, 768, generator=generator) * 0.5).to(device)
        sigma = torch.full((branches,), 5.0, device=device)

        def call() -> None:
            model.model.apply_model(x, sigma, c_concat=c_concat, c_crossattn=context,
                                    transformer_options=dict(options))

        per_step: dict[int, float | None] = {}
        with torch.inference_mode():
            for _ in range(2):  # warm-up, as the graphs' cold run
                call()
            self.sync()
            for steps in self.steps:
                if self.time_left() <= 0:
                    per_step[steps] = None
                    continue
                samples = []
                for _ in range(self.repeats):
                    self.sync()
                    started = time.perf_counter()
                    for _ in range(steps):
                        call()
                    self.sync()
                    samples.append((time.perf_counter() - started) / steps)
                per_step[steps] = statistics.median(samples)
        if record:
            skipped = [s for s, v in per_step.items() if v is None]
            self.row(name, per_step, float(branches), "ok" if not skipped else f"skipped {skipped} steps (time budget)")

    # -- diffusers ------------------------------------------------------------------------------------
    def diffusers_phase(self) -> None:
        if "diffusers" not in self.variants:
            return
        self.guarded("diffusers", self.bench_diffusers)

    def bench_diffusers(self) -> None:
        from PIL import Image

        from ipx2p_tools.peer_diffusers import load_pipeline, write_config_folder

        torch = self.torch
        self.free(drop_cache=True)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[self.dtype]
        pipe = load_pipeline(self.ckpt, write_config_folder(self.work / "diffusers_config", self.tree), dtype)
        if self.device == "cuda":
            pipe = pipe.to("cuda")
        self.count_unet_calls(pipe.unet)
        image = Image.open(self.work / "in" / "bench.png").convert("RGB")
        marks: list[tuple[int, float]] = []

        def on_step(_pipe: Any, step: int, _timestep: Any, kwargs: dict) -> dict:
            self.sync()
            marks.append((step + 1, time.perf_counter()))
            return kwargs

        def edit(seed: int, steps: int) -> None:
            pipe(INSTRUCTION, image=image, num_inference_steps=steps, guidance_scale=7.5, image_guidance_scale=1.5,
                 generator=torch.manual_seed(seed), output_type="latent", callback_on_step_end=on_step)

        edit(1, 2)
        per_step: dict[int, float | None] = {}
        branches = None
        for steps in self.steps:
            if self.time_left() <= 0:
                per_step[steps] = None
                continue
            samples = []
            for repeat in range(self.repeats):
                marks.clear()
                self.unet_items = self.unet_calls = 0
                edit(2 + repeat, steps)
                if branches is None and self.unet_calls:
                    branches = self.unet_items / steps
                if len(marks) >= 2:
                    samples.append((marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0]))
            per_step[steps] = statistics.median(samples) if samples else None
        self.row("diffusers", per_step, branches)

    def run(self) -> None:
        import logging

        # The host's log lines (and this script's) go to the per-dtype log file the parent keeps.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(relativeCreated)8.0f ms %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        emit("INFO", self.boot())
        self.floor_phase()
        self.pack_phase()
        self.core_phase()
        self.diffusers_phase()


# == parent process ===================================================================================
def diffusers_importable(env: dict) -> bool:
    done = subprocess.run([sys.executable, "-c", "import diffusers"], env=env, capture_output=True, text=True)
    return done.returncode == 0


def missing_modules(env: dict) -> list[str]:
    code = ("import importlib, json\nmissing = []\n"
            f"for name in {list(HOST_MODULES)!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception as error:\n        missing.append(f'{name} ({type(error).__name__}: {error})')\n"
            "print(json.dumps(missing))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return [f"(the import probe failed: {done.stderr.strip()[-500:]})"]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def install_wheels(wheels: Path, site: Path) -> None:
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    if not files:
        raise SystemExit(f"gpu: --wheels {wheels} holds no .whl files")
    say(f"installing {len(files)} wheels from {wheels} into {site} (pip --no-index)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(site), *files], check=True)


def say(message: str) -> None:
    print(f"gpu: {message}", file=sys.stderr, flush=True)


def link_pack(tree: Path) -> None:
    """The pack must be in the host's custom_nodes; link this checkout there when it is not."""
    link = tree / "custom_nodes" / PACK_DIR_NAME
    if link.is_symlink() and link.resolve() == REPO:
        return
    if link.is_symlink():
        link.unlink()  # a link of the same name made for another copy of this checkout
    elif link.exists():
        say(f"{link} is a folder, not this checkout: that copy of the pack is what gets measured")
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(REPO, target_is_directory=True)
    say(f"linked {link} -> {REPO}")


def fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def row_key(row: dict) -> tuple:
    return (row.get("patcher", "?"), row["dtype"])


def table(rows: list[dict], checks: list[dict], steps: list[int], device: str) -> str:
    memory = ["peak VRAM GiB", "device VRAM GiB"] if device == "cuda" else ["peak RSS GiB"]
    syncs = [f"host syncs @{SYNC_STEPS}"] if device == "cuda" else []
    head = (["patcher", "dtype", "variant", "branches"] + [f"s/step @{s}" for s in steps] + memory + syncs
            + ["cold s", "compiled", "result"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * len(head)) + "|"]
    for r in rows:
        branches = "-" if r["branches"] is None else f"{r['branches']:g}"
        cells = [r.get("patcher", "?"), r["dtype"], r["variant"], branches]
        cells += [fmt_seconds(r["s_per_step"].get(str(s))) for s in steps]
        cells += ["-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"]
        if device == "cuda":
            cells += ["-" if r.get("device_gib") is None else f"{r['device_gib']:.2f}"]
            cells += ["-" if r.get("syncs") is None else str(r["syncs"])]
        cells += ["-" if r.get("cold_s") is None else f"{r['cold_s']:.1f}", r.get("compiled") or "-", r["result"]]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    for c in checks:
        result = c["result"] + (": " + c["detail"] if c["detail"] else "")
        cells = [c.get("patcher", "?"), c["dtype"], "check: " + c["check"], "-"]
        cells += ["-"] * (len(steps) + len(memory) + len(syncs) + 2) + [result[:400]]
        lines.append("| " + " | ".join(x.replace("|", "/").replace("\n", " ") for x in cells) + " |")
    return "\n".join(lines)


def ratios(rows: list[dict], steps: list[int], device: str) -> list[str]:
    by = {(*row_key(r), r["variant"]): r for r in rows}
    pairs = (("pack", "floor", "<= 1.02"), ("pack", "core", "<= 1.0"), ("pack", "diffusers", "<= 1.0"),
             ("pack_2br", "floor_2br", "<= 1.02"), ("pack_2br", "core_2br", "<= 1.0"), ("core", "pack_eq", "core must run 3"),
             ("diffusers", "pack_2br", "diffusers runs 3"), ("pack", "pack_2br", ""), ("pack", "pack_eq", ""),
             ("pack_fast", "diffusers", "<= 0.5"), ("pack_fast", "core_compile", "<= 1.0"),
             ("pack_fast_2br", "pack_fast", "<= 0.75"), ("pack_fast_eq", "pack_fast", "<= 0.75"),
             ("pack_fast", "pack", ""), ("pack_map", "pack", "<= 1.02"), ("pack_sched", "pack", "<= 1.02"),
             ("pack_local", "pack", "<= 1.02"))
    out = []
    for key in sorted({row_key(r) for r in rows}, key=lambda k: (PATCHERS.index(k[0]) if k[0] in PATCHERS else 9,
                                                                 DTYPES.index(k[1]))):
        patcher, dtype = key
        for a, b, goal in pairs:
            ra, rb = by.get((*key, a)), by.get((*key, b))
            if not ra or not rb:
                continue
            values = []
            for s in steps:
                va, vb = ra["s_per_step"].get(str(s)), rb["s_per_step"].get(str(s))
                values.append(f"@{s} {va / vb:.3f}" if va and vb else f"@{s} n/a")
            out.append(f"{patcher} {dtype} s/step {a}/{b}: {', '.join(values)}" + (f"   ({goal})" if goal else ""))
        fast = by.get((*key, "pack_fast"))
        for s in steps if fast else ():
            value = fast["s_per_step"].get(str(s))
            if value:
                out.append(f"{patcher} {dtype} pack_fast: a {s}-step edit samples in {value * s:.2f} s   (@100 <= 1.2 s)")
        # CPU's peak RSS cannot be reset between variants, so only VRAM peaks compare
        for a, b in (("pack", "core"), ("pack", "diffusers"), ("pack", "floor")) if device == "cuda" else ():
            ra, rb = by.get((*key, a)), by.get((*key, b))
            if ra and rb and ra["peak_gib"] and rb["peak_gib"]:
                out.append(f"{patcher} {dtype} peak memory {a}/{b}: {ra['peak_gib'] / rb['peak_gib']:.3f}")
    return out


def default_variants(device: str) -> list[str]:
    if device == "cuda":
        return [name for name in VARIANTS if name not in GUIDANCE_VARIANTS]
    # on a CPU: no diffusers; core's compile node would compile the full-size UNet with inductor for
    # many minutes; the pack's fast path falls back there (as for a user), so one fast row shows it
    return [name for name in VARIANTS
            if name not in ("diffusers", "core_compile", "pack_fast_2br", "pack_fast_eq", *GUIDANCE_VARIANTS)]


def parent(args: argparse.Namespace) -> int:
    started = time.time()
    budget = args.budget_s
    deadline = started + budget
    steps = [int(s) for s in args.steps.split(",")]
    if any(s < 2 for s in steps):
        raise SystemExit("gpu: --steps must each be >= 2 (s/step is measured between step callbacks)")
    dtypes = args.dtypes.split(",") if args.dtypes else (["fp16", "bf16"] if args.device == "cuda" else ["fp32"])
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise SystemExit(f"gpu: --dtypes: {dtype!r} is not one of {', '.join(DTYPES)}")
    if args.device == "cpu":
        patchers = ["cpu"]
    else:
        patchers = args.patchers.split(",") if args.patchers else ["legacy" if args.no_dynamic_vram else "dynamic"]
        for patcher in patchers:
            if patcher not in PATCHERS[:2]:
                raise SystemExit(f"gpu: --patchers: {patcher!r} is not one of dynamic, legacy")
    variants = args.variants.split(",") if args.variants else default_variants(args.device)
    if args.guidance:
        variants += [name for name in GUIDANCE_VARIANTS if name not in variants]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"gpu: unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.comfyui:
        tree = Path(args.comfyui).expanduser().resolve()
    else:
        tree = selected_host()[1]
    if not (tree / "main.py").exists():
        raise SystemExit(f"gpu: no ComfyUI at {tree}; pass --comfyui PATH (or set COMFYUI_PATH / IPX2P_HOST)")
    link_pack(tree)

    env = dict(os.environ)
    missing = missing_modules(env)
    if missing and args.wheels:
        site = Path(args.site).resolve() if args.site else CACHE_DIR / "gpu-site"
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        missing = missing_modules(env) if site.is_dir() else missing
        if missing:
            say("missing: " + "; ".join(missing))
            install_wheels(Path(args.wheels), site)
            missing = missing_modules(env)
    if missing:
        raise SystemExit("gpu: the host cannot import: " + "; ".join(missing) +
                         ". Copy the wheels along and pass --wheels DIR (bench/README.md: `--bundle`).")
    if "diffusers" in variants and not diffusers_importable(env):
        say("diffusers does not import here: its variant is left out (carry its wheel to include it)")
        variants.remove("diffusers")

    from ipx2p_tools.checkpoints import ensure_synthetic

    ckpt_dir = Path(args.ckpt_dir) if args.ckpt_dir else CACHE_DIR / "ckpt"
    t0 = time.time()
    ckpt = ensure_synthetic(CHECKPOINT_KIND, ckpt_dir)
    say(f"checkpoint {ckpt.name} ready in {time.time() - t0:.1f} s")

    rows: list[dict] = []
    checks: list[dict] = []
    infos: list[dict] = []
    failures: list[str] = []
    runs = [(patcher, dtype) for patcher in patchers for dtype in dtypes]
    with tempfile.TemporaryDirectory(prefix="ipx2p-gpu-") as tmp:
        for patcher, dtype in runs:
            label = dtype if patcher in ("dynamic", "cpu") else f"{patcher}-{dtype}"
            work = Path(tmp) / label
            (work / "in").mkdir(parents=True)
            log = Path(tmp) / f"{label}.log"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--dtype", dtype, "--device", args.device,
                   "--size", str(args.size), "--steps", args.steps, "--repeats", str(args.repeats),
                   "--variants", ",".join(variants), "--ckpt", str(ckpt), "--tree", str(tree), "--work", str(work),
                   "--deadline", str(deadline)]
            cmd += ["--no-dynamic-vram"] if patcher == "legacy" else []
            cmd += ["--no-checks"] if args.no_checks else []
            say(f"{label}: running ({max(0, deadline - time.time()):.0f} s of the budget left; log {log})")
            out = ""
            with log.open("w") as log_file:
                try:
                    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=log_file, text=True,
                                          timeout=max(30.0, deadline - time.time() + 60))
                    out, code = done.stdout, done.returncode
                except subprocess.TimeoutExpired as expired:
                    out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
                    code = -9
            got = set()
            for line in out.splitlines():
                kind, _, payload = line.partition(" ")
                if kind == "ROW":
                    rows.append(json.loads(payload))
                    got.add(rows[-1]["variant"])
                elif kind == "CHECK":
                    checks.append(json.loads(payload))
                    got.add(checks[-1]["check"])
                elif kind == "INFO":
                    infos.append(json.loads(payload))
            why = "not run (" + ("time budget" if code == -9 else f"process exit {code}") + ")"
            for name in variants:
                if name not in got:
                    rows.append({"dtype": dtype, "patcher": patcher, "variant": name, "branches": None,
                                 "s_per_step": {}, "peak_gib": None, "result": why})
            for name in () if args.no_checks else CHECKS:
                if name not in got and (name != CHECKS[4] or "pack_fast" in variants):
                    checks.append({"dtype": dtype, "patcher": patcher, "check": name, "result": "FAIL", "detail": why})
            if code != 0:
                failures.append(f"{label}: the benchmark process exited with {code}; its log ends:\n"
                                + log.read_text()[-3000:])
        if args.keep_logs:
            for log in Path(tmp).glob("*.log"):
                shutil.copy(log, Path(args.keep_logs) / log.name)

    order = {name: i for i, name in enumerate(VARIANTS)}
    def run_order(item: dict) -> tuple[int, int]:
        patcher = item.get("patcher", "?")
        return (PATCHERS.index(patcher) if patcher in PATCHERS else 9, DTYPES.index(item["dtype"]))

    rows.sort(key=lambda r: (*run_order(r), order.get(r["variant"], 99)))
    checks.sort(key=lambda c: (*run_order(c), CHECKS.index(c["check"]) if c["check"] in CHECKS else 99))
    info = infos[0] if infos else {}
    print(f"\nIPX2P GPU benchmark: {info.get('device', '?')}, torch {info.get('torch', '?')}, "
          f"ComfyUI {info.get('comfyui', '?')}, dynamic VRAM {info.get('dynamic_vram', '?')} "
          f"(CoreModelPatcher = {info.get('core_patcher', '?')})")
    print(f"{args.size}x{args.size} px, {SAMPLER}/{SCHEDULER}, steps {args.steps}, dtypes {','.join(dtypes)}, "
          f"median of {args.repeats} warm run(s); random-weight {ckpt.name}")
    for problem in info.get("problems", []):
        print(f"pack import problem: {problem}")
    print()
    print(table(rows, checks, steps, args.device))
    print()
    for line in ratios(rows, steps, args.device):
        print(line)
    print("\nvariants: " + "; ".join(f"{name} = {VARIANTS[name].what}" for name in variants))
    print(f"total {time.time() - started:.0f} s")
    for failure in failures:
        print(failure, file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"info": infos, "rows": rows, "checks": checks}, indent=1))
    bad = [r for r in rows if r["result"] != "ok"] + [c for c in checks if c["result"] == "FAIL"]
    return 1 if bad or failures else 0


# == bundle: what a GPU machine without network needs ================================================
SLIM_SKIP = {"__pycache__", ".git", "tests", "tests-unit", "blueprints", "comfy_api_nodes", "custom_nodes", "user",
             "output", "input", "temp", ".github", ".ci"}


def slim_host_copy(tree: Path, target: Path) -> None:
    """The host tree without what this benchmark never imports: tests, API nodes, blueprints, and the
    tokenizers of other model families (comfy/text_encoders/*_tokenizer; SD1.5 uses comfy/sd1_tokenizer)."""
    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        skipped = {n for n in names if n in SLIM_SKIP and here == tree or n == "__pycache__"}
        if here == tree / "comfy" / "text_encoders":
            skipped |= {n for n in names if n.endswith("_tokenizer") and (here / n).is_dir()}
        return skipped

    shutil.copytree(tree, target, ignore=ignore, symlinks=True)
    (target / "custom_nodes").mkdir(exist_ok=True)


def download_wheel(name: str, kind: str, python: str, target: Path) -> None:
    import importlib.metadata

    try:
        version = importlib.metadata.version(name)  # the version the tests here run with
        requirement = f"{name}=={version}"
    except importlib.metadata.PackageNotFoundError:
        requirement = name
    platforms = ["any"] if kind == "pure" else [
        "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
        "manylinux2014_x86_64", "manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python,
           "--implementation", "cp", "-d", str(target), requirement]
    for platform in platforms:
        cmd += ["--platform", platform]
    subprocess.run(cmd, check=True)


def bundle(target: Path, args: argparse.Namespace) -> int:
    tree = Path(args.comfyui).expanduser().resolve() if args.comfyui else selected_host()[1]
    if target.exists():
        raise SystemExit(f"gpu: {target} exists; give a new folder")
    slim_host_copy(tree, target / "ComfyUI")
    wheels = target / "wheels"
    wheels.mkdir()
    for name, kind in BUNDLE_WHEELS + (DIFFUSERS_WHEELS if args.with_diffusers else ()):
        download_wheel(name, kind, args.python, wheels)
    sizes = {p.name: p.stat().st_size for p in sorted(wheels.glob("*.whl"))}
    tree_size = sum(p.stat().st_size for p in (target / "ComfyUI").rglob("*") if p.is_file() and not p.is_symlink())
    for name, size in sizes.items():
        print(f"{size / 1024**2:8.2f} MiB  wheels/{name}")
    print(f"{tree_size / 1024**2:8.2f} MiB  ComfyUI/ (slim host tree)")
    total = tree_size + sum(sizes.values())
    print(f"{total / 1024**2:8.2f} MiB  in all (limit {BUNDLE_LIMIT / 1024**2:.0f} MiB)")
    print(f"\nOn the GPU machine, beside this checkout:\n  bench/gpu.sh --comfyui {target}/ComfyUI --wheels {target}/wheels")
    return 0 if total <= BUNDLE_LIMIT else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--size", type=int, default=512, help="picture side in px (a multiple of 64)")
    parser.add_argument("--steps", default="100", help="comma-separated step counts (each >= 2); host syncs are "
                                                      f"counted on a {SYNC_STEPS}-step edit either way")
    parser.add_argument("--dtypes", default="", help="fp16,bf16 on CUDA (default), fp32 on CPU (default)")
    parser.add_argument("--variants", default="", help=f"from {', '.join(VARIANTS)}")
    parser.add_argument("--guidance", action="store_true",
                        help=f"also the rows {', '.join(GUIDANCE_VARIANTS)} (a guidance map, a schedule, localize)")
    parser.add_argument("--repeats", type=int, default=0, help="warm runs per measurement (default 2 on CUDA, 1 on CPU)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting new runs after this many seconds")
    parser.add_argument("--comfyui", default="", help="the ComfyUI tree (default: COMFYUI_PATH or IPX2P_HOST's)")
    parser.add_argument("--wheels", default="", help="install the host's missing packages from these wheels")
    parser.add_argument("--site", default="", help="--wheels: install into this folder (.cache/gpu-site)")
    parser.add_argument("--ckpt-dir", default="", help="where the random-weight checkpoint is made (.cache/ckpt)")
    parser.add_argument("--no-dynamic-vram", action="store_true", help="CUDA: keep the legacy ModelPatcher")
    parser.add_argument("--patchers", default="", help="CUDA: dynamic,legacy runs both patchers in one run (one "
                                                       "table, one JSON); default: dynamic (legacy with --no-dynamic-vram)")
    parser.add_argument("--no-checks", action="store_true", help="benchmark only")
    parser.add_argument("--json", default="", help="also write the results as JSON here")
    parser.add_argument("--keep-logs", default="", help="copy each dtype's process log into this folder")
    parser.add_argument("--bundle", default="", help="write a slim host tree and the wheels to this new folder, then exit")
    parser.add_argument("--python", default="3.12", help="--bundle: the GPU machine's Python version")
    parser.add_argument("--with-diffusers", action="store_true", help="--bundle: add diffusers' wheels")
    for hidden in ("--dtype", "--ckpt", "--tree", "--work"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bundle:
        return bundle(Path(args.bundle).resolve(), args)
    if args.repeats <= 0:
        args.repeats = 2 if args.device == "cuda" else 1
    if args.child:
        Child(args).run()
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
