"""Instruction batches: one instruction per line, encoded as one conditioning of batch N."""
from __future__ import annotations

import math

import torch


def parse_instructions(text: str, suffix: str = "") -> list[str]:
    """The non-blank lines of `text`, stripped, each with `suffix` appended."""
    return [line.strip() + suffix for line in text.splitlines() if line.strip()]


def stack_token_sequences(sequences: list[torch.Tensor]) -> torch.Tensor:
    """Text embeddings [1,T_k,D] of different token counts (prompts over 77 tokens come in chunks of
    77) -> one batch [N,T,D], T the least common multiple: shorter ones are repeated along the
    tokens, as the host does when it batches prompts (comfy/conds.py CONDCrossAttn.concat).
    Repeating every key and value the same number of times leaves cross-attention unchanged."""
    length = 1
    for sequence in sequences:
        length = math.lcm(length, int(sequence.shape[1]))
    padded = [sequence.repeat(1, length // int(sequence.shape[1]), 1) for sequence in sequences]
    return torch.cat(padded, dim=0)
