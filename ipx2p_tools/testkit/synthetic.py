"""Deterministic random-weight checkpoints of true layouts, written as safetensors.

No weights can be downloaded in CI, so tests and the `--demo-weights` path build checkpoints with
the real SD1.5-InstructPix2Pix layout (see sd15_layout) and random values. Values are drawn per key
from a generator seeded by (seed, key), so any subset of keys can be regenerated alone, and are
rounded to float16 so the fp16 and fp32 files hold the same numbers. The file is streamed to disk
one tensor at a time: memory stays at the size of the largest tensor.
"""
from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ipx2p_core.checkpoint import ema_name

from .sd15_layout import UNET_PREFIX, Layout

# Bump when the values a given (layout, seed) produces change, so caches regenerate.
GENERATOR_VERSION = 1

_SAFETENSORS_DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}


def random_tensor(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """float32 values (exactly representable in float16) for one checkpoint tensor.

    Kaiming-uniform-like weights (+-1/sqrt(fan_in)) keep activations bounded through the
    residual stacks; 1-D weights are norm scales (near 1); biases and embeddings are small.
    """
    generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
    unit = torch.rand(shape, generator=generator, dtype=torch.float32) * 2.0 - 1.0  # U(-1, 1)
    if key.endswith(".bias"):
        values = unit * 0.02
    elif "embedding" in key:
        values = unit * 0.03
    elif len(shape) == 1:
        values = 1.0 + unit * 0.1
    else:
        fan_in = math.prod(shape[1:])
        values = unit / math.sqrt(fan_in)
    return values.to(torch.float16).to(torch.float32)


def write_safetensors(
    path: str | os.PathLike[str],
    entries: Iterable[tuple[str, tuple[int, ...], torch.dtype]],
    make_tensor: Callable[[str, tuple[int, ...]], torch.Tensor],
    metadata: dict[str, str] | None = None,
    sparse: bool | Callable[[str], bool] = False,
) -> None:
    """Stream tensors into a safetensors file without holding them all in memory.

    entries: (key, shape, dtype) in file order; make_tensor(key, shape) returns each tensor
    (cast to its dtype here). Written to `path + ".partial"` and renamed when complete. sparse:
    write the header only and leave the data a hole of zeros (a file of the true layout and size
    that takes no disk, for tests that read only the header); a function of the key: leave the
    tensors it picks holes of zeros and write the others.
    """
    entries = list(entries)
    header: dict[str, object] = {}
    offset = 0
    for key, shape, dtype in entries:
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[key] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = metadata
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # the format aligns the data to 8 bytes

    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out:
        out.write(struct.pack("<Q", len(header_bytes)))
        out.write(header_bytes)
        if sparse is True:
            entries = []
        for key, shape, dtype in entries:
            if callable(sparse) and sparse(key):
                out.seek(header[key]["data_offsets"][1] + 8 + len(header_bytes))  # type: ignore[index]
                continue
            tensor = make_tensor(key, shape).to(dtype).contiguous()
            if tuple(tensor.shape) != tuple(shape):
                raise ValueError(f"tensor {key} has shape {tuple(tensor.shape)}, layout says {shape}")
            out.write(tensor.numpy().tobytes())
        out.truncate(8 + len(header_bytes) + offset)  # the holes at the end belong to the file too
    partial.replace(target)


def write_random_checkpoint(
    path: str | os.PathLike[str],
    layout: Layout,
    seed: int,
    dtype: torch.dtype = torch.float16,
    with_ema: bool = False,
    description: str = "",
    extra: dict[str, float] | None = None,
    sparse: bool | Callable[[str], bool] = False,
) -> None:
    """A random-weight checkpoint of `layout`. with_ema adds LDM-style `model_ema.*` copies of the
    UNet weights (drawn with another seed, so EMA and non-EMA weights differ) as the official
    instruct-pix2pix file has them."""
    entries: list[tuple[str, tuple[int, ...], torch.dtype]] = [(key, shape, dtype) for key, shape in layout]
    ema_sources: dict[str, tuple[str, tuple[int, ...]]] = {}
    if with_ema:
        for key, shape in layout:
            if key.startswith(UNET_PREFIX):
                ema_sources[ema_name(key)] = (key, shape)
                entries.append((ema_name(key), shape, dtype))
        entries.append(("model_ema.decay", (), torch.float32))
        entries.append(("model_ema.num_updates", (), torch.int64))
    extra = extra or {}
    entries += [(key, (), torch.float32) for key in extra]

    def make(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key in extra:
            return torch.tensor(extra[key], dtype=torch.float32)
        if key == "model_ema.decay":
            return torch.tensor(0.9999)
        if key == "model_ema.num_updates":
            return torch.tensor(1000, dtype=torch.int64)
        if key in ema_sources:
            source_key, source_shape = ema_sources[key]
            return random_tensor(source_key, source_shape, seed + 1)
        return random_tensor(key, shape, seed)

    info = {
        "generator": "ipx2p_tools.testkit.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "with_ema": with_ema,
        "notice": "RANDOM WEIGHTS for tests and demos: images made with this file are noise.",
        "description": description,
    }
    # One metadata key: safetensors libraries order several keys arbitrarily, this keeps files
    # byte-identical run to run.
    write_safetensors(path, entries, make, metadata={"ipx2p_synthetic": json.dumps(info, sort_keys=True)}, sparse=sparse)


def rewrite_safetensors_header(source: str | os.PathLike[str], target: str | os.PathLike[str],
                               change: Callable[[dict], None]) -> None:
    """Copy a safetensors file with its JSON header changed by `change` (called on the parsed
    header, in place) and everything else kept: the header length field is rewritten to match and
    the data follows unchanged, so a test can make a file whose header no longer fits its data."""
    with Path(source).open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        data = handle.read()
    change(header)
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    Path(target).write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + data)


def random_state_dict(layout: Layout, seed: int, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The tensors write_random_checkpoint would write for `layout` and `seed`, in memory."""
    return {key: random_tensor(key, shape, seed).to(dtype) for key, shape in layout}
