"""Instruction batches without the host (ipx2p_core.instructions): parsing, token batching."""
from __future__ import annotations

import torch

from ipx2p_core.instructions import parse_instructions, stack_token_sequences


def test_parse_instructions():
    assert parse_instructions("make it snowy\n\n  turn it red  \n\t\n") == ["make it snowy", "turn it red"]
    assert parse_instructions(" \n ") == []
    assert parse_instructions("a\nb", suffix=", x") == ["a, x", "b, x"]


def test_token_sequences_of_different_lengths_batch_by_repetition():
    short, long = torch.rand((1, 77, 8)), torch.rand((1, 154, 8))
    stacked = stack_token_sequences([short, long])
    assert stacked.shape == (2, 154, 8)
    assert torch.equal(stacked[0, :77], short[0]) and torch.equal(stacked[0, 77:], short[0])
    assert torch.equal(stacked[1], long[0])
    # Repeating every key and value leaves attention unchanged.
    query = torch.rand((1, 5, 8))
    attention = torch.nn.functional.scaled_dot_product_attention
    torch.testing.assert_close(attention(query, short, short), attention(query, stacked[:1], stacked[:1]))
