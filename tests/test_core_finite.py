"""ipx2p_core.finite without the host: verdicts kept on the device, read every N steps."""
from __future__ import annotations

import torch

from ipx2p_core.finite import FiniteWatch


def step(value=1.0):
    return [torch.full((2, 4, 3, 3), value), torch.ones(1, 4, 3, 3)]


def test_reads_only_when_due_and_names_the_first_bad_step():
    watch = FiniteWatch(every=3)
    sigmas = [14.6, 7.1, 3.2, 1.1, 0.3]
    due = []
    for index, sigma in enumerate(sigmas):
        watch.record(step(float("nan") if index in (1, 3) else 1.0), torch.tensor([sigma, sigma]))
        due.append(watch.due)
        if watch.due:
            assert watch.first_bad_sigma() == torch.tensor(7.1).item()
    assert due == [False, False, True, False, False]
    assert watch.reads == 1
    assert watch.first_bad_sigma() == torch.tensor(1.1).item()  # the end of the run: what is left
    assert watch.reads == 2 and watch.first_bad_sigma() is None and watch.reads == 2  # nothing pending: no read


def test_finite_steps_give_none_and_every_one_checks_each_step():
    watch = FiniteWatch(every=1)
    for sigma in (2.0, 1.0):
        watch.record(step(), torch.tensor(sigma))
        assert watch.due and watch.first_bad_sigma() is None
    assert watch.reads == 2
    infinite = FiniteWatch()
    infinite.record(step(float("inf")), torch.tensor(0.5))
    assert infinite.first_bad_sigma() == 0.5
