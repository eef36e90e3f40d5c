"""Speed and memory of one edit on CPU: the pack, core ComfyUI's IP2P path, diffusers, and the floor.

    .venv/bin/python bench/bench_edit.py            # 256x256 px, 10 steps, fp32, every variant
    .venv/bin/python bench/bench_edit.py --variants pack,core --size 128

Each variant runs in a fresh process (so its peak RSS is its own) on the same random-weight fp32
SD1.5-InstructPix2Pix checkpoint (true layout), image and seed:
  floor        10 bare batched UNet calls over the 3 branches (the UNet cost the others cannot avoid)
  pack         IPX2P_Edit, text_cfg 7.5 / image_cfg 1.5 (3 branches)
  pack_2br     IPX2P_Edit, image_cfg 1.0 (the identity drops the unconditional branch)
  pack_masked  IPX2P_Edit 7.5 / 1.5 with a mask over the middle of the picture (region edit)
  sweep4       IPX2P_GuidanceSweep over 2 x 2 cells (text 5, 7.5 x image 1.2, 1.5; one encode, one run),
               compared with four single pack edits; its wall time includes decoding the 4 cells
  core         CheckpointLoaderSimple + InstructPixToPixConditioning + DualCFGGuider + SamplerCustomAdvanced
  core_sdpa    the same with --use-pytorch-cross-attention
  diffusers    StableDiffusionInstructPix2PixPipeline.from_single_file on the same file
Time per step is measured between the sampler's step callbacks of a warm run (the model already
loaded), so loading and encoding are not in it; the warm run's wall time is reported beside it.
Peak RSS is the process's maximum resident set, load included. Not a test: numbers are noisy on
a shared 2-core machine; compare only within one run.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ipx2p_tools.checkpoints import ensure_synthetic  # noqa: E402
from ipx2p_tools.layout import CACHE_DIR, selected_host  # noqa: E402

VARIANTS = ("floor", "pack", "pack_2br", "pack_masked", "sweep4", "core", "core_sdpa", "diffusers")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def step_seconds(stamps: list[float]) -> float:
    """Mean time between consecutive step callbacks (the first step's start is not observable)."""
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return sum(gaps) / len(gaps)


def make_picture(directory: Path, size: int) -> Path:
    from PIL import Image, ImageDraw

    path = directory / f"bench_{size}.png"
    picture = Image.new("RGB", (size, size), (60, 120, 200))
    ImageDraw.Draw(picture).ellipse((size // 5, size // 5, size * 3 // 5, size * 4 // 5), fill=(240, 200, 50))
    picture.save(path)
    return path


# -- variants (each runs in its own process) -----------------------------------------------------------
def run_host_variant(variant: str, ckpt: Path, picture: Path, steps: int, work: Path) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import Graph, save_latent

    from ipx2p_tools.host import InProcessHost

    overrides = {"use_pytorch_cross_attention": True} if variant == "core_sdpa" else {}
    _, tree = selected_host()
    host = InProcessHost(tree, input_dir=picture.parent, output_dir=work / "out", temp_dir=work / "tmp",
                         model_dirs={"checkpoints": [ckpt.parent]}, cli_overrides=overrides).boot()

    def graph(seed: int) -> Graph:
        g = Graph()
        if variant.startswith("pack"):
            loader = g.add("IPX2P_CheckpointLoader", ckpt_name=ckpt.name, weights="auto")
        else:
            loader = g.add("CheckpointLoaderSimple", ckpt_name=ckpt.name)
        image = g.add("LoadImage", image=picture.name)
        positive = g.add("CLIPTextEncode", text="make it snowy", clip=(loader, 1))
        negative = g.add("CLIPTextEncode", text="", clip=(loader, 1))
        if variant == "sweep4":
            loader = g.add("IPX2P_CheckpointLoader", ckpt_name=ckpt.name, weights="auto")
        if variant.startswith("pack") or variant == "sweep4":
            encoded = g.add("IPX2P_EncodeImage", vae=(loader, 2), image=(image, 0), resize="keep", resolution=512)
            common = dict(model=(loader, 0), positive=(positive, 0), negative=(negative, 0), edit_latent=(encoded, 0),
                          seed=seed, steps=steps, sampler_name="euler", scheduler="normal")
            if variant == "sweep4":
                out = g.add("IPX2P_GuidanceSweep", vae=(loader, 2), text_cfg_values="5, 7.5", image_cfg_values="1.2, 1.5",
                            mode="grid", count=4, **common)
            else:
                extra = {}
                if variant == "pack_masked":
                    size = int(picture.stem.split("_")[-1]) if "_" in picture.stem else 256
                    canvas = g.add("SolidMask", value=0.0, width=size, height=size)
                    patch = g.add("SolidMask", value=1.0, width=size // 2, height=size // 2)
                    extra["mask"] = (g.add("MaskComposite", destination=(canvas, 0), source=(patch, 0), x=size // 4,
                                           y=size // 4, operation="add"), 0)
                out = g.add("IPX2P_Edit", text_cfg=7.5, image_cfg=1.0 if variant == "pack_2br" else 1.5, denoise=1.0,
                            **common, **extra)
        else:
            conds = g.add("InstructPixToPixConditioning", positive=(positive, 0), negative=(negative, 0),
                          vae=(loader, 2), pixels=(image, 0))
            guider = g.add("DualCFGGuider", model=(loader, 0), cond1=(conds, 0), cond2=(conds, 1),
                           negative=(negative, 0), cfg_conds=7.5, cfg_cond2_negative=1.5, style="regular")
            out = g.add("SamplerCustomAdvanced", noise=(g.add("RandomNoise", noise_seed=seed), 0), guider=(guider, 0),
                        sampler=(g.add("KSamplerSelect", sampler_name="euler"), 0),
                        sigmas=(g.add("BasicScheduler", model=(loader, 0), scheduler="normal", steps=steps,
                                      denoise=1.0), 0),
                        latent_image=(conds, 2))
        save_latent(g, out)
        return g

    stamps: list[float] = []
    host.progress_listener = lambda value, total: stamps.append(time.perf_counter()) if total == steps else None
    cold = host.run(graph(1).prompt)
    assert cold.success, cold.error_text()
    stamps.clear()
    started = time.perf_counter()
    warm = host.run(graph(2).prompt)  # a new seed: only the sampling node runs again
    wall = time.perf_counter() - started
    assert warm.success, warm.error_text()
    return {"variant": variant, "s_per_step": step_seconds(stamps), "warm_wall_s": wall, "peak_rss_gib": peak_rss_gib()}


def run_floor(ckpt: Path, size: int, steps: int, work: Path) -> dict:
    """The UNet alone: `steps` calls on a batch of 3 (c, i, u), with the attention the pack uses."""
    import torch

    from ipx2p_tools.host import InProcessHost

    _, tree = selected_host()
    host = InProcessHost(tree, input_dir=work / "in", output_dir=work / "out", temp_dir=work / "tmp",
                         model_dirs={"checkpoints": [ckpt.parent]}).boot()
    loader = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"]
    model = loader.execute(ckpt_name=ckpt.name, weights="auto").result[0]
    guider_module = sys.modules[host.nodes.NODE_CLASS_MAPPINGS["IPX2P_Guider"].__module__]
    transformer_options = guider_module.attention_options(model) if hasattr(guider_module, "attention_options") else {}
    import comfy.model_management

    comfy.model_management.load_models_gpu([model])
    latent = size // 8
    x = torch.randn(3, 4, latent, latent)
    c_concat = torch.randn(3, 4, latent, latent)
    context = torch.randn(3, 77, 768)
    sigma = torch.full((3,), 5.0)
    stamps = []
    with torch.inference_mode():
        for _ in range(steps + 1):
            model.model.apply_model(x, sigma, c_concat=c_concat, c_crossattn=context,
                                    transformer_options=dict(transformer_options))
            stamps.append(time.perf_counter())
    return {"variant": "floor", "s_per_step": step_seconds(stamps), "warm_wall_s": stamps[-1] - stamps[0],
            "peak_rss_gib": peak_rss_gib()}


def run_diffusers(ckpt: Path, picture: Path, steps: int, work: Path) -> dict:
    import torch
    from PIL import Image

    from ipx2p_tools.peer_diffusers import load_pipeline, write_config_folder

    _, tree = selected_host()
    pipe = load_pipeline(ckpt, write_config_folder(work / "diffusers_config", tree))
    image = Image.open(picture).convert("RGB")
    stamps: list[float] = []

    def on_step(pipeline, step, timestep, kwargs):
        stamps.append(time.perf_counter())
        return kwargs

    def edit(seed: int) -> None:
        pipe("make it snowy", image=image, num_inference_steps=steps, guidance_scale=7.5, image_guidance_scale=1.5,
             generator=torch.manual_seed(seed), output_type="latent", callback_on_step_end=on_step)

    edit(1)
    stamps.clear()
    started = time.perf_counter()
    edit(2)
    wall = time.perf_counter() - started
    return {"variant": "diffusers", "s_per_step": step_seconds(stamps), "warm_wall_s": wall, "peak_rss_gib": peak_rss_gib()}


def child(args: argparse.Namespace) -> None:
    ckpt = Path(args.ckpt)
    with tempfile.TemporaryDirectory(prefix="ipx2p-bench-") as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        picture = make_picture(work / "in", args.size)
        if args.variant == "floor":
            result = run_floor(ckpt, args.size, args.steps, work)
        elif args.variant == "diffusers":
            result = run_diffusers(ckpt, picture, args.steps, work)
        else:
            result = run_host_variant(args.variant, ckpt, picture, args.steps, work)
    print("BENCH " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    ckpt = ensure_synthetic("ip2p_fp32", CACHE_DIR / "ckpt")
    results = {}
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", variant, "--ckpt", str(ckpt), "--size", str(args.size),
               "--steps", str(args.steps)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if done.returncode != 0 or line is None:
            print(f"{variant}: failed\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
            continue
        results[variant] = json.loads(line[len("BENCH "):])
        r = results[variant]
        print(f"{variant:10s} {r['s_per_step']:.3f} s/step  warm run {r['warm_wall_s']:.1f} s  peak RSS {r['peak_rss_gib']:.2f} GiB",
              flush=True)

    def ratio(a: str, b: str, key: str = "s_per_step") -> str:
        if a in results and b in results:
            return f"{results[a][key] / results[b][key]:.3f}"
        return "n/a"

    print(f"\n{args.size}x{args.size} px, {args.steps} steps, fp32, {ckpt.name}")
    print(f"pack/floor        {ratio('pack', 'floor')}   (goal <= 1.02)")
    print(f"pack/core         {ratio('pack', 'core')}   (goal <= 1.0)")
    print(f"pack/core_sdpa    {ratio('pack', 'core_sdpa')}")
    print(f"pack/diffusers    {ratio('pack', 'diffusers')}   (goal <= 1.0)")
    print(f"pack/pack_2br     {ratio('pack', 'pack_2br')}   (goal >= 1.45: speed-up when a branch is dropped)")
    print(f"pack_masked/pack  {ratio('pack_masked', 'pack')}   (goal <= 1.0 within noise: same UNet calls)")
    if "sweep4" in results and "pack" in results:
        print(f"sweep4/(4 x pack) {results['sweep4']['warm_wall_s'] / (4 * results['pack']['warm_wall_s']):.3f}   "
              "(warm wall time, decoding included; goal <= 1.0)")
    print(f"RSS pack/diffusers {ratio('pack', 'diffusers', 'peak_rss_gib')}   (goal <= 1.1)")
    print(f"RSS core/diffusers {ratio('core', 'diffusers', 'peak_rss_gib')}")


if __name__ == "__main__":
    main()
