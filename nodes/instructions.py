"""InstructPix2Pix Encode Instructions: many instructions, one conditioning of batch N."""
from __future__ import annotations

from typing import Any

import torch

from ..ipx2p_core.instructions import parse_instructions, stack_token_sequences
from ._comfy import io
from .common import input_error

NODE = "IPX2P_EncodeInstructions"


def encode(clip: Any, text: str) -> list:
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def batch_conditionings(encoded: list[list]) -> list:
    """N conditionings (each a list of [tensor [1,T,D], extras]) -> one of batch N.

    Entries are matched by position (a scheduled CLIP gives one entry per schedule step);
    pooled outputs are stacked; other extras come from the first instruction."""
    if len(encoded) == 1:
        return encoded[0]
    counts = {len(entries) for entries in encoded}
    if len(counts) != 1:
        raise RuntimeError(f"{NODE}: the text encoder gave different numbers of entries per instruction ({sorted(counts)})")
    batched = []
    for position in range(counts.pop()):
        tensors = [entries[position][0] for entries in encoded]
        extra = dict(encoded[0][position][1])
        pooled = [entries[position][1].get("pooled_output") for entries in encoded]
        if all(isinstance(p, torch.Tensor) for p in pooled):
            extra["pooled_output"] = torch.cat(pooled, dim=0)
        batched.append([stack_token_sequences(tensors), extra])
    return batched


class EncodeInstructions(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="InstructPix2Pix Encode Instructions",
            category="instructpix2pix",
            description=(
                "Encodes several instructions at once, one per line (blank lines are ignored), as one "
                "conditioning of batch N, plus the empty-text negative InstructPix2Pix expects. With one image "
                "the Edit node makes N edits of it in one run; with N images, edit k uses line k."
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The InstructPix2Pix checkpoint's CLIP."),
                io.String.Input("instructions", multiline=True, default="make it snowy\nturn it into a watercolor painting",
                                tooltip="One instruction per line, e.g. 'make it snowy'. Blank lines are ignored."),
                io.String.Input("suffix", default="", optional=True,
                                tooltip="Text appended to every instruction. HIVE's reward-conditioned models expect "
                                        "', image quality is five out of five'; leave empty for other models."),
            ],
            outputs=[
                io.Conditioning.Output("positive", display_name="positive",
                                       tooltip="The instructions, batch N in line order: connect to the Edit node's positive."),
                io.Conditioning.Output("negative", display_name="negative",
                                       tooltip="Empty text (the paper's unconditional prompt): the Edit node's negative."),
            ],
        )

    @classmethod
    def execute(cls, clip: Any, instructions: str, suffix: str = "") -> io.NodeOutput:
        if clip is None:
            raise input_error(NODE, "clip", "is missing (None)", "a CLIP text encoder",
                              "connect the CLIP output of 'Load InstructPix2Pix Checkpoint'")
        if not isinstance(instructions, str):
            raise input_error(NODE, "instructions", f"is a {type(instructions).__name__}", "text",
                              "type one instruction per line")
        if not isinstance(suffix, str):
            raise input_error(NODE, "suffix", f"is a {type(suffix).__name__}", "text", "type the suffix, or leave it empty")
        lines = parse_instructions(instructions, suffix)
        if not lines:
            raise input_error(NODE, "instructions", "has no instruction (it is empty or only blank lines)",
                              "at least one instruction, one per line", "type an instruction such as 'make it snowy'")
        positive = batch_conditionings([encode(clip, line) for line in lines])
        return io.NodeOutput(positive, encode(clip, ""))
