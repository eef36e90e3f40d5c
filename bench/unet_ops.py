"""Where the host's UNet and diffusers' UNet spend their time, on the same weights and inputs.

One process loads the random-weight fp32 SD1.5-InstructPix2Pix file twice, through the pack's loader
in a real ComfyUI and through diffusers' single-file pipeline, and calls both bare UNets on the same
batch of 3 (c, i, u) at one size: timed interleaved (host, diffusers, diffusers, host, ...), then once
each under torch.profiler, printing each one's top operators by own CPU time and the operators whose
total time differs most. It answers "is the floor (the host's bare UNet) slower than diffusers', and in
which operators?" (bench/README.md, pack / diffusers).

    .venv/bin/python bench/unet_ops.py --size 512 --reps 4
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def host_unet(ckpt: Path, work: Path) -> tuple[Any, dict]:
    from ipx2p_tools.host import InProcessHost, pack_module
    from ipx2p_tools.layout import selected_host

    _, tree = selected_host()
    host = InProcessHost(tree, input_dir=work / "in", output_dir=work / "out", temp_dir=work / "tmp",
                         model_dirs={"checkpoints": [ckpt.parent]}).boot()
    loader = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"]
    model = loader.execute(ckpt_name=ckpt.name, weights="auto").result[0]
    return model, pack_module(host.nodes, "engine").attention_options(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--reps", type=int, default=4, help="timed calls of each UNet (interleaved)")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from ipx2p_tools import peer_diffusers
    from ipx2p_tools.checkpoints import ensure_synthetic
    from ipx2p_tools.layout import CACHE_DIR, selected_host

    ckpt = ensure_synthetic("ip2p_fp32", CACHE_DIR / "ckpt")
    work = Path(tempfile.mkdtemp(prefix="ipx2p-unet-ops-"))
    for name in ("in", "out", "tmp"):
        (work / name).mkdir()
    model, options = host_unet(ckpt, work)
    _, tree = selected_host()
    pipe = peer_diffusers.load_pipeline(ckpt, peer_diffusers.write_config_folder(work / "cfg", tree))
    unet = pipe.unet.eval()
    comfy_unet = model.model.diffusion_model.eval()

    generator = torch.Generator().manual_seed(0)
    side = args.size // 8
    x = torch.randn(3, 8, side, side, generator=generator)
    context = torch.randn(3, 77, 768, generator=generator)
    timesteps = torch.full((3,), 500.0)
    transformer_options = dict(options)

    def run_host() -> torch.Tensor:
        return comfy_unet(x, timesteps=timesteps, context=context, transformer_options=dict(transformer_options))

    def run_diffusers() -> torch.Tensor:
        return unet(x, timesteps, encoder_hidden_states=context, return_dict=False)[0]

    with torch.inference_mode():
        difference = (run_host() - run_diffusers()).norm() / run_diffusers().norm()
        print(f"same weights, same inputs: relative L2 difference of the outputs {difference.item():.2e}")
        times: dict[str, list[float]] = {"host": [], "diffusers": []}
        for rep in range(args.reps):
            order = [("host", run_host), ("diffusers", run_diffusers)]
            for name, call in order if rep % 2 == 0 else order[::-1]:
                began = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - began)
        for name, values in times.items():
            print(f"{name:>9}: median {statistics.median(values):.3f} s per call of batch 3 "
                  f"({', '.join(f'{v:.3f}' for v in values)})")
        print(f"host / diffusers: {statistics.median(times['host']) / statistics.median(times['diffusers']):.3f}")

        totals: dict[str, dict[str, tuple[float, int]]] = {}
        for name, call in (("host", run_host), ("diffusers", run_diffusers)):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                call()
            events = prof.key_averages()
            totals[name] = {e.key: (e.self_cpu_time_total / 1e6, e.count) for e in events}
            print(f"\n{name}: top operators by own CPU time (s, calls)")
            for key, (seconds, count) in sorted(totals[name].items(), key=lambda kv: -kv[1][0])[: args.top]:
                print(f"  {seconds:8.3f}  {count:5d}  {key}")
            print(f"  {sum(s for s, _ in totals[name].values()):8.3f}  total")
    keys = set(totals["host"]) | set(totals["diffusers"])
    gaps = sorted(keys, key=lambda k: -abs(totals["host"].get(k, (0, 0))[0] - totals["diffusers"].get(k, (0, 0))[0]))
    print("\nlargest differences (host - diffusers, s of own CPU time; calls host / diffusers)")
    for key in gaps[: args.top]:
        h, d = totals["host"].get(key, (0.0, 0)), totals["diffusers"].get(key, (0.0, 0))
        print(f"  {h[0] - d[0]:+8.3f}  {h[1]:5d} / {d[1]:5d}  {key}")


if __name__ == "__main__":
    main()
