"""Comparing an experiment's arms with statistics that match its design.

The seed is the unit of replication: each seed trains its own adapters on its own data (and
may draw its own held-out questions); within a seed every arm answers the same questions. So
an arm is compared with a reference by the per-seed paired difference (arm minus reference on
the seed's questions), and the statistic is its mean over seeds, with a Student-t interval and
t-test (df = seeds - 1) and a cluster bootstrap that resamples seeds and questions within them
(``training.stats.seed_paired``). McNemar's exact test is given per seed, as secondary detail.

- **Primary**: the one comparison pre-registered in the design (``[experiment] primary =
  [arm, reference]``, read from the stored design), reported unadjusted. Without one, every
  comparison is exploratory.
- **Secondary**: every other arm against each reference (the primary's reference and
  ``base``; without a primary, ``base`` and ``uniform_sft``), Holm-adjusted over that family
  on the t-test's p. Against a reference with a budget suffix (``uniform_sft@32``) only arms of
  the same budget are compared; ``base`` is never the compared arm.
- Per arm: accuracy overall, per topic and per difficulty as the mean over seeds with a 95%
  t-interval, and per topic and difficulty the paired difference against the reference of the
  breakdown tables (the primary's reference, else ``base``).

The store aggregates in SQL; this module only does the statistics."""

from __future__ import annotations

import json
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from teachloop.config import BUILTIN_ARMS
from teachloop.store.experiments import Discordance
from teachloop.store.store import Store
from teachloop.training.stats import Interval, SeedPaired, holm, mean_interval, seed_paired

OVERALL = "overall"
BASE = "base"
# The references without a pre-registered primary (the first design's two).
EXPLORATORY_REFERENCES = (BASE, "uniform_sft")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


def arm_family(arm: str) -> tuple[str, int | None]:
    """An arm name without its budget suffix, and the budget: ``"kd@32"`` -> ``("kd", 32)``,
    ``"kd"`` -> ``("kd", None)``."""
    name, at, budget = arm.rpartition("@")
    if at and name and budget.isdigit():
        return name, int(budget)
    return arm, None


class ArmSummary(_Model):
    arm: str
    family: str  # the arm's name without a budget suffix (`@<examples>`)
    data: str
    method: str | None
    target: str  # what it trained toward and answered in: "answer" or "solution" (shown work)
    seeds: int
    accuracy: Interval  # over seeds
    topics: dict[str, Interval]
    difficulties: dict[int, Interval]
    # Per topic / difficulty: the mean over seeds of (this arm - the summary's reference) on the
    # same questions, with its t-interval; empty for the reference itself.
    topic_differences: dict[str, Interval]
    difficulty_differences: dict[int, Interval]
    # The budget, averaged over seeds.
    examples: float
    steps: float
    teacher_tokens: float
    data_wall_s: float
    train_wall_s: float
    eval_wall_s: float


class Comparison(_Model):
    """``arm`` against ``against`` over the seeds both have, paired within each seed;
    differences read as the arm's accuracy minus the reference's."""

    arm: str
    against: str
    seeds: list[int]
    paired: SeedPaired
    primary: bool
    # The t-test's p, Holm-adjusted over the secondary family; None for the primary (alone,
    # unadjusted) and for a comparison on one seed (no t-test).
    p_holm: float | None

    @property
    def p_value(self) -> float | None:
        return self.paired.t.p_value


class TopicTargeting(_Model):
    """Where the budget went on a topic, and what each trained arm gained there over ``base``
    (means over seeds). ``trained``: per arm, the share of the examples it trained on that were
    about the topic (from the stored training examples; empty for experiments that did not
    store them); ``share``: the share of the default selective lessons' questions on the topic
    (None without such lessons)."""

    topic: str
    share: Interval | None
    trained: dict[str, float]
    lift: dict[str, float]


class ExperimentSummary(_Model):
    experiment: str
    seeds: list[int]
    # The pre-registered (arm, reference) from the stored design; None: all is exploratory.
    primary: tuple[str, str] | None
    reference: str | None  # what the per-topic and per-difficulty differences are against
    resamples: int
    arms: list[ArmSummary]
    primary_result: Comparison | None  # None without a primary or before both arms have results
    comparisons: list[Comparison]  # the secondary family
    targeting: list[TopicTargeting]

    def comparison(self, arm: str, against: str) -> Comparison | None:
        every = [self.primary_result, *self.comparisons]
        return next(
            (c for c in every if c is not None and (c.arm, c.against) == (arm, against)), None
        )

    def arm(self, name: str) -> ArmSummary | None:
        return next((a for a in self.arms if a.arm == name), None)


def primary_of(design: str | None) -> tuple[str, str] | None:
    """The pre-registered (arm, reference) of a stored design (``experiment.primary``)."""
    if not design:
        return None
    experiment = json.loads(design).get("experiment") or {}
    primary = experiment.get("primary") if isinstance(experiment, dict) else None
    if not primary:
        return None
    arm, reference = primary
    return str(arm), str(reference)


def targets_of(design: str | None) -> tuple[dict[str, str], str]:
    """Each arm's target in a stored design (its ``target``; built-in arms by name), and the
    default for the rest: the form ``[student] shown_work`` gives. Read leniently, so designs
    stored before targets existed read as bare answers."""
    data = json.loads(design) if design else {}
    student = data.get("student") or {}
    default = "solution" if student.get("shown_work") else "answer"
    targets = {}
    for arm in (data.get("experiment") or {}).get("arms") or []:
        if isinstance(arm, str):
            builtin = BUILTIN_ARMS.get(arm)
            name, target = arm, builtin.target if builtin else None
        else:
            name, target = arm.get("name"), arm.get("target")
        if name and target:
            targets[name] = target
    return targets, default


def summarize_experiment(
    store: Store, experiment: str, *, resamples: int = 10_000
) -> ExperimentSummary:
    results = store.arm_results(experiment)
    if not results:
        raise ValueError(f"experiment {experiment!r} has no results in {store.location}")
    arms = list(dict.fromkeys(r.arm for r in results))
    design = store.experiment_design(experiment)
    primary = primary_of(design)
    targets, default_target = targets_of(design)
    if primary is not None:
        reference: str | None = primary[1]
    else:
        reference = BASE if BASE in arms else None

    accuracy = _per_seed(
        (r.arm, r.topic, r.seed, r.accuracy) for r in store.experiment_accuracy(experiment)
    )
    by_difficulty = _per_seed(
        (r.arm, r.difficulty, r.seed, r.accuracy) for r in store.difficulty_accuracy(experiment)
    )
    summaries = []
    for arm in arms:
        rows = [r for r in results if r.arm == arm]
        topics = sorted(t for (a, t) in accuracy if a == arm and t != OVERALL)
        difficulties = sorted(d for (a, d) in by_difficulty if a == arm)
        compare = reference is not None and arm != reference
        summaries.append(
            ArmSummary(
                arm=arm,
                family=arm_family(arm)[0],
                data=rows[0].data,
                method=rows[0].method,
                target=targets.get(arm_family(arm)[0], default_target),
                seeds=len(rows),
                accuracy=mean_interval(list(accuracy[(arm, OVERALL)].values())),
                topics={t: mean_interval(list(accuracy[(arm, t)].values())) for t in topics},
                difficulties={
                    d: mean_interval(list(by_difficulty[(arm, d)].values())) for d in difficulties
                },
                topic_differences=_differences(accuracy, arm, reference, topics) if compare else {},
                difficulty_differences=(
                    _differences(by_difficulty, arm, reference, difficulties) if compare else {}
                ),
                examples=_mean([r.examples for r in rows]),
                steps=_mean([r.steps for r in rows]),
                teacher_tokens=_mean([r.teacher_tokens for r in rows]),
                data_wall_s=_mean([r.data_wall_s for r in rows]),
                train_wall_s=_mean([r.train_wall_s for r in rows]),
                eval_wall_s=_mean([r.eval_wall_s for r in rows]),
            )
        )

    pairs = family(arms, primary)
    references = sorted({b for _, b in pairs} | ({primary[1]} if primary else set()))
    cells = _overall_cells(store.discordance(experiment, references) if references else [])
    primary_result = None
    if primary is not None and primary in cells:
        primary_result = Comparison(
            arm=primary[0],
            against=primary[1],
            seeds=sorted(cells[primary]),
            paired=_paired(cells[primary], resamples),
            primary=True,
            p_holm=None,
        )
    tested = {pair: _paired(cells[pair], resamples) for pair in pairs if pair in cells}
    # Holm over the family's t-test p-values (a comparison on one seed has none: not counted).
    keys = {pair: str(i) for i, pair in enumerate(tested)}
    adjusted = holm(
        {keys[pair]: t.t.p_value for pair, t in tested.items() if t.t.p_value is not None}
    )
    comparisons = [
        Comparison(
            arm=a,
            against=b,
            seeds=sorted(cells[(a, b)]),
            paired=paired,
            primary=False,
            p_holm=adjusted.get(keys[(a, b)]),
        )
        for (a, b), paired in tested.items()
    ]

    by_arm_topic = {(s.arm, t): i.mean for s in summaries for t, i in s.topics.items()}
    shares = store.targeting(experiment)
    trained = _per_seed((r.arm, r.topic, r.seed, r.share) for r in store.trained_shares(experiment))
    trained_seeds = {
        arm: len({r.seed for r in results if r.arm == arm}) for arm in {a for a, _ in trained}
    }
    targeting = [
        TopicTargeting(
            topic=topic,
            share=(
                mean_interval([s.share for s in shares if s.topic == topic])
                if any(s.topic == topic for s in shares)
                else None
            ),
            # A seed whose arm trained on nothing of the topic has no row: a share of 0.
            trained={
                arm: sum(trained.get((arm, topic), {}).values()) / trained_seeds[arm]
                for arm in arms
                if arm in trained_seeds
            },
            lift={
                arm: by_arm_topic[(arm, topic)] - by_arm_topic[(BASE, topic)]
                for arm in arms
                if arm != BASE and (arm, topic) in by_arm_topic and (BASE, topic) in by_arm_topic
            },
        )
        for topic in sorted({s.topic for s in shares} | {t for _, t in trained})
    ]
    return ExperimentSummary(
        experiment=experiment,
        seeds=sorted({r.seed for r in results}),
        primary=primary,
        reference=reference,
        resamples=resamples,
        arms=summaries,
        primary_result=primary_result,
        comparisons=comparisons,
        targeting=targeting,
    )


def family(arms: list[str], primary: tuple[str, str] | None) -> list[tuple[str, str]]:
    """The secondary comparisons, (arm, reference) in order: each arm but ``base`` against each
    reference present (the primary's reference and ``base``, or without a primary ``base`` and
    ``uniform_sft``); against a reference with a budget suffix only arms of that budget; not
    the primary itself, and not a pair already compared the other way round."""
    candidates = [primary[1], BASE] if primary else list(EXPLORATORY_REFERENCES)
    references = [r for r in dict.fromkeys(candidates) if r in arms]
    pairs: list[tuple[str, str]] = []
    for reference in references:
        budget = arm_family(reference)[1]
        for arm in arms:
            if arm in (reference, BASE) or (arm, reference) == primary:
                continue
            if budget is not None and arm_family(arm)[1] != budget:
                continue
            if (reference, arm) in pairs or (reference, arm) == primary:
                continue
            pairs.append((arm, reference))
    return pairs


# --- helpers ----------------------------------------------------------------------------------


def _per_seed(
    rows: Iterable[tuple[str, object, int, float]],
) -> dict[tuple[str, object], dict[int, float]]:
    """(arm, cell, seed, accuracy) rows -> {(arm, cell): {seed: accuracy}}."""
    out: dict[tuple[str, object], dict[int, float]] = {}
    for arm, cell, seed, value in rows:
        out.setdefault((arm, cell), {})[seed] = value
    return out


def _differences(
    per_seed: dict[tuple[str, object], dict[int, float]],
    arm: str,
    reference: str | None,
    cells: list,
) -> dict:
    """Per cell: the mean over seeds of arm - reference (same questions within a seed), on the
    seeds where both answered questions in that cell."""
    out = {}
    for cell in cells:
        mine, theirs = per_seed.get((arm, cell), {}), per_seed.get((reference, cell), {})
        shared = sorted(set(mine) & set(theirs))
        if shared:
            out[cell] = mean_interval([mine[s] - theirs[s] for s in shared])
    return out


def _mean(values: list[float] | list[int]) -> float:
    return sum(values) / len(values)


def _overall_cells(rows: list[Discordance]) -> dict[tuple[str, str], dict[int, Discordance]]:
    """Overall discordance rows by (arm, reference), then seed."""
    out: dict[tuple[str, str], dict[int, Discordance]] = {}
    for r in rows:
        if r.topic == OVERALL:
            out.setdefault((r.arm, r.against), {})[r.seed] = r
    return out


def _outcomes(r: Discordance) -> tuple[list[bool], list[bool]]:
    """A seed's (reference, arm) correctness rebuilt from its cell counts: the statistics only
    depend on the counts, not on the questions' order. In the store's rows ``a`` is the arm
    and ``b`` the reference (``against``)."""
    neither = r.questions - r.a_only - r.b_only - r.both
    reference = [False] * r.a_only + [True] * r.b_only + [True] * r.both + [False] * neither
    arm = [True] * r.a_only + [False] * r.b_only + [True] * r.both + [False] * neither
    return reference, arm


def _paired(cells: dict[int, Discordance], resamples: int) -> SeedPaired:
    return seed_paired([_outcomes(cells[s]) for s in sorted(cells)], resamples=resamples)
