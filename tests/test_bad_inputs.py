"""A catalogue of bad inputs, each run through the host's validator and executor as a user's prompt.

Each case is either refused with a clear message (it names the node the user sees it on and the
input at fault, says what was given and what was expected, and gives a fix), or gives a defined,
finite result. After each case the next good prompt runs. Never a host crash, a hang, a bare
exception name, a NaN picture without an error, or code from a pickle executed. README "Bad
inputs" lists the same cases; the ids below are its rows.

Tensors that no core node makes (RGBA or one-channel images, NaN pixels, an empty batch, a
conditioning of another width) come from a test-only node, `IPX2PTest_Tensor`, registered in the
host for this module: the pack's nodes then receive them from the executor as from any node.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from helpers import Graph, rect_mask, save_latent, write_picture
from ipx2p_tools.testkit import sd15_layout
from ipx2p_tools.testkit.synthetic import write_random_checkpoint

pytestmark = pytest.mark.usefixtures("clean_host")

# Also on the floor host (0.3.75): the cases where the host's own part differs (its validator does
# not check V3 limits and option lists; its execution context names the sampling node; its hooks).
FLOOR_CASES = {"text_cfg_negative", "image_cfg_negative", "sampler_unknown", "scheduler_unknown", "missing_widget_value",
               "ksampler_plain_prompts_on_edit_model", "guider_latent_of_another_size", "file_evil", "file_nan_weight",
               "file_truncated", "image_8192_keep", "mask_batch_fits_nothing"}

# Words that mean an error escaped without being explained to the user.
RAW_ERRORS = ("Traceback", "tuple index out of range", "'NoneType' object", "object has no attribute",
              "division by zero", "weights_only=False", "list index out of range", "unhashable type")
RAW_TYPES = {"IndexError", "KeyError", "AttributeError", "TypeError", "ZeroDivisionError", "UnpicklingError",
             "SafetensorError", "HeaderTooLarge", "EOFError", "UnboundLocalError"}


# -- the test-only tensor node ----------------------------------------------------------------------------
class TensorNode:
    """Makes an IMAGE, MASK, LATENT and CONDITIONING from a recipe string (test only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"recipe": ("STRING", {"default": "rgb 64x64"})}}

    RETURN_TYPES = ("IMAGE", "MASK", "LATENT", "CONDITIONING")
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, recipe: str):
        kind, _, size = recipe.partition(" ")
        width, height = (int(v) for v in (size or "64x64").split("x"))
        generator = torch.Generator().manual_seed(5)
        image = torch.rand((1, height, width, 3), generator=generator)
        mask = torch.ones((1, height, width))
        latent = {"samples": torch.randn((1, 4, height // 8, width // 8), generator=generator)}
        conditioning = [[torch.randn((1, 77, 768), generator=generator), {}]]
        if kind == "rgba":
            image = torch.cat([image, torch.full_like(image[..., :1], 0.5)], dim=-1)
        elif kind == "grey":
            image = image[..., :1]
        elif kind == "nan":
            image[0, height // 2, width // 2, 0] = float("nan")
        elif kind == "range":
            image = image * 3.0 - 1.0
        elif kind == "empty":
            image = image[:0]
            mask = torch.zeros((1, 0, 0))
        elif kind == "wide":
            conditioning = [[torch.randn((1, 77, 1024), generator=generator), {}]]
        return image, mask, latent, conditioning


# -- cases ---------------------------------------------------------------------------------------------------
@dataclass
class Setup:
    """What a case builds on: the good checkpoint, pictures in the input folder, the bad files."""

    ckpt: str
    picture: str  # 64x64
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Graph, Setup], None]
    node: str  # the node the message must name ("" for a defined result)
    input: str = ""
    says: tuple[str, ...] = ()  # further words the message must contain
    check: Callable[[object, object, Graph], None] | None = None  # for defined results: (host, result, graph)


def refused(case_id, node, input_name, *says):
    def decorator(build):
        return Case(case_id, build, node, input_name, says)
    return decorator


def defined(case_id, check=None):
    def decorator(build):
        return Case(case_id, build, "", check=check)
    return decorator


def edit_inputs(g: Graph, s: Setup, picture: str | None = None, resize="keep", resolution=64, instruction="make it snowy"):
    loader = g.add("IPX2P_CheckpointLoader", ckpt_name=s.ckpt, weights="auto")
    image = g.add("LoadImage", image=picture or s.picture)
    positive = g.add("CLIPTextEncode", text=instruction, clip=(loader, 1))
    negative = g.add("CLIPTextEncode", text="", clip=(loader, 1))
    encoded = g.add("IPX2P_EncodeImage", vae=(loader, 2), image=(image, 0), resize=resize, resolution=resolution)
    return loader, image, positive, negative, encoded


def edit(g: Graph, loader, positive, negative, encoded, save=True, **overrides) -> str:
    inputs = dict(model=(loader, 0), positive=(positive, 0), negative=(negative, 0), edit_latent=(encoded, 0), seed=3,
                  steps=1, text_cfg=7.5, image_cfg=1.5, sampler_name="euler", scheduler="normal", denoise=1.0)
    inputs.update(overrides)
    node = g.add("IPX2P_Edit", **inputs)
    if save:
        save_latent(g, node)
    return node


def encode_tensor(g: Graph, s: Setup, recipe: str, resize="keep") -> str:
    loader = g.add("IPX2P_CheckpointLoader", ckpt_name=s.ckpt, weights="auto")
    tensor = g.add("IPX2PTest_Tensor", recipe=recipe)
    encoded = g.add("IPX2P_EncodeImage", vae=(loader, 2), image=(tensor, 0), resize=resize, resolution=64)
    save_latent(g, encoded)
    return encoded


def finite_latents(host, result, g: Graph) -> None:
    from helpers import read_saved_latent

    saves = [node for node, spec in g.prompt.items() if spec["class_type"] == "SaveLatent"]
    assert saves
    for node in saves:
        assert torch.isfinite(read_saved_latent(host, result, node)).all()


CASES: list[Case] = []


def case(made: Case) -> Case:
    CASES.append(made)
    return made


# files
def loader_only(file_key):
    def build(g: Graph, s: Setup) -> None:
        loader = g.add("IPX2P_CheckpointLoader", ckpt_name=s.files[file_key], weights="auto")
        image = g.add("LoadImage", image=s.picture)
        save_latent(g, g.add("IPX2P_EncodeImage", vae=(loader, 2), image=(image, 0), resize="keep", resolution=64))
    return build


for file_key, words in (
    ("sd15", ("text-to-image SD1.5 UNet", "Make Any SD1.5 Model Editable")),
    ("sdxl", ("text-to-image SDXL UNet",)),
    ("inpaint", ("inpainting",)),
    ("zero", ("empty (0 bytes)",)),
    ("truncated", ("is cut off",)),
    ("random", ("does not start with a safetensors header",)),
    ("header", ("not safetensors JSON",)),
    ("zero_ckpt", ("empty (0 bytes)",)),
    ("random_ckpt", ("not a readable checkpoint",)),
    ("evil", ("would run code", "nothing in it ran")),
    ("lone_unet", ("only a", "no text encoder", "diffusers folder")),
):
    case(Case(f"file_{file_key}", loader_only(file_key), "IPX2P_CheckpointLoader", "ckpt_name", words))


@case
@refused("file_nan_weight", "IPX2P_Edit", "model", "holding NaN", "out.2.weight", "download it again")
def _(g, s):
    loader, _, positive, negative, encoded = edit_inputs(g, s)
    g.prompt[loader]["inputs"]["ckpt_name"] = s.files["nan"]
    edit(g, loader, positive, negative, encoded)


# pictures that no core node makes, from the test-only node: (case, recipe, refused on the Encode node's image with)
for case_id, recipe, words in (("image_rgba", "rgba 64x48", None), ("image_grey", "grey 64x48", None),
                               ("image_nan_pixels", "nan 64x48", ("NaN",)), ("image_out_of_range", "range 64x48", None),
                               ("image_empty_batch", "empty 64x48", ("empty",))):
    def build(g, s, recipe=recipe):
        encode_tensor(g, s, recipe)
    case(Case(case_id, build, "IPX2P_EncodeImage", "image", words) if words else Case(case_id, build, "", check=finite_latents))


@case
@refused("image_1x1_keep", "IPX2P_EncodeImage", "image", "1x1", "at least 8x8")
def _(g, s):
    loader, image, *_ = edit_inputs(g, s)
    g.prompt[image] = {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1, "batch_size": 1, "color": 0}}
    save_latent(g, next(n for n, spec in g.prompt.items() if spec["class_type"] == "IPX2P_EncodeImage"))


@case
@defined("image_1x1_original", check=finite_latents)
def _(g, s):
    loader, image, positive, negative, encoded = edit_inputs(g, s, resize="original")
    g.prompt[image] = {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1, "batch_size": 1, "color": 0xFFAA00}}
    edit(g, loader, positive, negative, encoded)


@case
@refused("image_7x7_keep", "IPX2P_EncodeImage", "image", "7x7")
def _(g, s):
    loader, image, *_ = edit_inputs(g, s)
    g.prompt[image] = {"class_type": "EmptyImage", "inputs": {"width": 7, "height": 7, "batch_size": 1, "color": 0}}
    save_latent(g, next(n for n, spec in g.prompt.items() if spec["class_type"] == "IPX2P_EncodeImage"))


@case
@defined("image_9x300_long_side", check=finite_latents)
def _(g, s):
    loader, image, positive, negative, encoded = edit_inputs(g, s, picture=s.files["9x300"], resize="long_side")
    edit(g, loader, positive, negative, encoded)


@case
@defined("image_65x47_keep", check=finite_latents)
def _(g, s):
    loader, image, positive, negative, encoded = edit_inputs(g, s, picture=s.files["65x47"])
    edit(g, loader, positive, negative, encoded)


@case
@defined("image_all_black", check=finite_latents)
def _(g, s):
    loader, image, positive, negative, encoded = edit_inputs(g, s)
    g.prompt[image] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
    edit(g, loader, positive, negative, encoded)


@case
@refused("image_8192_keep", "IPX2P_EncodeImage", "resize", "8192x8192", "Crop For Edit")
def _(g, s):
    edit_inputs(g, s, picture=s.files["8192"], resize="keep")
    save_latent(g, next(n for n, spec in g.prompt.items() if spec["class_type"] == "IPX2P_EncodeImage"))


@case
@defined("image_8192_original", check=finite_latents)
def _(g, s):
    edit_inputs(g, s, picture=s.files["8192"], resize="original")
    save_latent(g, next(n for n, spec in g.prompt.items() if spec["class_type"] == "IPX2P_EncodeImage"))


@case
@defined("image_8192_long_side", check=finite_latents)
def _(g, s):
    edit_inputs(g, s, picture=s.files["8192"], resize="long_side")
    save_latent(g, next(n for n, spec in g.prompt.items() if spec["class_type"] == "IPX2P_EncodeImage"))


@case
@refused("batch_3_images_2_instructions", "IPX2P_Edit", "positive", "batch 2", "batch 3")
def _(g, s):
    loader, image, _, negative, _ = edit_inputs(g, s)
    images = g.add("RepeatImageBatch", image=(image, 0), amount=3)
    encoded = g.add("IPX2P_EncodeImage", vae=(loader, 2), image=(images, 0), resize="keep", resolution=64)
    both = g.add("IPX2P_EncodeInstructions", clip=(loader, 1), instructions="make it snowy\nmake it night")
    edit(g, loader, both, negative, encoded)


# guidance and sampling settings
for name, overrides in (("cfg_zero", {"text_cfg": 0.0, "image_cfg": 0.0}), ("cfg_100", {"text_cfg": 100.0, "image_cfg": 100.0}),
                        ("steps_1", {"steps": 1}), ("denoise_0_01", {"denoise": 0.01, "steps": 2})):
    def build(g, s, overrides=overrides):
        loader, _, positive, negative, encoded = edit_inputs(g, s)
        edit(g, loader, positive, negative, encoded, **overrides)
    case(Case(name, build, "", check=finite_latents))


def denoise_zero_is_the_input(host, result, g: Graph) -> None:
    from helpers import read_saved_latent

    saves = [node for node, spec in g.prompt.items() if spec["class_type"] == "SaveLatent"]
    edited, encoded = (read_saved_latent(host, result, node) for node in saves)
    assert torch.equal(edited, encoded)  # as core KSampler: nothing to sample, the input comes back


@case
@defined("denoise_0", check=denoise_zero_is_the_input)
def _(g, s):
    loader, _, positive, negative, encoded = edit_inputs(g, s)
    edit(g, loader, positive, negative, encoded, denoise=0.0)
    save_latent(g, encoded)


for name, value in (("text_cfg_negative", {"text_cfg": -1.0}), ("image_cfg_negative", {"image_cfg": -1.5})):
    def build(g, s, value=value):
        loader, _, positive, negative, encoded = edit_inputs(g, s)
        edit(g, loader, positive, negative, encoded, **value)
    case(Case(name, build, "IPX2P_Edit", next(iter(value))))


for name, field_name in (("sampler_unknown", "sampler_name"), ("scheduler_unknown", "scheduler")):
    def build(g, s, field_name=field_name):
        loader, _, positive, negative, encoded = edit_inputs(g, s)
        edit(g, loader, positive, negative, encoded, **{field_name: "made_up_in_2030"})
    case(Case(name, build, "IPX2P_Edit", field_name, ("made_up_in_2030",)))


@case
@refused("missing_widget_value", "IPX2P_Edit", "steps")
def _(g, s):
    loader, _, positive, negative, encoded = edit_inputs(g, s)
    node = edit(g, loader, positive, negative, encoded)
    del g.prompt[node]["inputs"]["steps"]


# instructions and conditionings
@case
@defined("instruction_empty", check=finite_latents)
def _(g, s):
    loader, _, positive, negative, encoded = edit_inputs(g, s, instruction="")
    edit(g, loader, positive, negative, encoded)


@case
@defined("instruction_300_tokens", check=finite_latents)
def _(g, s):
    loader, _, positive, negative, encoded = edit_inputs(g, s, instruction=" ".join(["snow"] * 300))
    edit(g, loader, positive, negative, encoded)


@case
@refused("instructions_none", "IPX2P_EncodeInstructions", "instructions")
def _(g, s):
    loader, _, _, negative, encoded = edit_inputs(g, s)
    none = g.add("IPX2P_EncodeInstructions", clip=(loader, 1), instructions="\n  \n")
    edit(g, loader, none, negative, encoded)


@case
@refused("conditioning_width_1024", "IPX2P_Edit", "positive", "1024", "768")
def _(g, s):
    loader, _, _, negative, encoded = edit_inputs(g, s)
    wide = g.add("IPX2PTest_Tensor", recipe="wide 64x64")
    node = edit(g, loader, wide, negative, encoded)
    g.prompt[node]["inputs"]["positive"] = [wide, 3]


# latents
@case
@refused("empty_latent_as_edit_latent", "IPX2P_Edit", "edit_latent", "Empty Latent Image")
def _(g, s):
    loader, _, positive, negative, _ = edit_inputs(g, s)
    empty = g.add("EmptyLatentImage", width=64, height=64, batch_size=1)
    edit(g, loader, positive, negative, empty)


@case
@refused("guider_latent_of_another_size", "SamplerCustomAdvanced", "latent_image", "128x128", "64x64")
def _(g, s):
    loader, _, positive, negative, encoded = edit_inputs(g, s)
    guider = g.add("IPX2P_Guider", model=(loader, 0), positive=(positive, 0), negative=(negative, 0),
                   edit_latent=(encoded, 0), text_cfg=7.5, image_cfg=1.5)
    other = g.add("EmptyLatentImage", width=128, height=128, batch_size=1)
    sampled = g.add("SamplerCustomAdvanced", noise=(g.add("RandomNoise", noise_seed=1), 0), guider=(guider, 0),
                    sampler=(g.add("KSamplerSelect", sampler_name="euler"), 0),
                    sigmas=(g.add("BasicScheduler", model=(loader, 0), scheduler="normal", steps=1, denoise=1.0), 0),
                    latent_image=(other, 0))
    save_latent(g, sampled)


@case
@refused("ksampler_plain_prompts_on_edit_model", "KSampler", "positive", "carry no input image", "InstructPix2Pix Edit")
def _(g, s):
    loader, _, positive, negative, _ = edit_inputs(g, s)
    latent = g.add("EmptyLatentImage", width=64, height=64, batch_size=1)
    save_latent(g, g.add("KSampler", model=(loader, 0), positive=(positive, 0), negative=(negative, 0),
                         latent_image=(latent, 0), seed=0, steps=1, cfg=7.5, sampler_name="euler", scheduler="normal",
                         denoise=1.0))


# masks
@case
@refused("mask_all_zero", "IPX2P_Edit", "mask", "selects nothing")
def _(g, s):
    loader, _, positive, negative, encoded = edit_inputs(g, s)
    edit(g, loader, positive, negative, encoded, mask=(g.add("SolidMask", value=0.0, width=64, height=64), 0))


@case
@refused("mask_no_area", "IPX2P_Edit", "mask", "empty")
def _(g, s):
    loader, _, positive, negative, encoded = edit_inputs(g, s)
    edit(g, loader, positive, negative, encoded, mask=(g.add("IPX2PTest_Tensor", recipe="empty 64x64"), 1))


@case
@refused("mask_batch_fits_nothing", "IPX2P_Edit", "mask", "batch 3")
def _(g, s):
    loader, _, positive, negative, encoded = edit_inputs(g, s)
    mask = g.add("SolidMask", value=1.0, width=64, height=64)
    three = g.add("ImageToMask", image=(g.add("RepeatImageBatch", image=(g.add("MaskToImage", mask=(mask, 0)), 0),
                                              amount=3), 0), channel="red")
    edit(g, loader, positive, negative, encoded, mask=(three, 0))


@case
@defined("mask_other_size_on_edit", check=finite_latents)
def _(g, s):
    loader, _, positive, negative, encoded = edit_inputs(g, s)
    edit(g, loader, positive, negative, encoded, mask=(rect_mask(g, 200, 100, 50, 20, 80, 60), 0))


# Paste Back's mask: (case, mask width, height, value, words)
for case_id, width, height, value, words in (("paste_back_mask_wrong_size", 50, 70, 1.0, ("50x70",)),
                                             ("paste_back_mask_all_zero", 64, 64, 0.0, ("selects nothing",))):
    def build(g, s, width=width, height=height, value=value):
        picture = g.add("LoadImage", image=s.picture)
        paste = g.add("IPX2P_PasteBack", original=(picture, 0), edited=(picture, 0),
                      mask=(g.add("SolidMask", value=value, width=width, height=height), 0), threshold=0.06, grow=0,
                      feather=0, color_match=False, resize="keep", resolution=64)
        g.add("SaveImage", images=(paste, 0), filename_prefix="bad")
    case(Case(case_id, build, "IPX2P_PasteBack", "mask", words))


@case
@refused("crop_mask_batch_fits_nothing", "IPX2P_CropForEdit", "mask", "batch")
def _(g, s):
    picture = g.add("LoadImage", image=s.picture)
    mask = rect_mask(g, 64, 64, 8, 8, 16, 16)
    three = g.add("ImageToMask", image=(g.add("RepeatImageBatch", image=(g.add("MaskToImage", mask=(mask, 0)), 0),
                                              amount=3), 0), channel="red")
    two = g.add("RepeatImageBatch", image=(picture, 0), amount=2)
    crop = g.add("IPX2P_CropForEdit", image=(two, 0), mask=(three, 0), padding=4, resolution=64)
    g.add("SaveImage", images=(crop, 0), filename_prefix="bad")


@case
@refused("stitch_from_another_image", "IPX2P_StitchEdit", "edited", "does not fit")
def _(g, s):
    picture = g.add("LoadImage", image=s.files["wide"])
    crop = g.add("IPX2P_CropForEdit", image=(picture, 0), mask=(rect_mask(g, 256, 64, 4, 4, 200, 20), 0), padding=0,
                 resolution=256)
    other = g.add("IPX2P_CropForEdit", image=(picture, 0), mask=(rect_mask(g, 256, 64, 4, 4, 20, 50), 0), padding=0,
                  resolution=256)
    g.add("SaveImage", images=(g.add("IPX2P_StitchEdit", stitch=(crop, 2), edited=(other, 0)), 0), filename_prefix="bad")


@case
@refused("sweep_unparsable_values", "IPX2P_GuidanceSweep", "text_cfg_values", "five")
def _(g, s):
    loader, _, positive, negative, encoded = edit_inputs(g, s)
    sweep = g.add("IPX2P_GuidanceSweep", model=(loader, 0), positive=(positive, 0), negative=(negative, 0),
                  edit_latent=(encoded, 0), vae=(loader, 2), seed=1, steps=1, text_cfg_values="5, five",
                  image_cfg_values="1.5", sampler_name="euler", scheduler="normal", mode="grid", count=1)
    save_latent(g, sweep)


# -- fixtures --------------------------------------------------------------------------------------------------
def write_ckpt_pickle_that_runs_code(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Payload()}, path)


def poke_nan(path: Path, key: str) -> None:
    """Overwrite one fp16 tensor of a safetensors file with NaN, in place."""
    import json

    with path.open("r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        entry = json.loads(handle.read(length))[key]
        start, end = entry["data_offsets"]
        assert entry["dtype"] == "F16"
        handle.seek(8 + length + start)
        handle.write(b"\x00\x7e" * ((end - start) // 2))  # fp16 NaN, little-endian


@pytest.fixture(scope="module")
def setup(host, ip2p_ckpt, sd15_ckpt, synthetic, tmp_path_factory) -> Setup:
    import folder_paths
    from PIL import Image

    host.nodes.NODE_CLASS_MAPPINGS["IPX2PTest_Tensor"] = TensorNode
    root = tmp_path_factory.mktemp("bad_files")
    files = {"sd15": sd15_ckpt.name, "sdxl": synthetic("sdxl_base").name}
    write_random_checkpoint(root / "inpaint.safetensors", sd15_layout.sd15_checkpoint_layout(unet_in_channels=9), 1,
                            sparse=True)
    files["inpaint"] = "inpaint.safetensors"
    unet_only = [(key[len("model.diffusion_model."):], shape) for key, shape in sd15_layout.sd15_checkpoint_layout(8)
                 if key.startswith("model.diffusion_model.")]
    write_random_checkpoint(root / "lone_unet.safetensors", unet_only, 1, sparse=True)  # a bare UNet, header only
    files["lone_unet"] = "lone_unet.safetensors"
    (root / "zero.safetensors").write_bytes(b"")
    with ip2p_ckpt.open("rb") as source:
        (root / "truncated.safetensors").write_bytes(source.read(1 << 20))
    (root / "random.safetensors").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8,
                                                             generator=torch.Generator().manual_seed(1)).numpy().tobytes())
    (root / "header.safetensors").write_bytes(struct.pack("<Q", 16) + b"this is not json" + b"\0" * 64)
    (root / "zero_ckpt.ckpt").write_bytes(b"")
    (root / "random_ckpt.ckpt").write_bytes((root / "random.safetensors").read_bytes())
    marker = root / "code_ran"
    write_ckpt_pickle_that_runs_code(root / "evil.ckpt", marker)
    nan_file = root / "nan_weight.safetensors"
    # IP2P's layout: random CLIP and VAE, a UNet of zeros (holes in a sparse file: no disk) but
    # for one NaN tensor. A copy of the random-weight file would put another 2 GB on the disk.
    write_random_checkpoint(nan_file, sd15_layout.sd15_checkpoint_layout(unet_in_channels=8), 1,
                            sparse=lambda key: key.startswith("model.diffusion_model."))
    poke_nan(nan_file, "model.diffusion_model.out.2.weight")
    for key in ("zero", "truncated", "random", "header"):
        files[key] = f"{key}.safetensors"
    files.update(zero_ckpt="zero_ckpt.ckpt", random_ckpt="random_ckpt.ckpt", evil="evil.ckpt", nan=nan_file.name)
    folder_paths.add_model_folder_path("checkpoints", str(root))
    files["9x300"] = write_picture(host.input_dir, "bad_9x300.png", (9, 300))
    files["65x47"] = write_picture(host.input_dir, "bad_65x47.png", (65, 47))
    files["wide"] = write_picture(host.input_dir, "bad_wide.png", (256, 64))
    Image.new("RGB", (8192, 8192), (90, 140, 200)).save(host.input_dir / "bad_8192.png")
    files["8192"] = "bad_8192.png"
    yield Setup(ip2p_ckpt.name, write_picture(host.input_dir, "bad_64.png", (64, 64)), files)
    assert not marker.exists(), "a pickle's code ran"
    nan_file.unlink()
    folder_paths.folder_names_and_paths["checkpoints"][0].remove(str(root))
    del host.nodes.NODE_CLASS_MAPPINGS["IPX2PTest_Tensor"]


GOOD_SEEDS = iter(range(1000, 2000))


def assert_good_prompt_runs(host, setup: Setup) -> None:
    """A fresh good edit (a new seed, so the executor cannot answer from its cache)."""
    g = Graph()
    loader, _, positive, negative, encoded = edit_inputs(g, setup)
    edit(g, loader, positive, negative, encoded, seed=next(GOOD_SEEDS))
    result = host.run(g.prompt)
    assert result.success, result.error_text()
    finite_latents(host, result, g)


def assert_clear_error(result, case: Case) -> str:
    assert not result.success, f"{case.id}: ran, expected a refusal on {case.node}"
    text = result.error_text()
    for raw in RAW_ERRORS:
        assert raw not in text, f"{case.id}: {raw!r} in {text}"
    if result.execution_error is not None:
        error = result.execution_error
        assert error.get("exception_type", "").split(".")[-1] not in RAW_TYPES, f"{case.id}: {text}"
        message = error.get("exception_message", "")
        assert message.startswith(case.node), f"{case.id}: the message does not name {case.node}: {message}"
        if case.input:
            assert f"input '{case.input}'" in message, f"{case.id}: the message does not name the input: {message}"
        assert "expected" in message and "Fix:" in message, f"{case.id}: no expectation or fix: {message}"
        assert error.get("node_type") == case.node.split(" ")[0], f"{case.id}: shown on {error.get('node_type')}"
    else:  # refused by the host's validator before anything ran: shown on the node with the input
        on_node = [e for e in result.node_errors.values() if e.get("class_type") == case.node]
        assert on_node, f"{case.id}: validation errors not on {case.node}: {text}"
        details = " ".join(f"{x.get('message')} {x.get('details')} {x.get('extra_info', '')}"
                           for e in on_node for x in e.get("errors", []))
        assert case.input in details, f"{case.id}: {details}"
    for word in case.says:
        assert word in text, f"{case.id}: {word!r} not in {text}"
    if os.environ.get("IPX2P_SHOW_MESSAGES"):
        print(f"\n[{case.id}] {text}")
    return text


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.floor] if c.id in FLOOR_CASES else [])
                                  for c in CASES])
def test_bad_input(host, setup, case: Case):
    g = Graph()
    case.build(g, setup)
    result = host.run(g.prompt)
    if case.node:
        assert_clear_error(result, case)
    else:
        assert result.success, f"{case.id}: {result.error_text()}"
        if case.check is not None:
            case.check(host, result, g)
    assert_good_prompt_runs(host, setup)


def test_a_header_that_does_not_fit_its_data_is_named_on_both_loaders(host, setup, tmp_path):
    """A .safetensors whose header claims more bytes for a tensor than its byte range holds (the
    header length field consistent, the data intact): the safetensors library says only "Error
    while deserializing header: ..."; each loader names itself, the input, the file, what is wrong
    and the fix. A dtype name the check leaves to the library is still said on the node."""
    import folder_paths
    from safetensors.torch import save_file

    from ipx2p_tools.testkit.synthetic import rewrite_safetensors_header

    def grown(key):
        def change(header):
            header[key]["shape"] = [320, 8, 3, 4]  # 3 x 3 kernels stored, 3 x 4 claimed
        return change

    def unknown_dtype(key):
        def change(header):
            header[key]["dtype"] = "Q7"
        return change

    checkpoints, diffusers = tmp_path / "checkpoints", tmp_path / "diffusers"
    checkpoints.mkdir()
    sound = tmp_path / "sound.safetensors"
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    save_file({conv_in: torch.zeros(320, 8, 3, 3, dtype=torch.float16), "model.diffusion_model.out.2.bias": torch.zeros(4)},
              str(sound))
    unet_sound = tmp_path / "unet_sound.safetensors"
    save_file({"conv_in.weight": torch.zeros(320, 8, 3, 3, dtype=torch.float16), "conv_out.bias": torch.zeros(4)},
              str(unet_sound))
    cases = []
    for label, change, words in (("grown", grown, ("is damaged", f"tensor '{conv_in}' is F16 [320, 8, 3, 4]",
                                                    "which needs 61440 bytes, but gives it 46080 bytes", "download the file again")),
                                 ("dtype", unknown_dtype, ("safetensors library cannot read", "Q7",
                                                           "download the file again"))):
        name = f"inconsistent_{label}.safetensors"
        rewrite_safetensors_header(sound, checkpoints / name, change(conv_in))
        cases.append((Case(f"file_inconsistent_{label}", loader_only(label), "IPX2P_CheckpointLoader", "ckpt_name",
                           (name, *words)), {label: name}))
        folder = diffusers / f"inconsistent_{label}"
        (folder / "unet").mkdir(parents=True)
        (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionInstructPix2PixPipeline"}')
        rewrite_safetensors_header(unet_sound, folder / "unet" / "diffusion_pytorch_model.safetensors",
                                   change("conv_in.weight"))
        folder_words = tuple(w.replace(conv_in, "conv_in.weight") for w in words)
        cases.append((Case(f"diffusers_inconsistent_{label}", diffusers_loader(f"diffusers/{folder.name}"),
                           "IPX2P_DiffusersLoader", "model_path", ("unet/diffusion_pytorch_model.safetensors", *folder_words)),
                      {}))
    folder_paths.add_model_folder_path("checkpoints", str(checkpoints))
    folder_paths.add_model_folder_path("diffusers", str(diffusers))
    try:
        for case, files in cases:
            g = Graph()
            case.build(g, Setup(setup.ckpt, setup.picture, {**setup.files, **files}))
            assert_clear_error(host.run(g.prompt), case)
            assert_good_prompt_runs(host, setup)
    finally:
        folder_paths.folder_names_and_paths["checkpoints"][0].remove(str(checkpoints))
        folder_paths.folder_names_and_paths["diffusers"][0].remove(str(diffusers))


def diffusers_loader(model_path):
    def build(g: Graph, s: Setup) -> None:
        loader = g.add("IPX2P_DiffusersLoader", model_path=model_path, clip_vae_from=s.ckpt)
        image = g.add("LoadImage", image=s.picture)
        save_latent(g, g.add("IPX2P_EncodeImage", vae=(loader, 2), image=(image, 0), resize="keep", resolution=64))
    return build


@pytest.mark.floor
def test_the_catalogue_is_large_enough_and_in_the_readme():
    from ipx2p_tools.layout import REPO_ROOT

    assert len(CASES) >= 30 and FLOOR_CASES <= {c.id for c in CASES}
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in readme]
    assert not missing, f"README 'Bad inputs' lacks {missing}"
