"""The teacher's model of the student: a Beta posterior of first-try success per topic, a
difficulty staircase per topic, and a Beta posterior of reteach success per (topic, strategy).

By default choices use Thompson sampling: the topic whose *sampled* success rate is lowest is
asked next, so the weakest topic is targeted while uncertain topics still get explored (none
starves); the strategy whose sampled success rate is highest is used to re-teach. Other policies
(uniform, weakest, round robin; a fixed strategy; a fixed difficulty) exist to ablate targeting.
All updates return new objects: the lesson graph's state stays immutable between checkpoints.
A run shares one ``LiveEstimate`` between its lessons in flight.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from teachloop.messages import Strategy

TopicPolicy = Literal["thompson", "uniform", "weakest", "round_robin"]


class _TopicCounts(Protocol):
    topic: str
    successes: float
    failures: float
    difficulty: int | None


class _StrategyCounts(Protocol):
    topic: str
    strategy: str
    successes: float
    failures: float


class Counts(Protocol):
    """Aggregated outcomes, as ``Store.mastery_counts`` returns them."""

    @property
    def topics(self) -> Sequence[_TopicCounts]: ...

    @property
    def strategies(self) -> Sequence[_StrategyCounts]: ...


class BetaEstimate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(default=1.0, gt=0)
    beta: float = Field(default=1.0, gt=0)

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def observations(self) -> int:
        return round(self.alpha + self.beta - 2)

    def sample(self, rng: random.Random) -> float:
        return rng.betavariate(self.alpha, self.beta)

    def updated(self, success: bool) -> BetaEstimate:
        return self.added(success, not success)

    def added(self, successes: float, failures: float) -> BetaEstimate:
        return BetaEstimate(alpha=self.alpha + successes, beta=self.beta + failures)


class TopicState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    estimate: BetaEstimate = BetaEstimate()
    difficulty: int = Field(default=1, ge=1, le=5)


class MasteryModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topics: dict[str, TopicState] = Field(default_factory=dict)
    strategies: dict[str, dict[Strategy, BetaEstimate]] = Field(default_factory=dict)
    start_difficulty: int = Field(default=1, ge=1, le=5)
    # A topic counts as mastered only with evidence, not from the prior alone.
    min_evidence: int = Field(default=3, ge=1)

    def topic(self, topic: str) -> TopicState:
        return self.topics.get(topic, TopicState(difficulty=self.start_difficulty))

    def is_mastered(self, topic: str, target: float) -> bool:
        est = self.topic(topic).estimate
        return est.observations >= self.min_evidence and est.mean >= target

    def all_mastered(self, topics: tuple[str, ...], target: float) -> bool:
        return all(self.is_mastered(t, target) for t in topics)

    def pick_topic(
        self,
        topics: tuple[str, ...],
        target: float,
        rng: random.Random,
        policy: TopicPolicy = "thompson",
    ) -> str:
        """The next topic. ``thompson``: the lowest sampled success rate among topics not yet
        mastered; ``weakest``: the lowest posterior mean among those (ties at random);
        ``uniform``: any topic, evenly; ``round_robin``: topics in turn, by questions so far."""
        if policy == "uniform":
            return rng.choice(topics)
        if policy == "round_robin":
            asked = sum(self.topic(t).estimate.observations for t in topics)
            return topics[asked % len(topics)]
        open_topics = [t for t in topics if not self.is_mastered(t, target)] or list(topics)
        if policy == "weakest":
            return min(open_topics, key=lambda t: (self.topic(t).estimate.mean, rng.random()))
        return min(open_topics, key=lambda t: self.topic(t).estimate.sample(rng))

    def pick_strategy(self, topic: str, rng: random.Random, policy: str = "thompson") -> Strategy:
        """How to re-teach. ``thompson``: the highest sampled success rate after reteach on this
        topic; ``uniform``: any strategy, evenly; ``fixed:<name>``: always that one."""
        if policy.startswith("fixed:"):
            return Strategy(policy.removeprefix("fixed:"))
        if policy == "uniform":
            return rng.choice(list(Strategy))
        stats = self.strategies.get(topic, {})
        return max(Strategy, key=lambda s: stats.get(s, BetaEstimate()).sample(rng))

    def record_answer(self, topic: str, correct: bool, max_difficulty: int = 5) -> MasteryModel:
        """Update the topic's estimate with a first-try outcome and move its difficulty one step
        (up after a success, down after a failure, within 1..``max_difficulty``: the topic's
        hardest) so questions sit where the student is weak."""
        state = self.topic(topic)
        step = 1 if correct else -1
        new = TopicState(
            estimate=state.estimate.updated(correct),
            difficulty=min(max_difficulty, max(1, min(state.difficulty, max_difficulty) + step)),
        )
        return self.model_copy(update={"topics": {**self.topics, topic: new}})

    def record_reteach(self, topic: str, strategy: Strategy, success: bool) -> MasteryModel:
        stats = dict(self.strategies.get(topic, {}))
        stats[strategy] = stats.get(strategy, BetaEstimate()).updated(success)
        return self.model_copy(update={"strategies": {**self.strategies, topic: stats}})

    def with_evidence(self, now: Counts, before: Counts) -> MasteryModel:
        """This estimate plus the outcomes ``now`` holds beyond ``before``: what was observed
        elsewhere since (another worker's lessons). Difficulties stay this estimate's own."""
        model = self
        seen = _tallies(before)
        for (topic, strategy), (successes, failures) in _tallies(now).items():
            s0, f0 = seen.get((topic, strategy), (0.0, 0.0))
            ds, df = max(0.0, successes - s0), max(0.0, failures - f0)
            if not ds and not df:
                continue
            if strategy is None:
                state = model.topic(topic)
                new = state.model_copy(update={"estimate": state.estimate.added(ds, df)})
                model = model.model_copy(update={"topics": {**model.topics, topic: new}})
            else:
                stats = dict(model.strategies.get(topic, {}))
                key = Strategy(strategy)
                stats[key] = stats.get(key, BetaEstimate()).added(ds, df)
                model = model.model_copy(update={"strategies": {**model.strategies, topic: stats}})
        return model

    @classmethod
    def from_counts(cls, counts: Counts, start_difficulty: int = 1) -> MasteryModel:
        """Rebuild an estimate from aggregated outcomes (``Store.mastery_counts``)."""
        return cls(
            start_difficulty=start_difficulty,
            topics={
                r.topic: TopicState(
                    estimate=BetaEstimate(alpha=1 + r.successes, beta=1 + r.failures),
                    difficulty=r.difficulty or start_difficulty,
                )
                for r in counts.topics
            },
            strategies={
                t: {
                    Strategy(r.strategy): BetaEstimate(alpha=1 + r.successes, beta=1 + r.failures)
                    for r in counts.strategies
                    if r.topic == t
                }
                for t in {r.topic for r in counts.strategies}
            },
        )


def _tallies(counts: Counts) -> dict[tuple[str, str | None], tuple[float, float]]:
    """(topic, None) and (topic, strategy) -> (successes, failures)."""
    tallies: dict[tuple[str, str | None], tuple[float, float]] = {
        (r.topic, None): (r.successes, r.failures) for r in counts.topics
    }
    for r in counts.strategies:
        tallies[(r.topic, r.strategy)] = (r.successes, r.failures)
    return tallies


class LiveEstimate:
    """The run's estimate of the student, shared by every lesson in flight: each judged question
    updates it at once, and every choice anywhere in the run reads it, so lessons started
    together still target what earlier questions showed. Lessons are tasks on one event loop
    and each update is one synchronous call, so no lock is needed."""

    def __init__(self, model: MasteryModel) -> None:
        self.model = model

    def record(
        self,
        topic: str,
        correct: bool,
        reteach: tuple[Strategy, bool] | None = None,
        max_difficulty: int = 5,
    ) -> MasteryModel:
        """Add a question's first-try outcome (and, if it was re-taught, the strategy and
        whether the last attempt was right); returns the updated estimate."""
        model = self.model.record_answer(topic, correct, max_difficulty)
        if reteach is not None:
            model = model.record_reteach(topic, *reteach)
        self.model = model
        return model

    def absorb(self, now: Counts, before: Counts) -> None:
        """Add what other processes' lessons showed since ``before`` (``with_evidence``)."""
        self.model = self.model.with_evidence(now, before)
