"""Every InstructPix2Pix-shaped model family the pack loads: how each is recognised from tensor
names and shapes (never from a file name), its base, prediction type, image-latent scale,
guidance formula, recommended settings, and how the loaders build it (the load route, the number
of text encoders, whether a diffusers folder can hold it). Loaders, the info output and the README
read this table and never a family's name or base, so a new family of a known route is one entry.

Several published models share one layout exactly (InstructPix2Pix, MagicBrush and HIVE's SD1.5
models are fine-tunes of the same 8-channel SD1.5 UNet; InstructDiffusion too): no tensor tells
them apart, so a layout family lists its models as presets and the user picks the settings.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .guidance import INSTRUCTDIFFUSION, INSTRUCTPIX2PIX

HIVE_SUFFIX = ", image quality is five out of five"
OFFICIAL_FILE = "instruct-pix2pix-00-22000.safetensors (huggingface.co/timbrooks/instruct-pix2pix)"
IP2P_UNET = "an 8-channel InstructPix2Pix-style UNet"

# How a loader builds a family's MODEL from a state dict (Family.load_route):
HOST_GUESS_CONFIG = "host_guess_config"  # the host's own loader detects and builds it (comfy.sd.load_state_dict_guess_config)
SD2_IP2P_CONFIG = "sd2_ip2p_config"  # the host detects it wrongly: the pack's SD2 InstructPix2Pix config class builds it
LOAD_ROUTES = (HOST_GUESS_CONFIG, SD2_IP2P_CONFIG)


@dataclass(frozen=True)
class Preset:
    """One published model's recommended settings (with the source they come from)."""

    model: str
    text_cfg: float
    image_cfg: float
    steps: int
    sampler: str
    scheduler: str
    resolution: int
    formula: str = INSTRUCTPIX2PIX
    suffix: str = ""
    source: str = ""

    def describe(self) -> str:
        text = (f"{self.model}: text_cfg {self.text_cfg:g}, image_cfg {self.image_cfg:g}, {self.steps} steps "
                f"{self.sampler}/{self.scheduler}, {self.resolution} px")
        if self.formula != INSTRUCTPIX2PIX:
            text += f", formula {self.formula}"
        if self.suffix:
            text += f", suffix {self.suffix!r}"
        return text


@dataclass(frozen=True)
class UNetFacts:
    """What a UNet's tensors say about it (see unet_facts)."""

    layout: str  # "ldm" (single files) or "diffusers"
    in_channels: int | None
    context_dim: int | None
    adm_in_channels: int | None
    linear_proj: bool | None
    edm_vpred: bool  # CosXL's "edm_vpred.sigma_max" marker
    v_pred_marker: bool  # the "v_pred" key ComfyUI writes into v-prediction checkpoints
    markers: frozenset[str] = frozenset()  # the table's marker keys (Family.marker_keys) the file holds

    @property
    def base(self) -> str | None:
        if self.context_dim == 768 and not self.adm_in_channels:
            return "SD1.5"
        if self.context_dim == 1024 and not self.adm_in_channels:
            return "SD2.x"
        if self.context_dim == 2048 and self.adm_in_channels == 2816:
            return "SDXL"
        return None

    def evidence(self) -> str:
        parts = [f"{self.layout} layout", f"{self.in_channels}-channel first convolution"]
        if self.context_dim:
            parts.append(f"cross-attention width {self.context_dim}")
        if self.adm_in_channels:
            parts.append(f"{self.adm_in_channels}-wide size/pooled-text embedding")
        if self.linear_proj is not None:
            parts.append(("linear" if self.linear_proj else "1x1-conv") + " transformer projections")
        if self.edm_vpred:
            parts.append("edm_vpred.sigma_max key")
        if self.v_pred_marker:
            parts.append("v_pred key")
        parts.extend(f"{key} key" for key in sorted(self.markers))
        return ", ".join(parts)


@dataclass(frozen=True)
class Family:
    key: str
    name: str
    base: str
    edm: bool  # EDM v-prediction (CosXL)
    prediction: str
    image_latent_scale: float  # what the host's model class multiplies the image latent by
    host_class: str  # ComfyUI's model_base class the model must be
    layouts: str  # what users have on disk
    core_comfyui: str  # what core ComfyUI does with it
    presets: tuple[Preset, ...]
    load_route: str  # one of LOAD_ROUTES: how the loaders build the MODEL
    text_encoders: int  # CLIP text encoders a pipeline of this family has (1, or 2 for SDXL's)
    diffusers_folder: bool  # the diffusers-folder loader takes it (its UNet maps to the host's through unet_to_diffusers)
    editable_base: bool = False  # 'Make Any SD1.5 Model Editable' makes it from a text-to-image model of its base
    # Tensor names only this family's files hold, for a family whose layout another family shares:
    # a file with all of them is this family (families with markers are tried first).
    marker_keys: tuple[str, ...] = ()

    @property
    def recommended(self) -> Preset:
        return self.presets[0]

    def matches(self, facts: UNetFacts) -> bool:
        return (facts.in_channels == 8 and facts.base == self.base and facts.edm_vpred == self.edm
                and all(key in facts.markers for key in self.marker_keys))


IP2P_PAPER = Preset("InstructPix2Pix", 7.5, 1.5, 100, "euler_ancestral", "normal", 512,
                    source="timbrooks/instruct-pix2pix edit_cli.py")

FAMILIES: tuple[Family, ...] = (
    Family(
        "sd15_ip2p", "SD1.5 InstructPix2Pix", "SD1.5", False, "eps", 1.0, "SD15_instructpix2pix",
        "LDM single file (.safetensors / .ckpt, EMA weights in model_ema.* for the official file), or a diffusers folder",
        "single files load (diffusers folders fail: 'Could not detect model type'); no InstructDiffusion guidance",
        (
            IP2P_PAPER,
            Preset("MagicBrush", 7.5, 1.5, 100, "euler_ancestral", "normal", 512,
                   source="OSU-NLP-Group/MagicBrush edit_cli_single_multi_turn.py"),
            Preset("HIVE (SD1.5)", 7.5, 1.5, 100, "euler_ancestral", "normal", 512, suffix=HIVE_SUFFIX,
                   source="salesforce/HIVE edit_cli_rw_label.py (the suffix is for the *_rw_condition files)"),
            Preset("InstructDiffusion", 5.0, 1.25, 100, "euler_ancestral", "normal", 512, formula=INSTRUCTDIFFUSION,
                   source="cientgu/InstructDiffusion edit_cli.py"),
        ),
        load_route=HOST_GUESS_CONFIG, text_encoders=1, diffusers_folder=True, editable_base=True,
    ),
    Family(
        "sd21_ip2p", "SD2.1 InstructPix2Pix (HIVE)", "SD2.x", False, "eps (v with a v_pred key, or set prediction)", 1.0,
        "SD15_instructpix2pix",
        "LDM single file (.ckpt), SD2.1-base with an 8-channel first convolution",
        "misdetected as an SD2 inpainting model: crashes or generates garbage",
        (
            Preset("HIVE (SD2.1)", 7.5, 1.5, 100, "euler_ancestral", "normal", 512, suffix=HIVE_SUFFIX,
                   source="salesforce/HIVE configs/generate_v21_base.yaml, edit_cli_rw_label.py"),
        ),
        load_route=SD2_IP2P_CONFIG, text_encoders=1, diffusers_folder=False,
    ),
    Family(
        "sdxl_ip2p", "SDXL-InstructPix2Pix", "SDXL", False, "eps", 1.0, "SDXL_instructpix2pix",
        "diffusers pipeline folder (unet/, text_encoder/, text_encoder_2/, vae/), e.g. diffusers/sdxl-instructpix2pix-768",
        "loadable only by hand (UNet, two CLIPs and VAE loaded separately)",
        (
            Preset("SDXL-InstructPix2Pix", 3.0, 1.5, 30, "euler", "normal", 768,
                   source="huggingface.co/diffusers/sdxl-instructpix2pix-768 model card"),
        ),
        load_route=HOST_GUESS_CONFIG, text_encoders=2, diffusers_folder=True,
    ),
    Family(
        "cosxl_edit", "CosXL Edit", "SDXL", True, "v (EDM, cosine-continuous)", 0.13025, "SDXL_instructpix2pix",
        "SGM single file cosxl_edit.safetensors with edm_vpred.sigma_max / sigma_min",
        "loads; the official example uses DualCFGGuider",
        (
            Preset("CosXL Edit", 5.0, 1.5, 20, "euler", "normal", 1024,
                   source="comfyanonymous ComfyUI_examples edit_models (DualCFGGuider 5.0 / 1.5, euler, normal, 20 steps)"),
        ),
        # A diffusers UNet has no edm_vpred key, so no folder is detected as CosXL; kept True as before
        # (the loader then refuses what the host builds instead of the family's class).
        load_route=HOST_GUESS_CONFIG, text_encoders=2, diffusers_folder=True,
    ),
)


def _first(shapes: Mapping[str, Sequence[int]], suffix: str, contains: str = "") -> Sequence[int] | None:
    for key, shape in shapes.items():
        if key.endswith(suffix) and contains in key:
            return shape
    return None


def unet_facts(shapes: Mapping[str, Sequence[int]]) -> UNetFacts | None:
    """Read a UNet's facts off key -> shape (a whole single file, a bare UNet, or a diffusers UNet);
    None if there is no Stable Diffusion UNet."""
    edm = "edm_vpred.sigma_max" in shapes
    v_pred = "v_pred" in shapes
    markers = frozenset(key for family in FAMILIES for key in family.marker_keys if key in shapes)
    ldm_conv_in = next((shapes[k] for k in ("model.diffusion_model.input_blocks.0.0.weight", "input_blocks.0.0.weight",
                                             "diffusion_model.input_blocks.0.0.weight") if k in shapes), None)
    if ldm_conv_in is not None:
        to_k = _first(shapes, ".transformer_blocks.0.attn2.to_k.weight", "input_blocks.")
        proj_in = _first(shapes, ".proj_in.weight", "input_blocks.")
        label = _first(shapes, "label_emb.0.0.weight")
        return UNetFacts("ldm", int(ldm_conv_in[1]), int(to_k[1]) if to_k else None, int(label[1]) if label else None,
                         (len(proj_in) == 2) if proj_in is not None else None, edm, v_pred, markers)
    if "conv_in.weight" in shapes:
        to_k = _first(shapes, ".transformer_blocks.0.attn2.to_k.weight", "down_blocks.")
        proj_in = _first(shapes, ".proj_in.weight", "down_blocks.")
        label = shapes.get("add_embedding.linear_1.weight")
        return UNetFacts("diffusers", int(shapes["conv_in.weight"][1]), int(to_k[1]) if to_k else None,
                         int(label[1]) if label else None, (len(proj_in) == 2) if proj_in is not None else None, edm, v_pred,
                         markers)
    return None


class UnsupportedModel(ValueError):
    """Not an InstructPix2Pix-shaped model. `given` says what the file holds, `expected` what fits,
    `fix` what to do; the message is "<given>; expected <expected>. Fix: <fix>"."""

    def __init__(self, given: str, fix: str, expected: str = IP2P_UNET) -> None:
        super().__init__(f"{given}; expected {expected}. Fix: {fix}")
        self.given = given
        self.expected = expected
        self.fix = fix

    def __reduce__(self) -> tuple[type[UnsupportedModel], tuple[str, str, str]]:
        return type(self), (self.given, self.fix, self.expected)


def describe_unsupported(facts: UNetFacts | None) -> tuple[str, str]:
    """(what the file holds, the fix) for a model no family takes."""
    if facts is None:
        return "no Stable Diffusion UNet", "load a checkpoint that contains the diffusion model"
    base = facts.base or "an unknown"
    kind = {4: "text-to-image", 9: "inpainting"}.get(facts.in_channels or 0, f"{facts.in_channels}-channel")
    article = "an" if kind[0] in "aeiou" else "a"
    what = f"{article} {kind} {base} UNet ({facts.evidence()})"
    if facts.in_channels == 4 and any(family.editable_base and family.base == facts.base for family in FAMILIES):
        fix = (f"load an InstructPix2Pix checkpoint such as {OFFICIAL_FILE}, or make this model editable with 'Make Any "
               "SD1.5 Model Editable'; for text-to-image use the core 'Load Checkpoint' node")
    elif facts.in_channels == 4:
        fix = ("load an InstructPix2Pix model of that base (for SDXL: CosXL Edit or diffusers/sdxl-instructpix2pix-768); "
               "for text-to-image use the core 'Load Checkpoint' node")
    elif facts.in_channels == 9:
        fix = "load an InstructPix2Pix model; inpainting models go through core 'Load Checkpoint' and 'VAE Encode (for Inpainting)'"
    else:
        fix = "load an InstructPix2Pix model (SD1.5, SD2.1, SDXL-InstructPix2Pix or CosXL Edit)"
    return what, fix


def detect_family(facts: UNetFacts | None) -> Family:
    """The family whose layout these facts show; UnsupportedModel (with what it is and the fix) if none."""
    if facts is not None:
        for family in sorted(FAMILIES, key=lambda family: -len(family.marker_keys)):  # stable: table order otherwise
            if family.matches(facts):
                return family
    what, fix = describe_unsupported(facts)
    raise UnsupportedModel(what, fix)


def detect_unet(shapes: Mapping[str, Sequence[int]]) -> tuple[Family, UNetFacts]:
    """(family, facts) of a file's key -> shape; UnsupportedModel if no family takes it."""
    facts = unet_facts(shapes)
    family = detect_family(facts)
    if facts is None:  # detect_family refuses a file without a UNet; this keeps the type exact
        raise UnsupportedModel(*describe_unsupported(None))
    return family, facts


def diffusers_bases() -> list[str]:
    """The bases the diffusers-folder loader takes, in table order, each once."""
    return list(dict.fromkeys(family.base for family in FAMILIES if family.diffusers_folder))


def family_by_key(key: str) -> Family:
    return next(family for family in FAMILIES if family.key == key)


def info_text(family: Family, facts: UNetFacts, weights: str, dtype: str, prediction: str) -> str:
    """The loaders' info output: what was detected and how to run it."""
    lines = [
        f"family: {family.name} ({family.base}, 8-channel UNet)",
        f"detected from: {facts.evidence()}",
        f"prediction: {prediction}",
        f"image latent: x{family.image_latent_scale:g} before the UNet (ComfyUI's {family.host_class})",
        f"weights: {weights}",
        f"dtype: {dtype}",
        f"recommended: {family.recommended.describe()}",
    ]
    for preset in family.presets[1:]:
        lines.append(f"same layout: {preset.describe()}")
    return "\n".join(lines)
