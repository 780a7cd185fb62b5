"""Statistics for comparing training arms on held-out questions over several seeds.

Inputs are plain Python sequences (the experiment code reads them from the store): per-seed
values for `mean_interval` and `paired_t`, and per seed, two arms' correctness on that seed's
questions, in the same order, for the paired tests. Results are frozen pydantic models.

The unit of replication is the seed (its data, its adapter, and where seeds draw their own,
its questions); within a seed the arms are paired question by question. So the primary
statistic is the per-seed paired difference and its mean over seeds:

- `seed_paired`: an arm against a reference over seeds: per-seed differences, their mean with
  a t-interval and t-test (`paired_t`), a cluster bootstrap (`cluster_bootstrap`: seeds, and
  questions within a seed, resampled) and an exact McNemar test per seed (`mcnemar`).
- `mean_interval`: Student-t confidence interval of a mean over seeds.
- `mcnemar`: exact two-sided McNemar test of two arms' paired correctness on one seed.
- `holm`: Holm-Bonferroni adjustment of a family of p-values.

Nothing here pools question-seed pairs as if independent: with the same questions (or the same
base outcomes) in every seed that hides the between-seed variance from the null.

No scipy: the exact binomial tail is summed in integers (`math.comb` terms, one correctly rounded
division); the t quantile inverts the closed-form Student-t CDF for integer degrees of freedom
(always n - 1 here) by bisection, to double precision, and the t-test's p is that CDF.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ClusterBootstrap",
    "Interval",
    "PairedTest",
    "SeedPaired",
    "TTest",
    "cluster_bootstrap",
    "cluster_draws",
    "holm",
    "mcnemar",
    "mean_interval",
    "paired_t",
    "seed_paired",
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
    `difference` is accuracy_b - accuracy_a (= (b01 - b10) / n).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=1, description="pairs compared: one seed's questions")
    b01: int = Field(ge=0)
    b10: int = Field(ge=0)
    accuracy_a: float = Field(ge=0.0, le=1.0)
    accuracy_b: float = Field(ge=0.0, le=1.0)
    difference: float = Field(ge=-1.0, le=1.0)
    p_value: float = Field(ge=0.0, le=1.0)


class TTest(BaseModel):
    """A mean of per-seed values with its Student-t interval and two-sided one-sample t-test.

    `low`/`high`: mean +/- t_{(1+level)/2, n-1} * sd / sqrt(n) (`mean_interval`'s interval);
    `t` = mean / (sd / sqrt(n)) on `n - 1` degrees of freedom and `p_value` its two-sided p
    against a mean of 0. With one value there is no spread: no t, no p (None). With spread 0 the
    statistic is undefined as well (t None), and p is 1 when the mean is 0, else 0: every seed
    gave the same non-zero difference.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: float
    low: float
    high: float
    n: int = Field(ge=1)
    level: float = Field(gt=0.0, lt=1.0)
    sd: float = Field(ge=0.0, description="sample standard deviation (n - 1); 0 for one value")
    t: float | None
    p_value: float | None = Field(ge=0.0, le=1.0)

    @property
    def df(self) -> int:
        return self.n - 1


class ClusterBootstrap(BaseModel):
    """Cluster bootstrap of the mean per-seed difference (b - a): seeds resampled with
    replacement and, within each drawn seed, its questions with replacement (one draw of
    question indices for both arms). Percentile interval and p-value, as `cluster_bootstrap`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seeds: int = Field(ge=1)
    questions: int = Field(ge=1, description="questions over all seeds (each seed's own count)")
    difference: float = Field(ge=-1.0, le=1.0, description="observed: mean of per-seed diffs")
    low: float = Field(ge=-1.0, le=1.0)
    high: float = Field(ge=-1.0, le=1.0)
    level: float = Field(gt=0.0, lt=1.0)
    p_value: float = Field(ge=0.0, le=1.0)
    resamples: int = Field(ge=1)
    seed: int


class SeedPaired(BaseModel):
    """Arm b against reference a, paired within each seed on the same questions.

    `differences[s]` = accuracy_b - accuracy_a on seed s's questions (input order); `t` is the
    mean over seeds with its t-interval and t-test (the primary statistic), `bootstrap` the
    cluster bootstrap of the same mean, `mcnemar[s]` the exact McNemar test within seed s.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    differences: list[float]
    t: TTest
    bootstrap: ClusterBootstrap
    mcnemar: list[PairedTest]

    @property
    def seeds(self) -> int:
        return len(self.differences)


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


def _mcnemar_counts(x: np.ndarray, y: np.ndarray) -> PairedTest:
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
    )


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> PairedTest:
    """Exact two-sided McNemar test of arms a and b, correct/incorrect on the same questions.

    Only discordant pairs carry information: with m = b01 + b10, p = min(1, 2 * P(X <= min(b01,
    b10))) for X ~ Binomial(m, 1/2), and p = 1 when m = 0. Raises ValueError when the sequences
    differ in length (both lengths named) or are empty.
    """
    x, y = _paired(a, b)
    return _mcnemar_counts(x, y)


def paired_t(differences: Sequence[float], level: float = 0.95) -> TTest:
    """Mean of per-seed `differences` with a Student-t interval (df = n - 1) and the two-sided
    t-test of mean 0: t = mean / (sd / sqrt(n)), p = P(|T_{n-1}| >= |t|) from the closed-form
    CDF (`TTest` says what one value or zero spread give)."""
    interval = mean_interval(differences, level)
    x = np.asarray(differences, dtype=float)
    n = interval.n
    if n == 1:
        return TTest(**interval.model_dump(), sd=0.0, t=None, p_value=None)
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        p = 1.0 if interval.mean == 0.0 else 0.0
        return TTest(**interval.model_dump(), sd=0.0, t=None, p_value=p)
    t = interval.mean / (sd / math.sqrt(n))
    p = 1.0 - _t_abs_cdf(math.atan(abs(t) / math.sqrt(n - 1)), n - 1)
    return TTest(**interval.model_dump(), sd=sd, t=t, p_value=min(1.0, max(0.0, p)))


def _seed_pairs(
    pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]],
) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(pairs) == 0:
        raise ValueError("need at least one seed's (a, b) outcomes, got none")
    checked = []
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"pairs[{i}] must be an (a, b) pair, got {len(pair)} items")
        x, y = _paired(pair[0], pair[1], where=f" of pairs[{i}]")
        if len(x) == 0:
            raise ValueError(f"pairs[{i}] has 0 outcomes: every seed needs questions")
        checked.append((x, y))
    return checked


def _cells(checked: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per seed: (b01, b10, n), one row each."""
    return np.array(
        [(np.count_nonzero(~x & y), np.count_nonzero(x & ~y), len(x)) for x, y in checked],
        dtype=np.int64,
    )


def cluster_draws(cells: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`resamples` draws of the cluster-bootstrapped mean per-seed difference.

    `cells` holds one (b01, b10, n) row per seed. Each draw picks S seeds with replacement, and
    for each picked seed n question indices with replacement, the same indices for both arms.
    A question adds +1 (b01), -1 (b10) or 0 to its seed's difference, so the n drawn questions
    are fully described by how many of each kind they hold: a Multinomial(n, (b01, b10, rest)
    / n) draw, which is exactly the distribution of the drawn indices. The draw's statistic is
    the mean over the S picked seeds of (count_+1 - count_-1) / n.
    """
    seeds = len(cells)
    picked = rng.integers(0, seeds, size=(resamples, seeds))
    b01, b10, n = cells[:, 0], cells[:, 1], cells[:, 2]
    probs = np.stack([b01, b10, n - b01 - b10], axis=1) / n[:, None]
    counts = rng.multinomial(n[picked], probs[picked])  # (resamples, seeds, 3)
    return ((counts[..., 0] - counts[..., 1]) / n[picked]).mean(axis=1)


def cluster_bootstrap(
    pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> ClusterBootstrap:
    """Mean over seeds of the paired accuracy difference (b - a), with a cluster bootstrap.

    `pairs` holds one (a, b) per seed: the two arms' correctness on that seed's questions, in
    the same order (seeds may hold different numbers of questions). Each resample draws seeds
    with replacement and, within each drawn seed, questions with replacement, one set of indices
    for both arms (`cluster_draws`), so both the seed-to-seed and the question-to-question
    variation are in the interval. Interval: the (1 - level)/2 and (1 + level)/2 quantiles of
    the resampled means (numpy's linear interpolation). p-value: the share of resampled means
    on the other side of 0 from the observed one, zero included, doubled and capped at 1; 1 when
    the observed mean is 0; its resolution is 1 / resamples. Deterministic given `seed` (numpy's
    default_rng). With one seed this is the plain paired bootstrap over questions; with few
    seeds the seed level has few distinct resamples (3 seeds: 10 multisets), which the
    percentile interval inherits.
    """
    level = _check_level(level)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    cells = _cells(_seed_pairs(pairs))
    observed = float(np.mean((cells[:, 0] - cells[:, 1]) / cells[:, 2]))
    diffs = cluster_draws(cells, resamples, np.random.default_rng(seed))
    alpha = 1.0 - level
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    if observed > 0:
        p = 2.0 * float(np.mean(diffs <= 0))
    elif observed < 0:
        p = 2.0 * float(np.mean(diffs >= 0))
    else:
        p = 1.0
    return ClusterBootstrap(
        seeds=len(cells),
        questions=int(cells[:, 2].sum()),
        difference=observed,
        low=float(low),
        high=float(high),
        level=level,
        p_value=min(1.0, p),
        resamples=resamples,
        seed=seed,
    )


def seed_paired(
    pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> SeedPaired:
    """Arm b against reference a over seeds, paired within each seed: the per-seed accuracy
    differences, their mean with a t-interval and t-test (`paired_t`), the cluster bootstrap of
    that mean (`cluster_bootstrap`), and the exact McNemar test of each seed (`mcnemar`).

    `pairs` holds one (a, b) per seed, as `cluster_bootstrap` takes them. Each seed is one
    observation of the difference: its questions are paired between the arms, but the seed's
    adapter, data and (where seeds draw their own) questions vary between seeds, which pooling
    the question-seed pairs would leave out of the null.
    """
    checked = _seed_pairs(pairs)
    differences = [float(y.mean() - x.mean()) for x, y in checked]
    return SeedPaired(
        differences=differences,
        t=paired_t(differences, level),
        bootstrap=cluster_bootstrap(pairs, resamples=resamples, seed=seed, level=level),
        mcnemar=[_mcnemar_counts(x, y) for x, y in checked],
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
