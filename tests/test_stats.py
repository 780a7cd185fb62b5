"""training.stats: values checked against hand computations and printed tables."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from pydantic import ValidationError

from teachloop.training.stats import (
    cluster_bootstrap,
    cluster_draws,
    holm,
    mcnemar,
    mean_interval,
    paired_t,
    seed_paired,
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
    assert (result.n, result.b01, result.b10) == (50, 10, 2)
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


# --- per-seed paired difference ---------------------------------------------------------------

# 3 seeds x 4 questions, (reference, arm) per seed, written out:
#   seed 0: reference right on q0, q2; arm the same         -> d0 = 2/4 - 2/4 = 0
#   seed 1: reference right on q2; arm on q0, q2             -> d1 = 2/4 - 1/4 = 0.25
#   seed 2: reference right on q3; arm on q0, q1, q2         -> d2 = 3/4 - 1/4 = 0.5
T, F = True, False
HAND = [
    ([T, F, T, F], [T, F, T, F]),
    ([F, F, T, F], [T, F, T, F]),
    ([F, F, F, T], [T, T, T, F]),
]


def test_seed_paired_matches_the_hand_computation():
    result = seed_paired(HAND, resamples=2000)
    assert result.differences == [0.0, 0.25, 0.5]
    assert result.seeds == 3
    # mean 0.25; sd: deviations -0.25, 0, 0.25 -> sqrt((0.0625 + 0 + 0.0625) / 2) = 0.25
    t = result.t
    assert (t.mean, t.sd, t.n, t.df) == (0.25, 0.25, 3, 2)
    # t = 0.25 / (0.25 / sqrt(3)) = sqrt(3), on 2 degrees of freedom
    assert t.t == pytest.approx(math.sqrt(3), rel=1e-12)
    # Student-t with 2 df in closed form: P(|T| <= x) = x / sqrt(2 + x^2), so the 0.975
    # quantile is q * sqrt(2 / (1 - q^2)) with q = 0.95, and p = 1 - sqrt(3) / sqrt(5).
    q975 = 0.95 * math.sqrt(2 / (1 - 0.95**2))
    assert q975 == pytest.approx(4.302653, abs=1e-6)  # the printed table's 4.3027
    half = q975 * 0.25 / math.sqrt(3)
    assert half == pytest.approx(0.621034, abs=1e-6)
    assert t.low == pytest.approx(0.25 - half, rel=1e-12)
    assert t.high == pytest.approx(0.25 + half, rel=1e-12)
    assert t.p_value == pytest.approx(1 - math.sqrt(3 / 5), rel=1e-12)  # 0.225403
    # McNemar per seed: no discordant pair; b01 = 1, b10 = 0; b01 = 3, b10 = 1
    # (p = 2 * P(X <= 1 | Binomial(4, 1/2)) = 2 * 5 / 16)
    assert [(m.b01, m.b10, m.p_value) for m in result.mcnemar] == [
        (0, 0, 1.0),
        (1, 0, 1.0),
        (3, 1, 0.625),
    ]
    assert [m.difference for m in result.mcnemar] == result.differences
    assert result.bootstrap.difference == 0.25
    assert (result.bootstrap.seeds, result.bootstrap.questions) == (3, 12)


def test_paired_t_edges():
    one = paired_t([0.1])
    assert (one.low, one.high, one.t, one.p_value, one.df) == (0.1, 0.1, None, None, 0)
    same = paired_t([0.25, 0.25, 0.25])  # every seed the same non-zero difference
    assert (same.low, same.high, same.sd, same.t, same.p_value) == (0.25, 0.25, 0.0, None, 0.0)
    assert paired_t([0.0, 0.0]).p_value == 1.0
    # symmetric in sign; 90% interval narrower
    assert paired_t([-0.0, -0.25, -0.5]).p_value == pytest.approx(1 - math.sqrt(3 / 5))
    assert paired_t([0, 0.25, 0.5], level=0.9).high < paired_t([0, 0.25, 0.5]).high
    # df = 1 is Cauchy: p = 1 - (2 / pi) * atan(|t|); d = (0.1, 0.3): t = 0.2 / 0.1 = 2
    assert paired_t([0.1, 0.3]).p_value == pytest.approx(1 - 2 / math.pi * math.atan(2))


# --- cluster bootstrap ------------------------------------------------------------------------


def test_cluster_bootstrap_identical_arms_has_zero_width():
    # Within every seed the two arms agree question by question (accuracy 50%, 25%, 75%): with
    # the same resampled questions for both arms every resample differs by exactly 0. (Drawing
    # the arms' questions independently would not.)
    seeds = [[T, F, T, F], [F, F, T, F], [T, T, F, T]]
    result = cluster_bootstrap([(s, list(s)) for s in seeds], resamples=2000)
    assert (result.difference, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_cluster_bootstrap_same_difference_everywhere_is_exact():
    # The arm right and the reference wrong on every question of every seed: d = 1 always.
    pairs = [([F] * 4, [T] * 4), ([F] * 3, [T] * 3)]
    result = cluster_bootstrap(pairs, resamples=1000)
    assert (result.difference, result.low, result.high, result.p_value) == (1.0, 1.0, 1.0, 0.0)


def test_cluster_bootstrap_resamples_seeds():
    # Seed A: arm right, reference wrong on all 4 (d = 1 per question); seed B: both right on
    # all 4 (d = 0). Questions add nothing; the seeds drawn decide: the mean is 0, 1/2 or 1 with
    # probabilities 1/4, 1/2, 1/4, so the 95% interval is [0, 1] exactly and p = 2 * 1/4.
    pairs = [([F] * 4, [T] * 4), ([T] * 4, [T] * 4)]
    result = cluster_bootstrap(pairs, resamples=20_000, seed=1)
    assert (result.difference, result.low, result.high) == (0.5, 0.0, 1.0)
    assert result.p_value == pytest.approx(0.5, abs=0.02)


def _enumerated(per_question: list[list[int]]) -> dict[Fraction, Fraction]:
    """The cluster bootstrap's exact distribution by brute force: every draw of seeds, and for
    each drawn seed every draw of its question indices, each equally likely."""
    seeds = len(per_question)
    dist: dict[Fraction, Fraction] = {}
    for picks in itertools.product(range(seeds), repeat=seeds):
        draws = [
            list(itertools.product(per_question[s], repeat=len(per_question[s]))) for s in picks
        ]
        weight = Fraction(1, seeds**seeds * math.prod(len(d) for d in draws))
        for combo in itertools.product(*draws):
            stat = sum(Fraction(sum(q), len(q)) for q in combo) / seeds
            dist[stat] = dist.get(stat, Fraction(0)) + weight
    return dist


def test_cluster_bootstrap_matches_brute_force_enumeration():
    # Seed A (3 questions): reference wrong on all, arm right on two -> d per question 1, 1, 0.
    # Seed B (2 questions): reference right on one, arm on none -> -1, 0. Observed: (2/3 - 1/2)/2.
    pairs = [([F, F, F], [T, T, F]), ([T, F], [F, F])]
    exact = _enumerated([[1, 1, 0], [-1, 0]])
    assert sum(exact.values()) == 1 and len(exact) == 16
    resamples = 200_000
    draws = cluster_draws(np.array([[2, 0, 3], [0, 1, 2]]), resamples, np.random.default_rng(0))
    # every value on the 1/12 grid, each as often as enumerated (sd of a share <= 0.0012)
    twelfths = np.rint(draws * 12).astype(int)
    assert np.allclose(draws * 12, twelfths)
    counts = dict(zip(*np.unique(twelfths, return_counts=True), strict=True))
    for value, p in exact.items():
        assert counts.get(int(value * 12), 0) / resamples == pytest.approx(float(p), abs=0.006)
    # The public result: p = 2 * P(mean <= 0) = 2 * 0.44479 exactly, and the percentile
    # interval falls on the enumerated quantiles (CDF(-1) = 0.016 < 0.025 <= CDF(-3/4) = 0.078;
    # CDF(2/3) = 0.912 < 0.975 <= CDF(5/6) = 0.978).
    result = cluster_bootstrap(pairs, resamples=resamples)
    assert result.difference == pytest.approx(1 / 12)
    p_exact = 2 * float(sum(p for v, p in exact.items() if v <= 0))
    assert p_exact == pytest.approx(0.889575, abs=1e-6)
    assert result.p_value == pytest.approx(p_exact, abs=0.01)
    assert (result.low, result.high) == (pytest.approx(-0.75), pytest.approx(5 / 6))


def test_cluster_bootstrap_one_seed_is_the_paired_bootstrap():
    # One seed: only questions are resampled. b01=10, b10=2 of 50: d in {+1 x10, -1 x2, 0 x38};
    # Var(mean d*) = var_pop(d) / n, so the interval is close to the normal one.
    a, b = discordant(b01=10, b10=2, both_right=30, both_wrong=8)
    result = cluster_bootstrap([(a, b)], resamples=20_000, seed=3)
    mean_d, mean_d2 = 8 / 50, 12 / 50
    sd = math.sqrt((mean_d2 - mean_d**2) / 50)
    z = 1.959964
    assert result.low == pytest.approx(mean_d - z * sd, abs=0.02)
    assert result.high == pytest.approx(mean_d + z * sd, abs=0.02)
    assert 0.01 < result.p_value < 0.08  # near the exact McNemar p (0.0386)
    reverse = cluster_bootstrap([(b, a)], resamples=20_000, seed=3)
    assert reverse.difference == pytest.approx(-0.16) and reverse.high < 0


def test_cluster_bootstrap_deterministic_by_seed():
    pairs = [discordant(b01=6, b10=4, both_right=20), discordant(b01=3, b10=5, both_wrong=9)]
    first = cluster_bootstrap(pairs, seed=7, resamples=2000)
    assert first == cluster_bootstrap(pairs, seed=7, resamples=2000)
    other = cluster_bootstrap(pairs, seed=8, resamples=2000)
    assert (other.low, other.high, other.p_value) != (first.low, first.high, first.p_value)
    assert (first.seed, first.resamples, first.level) == (7, 2000, 0.95)


def test_paired_over_seeds_refuses_bad_input():
    with pytest.raises(ValueError, match=r"a of pairs\[1\] has 2 outcomes and b of pairs\[1\]"):
        cluster_bootstrap([discordant(1, 1), ([True, False], [True])])
    with pytest.raises(ValueError, match="at least one seed"):
        seed_paired([])
    with pytest.raises(ValueError, match=r"pairs\[0\] has 0 outcomes"):
        cluster_bootstrap([([], [])])
    with pytest.raises(ValueError, match="resamples"):
        cluster_bootstrap([([True], [False])], resamples=0)


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
