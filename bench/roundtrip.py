"""What one VAE decode/encode round trip changes: the case for chaining edits in latent space.

    .venv/bin/python bench/roundtrip.py            # 256x256 photo-like picture, the demo VAE

An edit's LATENT can feed the next edit directly, or be decoded (to look at it, mask it, paste it
back) and encoded again. This measures what the detour costs, on the VAE of the random-weight
demo checkpoint (true SD1.5 layout) and a synthetic photo-like picture (1/f spectrum, shapes,
grain; ipx2p_tools.pictures):
  pixels   decode(encode(picture)) against the picture: PSNR and mean absolute error (0..1)
  latent   encode(decode(z)) against z = encode(picture): relative L2 change, after 1, 2, 3 trips
Random weights make a poor autoencoder, so the demo numbers show the mechanism, not a real VAE's
quality; the published figure for SD's own VAE is in bench/README.md.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ipx2p_tools.checkpoints import ensure_synthetic  # noqa: E402
from ipx2p_tools.layout import CACHE_DIR, selected_host  # noqa: E402
from ipx2p_tools.pictures import photo_like  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    import torch

    from ipx2p_tools.host import InProcessHost

    ckpt = ensure_synthetic("ip2p", CACHE_DIR / "ckpt")
    _, tree = selected_host()
    with tempfile.TemporaryDirectory(prefix="ipx2p-roundtrip-") as tmp:
        work = Path(tmp)
        host = InProcessHost(tree, input_dir=work / "in", output_dir=work / "out", temp_dir=work / "tmp",
                             model_dirs={"checkpoints": [ckpt.parent]}).boot()
        vae = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"].execute(ckpt_name=ckpt.name, weights="auto").result[2]
        picture = photo_like(args.size, args.size, seed=0)
        with torch.inference_mode():
            latent = vae.encode(picture)
            decoded = vae.decode(latent)[..., :3]
            error = (decoded - picture).float()
            mse = float((error ** 2).mean())
            print(f"{args.size}x{args.size} photo-like picture, demo VAE ({ckpt.name})")
            print(f"pixels: decode(encode(x)) PSNR {10 * math.log10(1 / mse):.1f} dB, mean |error| {float(error.abs().mean()):.3f}")
            current = latent
            for trip in (1, 2, 3):
                current = vae.encode(vae.decode(current)[..., :3])
                change = float((current - latent).norm() / latent.norm())
                print(f"latent: after {trip} decode/encode trip(s), relative L2 change {change:.3f}")


if __name__ == "__main__":
    main()
