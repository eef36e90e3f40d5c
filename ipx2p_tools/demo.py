"""`make demo`: the main job on a generated sample picture, with whatever weights are installed.

With the official checkpoint in models/checkpoints it edits for real; without it, it says where to
get it and runs on random weights (`--demo-weights`) so the whole path can be seen working.
"""
from __future__ import annotations

import sys

from ipx2p_tools import edit
from ipx2p_tools.build_workflows import OFFICIAL_CHECKPOINT
from ipx2p_tools.layout import ARTIFACTS_DIR, selected_host


def sample_picture() -> str:
    """A small landscape drawn in code (no binary in git): sky, sun, hills, a house."""
    from PIL import Image, ImageDraw

    path = ARTIFACTS_DIR / "demo" / "sample.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.new("RGB", (384, 256))
    draw = ImageDraw.Draw(picture)
    for y in range(256):
        draw.line([(0, y), (384, y)], fill=(90 + y // 4, 150 + y // 5, 235))
    draw.ellipse((280, 30, 340, 90), fill=(255, 220, 80))
    draw.polygon([(0, 200), (120, 140), (260, 190), (384, 150), (384, 256), (0, 256)], fill=(60, 150, 70))
    draw.rectangle((150, 170, 220, 225), fill=(200, 80, 60))
    draw.polygon([(140, 170), (185, 135), (230, 170)], fill=(120, 50, 40))
    picture.save(path)
    return str(path)


def main() -> int:
    _, tree = selected_host()
    args = ["--image", sample_picture(), "--instruction", "make it snowy"]
    if not (tree / "models" / "checkpoints" / OFFICIAL_CHECKPOINT).exists():
        print(f"No {OFFICIAL_CHECKPOINT} in {tree / 'models' / 'checkpoints'}: running on random weights.")
        print("For real edits: python -m ipx2p_tools.edit --download ... (or see README, 'Where the weights go').")
        # Random weights make noise at any size, so keep the CPU run short.
        args += ["--demo-weights", "--resolution", "256", "--steps", "10"]
    return edit.main(args)


if __name__ == "__main__":
    sys.exit(main())
