"""Guidance schedules: text_cfg (s_T) and image_cfg (s_I) that change over a run.

A schedule is a list of keyframes (progress, text_cfg, image_cfg) and a curve that fills the gaps
between them. Progress runs from 0 (the run's first sigma) to 1 (its last non-zero sigma) and is
measured on the noise level, not on the step index, so a schedule means the same for every sampler
and step count (`progress_of`). The guider evaluates the schedule at every model call:

    text_cfg, image_cfg = schedule.at(progress_of(sigma, sigmas))

Users type keyframes as "progress: text/image" entries, e.g. "0: 7.5/1.5, 0.6: 5/1.8, 1: 3/2"
(`GuidanceSchedule.parse_keyframes`); a bad entry raises `ScheduleError`, whose parts the nodes
turn into the user's error for the input "keyframes".
"""
from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

LINEAR, COSINE, CONSTANT = "linear", "cosine", "constant"
CURVES = (LINEAR, COSINE, CONSTANT)
_CURVE_WORDS = {LINEAR: "linear curve through", COSINE: "cosine curve through", CONSTANT: "steps at"}

Keyframe = tuple[float, float, float]  # (progress 0..1, text_cfg, image_cfg)

KEYFRAMES_FORMAT = "\"progress: text/image\" entries such as \"0: 7.5/1.5, 0.6: 5/1.8, 1: 3/2\""
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
# Commas, semicolons and newlines separate entries, and so does other whitespace, except next to
# ':' or '/', where it belongs to the entry ("0 : 7.5 / 1.5").
_SEPARATORS = re.compile(r"[,;\n]+|(?<![:/\s])\s+(?![:/\s])")


class ScheduleError(ValueError):
    """A schedule that cannot be built, most often a bad keyframe entry. `given` says what was typed
    (quoting the entry), `expected` what fits, `fix` what to do; the message is
    "<given>; expected <expected>. Fix: <fix>". The nodes prefix the node and the input."""

    def __init__(self, given: str, expected: str, fix: str) -> None:
        super().__init__(f"{given}; expected {expected}. Fix: {fix}")
        self.given = given
        self.expected = expected
        self.fix = fix

    def __reduce__(self) -> tuple[type[ScheduleError], tuple[str, str, str]]:
        return type(self), (self.given, self.expected, self.fix)


def format_number(value: float) -> str:
    """A number as the keyframe text writes it, exactly (it parses back to the same float):
    3.0 -> "3", 7.5 -> "7.5", 1e-05 -> "1e-05"."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _check_curve(curve: str) -> None:
    if curve not in CURVES:
        raise ScheduleError(f"curve {curve!r}", f"one of {', '.join(CURVES)}", f"choose {' or '.join(CURVES)}")


def _check_keyframe(progress: float, text_cfg: float, image_cfg: float) -> None:
    shown = f"{format_number(progress)}: {format_number(text_cfg)}/{format_number(image_cfg)}"
    if not (math.isfinite(progress) and 0.0 <= progress <= 1.0):
        raise ScheduleError(f"keyframe {shown!r} has progress {progress}", "a progress from 0 (first step) to 1 (last step)",
                            f"move keyframe {shown!r} into 0..1")
    for name, value in (("text_cfg", text_cfg), ("image_cfg", image_cfg)):
        if not (math.isfinite(value) and value >= 0.0):
            raise ScheduleError(f"keyframe {shown!r} has {name} {value}", "guidance scales >= 0",
                                f"correct the {name} of keyframe {shown!r}")


@dataclass(frozen=True)
class GuidanceSchedule:
    """text_cfg and image_cfg as functions of progress (0 = the run's first sigma, 1 = its last
    non-zero sigma; see `progress_of`).

    keyframes: (progress, text_cfg, image_cfg) triples, stored sorted by progress, progresses
    distinct and in 0..1, scales finite and >= 0 (checked on construction, `ScheduleError`).
    curve: how values move from one keyframe to the next, with f the fraction of the way from the
    earlier keyframe's progress to the later one's:
        linear    value = a + (b - a) f
        cosine    value = a + (b - a) (0.5 - 0.5 cos(pi f))   (eases out of a and into b)
        constant  value = a until the next keyframe, then b   (a step function)
    Before the first keyframe its values hold, after the last the last ones hold; at a keyframe's
    progress exactly, its own numbers come back exactly.
    """

    keyframes: tuple[Keyframe, ...]
    curve: str = LINEAR

    def __post_init__(self) -> None:
        _check_curve(self.curve)
        keyframes = tuple((float(p), float(t), float(i)) for p, t, i in self.keyframes)
        if not keyframes:
            raise ScheduleError("no keyframes", f"at least one keyframe, {KEYFRAMES_FORMAT}", "add a keyframe")
        for keyframe in keyframes:
            _check_keyframe(*keyframe)
        keyframes = tuple(sorted(keyframes))
        for earlier, later in zip(keyframes, keyframes[1:]):
            if earlier[0] == later[0]:
                raise ScheduleError(f"two keyframes at progress {format_number(earlier[0])}", "one keyframe per progress",
                                    f"keep one of the keyframes at progress {format_number(earlier[0])}")
        object.__setattr__(self, "keyframes", keyframes)

    @classmethod
    def from_ends(cls, text_start: float, text_end: float, image_start: float, image_end: float,
                  curve: str = LINEAR) -> GuidanceSchedule:
        """From the first step's scales to the last step's: keyframes at progress 0 and 1.

        With curve "constant" the start values hold everywhere and the end values are not used
        (the schedule is one keyframe at progress 0): a step function over two keyframes would
        change only at the very last model call, which is never what "constant" means."""
        _check_curve(curve)
        if curve == CONSTANT:
            return cls(((0.0, text_start, image_start),), curve)
        return cls(((0.0, text_start, image_start), (1.0, text_end, image_end)), curve)

    @classmethod
    def parse_keyframes(cls, text: str, curve: str = LINEAR) -> GuidanceSchedule:
        """Keyframes typed as "progress: text/image" entries, e.g. "0: 7.5/1.5, 0.6: 5/1.8, 1: 3/2".

        Entries are separated by commas, semicolons, newlines or whitespace (spaces around ':' and
        '/' are part of the entry); empty entries are ignored, so trailing commas are fine. Order
        does not matter. Each progress is a number from 0 (first step) to 1 (last step), each
        value pair two numbers >= 0 ("7.5/1.5": text_cfg/image_cfg). Raises `ScheduleError`
        quoting the first bad entry, a repeated progress, or no entry at all."""
        _check_curve(curve)
        entries = [entry.strip() for entry in _SEPARATORS.split(text) if entry.strip()]
        if not entries:
            raise ScheduleError(f"{text!r} has no keyframes", f"at least one keyframe, {KEYFRAMES_FORMAT}",
                                "type one keyframe per progress, e.g. \"0: 7.5/1.5, 1: 3/2\"")
        keyframes: list[Keyframe] = []
        seen: dict[float, str] = {}
        for entry in entries:
            progress, text_cfg, image_cfg = _parse_entry(entry)
            if progress in seen:
                raise ScheduleError(f"keyframes {seen[progress]!r} and {entry!r} have the same progress",
                                    "one keyframe per progress", f"remove {seen[progress]!r} or {entry!r}, or change its progress")
            seen[progress] = entry
            keyframes.append((progress, text_cfg, image_cfg))
        return cls(tuple(keyframes), curve)

    @property
    def is_constant(self) -> bool:
        """True when every keyframe has the same (text_cfg, image_cfg): the same scales at every step."""
        first = self.keyframes[0][1:]
        return all(keyframe[1:] == first for keyframe in self.keyframes)

    def at(self, progress: float) -> tuple[float, float]:
        """(text_cfg, image_cfg) at `progress` (0 = first sigma, 1 = last non-zero sigma)."""
        if math.isnan(progress):
            raise ValueError("progress is NaN")
        keyframes = self.keyframes
        after = bisect.bisect_right(keyframes, progress, key=lambda keyframe: keyframe[0])
        if after == 0:
            return keyframes[0][1], keyframes[0][2]
        start = keyframes[after - 1]
        # At a keyframe's progress, past the last one, and on a step curve: the keyframe's own numbers,
        # untouched by arithmetic, so keyframes come back exactly.
        if after == len(keyframes) or start[0] == progress or self.curve == CONSTANT:
            return start[1], start[2]
        end = keyframes[after]
        fraction = (progress - start[0]) / (end[0] - start[0])
        weight = fraction if self.curve == LINEAR else 0.5 - 0.5 * math.cos(math.pi * fraction)
        # a + (b - a) w, not a (1 - w) + b w: equal neighbours give back a exactly.
        return (start[1] + (end[1] - start[1]) * weight, start[2] + (end[2] - start[2]) * weight)

    def keyframes_text(self) -> str:
        """The keyframes as `parse_keyframes` reads them: "0: 7.5/1.5, 0.6: 5/1.8, 1: 3/2"."""
        return ", ".join(f"{format_number(p)}: {format_number(t)}/{format_number(i)}" for p, t, i in self.keyframes)

    def describe(self) -> str:
        """One line for tooltips and logs: "constant text_cfg 7.5, image_cfg 1.5", or
        "cosine curve through (progress: text_cfg/image_cfg) 0: 7.5/1.5, 1: 3/2"."""
        if self.is_constant:
            _, text_cfg, image_cfg = self.keyframes[0]
            return f"constant text_cfg {format_number(text_cfg)}, image_cfg {format_number(image_cfg)}"
        return f"{_CURVE_WORDS[self.curve]} (progress: text_cfg/image_cfg) {self.keyframes_text()}"


def _parse_entry(entry: str) -> Keyframe:
    """One "progress: text/image" entry, as typed (quoted as typed in errors)."""
    example = "\"0.5: 6/1.5\""
    parts = [part.strip() for part in entry.split(":")]
    if len(parts) != 2:
        raise ScheduleError(f"keyframe {entry!r} is not \"progress: text/image\"", KEYFRAMES_FORMAT,
                            f"write {entry!r} as one progress, a colon and text/image, e.g. {example}")
    progress_text, values_text = parts
    if not _NUMBER.match(progress_text) or not 0.0 <= float(progress_text) <= 1.0:
        raise ScheduleError(f"keyframe {entry!r} has progress {progress_text!r}",
                            "a progress that is a number from 0 (first step) to 1 (last step)",
                            f"give {entry!r} a progress from 0 to 1, e.g. {example}")
    values = [value.strip() for value in values_text.split("/")]
    if len(values) == 1 and _NUMBER.match(values[0]):
        raise ScheduleError(f"keyframe {entry!r} has one value, {values[0]!r}",
                            "two values text/image: text_cfg, a slash, image_cfg", f"add the image_cfg to {entry!r}, e.g. {example}")
    if len(values) != 2 or not all(_NUMBER.match(value) for value in values):
        raise ScheduleError(f"keyframe {entry!r} has values {values_text!r}",
                            "two numbers text/image: text_cfg, a slash, image_cfg",
                            f"write the values of {entry!r} as text/image, e.g. {example}")
    text_cfg, image_cfg = (float(value) for value in values)
    if not (math.isfinite(text_cfg) and math.isfinite(image_cfg)) or text_cfg < 0 or image_cfg < 0:
        raise ScheduleError(f"keyframe {entry!r} has a scale {values_text!r} out of range", "guidance scales >= 0",
                            f"correct the values of {entry!r}")
    return float(progress_text), text_cfg, image_cfg


def _sigma_list(sigmas: Sequence[float] | torch.Tensor) -> list[float]:
    if isinstance(sigmas, torch.Tensor):
        if sigmas.ndim != 1:
            raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
        return [float(value) for value in sigmas.detach().cpu().tolist()]
    return [float(value) for value in sigmas]


def progress_bounds(sigmas: Sequence[float] | torch.Tensor) -> tuple[float, float]:
    """(sigma_first, sigma_last) of a run's sigmas [N] (decreasing, usually ending at 0): the
    first sigma and the last non-zero one. Raises ValueError when the run has no non-zero sigma.
    A CUDA tensor is read once here; read it before sampling, not per model call."""
    values = _sigma_list(sigmas)
    nonzero = [value for value in values if value > 0]
    if not values or values[0] <= 0 or not nonzero:
        raise ValueError(f"a run's sigmas must start above 0, got {values[:4]}")
    return values[0], nonzero[-1]


def _progress(sigma: float, first: float, last: float) -> float:
    if math.isnan(sigma):
        raise ValueError("sigma is NaN")
    if sigma <= 0:
        return 1.0
    if first == last:
        return 0.0
    progress = (math.log(first) - math.log(sigma)) / (math.log(first) - math.log(last))
    return min(1.0, max(0.0, progress))


def progress_of(sigma: float, sigmas: Sequence[float] | torch.Tensor) -> float:
    """Where a model call at noise level `sigma` lies in a run whose sigmas are `sigmas` [N]:

        p = (ln sigma_first - ln sigma) / (ln sigma_first - ln sigma_last), clamped to [0, 1]

    sigma_first is the run's first sigma, sigma_last its last NON-ZERO sigma (samplers end at 0).
    p = 0 at the first sigma, 1 at the last non-zero one; sigma 0 gives 1; a run with a single
    non-zero sigma gives 0 for every sigma above 0.

    Progress is measured on the noise level, not on the call index, so a schedule means the same
    for every sampler and step count: two runs with the same first and last non-zero sigma give
    the same p for the same sigma, whatever the steps in between. Samplers that evaluate the
    model between the listed sigmas (heun, dpm_2) get the progress in between. The log makes p
    the step fraction i/(N-1) for geometrically spaced sigmas (the "exponential" scheduler) and
    close to it for "karras"; with denoise < 1 the run's own (shorter) sigmas define 0 and 1.
    """
    first, last = progress_bounds(sigmas)
    return _progress(float(sigma), first, last)


def values_for_calls(schedule: GuidanceSchedule, call_sigmas: Iterable[float],
                     sigmas: Sequence[float] | torch.Tensor) -> list[tuple[float, float]]:
    """(text_cfg, image_cfg) for each model call's sigma in `call_sigmas`, in a run whose sigmas are
    `sigmas` [N] (for tests and logs)."""
    first, last = progress_bounds(sigmas)
    return [schedule.at(_progress(float(sigma), first, last)) for sigma in call_sigmas]
