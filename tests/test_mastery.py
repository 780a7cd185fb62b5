import random

from teachloop.agents.mastery import BetaEstimate, MasteryModel
from teachloop.messages import Strategy

TOPICS = ("a", "b", "c")


def trained(model: MasteryModel, topic: str, outcomes: list[bool]) -> MasteryModel:
    for ok in outcomes:
        model = model.record_answer(topic, ok)
    return model


def test_targets_the_weakest_topic_but_explores_the_others() -> None:
    model = trained(trained(MasteryModel(), "a", [True] * 6), "b", [False] * 6)
    model = trained(model, "c", [True, False] * 3)
    rng = random.Random(0)
    picks = [model.pick_topic(TOPICS, 0.99, rng) for _ in range(1000)]
    assert picks.count("b") > 700
    assert picks.count("c") > picks.count("a")
    assert picks.count("c") > 0  # none starves


def test_mastered_topics_are_skipped_only_with_evidence() -> None:
    model = trained(MasteryModel(), "a", [True] * 2)
    assert not model.is_mastered("a", 0.7)  # 2 observations < min_evidence
    model = trained(model, "a", [True])
    assert model.is_mastered("a", 0.7)
    rng = random.Random(1)
    assert {model.pick_topic(("a", "b"), 0.7, rng) for _ in range(50)} == {"b"}


def test_difficulty_staircase_moves_with_outcomes_within_bounds() -> None:
    model = trained(MasteryModel(), "a", [True] * 7)
    assert model.topic("a").difficulty == 5
    model = trained(model, "a", [False] * 2)
    assert model.topic("a").difficulty == 3
    assert trained(MasteryModel(), "b", [False] * 3).topic("b").difficulty == 1


def test_strategy_choice_follows_what_worked() -> None:
    model = MasteryModel()
    for _ in range(8):
        model = model.record_reteach("a", Strategy.worked_example, True)
        model = model.record_reteach("a", Strategy.hint, False)
    rng = random.Random(2)
    picks = [model.pick_strategy("a", rng) for _ in range(300)]
    assert picks.count(Strategy.worked_example) > 200
    assert picks.count(Strategy.hint) < 10


def test_absorbed_adds_concurrent_lessons_without_loss() -> None:
    run = trained(MasteryModel(), "a", [True])
    lesson1 = trained(run, "a", [True, True]).record_reteach("a", Strategy.hint, True)
    lesson2 = trained(run, "b", [False])
    merged = run.absorbed(run, lesson1).absorbed(run, lesson2)
    assert merged.topic("a").estimate == BetaEstimate(alpha=4, beta=1)
    assert merged.topic("b").estimate == BetaEstimate(alpha=1, beta=2)
    assert merged.strategies["a"][Strategy.hint] == BetaEstimate(alpha=2, beta=1)


def test_from_counts_rebuilds_the_same_estimate() -> None:
    model = MasteryModel.from_counts(
        [{"topic": "a", "successes": 3, "failures": 1, "difficulty": 4}],
        [{"topic": "a", "strategy": "hint", "successes": 1, "failures": 2}],
    )
    assert model.topic("a").estimate == BetaEstimate(alpha=4, beta=2)
    assert model.topic("a").difficulty == 4
    assert model.strategies["a"][Strategy.hint] == BetaEstimate(alpha=2, beta=3)
