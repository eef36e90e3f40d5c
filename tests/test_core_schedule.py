"""Guidance schedules without the host (ipx2p_core.schedule): curves, keyframe parsing and its
errors, progress from sigmas."""
from __future__ import annotations

import math
import pickle

import pytest
import torch

from ipx2p_core.schedule import (
    CURVES, GuidanceSchedule, ScheduleError, format_number, progress_bounds, progress_of, values_for_calls,
)

SQRT2 = math.sqrt(2.0)


def karras_sigmas(steps: int, sigma_min: float = 0.0292, sigma_max: float = 14.6146, rho: float = 7.0) -> list[float]:
    """Karras et al. 2022 eq. 5 spacing (as k-diffusion's get_sigmas_karras), ending at 0."""
    ramp = [index / (steps - 1) for index in range(steps)]
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(high + fraction * (low - high)) ** rho for fraction in ramp] + [0.0]


def geometric_sigmas(steps: int, sigma_min: float = 0.0292, sigma_max: float = 14.6146) -> list[float]:
    """Evenly spaced in log sigma (the "exponential" scheduler), ending at 0."""
    return [math.exp(math.log(sigma_max) + index / (steps - 1) * (math.log(sigma_min) - math.log(sigma_max)))
            for index in range(steps)] + [0.0]


def test_curves():
    assert CURVES == ("linear", "cosine", "constant")


# ---------------------------------------------------------------- interpolation


def test_linear_between_two_keyframes():
    schedule = GuidanceSchedule.parse_keyframes("0: 8/1, 1: 4/2", "linear")
    # value = a + (b - a) f
    assert schedule.at(0.25) == pytest.approx((7.0, 1.25))
    assert schedule.at(0.5) == pytest.approx((6.0, 1.5))
    assert schedule.at(0.75) == pytest.approx((5.0, 1.75))


def test_cosine_between_two_keyframes():
    schedule = GuidanceSchedule.parse_keyframes("0: 8/1, 1: 4/2", "cosine")
    # w = 0.5 - 0.5 cos(pi f): f = 1/4 -> 0.5 - sqrt2/4, f = 1/2 -> 0.5, f = 3/4 -> 0.5 + sqrt2/4
    assert schedule.at(0.25) == pytest.approx((6.0 + SQRT2, 1.5 - SQRT2 / 4))
    assert schedule.at(0.5) == pytest.approx((6.0, 1.5))
    assert schedule.at(0.75) == pytest.approx((6.0 - SQRT2, 1.5 + SQRT2 / 4))
    # It eases: slower than linear near both keyframes.
    linear = GuidanceSchedule.parse_keyframes("0: 8/1, 1: 4/2", "linear")
    assert schedule.at(0.1)[0] > linear.at(0.1)[0] and schedule.at(0.9)[0] < linear.at(0.9)[0]


def test_cosine_within_each_segment_of_three_keyframes():
    schedule = GuidanceSchedule.parse_keyframes("0: 7.5/1.5, 0.6: 5/1.8, 1: 3/2", "cosine")
    # 0.15 is a quarter of 0..0.6: w = 0.5 - sqrt2/4
    weight = 0.5 - SQRT2 / 4
    assert schedule.at(0.15) == pytest.approx((7.5 - 2.5 * weight, 1.5 + 0.3 * weight))
    # 0.8 is half of 0.6..1: w = 0.5
    assert schedule.at(0.8) == pytest.approx((4.0, 1.9))


def test_linear_within_each_segment_of_three_keyframes():
    schedule = GuidanceSchedule.parse_keyframes("0: 7.5/1.5, 0.6: 5/1.8, 1: 3/2", "linear")
    assert schedule.at(0.3) == pytest.approx((6.25, 1.65))
    assert schedule.at(0.45) == pytest.approx((5.625, 1.725))
    assert schedule.at(0.8) == pytest.approx((4.0, 1.9))
    assert schedule.at(0.9) == pytest.approx((3.5, 1.95))


def test_constant_is_a_step_function():
    schedule = GuidanceSchedule.parse_keyframes("0: 7.5/1.5, 0.6: 5/1.8, 1: 3/2", "constant")
    assert schedule.at(0.0) == (7.5, 1.5)
    assert schedule.at(0.3) == (7.5, 1.5)
    assert schedule.at(0.599999) == (7.5, 1.5)
    assert schedule.at(0.6) == (5.0, 1.8)
    assert schedule.at(0.999999) == (5.0, 1.8)
    assert schedule.at(1.0) == (3.0, 2.0)


@pytest.mark.parametrize("curve", CURVES)
def test_keyframes_come_back_exactly(curve):
    # Awkward binary fractions: an interpolation that reached a keyframe by arithmetic would drift.
    keyframes = ((0.0, 0.1, 0.7), (0.1, 0.7, 0.1), (0.3, 0.3, 0.9), (0.7, 0.9, 0.3), (1.0, 1.1, 2.3))
    schedule = GuidanceSchedule(keyframes, curve)
    for progress, text_cfg, image_cfg in keyframes:
        assert schedule.at(progress) == (text_cfg, image_cfg)
    parsed = GuidanceSchedule.parse_keyframes("0: 0.1/0.7, 0.1: 0.7/0.1, 0.3: 0.3/0.9, 0.7: 0.9/0.3, 1: 1.1/2.3", curve)
    assert parsed == schedule
    assert parsed.at(0.3) == (0.3, 0.9)


@pytest.mark.parametrize("curve", CURVES)
def test_values_hold_outside_the_keyframes(curve):
    schedule = GuidanceSchedule.parse_keyframes("0.2: 6/1.2, 0.8: 4/1.6", curve)
    for progress in (0.0, 0.1, 0.2, -1.0, -math.inf):
        assert schedule.at(progress) == (6.0, 1.2)
    for progress in (0.8, 0.9, 1.0, 2.0, math.inf):
        assert schedule.at(progress) == (4.0, 1.6)
    if curve == "linear":
        assert schedule.at(0.5) == pytest.approx((5.0, 1.4))


def test_equal_neighbours_stay_exact_in_between():
    # a (1 - w) + a w is not always a in floats (it drifts at 0.06, 0.15, 0.16, 0.33 here).
    schedule = GuidanceSchedule.parse_keyframes("0: 0.1/0.3, 1: 0.1/0.9", "cosine")
    for index in range(101):
        assert schedule.at(index / 100)[0] == 0.1


def test_single_keyframe_holds_everywhere():
    schedule = GuidanceSchedule.parse_keyframes("0.4: 6/1.3", "cosine")
    assert [schedule.at(progress) for progress in (0.0, 0.4, 1.0)] == [(6.0, 1.3)] * 3


def test_nan_progress_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        GuidanceSchedule.from_ends(7.5, 3, 1.5, 2).at(math.nan)


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize("curve", ["linear", "cosine"])
def test_from_ends_equals_the_two_keyframe_parse(curve):
    ends = GuidanceSchedule.from_ends(7.5, 3.0, 1.5, 2.0, curve)
    parsed = GuidanceSchedule.parse_keyframes("0: 7.5/1.5, 1: 3/2", curve)
    assert ends == parsed
    assert ends.keyframes == ((0.0, 7.5, 1.5), (1.0, 3.0, 2.0))
    for index in range(11):
        assert ends.at(index / 10) == parsed.at(index / 10)
    assert ends.at(0.0) == (7.5, 1.5) and ends.at(1.0) == (3.0, 2.0)


def test_from_ends_constant_holds_the_start_values_everywhere():
    schedule = GuidanceSchedule.from_ends(7.5, 3.0, 1.5, 2.0, "constant")
    assert [schedule.at(progress) for progress in (0.0, 0.5, 0.999, 1.0)] == [(7.5, 1.5)] * 4
    assert schedule.is_constant
    assert schedule.describe() == "constant text_cfg 7.5, image_cfg 1.5"


def test_from_ends_default_curve_is_linear():
    assert GuidanceSchedule.from_ends(8, 4, 1, 2).at(0.5) == (6.0, 1.5)


def test_is_constant():
    assert GuidanceSchedule.from_ends(7, 7, 1.5, 1.5, "cosine").is_constant
    assert GuidanceSchedule.parse_keyframes("0.5: 7/1.5").is_constant
    assert GuidanceSchedule.parse_keyframes("0: 7/1.5, 0.5: 7.0/1.5, 1: 7/1.5").is_constant
    assert not GuidanceSchedule.parse_keyframes("0: 7/1.5, 1: 7/1.6").is_constant
    assert not GuidanceSchedule.parse_keyframes("0: 7/1.5, 1: 6/1.5").is_constant
    assert not GuidanceSchedule.parse_keyframes("0: 7/1.5, 0.5: 5/1.5", "constant").is_constant


def test_describe_and_keyframes_text_round_trip():
    text = "0: 7.5/1.5, 0.6: 5/1.8, 1: 3/2"
    schedule = GuidanceSchedule.parse_keyframes(text, "cosine")
    assert schedule.keyframes_text() == text
    assert schedule.describe() == f"cosine curve through (progress: text_cfg/image_cfg) {text}"
    assert GuidanceSchedule.parse_keyframes(text, "constant").describe().startswith("steps at ")
    awkward = GuidanceSchedule(((0.0, 0.1 + 0.2, 1e-05), (1 / 3, 7.25, 1.0)), "linear")
    assert GuidanceSchedule.parse_keyframes(awkward.keyframes_text(), "linear") == awkward
    assert format_number(3.0) == "3" and format_number(7.5) == "7.5"


def test_parse_accepts_separators_spaces_and_any_order():
    expected = GuidanceSchedule(((0.0, 7.5, 1.5), (0.6, 5.0, 1.8), (1.0, 3.0, 2.0)), "linear")
    for text in (
        "0: 7.5/1.5, 0.6: 5/1.8, 1: 3/2",
        "0:7.5/1.5,0.6:5/1.8,1:3/2,",
        "  0 : 7.5 / 1.5 ,, 0.6: 5/1.8,\n1: 3/2,\n\n",
        "0: 7.5/1.5\n0.6: 5/1.8\n1: 3/2",
        "0:7.5/1.5 0.6:5/1.8\t1:3/2",
        "1: 3/2; 0: 7.5/1.5; 0.6: 5/1.8",
        ".6: 5/1.8, 0.0: 75e-1/1.5, 1.: 3/2",
    ):
        assert GuidanceSchedule.parse_keyframes(text) == expected, text


def test_constructor_sorts_and_checks():
    schedule = GuidanceSchedule(((1, 3, 2), (0, 7.5, 1.5)), "linear")
    assert schedule.keyframes == ((0.0, 7.5, 1.5), (1.0, 3.0, 2.0))
    for keyframes, curve in [
        ((), "linear"),
        (((0.0, 7.0, -1.0),), "linear"),
        (((1.5, 7.0, 1.0),), "linear"),
        (((0.5, math.nan, 1.0),), "linear"),
        (((0.5, 7.0, 1.0), (0.5, 6.0, 1.0)), "linear"),
        (((0.5, 7.0, 1.0),), "smoothstep"),
    ]:
        with pytest.raises(ScheduleError):
            GuidanceSchedule(keyframes, curve)
    with pytest.raises(ScheduleError, match="curve 'smooth'"):
        GuidanceSchedule.from_ends(7, 3, 1.5, 2, "smooth")
    with pytest.raises(ScheduleError, match="curve 'smooth'"):
        GuidanceSchedule.parse_keyframes("0: 7/1.5", "smooth")
    with pytest.raises(ScheduleError, match="image_cfg"):
        GuidanceSchedule.from_ends(7, 3, -1, 2)


# ---------------------------------------------------------------- parse errors


@pytest.mark.parametrize("text", ["", "   ", " ,, \n ; "])
def test_no_keyframes_is_an_error(text):
    with pytest.raises(ScheduleError) as caught:
        GuidanceSchedule.parse_keyframes(text)
    error = caught.value
    assert repr(text) in error.given and "no keyframes" in error.given
    assert "at least one keyframe" in error.expected
    assert "0: 7.5/1.5" in error.fix


# (text, the bad entry as typed, a word of `given`, a word of `expected`)
BAD_ENTRIES = [
    ("0.5 = 7/1.5", "0.5", "progress: text/image", "progress: text/image"),
    ("0: 7/1.5, 0.5=7/1.5", "0.5=7/1.5", "progress: text/image", "progress: text/image"),
    ("0: 1: 7/1.5", "0: 1: 7/1.5", "progress: text/image", "progress: text/image"),
    ("0.5 7/1.5", "0.5", "progress: text/image", "progress: text/image"),
    ("half: 7/1.5", "half: 7/1.5", "progress 'half'", "from 0"),
    ("1.5: 7/1.5", "1.5: 7/1.5", "progress '1.5'", "to 1"),
    ("-0.1: 7/1.5", "-0.1: 7/1.5", "progress '-0.1'", "from 0"),
    ("nan: 7/1.5", "nan: 7/1.5", "progress 'nan'", "number"),
    (": 7/1.5", ": 7/1.5", "progress ''", "number"),
    ("0.5: 7", "0.5: 7", "one value", "two values"),
    ("0: 7/1.5, 0.5: 7.5,", "0.5: 7.5", "one value", "two values"),
    ("0.5: 7/x", "0.5: 7/x", "values '7/x'", "two numbers"),
    ("0.5: 7/1.5/2", "0.5: 7/1.5/2", "values '7/1.5/2'", "two numbers"),
    ("0.5: /1.5", "0.5: /1.5", "values '/1.5'", "two numbers"),
    ("0.5:", "0.5:", "values ''", "two numbers"),
    ("0.5: inf/1.5", "0.5: inf/1.5", "values 'inf/1.5'", "two numbers"),
    ("0.5: -1/1.5", "0.5: -1/1.5", "out of range", ">= 0"),
    ("0.5: 7/-0.5", "0.5: 7/-0.5", "out of range", ">= 0"),
    ("0.5: 1e999/1.5", "0.5: 1e999/1.5", "out of range", ">= 0"),
]


@pytest.mark.parametrize(("text", "entry", "given_word", "expected_word"), BAD_ENTRIES)
def test_bad_entries_are_quoted_in_the_error(text, entry, given_word, expected_word):
    with pytest.raises(ScheduleError) as caught:
        GuidanceSchedule.parse_keyframes(text)
    error = caught.value
    assert isinstance(error, ValueError)
    assert repr(entry) in error.given and given_word in error.given
    assert expected_word in error.expected
    assert repr(entry) in error.fix
    assert str(error) == f"{error.given}; expected {error.expected}. Fix: {error.fix}"


def test_duplicate_progress_names_both_entries():
    with pytest.raises(ScheduleError) as caught:
        GuidanceSchedule.parse_keyframes("0: 8/1, 0.5: 7/1.5, 1: 4/2, 0.50: 6/1")
    error = caught.value
    assert "'0.5: 7/1.5'" in error.given and "'0.50: 6/1'" in error.given and "same progress" in error.given
    assert "one keyframe per progress" in error.expected
    assert "'0.5: 7/1.5'" in error.fix and "'0.50: 6/1'" in error.fix


def test_schedule_error_pickles_with_its_parts():
    error = ScheduleError("keyframe 'x' is bad", "something good", "fix 'x'")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.given, copy.expected, copy.fix, str(copy)) == (error.given, error.expected, error.fix, str(error))


# ---------------------------------------------------------------- progress from sigmas


def test_progress_by_hand():
    sigmas = [10.0, 1.0, 0.1, 0.0]
    # (ln 10 - ln sigma) / (ln 10 - ln 0.1)
    assert progress_of(10.0, sigmas) == 0.0
    assert progress_of(1.0, sigmas) == pytest.approx(0.5)
    assert progress_of(math.sqrt(10.0), sigmas) == pytest.approx(0.25)
    assert progress_of(math.sqrt(0.1), sigmas) == pytest.approx(0.75)
    assert progress_of(0.1, sigmas) == 1.0
    assert progress_bounds(sigmas) == (10.0, 0.1)


def test_progress_is_the_step_fraction_for_geometric_sigmas():
    sigmas = geometric_sigmas(12)
    for index, sigma in enumerate(sigmas[:-1]):
        assert progress_of(sigma, sigmas) == pytest.approx(index / 11, abs=1e-12)
    assert progress_of(sigmas[0], sigmas) == 0.0 and progress_of(sigmas[-2], sigmas) == 1.0


def test_progress_does_not_depend_on_the_step_count():
    # Same first and last non-zero sigma, different steps in between: the same sigma, the same progress.
    expected = (math.log(14.6146) - math.log(2.0)) / (math.log(14.6146) - math.log(0.0292))
    for make in (karras_sigmas, geometric_sigmas):
        progresses = [progress_of(2.0, make(steps)) for steps in (2, 4, 10, 25, 60)]
        assert progresses == pytest.approx([expected] * 5, rel=1e-12)
    schedule = GuidanceSchedule.parse_keyframes("0: 7.5/1.5, 0.6: 5/1.8, 1: 3/2", "cosine")
    calls = [14.6146, 5.0, 2.0, 0.5, 0.0292, 0.0]
    runs = [values_for_calls(schedule, calls, karras_sigmas(steps)) for steps in (3, 20, 50)]
    assert runs[0] == runs[1] == runs[2]
    # Not the call index: the 4th of 10 Karras sigmas is far from progress 3/9.
    sigmas = karras_sigmas(10)
    assert abs(progress_of(sigmas[3], sigmas) - 3 / 9) > 0.05


def test_intermediate_sigmas_get_intermediate_progress():
    # heun / dpm_2 evaluate between listed sigmas: the geometric mean lies half-way in progress.
    sigmas = [10.0, 1.0, 0.1, 0.0]
    assert progress_of(math.sqrt(10.0 * 1.0), sigmas) == pytest.approx(0.25)
    assert 0.5 < progress_of(0.5, sigmas) < 1.0


def test_progress_is_clamped():
    sigmas = [10.0, 1.0, 0.1, 0.0]
    assert progress_of(20.0, sigmas) == 0.0
    assert progress_of(math.inf, sigmas) == 0.0
    assert progress_of(0.05, sigmas) == 1.0
    assert progress_of(1e-9, sigmas) == 1.0


def test_zero_sigma_is_the_end():
    assert progress_of(0.0, [10.0, 1.0, 0.1, 0.0]) == 1.0
    assert progress_of(-0.0, [10.0, 1.0, 0.0]) == 1.0


def test_single_nonzero_sigma():
    for sigmas in ([5.0, 0.0], [5.0], [5.0, 0.0, 0.0]):
        assert progress_of(5.0, sigmas) == 0.0
        assert progress_of(1.0, sigmas) == 0.0
        assert progress_of(9.0, sigmas) == 0.0
        assert progress_of(0.0, sigmas) == 1.0


def test_trailing_zeros_do_not_move_the_end():
    assert progress_of(1.0, [10.0, 1.0, 0.1]) == progress_of(1.0, [10.0, 1.0, 0.1, 0.0, 0.0])


def test_sigmas_as_a_tensor():
    sigmas = torch.tensor([10.0, 1.0, 0.1, 0.0], dtype=torch.float32)
    assert progress_of(float(sigmas[0]), sigmas) == 0.0
    assert progress_of(float(sigmas[2]), sigmas) == 1.0
    assert progress_of(1.0, sigmas) == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError, match="1-D"):
        progress_of(1.0, sigmas[None])


@pytest.mark.parametrize("sigmas", [[], [0.0], [0.0, 0.0]])
def test_a_run_without_noise_is_refused(sigmas):
    with pytest.raises(ValueError):
        progress_of(1.0, sigmas)


def test_nan_sigma_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        progress_of(math.nan, [10.0, 1.0, 0.0])


def test_values_for_calls():
    schedule = GuidanceSchedule.from_ends(8.0, 4.0, 1.0, 2.0, "linear")
    values = values_for_calls(schedule, [10.0, 1.0, 0.1, 0.0, 20.0], [10.0, 1.0, 0.1, 0.0])
    expected = [(8.0, 1.0), (6.0, 1.5), (4.0, 2.0), (4.0, 2.0), (8.0, 1.0)]
    assert len(values) == len(expected)
    for value, wanted in zip(values, expected):
        assert value == pytest.approx(wanted)
    assert values[0] == (8.0, 1.0) and values[2] == (4.0, 2.0)
    assert values_for_calls(schedule, [], [10.0, 0.0]) == []
