"""Statistics for comparing training arms on held-out questions over several seeds.

Inputs are plain Python sequences (the experiment code reads them from the store): per-seed
accuracies for `mean_interval`, and per-question correctness of two arms on the same questions,
in the same order, for the paired tests. Results are frozen pydantic models.

- `mean_interval`: Student-t confidence interval of a mean over seeds.
- `mcnemar`: exact two-sided McNemar test of two arms' paired correctness.
- `paired_bootstrap`: accuracy difference with a percentile bootstrap interval and p-value.
- `pooled_mcnemar`: McNemar on the question-seed pairs of several seeds, concatenated.
- `holm`: Holm-Bonferroni adjustment of a family of p-values.

No scipy: the exact binomial tail is summed in integers (`math.comb` terms, one correctly rounded
division), and the t quantile inverts the closed-form Student-t CDF for integer degrees of
freedom (always n - 1 here) by bisection, to double precision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BootstrapTest",
    "Interval",
    "PairedTest",
    "holm",
    "mcnemar",
    "mean_interval",
    "paired_bootstrap",
    "pooled_mcnemar",
    "t_quantile",
]


class Interval(BaseModel):
    """A mean with a two-sided confidence interval at `level`, over `n` values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: float
    low: float
    high: float
    n: int = Field(ge=1)
    level: float = Field(gt=0.0, lt=1.0)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


class PairedTest(BaseModel):
    """Two arms' correctness on the same questions, compared pair by pair.

    `b01`: pairs where arm a is wrong and arm b right; `b10`: a right, b wrong.
    `difference` is accuracy_b - accuracy_a (= (b01 - b10) / n). `seeds` is how many per-seed
    pair lists were pooled (1 for a single comparison).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=1, description="pairs compared (question-seed pairs when pooled)")
    b01: int = Field(ge=0)
    b10: int = Field(ge=0)
    accuracy_a: float = Field(ge=0.0, le=1.0)
    accuracy_b: float = Field(ge=0.0, le=1.0)
    difference: float = Field(ge=-1.0, le=1.0)
    p_value: float = Field(ge=0.0, le=1.0)
    seeds: int = Field(default=1, ge=1)


class BootstrapTest(BaseModel):
    """Paired bootstrap of the accuracy difference (b - a): percentile interval and p-value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=1)
    b01: int = Field(ge=0)
    b10: int = Field(ge=0)
    accuracy_a: float = Field(ge=0.0, le=1.0)
    accuracy_b: float = Field(ge=0.0, le=1.0)
    difference: float = Field(ge=-1.0, le=1.0)
    low: float = Field(ge=-1.0, le=1.0)
    high: float = Field(ge=-1.0, le=1.0)
    level: float = Field(gt=0.0, lt=1.0)
    p_value: float = Field(ge=0.0, le=1.0)
    resamples: int = Field(ge=1)
    seed: int


# --- input checks ----------------------------------------------------------------------------


def _check_level(level: float) -> float:
    if not (isinstance(level, int | float) and 0.0 < level < 1.0):
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")
    return float(level)


def _outcomes(name: str, values: Sequence[bool]) -> np.ndarray:
    """A 1-D bool array from bools (or 0/1 numbers); anything else is refused, not coerced."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of bools, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if arr.size == 0:
        return np.zeros(0, dtype=bool)
    if np.issubdtype(arr.dtype, np.number) and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise ValueError(f"{name} must hold only True/False (or 0/1), got dtype {arr.dtype}")


def _paired(a: Sequence[bool], b: Sequence[bool], where: str = "") -> tuple[np.ndarray, ...]:
    x, y = _outcomes(f"a{where}", a), _outcomes(f"b{where}", b)
    if len(x) != len(y):
        raise ValueError(
            f"a{where} has {len(x)} outcomes and b{where} has {len(y)}: paired tests need both "
            "arms scored on the same questions in the same order"
        )
    return x, y


# --- distributions ----------------------------------------------------------------------------


def _binomial_half_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly: integer sum, one correctly rounded division."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    term, total = 1, 1  # C(n, 0)
    for i in range(k):
        term = term * (n - i) // (i + 1)  # C(n, i + 1), exact
        total += term
    return total / (1 << n)


def _t_abs_cdf(theta: float, df: int) -> float:
    """P(|T| <= sqrt(df) * tan(theta)) for T ~ Student-t with integer `df` (A&S 26.7.3-4)."""
    s, c = math.sin(theta), math.cos(theta)
    c2 = c * c
    if df % 2 == 1:
        total, term = 0.0, 1.0
        for j in range(1, (df - 1) // 2 + 1):  # 1 + 2/3 c^2 + (2*4)/(3*5) c^4 + ...
            total += term
            term *= c2 * (2 * j) / (2 * j + 1)
        return (2.0 / math.pi) * (theta + s * c * total)
    total, term = 0.0, 1.0
    for j in range(1, df // 2 + 1):  # 1 + 1/2 c^2 + (1*3)/(2*4) c^4 + ...
        total += term
        term *= c2 * (2 * j - 1) / (2 * j)
    return s * total


def t_quantile(p: float, df: int) -> float:
    """The `p` quantile of Student's t with integer `df` >= 1 (e.g. p=0.975, df=2 -> 4.3027).

    Inverts the closed-form CDF by bisection on theta = atan(t / sqrt(df)) in [0, pi/2), a bounded
    monotone search that runs to double precision.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be strictly between 0 and 1, got {p!r}")
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df!r}")
    if p == 0.5:
        return 0.0
    coverage = abs(2.0 * p - 1.0)  # P(|T| <= t) for the two-sided quantile t
    lo, hi = 0.0, math.pi / 2
    while True:
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if _t_abs_cdf(mid, int(df)) < coverage:
            lo = mid
        else:
            hi = mid
    t = math.sqrt(df) * math.tan((lo + hi) / 2)
    return t if p > 0.5 else -t


# --- tests and intervals ----------------------------------------------------------------------


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of `values` (one per seed) with a two-sided Student-t interval at `level`.

    mean +/- t_{(1+level)/2, n-1} * s / sqrt(n), with s the sample standard deviation (n - 1).
    With a single value there is no spread to estimate: low = high = mean, which is not a
    confidence statement; report n beside it. No values raises ValueError, as do non-finite ones.
    """
    level = _check_level(level)
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be a flat sequence of numbers, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("mean_interval needs at least one value, got none")
    if not np.isfinite(x).all():
        raise ValueError(f"values must be finite, got {values!r}")
    n = int(x.size)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean=mean, low=mean, high=mean, n=1, level=level)
    half = t_quantile((1.0 + level) / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean=mean, low=mean - half, high=mean + half, n=n, level=level)


def _mcnemar_counts(x: np.ndarray, y: np.ndarray, seeds: int) -> PairedTest:
    n = len(x)
    if n == 0:
        raise ValueError("no pairs to compare: both arms have 0 outcomes")
    b01 = int(np.count_nonzero(~x & y))
    b10 = int(np.count_nonzero(x & ~y))
    discordant = b01 + b10
    # Exact two-sided: under H0 each discordant pair is b01 with probability 1/2. The binomial
    # is symmetric, so doubling the smaller tail is the usual two-sided p (capped at 1).
    p = 1.0 if discordant == 0 else min(1.0, 2.0 * _binomial_half_cdf(min(b01, b10), discordant))
    acc_a, acc_b = float(x.mean()), float(y.mean())
    return PairedTest(
        n=n,
        b01=b01,
        b10=b10,
        accuracy_a=acc_a,
        accuracy_b=acc_b,
        difference=(b01 - b10) / n,
        p_value=p,
        seeds=seeds,
    )


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> PairedTest:
    """Exact two-sided McNemar test of arms a and b, correct/incorrect on the same questions.

    Only discordant pairs carry information: with m = b01 + b10, p = min(1, 2 * P(X <= min(b01,
    b10))) for X ~ Binomial(m, 1/2), and p = 1 when m = 0. Raises ValueError when the sequences
    differ in length (both lengths named) or are empty.
    """
    x, y = _paired(a, b)
    return _mcnemar_counts(x, y, seeds=1)


def pooled_mcnemar(pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]]) -> PairedTest:
    """McNemar on several seeds' paired outcomes, concatenated: each question-seed is one pair.

    `pairs` holds one (a, b) per seed; a seed may use the shared held-out questions or its own
    set, only a and b within a seed must be aligned. This tests the pooled discordance: whether,
    over all question-seed evaluations, "b right where a is wrong" is as common as the reverse.
    It treats the pairs as independent; when seeds reuse the same questions they are not (a
    question that one arm always gets right counts once per seed), so the p-value speaks for
    these questions under these seeds, not for new questions. Pair it with `mean_interval` over
    the per-seed differences for the spread between seeds.
    """
    if len(pairs) == 0:
        raise ValueError("pooled_mcnemar needs at least one seed's (a, b) pair, got none")
    xs, ys = [], []
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"pairs[{i}] must be an (a, b) pair, got {len(pair)} items")
        x, y = _paired(pair[0], pair[1], where=f" of pairs[{i}]")
        xs.append(x)
        ys.append(y)
    return _mcnemar_counts(np.concatenate(xs), np.concatenate(ys), seeds=len(pairs))


def paired_bootstrap(
    a: Sequence[bool],
    b: Sequence[bool],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapTest:
    """Accuracy difference (b - a) with a paired percentile bootstrap interval and p-value.

    Questions are resampled with replacement, each keeping its (a, b) pair. A question's
    contribution to the difference is +1 (b01), -1 (b10) or 0, so a resample of n questions is
    fully described by how many of each it drew: a Multinomial(n, (b01, b10, rest) / n) draw,
    which is exactly the distribution of resampling indices, at O(resamples) memory and time.

    Interval: the (1 - level)/2 and (1 + level)/2 quantiles of the resampled differences
    (numpy's default linear interpolation). p-value: the share of resampled differences on the
    other side of 0 from the observed difference, zero included (<= 0 when it is positive,
    >= 0 when negative), doubled and capped at 1; 1 when the observed difference is 0. Its
    resolution is 1 / resamples: 0.0 means below 2 / resamples. Deterministic given `seed`
    (numpy's default_rng; the stream can change with numpy's major version).
    """
    level = _check_level(level)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    x, y = _paired(a, b)
    n = len(x)
    if n == 0:
        raise ValueError("no pairs to compare: both arms have 0 outcomes")
    b01 = int(np.count_nonzero(~x & y))
    b10 = int(np.count_nonzero(x & ~y))
    observed = (b01 - b10) / n

    rng = np.random.default_rng(seed)
    probs = np.array([b01, b10, n - b01 - b10], dtype=float) / n
    draws = rng.multinomial(n, probs, size=resamples)
    diffs = (draws[:, 0] - draws[:, 1]) / n

    alpha = 1.0 - level
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    if observed > 0:
        p = 2.0 * float(np.mean(diffs <= 0))
    elif observed < 0:
        p = 2.0 * float(np.mean(diffs >= 0))
    else:
        p = 1.0
    return BootstrapTest(
        n=n,
        b01=b01,
        b10=b10,
        accuracy_a=float(x.mean()),
        accuracy_b=float(y.mean()),
        difference=observed,
        low=float(low),
        high=float(high),
        level=level,
        p_value=min(1.0, p),
        resamples=resamples,
        seed=seed,
    )


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values, same keys and order as `pvalues`.

    With the m p-values sorted ascending, the i-th (1-based) becomes
    max_{j <= i} min(1, (m - j + 1) * p_(j)); reject a hypothesis at alpha when its adjusted
    p-value is <= alpha. Tied p-values get the same adjusted value. Empty in, empty out.
    """
    for name, p in pvalues.items():
        if not (isinstance(p, int | float) and 0.0 <= p <= 1.0):
            raise ValueError(f"p-value for {name!r} must be in [0, 1], got {p!r}")
    m = len(pvalues)
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, name in enumerate(sorted(pvalues, key=lambda k: pvalues[k])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[name])))
        adjusted[name] = running
    return {name: adjusted[name] for name in pvalues}
