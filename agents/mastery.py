"""The teacher's model of the student: a Beta posterior of first-try success per topic, a
difficulty staircase per topic, and a Beta posterior of reteach success per (topic, strategy).

Choices use Thompson sampling: the topic whose *sampled* success rate is lowest is asked next,
so the weakest topic is targeted while uncertain topics still get explored (none starves). The
strategy whose sampled success rate is highest is used to re-teach. All updates return new
objects: the lesson graph's state stays immutable between checkpoints.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field

from teachloop.messages import Strategy


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
        return BetaEstimate(alpha=self.alpha + success, beta=self.beta + (not success))


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

    def pick_topic(self, topics: tuple[str, ...], target: float, rng: random.Random) -> str:
        """The topic with the lowest sampled success rate, among those not yet mastered."""
        open_topics = [t for t in topics if not self.is_mastered(t, target)] or list(topics)
        return min(open_topics, key=lambda t: self.topic(t).estimate.sample(rng))

    def pick_strategy(self, topic: str, rng: random.Random) -> Strategy:
        """The strategy with the highest sampled success rate after reteach on this topic."""
        stats = self.strategies.get(topic, {})
        return max(Strategy, key=lambda s: stats.get(s, BetaEstimate()).sample(rng))

    def record_answer(self, topic: str, correct: bool) -> MasteryModel:
        """Update the topic's estimate with a first-try outcome and move its difficulty one step
        (up after a success, down after a failure) so questions sit where the student is weak."""
        state = self.topic(topic)
        step = 1 if correct else -1
        new = TopicState(
            estimate=state.estimate.updated(correct),
            difficulty=min(5, max(1, state.difficulty + step)),
        )
        return self.model_copy(update={"topics": {**self.topics, topic: new}})

    def record_reteach(self, topic: str, strategy: Strategy, success: bool) -> MasteryModel:
        stats = dict(self.strategies.get(topic, {}))
        stats[strategy] = stats.get(strategy, BetaEstimate()).updated(success)
        return self.model_copy(update={"strategies": {**self.strategies, topic: stats}})

    def absorbed(self, start: MasteryModel, end: MasteryModel) -> MasteryModel:
        """Add what one lesson learned (its ``end`` minus its ``start``) to this estimate.
        Beta counts are additive, so lessons that ran concurrently merge without loss."""
        topics = dict(self.topics)
        for name, final in end.topics.items():
            before = start.topic(name).estimate
            gained = (final.estimate.alpha - before.alpha, final.estimate.beta - before.beta)
            if gained != (0, 0):
                cur = self.topic(name).estimate
                topics[name] = TopicState(
                    estimate=BetaEstimate(alpha=cur.alpha + gained[0], beta=cur.beta + gained[1]),
                    difficulty=final.difficulty,
                )
        strategies = {t: dict(s) for t, s in self.strategies.items()}
        for name, stats in end.strategies.items():
            for strategy, final_est in stats.items():
                before = start.strategies.get(name, {}).get(strategy, BetaEstimate())
                cur = strategies.setdefault(name, {}).get(strategy, BetaEstimate())
                strategies[name][strategy] = BetaEstimate(
                    alpha=cur.alpha + final_est.alpha - before.alpha,
                    beta=cur.beta + final_est.beta - before.beta,
                )
        return self.model_copy(update={"topics": topics, "strategies": strategies})

    @classmethod
    def from_counts(
        cls, topics: list[dict], strategies: list[dict], start_difficulty: int = 1
    ) -> MasteryModel:
        """Rebuild an estimate from aggregated outcomes (``Store.mastery_counts``)."""
        return cls(
            start_difficulty=start_difficulty,
            topics={
                r["topic"]: TopicState(
                    estimate=BetaEstimate(alpha=1 + r["successes"], beta=1 + r["failures"]),
                    difficulty=r["difficulty"] or start_difficulty,
                )
                for r in topics
            },
            strategies={
                t: {
                    Strategy(r["strategy"]): BetaEstimate(
                        alpha=1 + r["successes"], beta=1 + r["failures"]
                    )
                    for r in strategies
                    if r["topic"] == t
                }
                for t in {r["topic"] for r in strategies}
            },
        )
