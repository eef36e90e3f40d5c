"""Inspecting single-file checkpoints and choosing their EMA or non-EMA UNet weights.

The official instruct-pix2pix checkpoint stores two copies of the UNet: the trained weights under
`model.diffusion_model.*` and their exponential moving average under `model_ema.*`, named as LDM's
LitEma buffers are (the parameter name with its dots removed). The original samples inside
`ema_scope`, i.e. with the EMA copy.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
CONV_IN_KEYS = (
    "model.diffusion_model.input_blocks.0.0.weight",  # LDM single file
    "diffusion_model.input_blocks.0.0.weight",
    "input_blocks.0.0.weight",  # bare UNet
    "conv_in.weight",  # diffusers UNet
)
WEIGHT_MODES = ("auto", "ema", "non-ema")


@dataclass(frozen=True)
class CheckpointInfo:
    unet_in_channels: int | None  # None: no UNet found
    has_ema: bool
    ema_complete: bool  # every UNet weight has an EMA copy

    def describe(self) -> str:
        if self.unet_in_channels is None:
            return "no Stable Diffusion UNet"
        kind = {8: "InstructPix2Pix-style (8 input channels)", 4: "text-to-image (4 input channels)",
                9: "inpainting (9 input channels)"}.get(self.unet_in_channels, f"{self.unet_in_channels} input channels")
        return f"a {kind} UNet" + (", with EMA weights" if self.has_ema else "")


def ema_name(unet_key: str) -> str:
    """"model.diffusion_model.out.2.weight" -> "model_ema.diffusion_modelout2weight"."""
    return EMA_PREFIX + unet_key[len("model."):].replace(".", "")


def ema_pairs(keys: Iterable[str]) -> dict[str, str]:
    """UNet key -> its EMA key, for every UNet key whose EMA copy is present.

    The dot-free EMA names cannot be parsed back, so the map is built forwards from the UNet keys.
    """
    key_set = set(keys)
    pairs = {}
    for key in key_set:
        if key.startswith(UNET_PREFIX) and ema_name(key) in key_set:
            pairs[key] = ema_name(key)
    return pairs


def inspect_checkpoint(shapes: Mapping[str, Sequence[int]]) -> CheckpointInfo:
    """What a checkpoint holds, from its tensor names and shapes alone (key -> shape)."""
    in_channels = None
    for key in CONV_IN_KEYS:
        if key in shapes:
            in_channels = int(shapes[key][1])
            break
    unet_keys = [k for k in shapes if k.startswith(UNET_PREFIX)]
    pairs = ema_pairs(shapes.keys())
    has_ema = len(pairs) > 0
    return CheckpointInfo(in_channels, has_ema, has_ema and len(pairs) == len(unet_keys))


@dataclass(frozen=True)
class WeightPlan:
    """Which stored tensor becomes which model tensor: sources[target_key] = stored_key."""

    sources: dict[str, str]
    use_ema: bool


def plan_weights(keys: Iterable[str], mode: str, who: str = "checkpoint") -> WeightPlan:
    """Choose the UNet copy to load and leave the other one out.

    mode: "auto" (EMA when the file has a complete EMA copy, as the original samples), "ema"
    (required), "non-ema". The plan lists only the tensors to read, so a loader that reads by
    key never holds the unused UNet copy (3.4 GB in the official fp32 file).
    """
    if mode not in WEIGHT_MODES:
        raise ValueError(f"{who}: weights must be one of {', '.join(WEIGHT_MODES)}, got {mode!r}")
    keys = list(keys)
    pairs = ema_pairs(keys)
    unet_count = sum(1 for k in keys if k.startswith(UNET_PREFIX))
    complete = len(pairs) > 0 and len(pairs) == unet_count
    if mode == "ema" and not complete:
        found = "no EMA weights" if not pairs else f"EMA copies of only {len(pairs)} of {unet_count} UNet weights"
        raise ValueError(
            f"{who}: weights is 'ema' but the file has {found}. "
            "Fix: choose 'auto' or 'non-ema', or load a file saved with its EMA weights (model_ema.*)."
        )
    use_ema = mode == "ema" or (mode == "auto" and complete)
    sources = {key: key for key in keys if not key.startswith(EMA_PREFIX)}
    if use_ema:
        sources.update(pairs)
    return WeightPlan(sources, use_ema)


# The largest header the safetensors libraries accept (safetensors' MAX_HEADER_SIZE, 100 MB).
SAFETENSORS_MAX_HEADER = 100_000_000


def safetensors_problem(path: str) -> str | None:
    """What is wrong with a .safetensors file's structure, in words; None when it is sound.

    Reads the 8-byte header length, the JSON header and the file size only: an empty, cut-off or
    random file is named as such instead of with the safetensors library's internal error."""
    import json
    import os
    import struct

    size = os.path.getsize(path)
    if size == 0:
        return "is empty (0 bytes)"
    if size < 8:
        return f"is {size} bytes long, too short for a safetensors file"
    with open(path, "rb") as handle:
        (header_length,) = struct.unpack("<Q", handle.read(8))
        if header_length > SAFETENSORS_MAX_HEADER:
            return "does not start with a safetensors header (it is another format, or damaged)"
        if 8 + header_length > size:
            return f"is cut off: its header needs {8 + header_length} bytes, the file has {size}"
        raw = handle.read(header_length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "has a header that is not safetensors JSON (it is another format, or damaged)"
    if not isinstance(header, dict):
        return "has a header that is not a table of tensors"
    data_end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(v, int) for v in offsets)):
            return f"has a malformed entry for tensor {key!r}"
        data_end = max(data_end, offsets[1])
    available = size - 8 - header_length
    if data_end > available:
        return (f"is cut off: its tensors need {data_end / 1e6:.1f} MB of data, the file holds {max(available, 0) / 1e6:.1f} MB "
                "(an unfinished download or copy)")
    return None
