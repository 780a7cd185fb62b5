"""Comparing an experiment's arms: held-out accuracy as a mean and 95% interval over seeds, and
paired tests on identical questions (exact McNemar and a paired bootstrap, pooled over seeds,
Holm-adjusted within each family: overall, and each topic) of every arm against ``base`` and
against ``uniform_sft``. The store aggregates in SQL; this module only does the statistics."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from teachloop.store.experiments import ArmAccuracy, Discordance
from teachloop.store.store import Store
from teachloop.training.stats import (
    BootstrapTest,
    Interval,
    PairedTest,
    holm,
    mcnemar,
    mean_interval,
    paired_bootstrap,
)

OVERALL = "overall"
REFERENCES = ("base", "uniform_sft")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class ArmSummary(_Model):
    arm: str
    data: str
    method: str | None
    seeds: int
    accuracy: Interval  # over seeds
    topics: dict[str, Interval]
    # The budget, averaged over seeds.
    examples: float
    steps: float
    teacher_tokens: float
    data_wall_s: float
    train_wall_s: float


class Comparison(_Model):
    """``arm`` against ``against`` on one topic (or overall), pooled over seeds; ``difference``
    is the arm's accuracy minus the reference's."""

    arm: str
    against: str
    topic: str
    mcnemar: PairedTest
    bootstrap: BootstrapTest
    p_holm: float  # McNemar's p, Holm-adjusted over the comparisons on the same topic


class TopicTargeting(_Model):
    """How much of the selective lessons went to a topic, and what each trained arm gained
    there over ``base`` (mean over seeds)."""

    topic: str
    share: Interval
    lift: dict[str, float]


class ExperimentSummary(_Model):
    experiment: str
    seeds: list[int]
    arms: list[ArmSummary]
    comparisons: list[Comparison]
    targeting: list[TopicTargeting]

    def comparison(self, arm: str, against: str, topic: str = OVERALL) -> Comparison | None:
        return next(
            (c for c in self.comparisons if (c.arm, c.against, c.topic) == (arm, against, topic)),
            None,
        )


def summarize_experiment(
    store: Store, experiment: str, *, resamples: int = 10_000
) -> ExperimentSummary:
    results = store.arm_results(experiment)
    if not results:
        raise ValueError(f"experiment {experiment!r} has no results in {store.location}")
    accuracy = store.experiment_accuracy(experiment)
    arms = list(dict.fromkeys(r.arm for r in results))
    summaries = []
    for arm in arms:
        rows = [r for r in results if r.arm == arm]
        summaries.append(
            ArmSummary(
                arm=arm,
                data=rows[0].data,
                method=rows[0].method,
                seeds=len(rows),
                accuracy=_interval(accuracy, arm, OVERALL),
                topics={
                    t: _interval(accuracy, arm, t)
                    for t in sorted({a.topic for a in accuracy if a.topic != OVERALL})
                },
                examples=_mean([r.examples for r in rows]),
                steps=_mean([r.steps for r in rows]),
                teacher_tokens=_mean([r.teacher_tokens for r in rows]),
                data_wall_s=_mean([r.data_wall_s for r in rows]),
                train_wall_s=_mean([r.train_wall_s for r in rows]),
            )
        )
    references = [r for r in REFERENCES if r in arms]
    comparisons = _compare(store.discordance(experiment, references), resamples)
    by_arm_topic = {(s.arm, t): i.mean for s in summaries for t, i in s.topics.items()}
    shares = store.targeting(experiment)
    targeting = [
        TopicTargeting(
            topic=topic,
            share=mean_interval([s.share for s in shares if s.topic == topic]),
            lift={
                arm: by_arm_topic[(arm, topic)] - by_arm_topic[("base", topic)]
                for arm in arms
                if arm != "base" and ("base", topic) in by_arm_topic
            },
        )
        for topic in sorted({s.topic for s in shares})
    ]
    return ExperimentSummary(
        experiment=experiment,
        seeds=sorted({r.seed for r in results}),
        arms=summaries,
        comparisons=comparisons,
        targeting=targeting,
    )


def _interval(rows: list[ArmAccuracy], arm: str, topic: str) -> Interval:
    return mean_interval([r.accuracy for r in rows if r.arm == arm and r.topic == topic])


def _mean(values: list[float] | list[int]) -> float:
    return sum(values) / len(values)


def _compare(rows: list[Discordance], resamples: int) -> list[Comparison]:
    """Pool each (arm, reference, topic) over seeds, test, and adjust within each topic."""
    pooled: dict[tuple[str, str, str], list[int]] = {}
    for r in rows:
        if r.arm == REFERENCES[0]:
            continue  # base is the floor: "base vs uniform_sft" repeats "uniform_sft vs base"
        counts = pooled.setdefault((r.arm, r.against, r.topic), [0, 0, 0, 0])
        for i, n in enumerate((r.a_only, r.b_only, r.both, r.questions)):
            counts[i] += n
    tests = {}
    for key, (a_only, b_only, both, questions) in pooled.items():
        # The reference is `a`, the arm `b`: differences read as the arm's gain.
        neither = questions - a_only - b_only - both
        reference = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
        arm = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
        tests[key] = (
            mcnemar(reference, arm),
            paired_bootstrap(reference, arm, resamples=resamples),
        )
    adjusted: dict[tuple[str, str, str], float] = {}
    for topic in {k[2] for k in tests}:
        family = {f"{a}|{b}": tests[(a, b, t)][0].p_value for a, b, t in tests if t == topic}
        for name, p in holm(family).items():
            a, b = name.split("|")
            adjusted[(a, b, topic)] = p
    return [
        Comparison(arm=a, against=b, topic=t, mcnemar=m, bootstrap=boot, p_holm=adjusted[(a, b, t)])
        for (a, b, t), (m, boot) in sorted(tests.items())
    ]
