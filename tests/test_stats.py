"""training.stats: values checked against hand computations and printed tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from teachloop.training.stats import (
    holm,
    mcnemar,
    mean_interval,
    paired_bootstrap,
    pooled_mcnemar,
    t_quantile,
)


def discordant(b01: int, b10: int, both_right: int = 0, both_wrong: int = 0):
    """Paired outcomes (a, b) with the given cell counts."""
    a = [False] * b01 + [True] * b10 + [True] * both_right + [False] * both_wrong
    b = [True] * b01 + [False] * b10 + [True] * both_right + [False] * both_wrong
    return a, b


# --- McNemar ----------------------------------------------------------------------------------


def test_mcnemar_exact_p_by_hand():
    a, b = discordant(b01=10, b10=2, both_right=30, both_wrong=8)
    result = mcnemar(a, b)
    # 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096
    assert pytest.approx(0.038574, abs=1e-6) == 2 * (1 + 12 + 66) / 4096
    assert result.p_value == pytest.approx(0.0386, abs=5e-5)
    assert result.p_value == 2 * 79 / 4096
    assert (result.n, result.b01, result.b10, result.seeds) == (50, 10, 2, 1)
    assert result.accuracy_a == pytest.approx(32 / 50)
    assert result.accuracy_b == pytest.approx(40 / 50)
    assert result.difference == pytest.approx(8 / 50)


def test_mcnemar_no_discordant_pairs_is_p_one():
    a, b = discordant(0, 0, both_right=7, both_wrong=3)
    result = mcnemar(a, b)
    assert (result.b01, result.b10, result.difference, result.p_value) == (0, 0, 0.0, 1.0)


def test_mcnemar_balanced_discordance_caps_at_one():
    assert mcnemar(*discordant(5, 5)).p_value == 1.0
    # one discordant pair: 2 * P(X <= 0 | m=1) = 1
    assert mcnemar(*discordant(1, 0)).p_value == 1.0


def test_mcnemar_swap_is_symmetric():
    a, b = discordant(b01=9, b10=3, both_right=4)
    forward, backward = mcnemar(a, b), mcnemar(b, a)
    assert forward.p_value == backward.p_value == pytest.approx(2 * 299 / 4096)
    assert (forward.b01, forward.b10) == (backward.b10, backward.b01)
    assert forward.difference == -backward.difference


def test_mcnemar_accepts_zero_one_and_numpy():
    a, b = discordant(b01=10, b10=2)
    as_ints = mcnemar([int(v) for v in a], np.array(b))
    assert as_ints.p_value == mcnemar(a, b).p_value


def test_mcnemar_refuses_bad_input():
    with pytest.raises(ValueError, match=r"a has 3 outcomes and b has 2"):
        mcnemar([True, False, True], [True, False])
    with pytest.raises(ValueError, match="0 outcomes"):
        mcnemar([], [])
    with pytest.raises(ValueError, match="True/False"):
        mcnemar([0.7, 1.0], [True, False])


def test_paired_test_is_frozen():
    result = mcnemar(*discordant(3, 1))
    with pytest.raises(ValidationError):
        result.p_value = 0.0


# --- pooled over seeds ------------------------------------------------------------------------


def test_pooled_mcnemar_concatenates_seeds():
    seed0 = discordant(b01=4, b10=1, both_right=5)
    seed1 = discordant(b01=6, b10=1, both_right=3, both_wrong=2)
    pooled = pooled_mcnemar([seed0, seed1])
    assert (pooled.n, pooled.b01, pooled.b10, pooled.seeds) == (22, 10, 2, 2)
    assert pooled.p_value == 2 * 79 / 4096
    assert pooled.difference == pytest.approx(8 / 22)
    assert pooled.accuracy_a == pytest.approx(10 / 22)
    # same as McNemar on the concatenation
    flat = mcnemar(seed0[0] + seed1[0], seed0[1] + seed1[1])
    assert flat.model_dump(exclude={"seeds"}) == pooled.model_dump(exclude={"seeds"})


def test_pooled_mcnemar_seed_specific_sets_and_errors():
    # seeds may evaluate different numbers of questions
    pooled = pooled_mcnemar([discordant(2, 0), discordant(1, 0, both_right=9)])
    assert (pooled.n, pooled.b01, pooled.b10) == (12, 3, 0)
    assert pooled.p_value == pytest.approx(2 / 8)
    with pytest.raises(ValueError, match=r"of pairs\[1\] has 2 outcomes and b of pairs\[1\] has 1"):
        pooled_mcnemar([discordant(1, 1), ([True, False], [True])])
    with pytest.raises(ValueError, match="at least one"):
        pooled_mcnemar([])


# --- t interval -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (30, 2.0423)],
)
def test_t_quantile_matches_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-5)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-5)


def test_t_quantile_other_levels():
    assert t_quantile(0.995, 5) == pytest.approx(4.0321, abs=5e-5)
    assert t_quantile(0.95, 10) == pytest.approx(1.8125, abs=5e-5)
    assert t_quantile(0.5, 7) == 0.0
    # df=1 is Cauchy: quantile tan(pi * (p - 1/2))
    assert t_quantile(0.9, 1) == pytest.approx(math.tan(0.4 * math.pi), rel=1e-12)


def test_mean_interval_by_hand():
    interval = mean_interval([0.1, 0.2, 0.3])
    assert interval.mean == pytest.approx(0.2)
    assert interval.n == 3
    assert interval.level == 0.95
    half = 4.3027 * 0.1 / math.sqrt(3)  # t_{0.975,2} * s / sqrt(n)
    assert half == pytest.approx(0.2484, abs=1e-4)
    assert interval.half_width == pytest.approx(0.2484, abs=1e-4)
    assert interval.low == pytest.approx(0.2 - 0.2484, abs=1e-4)
    assert interval.high == pytest.approx(0.2 + 0.2484, abs=1e-4)


def test_mean_interval_level_changes_width():
    narrow = mean_interval([0.1, 0.2, 0.3], level=0.90)
    assert narrow.half_width == pytest.approx(2.9200 * 0.1 / math.sqrt(3), abs=1e-4)


def test_mean_interval_single_value_and_errors():
    one = mean_interval([0.42])
    assert (one.mean, one.low, one.high, one.n) == (0.42, 0.42, 0.42, 1)
    same = mean_interval([0.5, 0.5, 0.5])
    assert (same.low, same.high) == (0.5, 0.5)
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])
    with pytest.raises(ValueError, match="finite"):
        mean_interval([0.1, float("nan")])
    with pytest.raises(ValueError, match="level"):
        mean_interval([0.1, 0.2], level=95)


# --- bootstrap --------------------------------------------------------------------------------


def test_bootstrap_identical_arms():
    a = [True, False, True, True, False] * 10
    result = paired_bootstrap(a, list(a))
    assert result.difference == 0.0
    assert result.low == result.high == 0.0
    assert result.low <= 0.0 <= result.high
    assert result.p_value == 1.0


def test_bootstrap_clearly_better_arm():
    # a right on 10 of 50 questions, b right on 40 of 50, b right wherever a is
    a = [True] * 10 + [False] * 40
    b = [True] * 40 + [False] * 10
    result = paired_bootstrap(a, b)
    assert (result.b01, result.b10) == (30, 0)
    assert result.difference == pytest.approx(0.6)
    assert result.p_value < 0.001
    assert 0.0 < result.low < 0.6 < result.high <= 1.0
    # the opposite direction is the mirror image
    reverse = paired_bootstrap(b, a)
    assert reverse.difference == pytest.approx(-0.6)
    assert reverse.p_value < 0.001
    assert reverse.high < 0.0


def test_bootstrap_matches_resampling_theory():
    # b01=10, b10=2 of 50: d in {+1 x10, -1 x2, 0 x38}; Var(mean d*) = var_pop(d) / n
    a, b = discordant(b01=10, b10=2, both_right=30, both_wrong=8)
    result = paired_bootstrap(a, b, resamples=20_000, seed=3)
    mean_d, mean_d2 = 8 / 50, 12 / 50
    sd = math.sqrt((mean_d2 - mean_d**2) / 50)
    z = 1.959964
    assert result.low == pytest.approx(mean_d - z * sd, abs=0.02)
    assert result.high == pytest.approx(mean_d + z * sd, abs=0.02)
    # close to the exact McNemar p (0.0386) for this table
    assert 0.01 < result.p_value < 0.08


def test_bootstrap_deterministic_by_seed():
    a, b = discordant(b01=6, b10=4, both_right=20, both_wrong=10)
    first = paired_bootstrap(a, b, seed=7, resamples=2000)
    assert first == paired_bootstrap(a, b, seed=7, resamples=2000)
    other = paired_bootstrap(a, b, seed=8, resamples=2000)
    assert (other.low, other.high, other.p_value) != (first.low, first.high, first.p_value)
    assert (first.seed, first.resamples, first.level) == (7, 2000, 0.95)


def test_bootstrap_refuses_bad_input():
    with pytest.raises(ValueError, match=r"a has 2 outcomes and b has 3"):
        paired_bootstrap([True, True], [True, False, True])
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap([True], [False], resamples=0)


# --- Holm -------------------------------------------------------------------------------------


def test_holm_known_example():
    # sorted: d .005*4=.02, a .01*3=.03, c .03*2=.06, b .04*1=.04 -> raised to .06 (monotone)
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert list(adjusted) == ["a", "b", "c", "d"]
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})


def test_holm_caps_ties_and_edges():
    assert holm({"x": 0.4, "y": 0.4, "z": 0.9}) == pytest.approx({"x": 1.0, "y": 1.0, "z": 1.0})
    assert holm({"x": 0.01, "y": 0.01}) == pytest.approx({"x": 0.02, "y": 0.02})
    assert holm({"only": 0.03}) == {"only": 0.03}
    assert holm({}) == {}
    with pytest.raises(ValueError, match="'bad'"):
        holm({"bad": 1.5})
