"""Inspecting single-file checkpoints and choosing their EMA or non-EMA UNet weights.

The official instruct-pix2pix checkpoint stores two copies of the UNet: the trained weights under
`model.diffusion_model.*` and their exponential moving average under `model_ema.*`, named as LDM's
LitEma buffers are (the parameter name with its dots removed). The original samples inside
`ema_scope`, i.e. with the EMA copy.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

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


# Bits per element of the safetensors dtype names (safetensors' Dtype::bitsize). A name missing here
# is left to the library, so a newer format is never refused by this check.
SAFETENSORS_DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
                          "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
                          "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}


def safetensors_problem(path: str) -> str | None:
    """What is wrong with a .safetensors file's structure, in words; None when it is sound.

    Reads the 8-byte header length, the JSON header and the file size only: an empty, cut-off or
    random file, or a header that does not fit the data it describes, is named as such instead of
    with the safetensors library's internal error ("Error while deserializing header: ...")."""
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
    return header_problem(header, size - 8 - header_length)


def _whole_numbers(values: object, count: int | None = None) -> bool:
    """A JSON list of non-negative integers (of `count` items when given)."""
    return (isinstance(values, list) and (count is None or len(values) == count)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values))


def header_problem(header: dict, available: int) -> str | None:
    """What is wrong with a parsed safetensors header whose file holds `available` bytes of tensor
    data, in words; None when every tensor fits. The rules are the safetensors library's
    (Metadata::validate): each tensor's bytes are its element count times its dtype's size, and
    the tensors' byte ranges follow one another from 0 to the end of the file, no gap, no overlap."""
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        return "has a malformed __metadata__ entry (damaged)"
    entries: list[tuple[int, int, str]] = []
    sizes: dict[str, tuple[str, list[int], int | None]] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not (isinstance(entry, dict) and _whole_numbers(entry.get("data_offsets"), 2)
                and _whole_numbers(entry.get("shape")) and isinstance(entry.get("dtype"), str)):
            return f"has a malformed entry for tensor {key!r}"
        dtype, shape = entry["dtype"], entry["shape"]
        count = 1
        for n in shape:
            count *= n
        bits = SAFETENSORS_DTYPE_BITS.get(dtype)
        sizes[key] = (dtype, shape, None if bits is None else count * bits)
        begin, end = entry["data_offsets"]
        entries.append((begin, end, key))
    data_end = max((end for _, end, _ in entries), default=0)
    if data_end > available:
        return (f"is cut off: its tensors need {data_end / 1e6:.1f} MB of data, the file holds {max(available, 0) / 1e6:.1f} MB "
                "(an unfinished download or copy)")
    previous_end = 0
    for index, (begin, end, key) in enumerate(sorted(entries)):
        dtype, shape, bits = sizes[key]
        if begin != previous_end or end < begin:
            where = "the tensor before it ends" if index else "the data starts"
            return (f"is damaged: its header puts tensor {key!r} at bytes {begin}-{end} of the data; it should start at "
                    f"byte {previous_end}, where {where} (tensors follow one another, no gap, no overlap)")
        if bits is not None and (bits % 8 or bits // 8 != end - begin):
            need = f"{bits // 8} bytes" if bits % 8 == 0 else f"{bits} bits (not whole bytes)"
            return (f"is damaged: its header says tensor {key!r} is {dtype} {shape}, which needs {need}, but gives it "
                    f"{end - begin} bytes of data")
        previous_end = end
    if previous_end != available:
        return (f"is damaged: {available - previous_end} bytes after its last tensor are not described by its header "
                "(another format, or a damaged file)")
    return None


# safetensors dtype names -> (torch dtype name, bytes per element)
SAFETENSORS_TORCH_DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
                            "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
                            "U8": ("uint8", 1), "BOOL": ("bool", 1)}


class SafetensorsReader:
    """Reads tensors of a .safetensors file with plain file reads into freshly allocated memory.

    The safetensors library maps the whole file and hands out views of that mapping: a tensor kept
    from it keeps the mapping, and every page read through it (e.g. the text encoder and VAE, copied
    once by the host) stays resident. Tensors from this reader own their memory and map nothing,
    so after loading the process holds what the model holds and no file page."""

    def __init__(self, path: str) -> None:
        import json
        import struct

        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close() / the context manager
        try:
            (length,) = struct.unpack("<Q", self._file.read(8))
            if length > SAFETENSORS_MAX_HEADER:
                raise ValueError(f"{path}: not a safetensors file")
            header = json.loads(self._file.read(length).decode("utf-8"))
        except Exception:
            self._file.close()
            raise
        self.metadata = header.pop("__metadata__", None)
        self.entries: dict[str, dict] = header
        self._data_start = 8 + length

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, key: str) -> list[int]:
        return list(self.entries[key]["shape"])

    def dtype_name(self, key: str) -> str:
        """The file's dtype name ("F32", "F16", ...)."""
        return str(self.entries[key]["dtype"])

    def read(self, key: str) -> torch.Tensor:
        """A new tensor (contiguous, CPU) holding the stored values of `key`."""
        import torch

        if sys.byteorder != "little":
            raise ValueError("safetensors files are little-endian; this machine is not")
        entry = self.entries[key]
        stored = entry["dtype"]
        if stored not in SAFETENSORS_TORCH_DTYPES:
            raise ValueError(f"{self.path}: tensor {key!r} has dtype {stored}, which this reader does not know")
        dtype_name, width = SAFETENSORS_TORCH_DTYPES[stored]
        shape = [int(n) for n in entry["shape"]]
        begin, end = (int(v) for v in entry["data_offsets"])
        count = 1
        for n in shape:
            count *= n
        if end - begin != count * width:
            raise ValueError(f"{self.path}: tensor {key!r} holds {end - begin} bytes; shape {shape} of {stored} needs "
                             f"{count * width} (the file is damaged)")
        buffer = torch.empty(end - begin, dtype=torch.uint8)
        if count:
            self._file.seek(self._data_start + begin)
            view = memoryview(buffer.numpy())  # type: ignore[arg-type]  # ndarray is a buffer; numpy 1.x stubs say not
            done = 0
            while done < len(view):  # readinto may return fewer bytes than asked (pipes, network files)
                got = self._file.readinto(view[done:])
                if not got:
                    raise ValueError(f"{self.path}: the file ends inside tensor {key!r} (cut off)")
                done += got
        return buffer.view(getattr(torch, dtype_name)).reshape(shape)
