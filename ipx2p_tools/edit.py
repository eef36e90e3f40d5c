"""The main job: edit an image from an instruction through a real ComfyUI, headless.

    python -m ipx2p_tools.edit --image photo.jpg --instruction "make it snowy"

Runs workflows/ip2p_edit.json in-process with the host's own validator and executor and writes
`<image>_edited.png` next to the input. The checkpoint comes from the host's models/checkpoints.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ipx2p_core.image import original_edit_size
from ipx2p_tools.build_workflows import OFFICIAL_CHECKPOINT, OFFICIAL_REPO, OFFICIAL_URL
from ipx2p_tools.layout import REPO_ROOT, selected_host
from ipx2p_tools.session import EditSession, SessionError, configure
from ipx2p_tools.workflow import WorkflowError

DEFAULT_WORKFLOW = REPO_ROOT / "workflows" / "ip2p_edit.json"
EXIT_USAGE, EXIT_FAILED = 2, 1


class EditError(Exception):
    """A problem the user can fix; the message says how."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ipx2p-edit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, type=Path, help="the picture to edit (PNG, JPEG, WebP, ...)")
    parser.add_argument("--instruction", required=True, help='what to change, e.g. "make it snowy"')
    parser.add_argument("--output", type=Path, help="where to write the result (default: <image>_edited.png beside it)")
    parser.add_argument("--ckpt", default=None, help=f"checkpoint file name in models/checkpoints (default: {OFFICIAL_CHECKPOINT})")
    parser.add_argument("--download", action="store_true", help=f"download {OFFICIAL_CHECKPOINT} from {OFFICIAL_REPO} if missing")
    parser.add_argument("--demo-weights", action="store_true",
                        help="use a random-weight checkpoint of the true architecture (works offline; the output is noise)")
    parser.add_argument("--steps", type=int, default=100, help="sampling steps (paper: 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-cfg", type=float, default=7.5, help="instruction guidance s_T (paper: 7.5)")
    parser.add_argument("--image-cfg", type=float, default=1.5, help="image guidance s_I (paper: 1.5); higher stays closer to the input")
    parser.add_argument("--resolution", type=int, default=512, help="long side in px before rounding to multiples of 64 (paper: 512)")
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW, help="UI-format workflow to run")
    parser.add_argument("--verbose", action="store_true", help="show the host's log")
    return parser.parse_args(argv)


def resolve_checkpoint(args: argparse.Namespace, checkpoints_dir: Path) -> str:
    """The checkpoint name to load, preparing the demo or downloaded file when asked."""
    if args.demo_weights:
        from ipx2p_tools.checkpoints import DEMO_CHECKPOINT_NAME, ensure_synthetic, link_into

        print("--demo-weights: using a RANDOM-WEIGHT checkpoint of the true SD1.5-InstructPix2Pix architecture.")
        print("                The whole path runs for real, but the edited image will be noise.")
        link_into(ensure_synthetic("ip2p"), checkpoints_dir, DEMO_CHECKPOINT_NAME)
        return DEMO_CHECKPOINT_NAME
    name = args.ckpt or OFFICIAL_CHECKPOINT
    if (checkpoints_dir / name).exists():
        return name
    if args.download and name == OFFICIAL_CHECKPOINT:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as error:
            raise EditError("--download needs huggingface_hub: pip install huggingface_hub") from error
        print(f"Downloading {OFFICIAL_CHECKPOINT} (about 7.7 GB) from {OFFICIAL_REPO} into {checkpoints_dir} ...")
        try:
            hf_hub_download(repo_id=OFFICIAL_REPO, filename=OFFICIAL_CHECKPOINT, local_dir=str(checkpoints_dir))
        except Exception as error:  # network, auth or disk: all leave the user with the same fix
            raise EditError(
                f"could not download {OFFICIAL_CHECKPOINT} ({type(error).__name__}: {error}). "
                f"Get it by hand from {OFFICIAL_URL} and put it in {checkpoints_dir}."
            ) from error
        return name
    present = sorted(p.name for p in checkpoints_dir.glob("*") if p.suffix in (".safetensors", ".ckpt"))
    raise EditError(
        f"no checkpoint {name!r} in {checkpoints_dir}.\n"
        f"  Get the InstructPix2Pix weights: {OFFICIAL_URL}\n"
        f"  and put the file in {checkpoints_dir}/ (or run again with --download).\n"
        f"  To see the whole path work offline first, run again with --demo-weights (output is noise).\n"
        + (f"  Files there now: {', '.join(present)}" if present else "  That folder holds no checkpoints now.")
    )


def edit(args: argparse.Namespace) -> Path:
    from PIL import Image

    if not args.image.is_file():
        raise EditError(f"--image {args.image}: no such file")
    try:
        with Image.open(args.image) as picture:
            width, height = picture.size
    except Exception as error:
        raise EditError(f"--image {args.image}: not an image Pillow can read ({error})") from error
    if not args.workflow.is_file():
        raise EditError(f"--workflow {args.workflow}: no such file")
    output = args.output or args.image.with_name(f"{args.image.stem}_edited.png")

    host_name, tree = selected_host()
    if not (tree / "main.py").exists():
        raise EditError(f"no ComfyUI at {tree}: run `make setup` first (or set COMFYUI_PATH to your ComfyUI)")
    checkpoints_dir = tree / "models" / "checkpoints"
    ckpt_name = resolve_checkpoint(args, checkpoints_dir)
    target_width, target_height = original_edit_size(width, height, args.resolution)

    with tempfile.TemporaryDirectory(prefix="ipx2p-edit-") as tmp:
        started = time.monotonic()
        try:
            session = EditSession(Path(tmp))
            workflow = session.workflow(args.workflow)
            session.add_input(args.image, args.image.name)
            configure(workflow, {
                "checkpoint": {"ckpt_name": ckpt_name},
                "image": {"image": args.image.name},
                "instruction": {"text": args.instruction},
                "encode": {"resize": "original", "resolution": args.resolution},
                "edit": {"seed": args.seed, "steps": args.steps, "text_cfg": args.text_cfg, "image_cfg": args.image_cfg},
                "guider": {"text_cfg": args.text_cfg, "image_cfg": args.image_cfg},
                "noise": {"noise_seed": args.seed},
                "scheduler": {"steps": args.steps},
            }, required=("checkpoint", "image", "instruction"))
            print(f"ComfyUI {session.version} ({host_name}): editing {args.image.name} at {target_width}x{target_height} px, "
                  f"{args.steps} steps, text_cfg {args.text_cfg}, image_cfg {args.image_cfg}")
            files = session.run(workflow)
        except SessionError as error:
            raise EditError(str(error)) from None
        if len(files) != 1:
            raise EditError(f"expected one output image, the workflow produced {len(files)}: {[f.name for f in files]}")
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[0], output)
        print(f"Wrote {output} in {time.monotonic() - started:.1f} s")
    return output


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = logging.StreamHandler()
    console.setLevel(logging.INFO if args.verbose else logging.ERROR)
    logging.getLogger().addHandler(console)
    try:
        edit(args)
    except (EditError, WorkflowError) as error:
        print(f"ipx2p-edit: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
