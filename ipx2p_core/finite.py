"""Watching a sampling run's predictions for NaN or infinite values without making the host wait
for the device at every step.

On a GPU, `bool(torch.isfinite(x).all())` blocks Python until the device has computed x, which
takes away the overlap between the host's Python and the device's kernels once per step. The watch
keeps each step's verdict on the device (a 0-dim bool tensor per step, with its sigma) and reads
them all with one transfer when a check is due: every `every` steps and at the end of the run.
With every = 1 (the CPU, where reading costs nothing) each step is checked at once.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch


class FiniteWatch:
    """The verdicts of one sampling run's steps that have not been read yet."""

    def __init__(self, every: int = 1) -> None:
        self.every = max(1, int(every))
        self.steps = 0
        self.reads = 0  # host reads made so far (each one waits for the device)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(self, predictions: Iterable[torch.Tensor], sigma: torch.Tensor) -> None:
        """Note whether every prediction [B,...] of one step is finite; nothing is read here."""
        verdicts = [torch.isfinite(prediction).all() for prediction in predictions]
        if verdicts:
            self._pending.append((torch.stack(verdicts).all(), sigma.detach().flatten()[:1]))
        self.steps += 1

    @property
    def due(self) -> bool:
        """A check is due (every `every` recorded steps)."""
        return bool(self._pending) and self.steps % self.every == 0

    def first_bad_sigma(self) -> float | None:
        """The sigma of the first unread step that was not finite, or None; reads every pending
        verdict in one transfer and forgets them."""
        if not self._pending:
            return None
        pending, self._pending = self._pending, []
        self.reads += 1
        verdicts = torch.stack([ok for ok, _ in pending]).cpu()
        if bool(verdicts.all()):
            return None
        first = int((~verdicts).nonzero()[0])
        return float(pending[first][1].float().cpu()[0])
