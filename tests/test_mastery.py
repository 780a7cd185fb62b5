import random

from teachloop.agents.mastery import BetaEstimate, LiveEstimate, MasteryModel
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


def test_a_live_estimate_sees_every_lesson_s_outcomes_at_once() -> None:
    live = LiveEstimate(trained(MasteryModel(), "a", [True]))
    live.record("a", True)  # one lesson
    live.record("b", False, reteach=(Strategy.hint, True))  # another, still in flight
    live.record("a", True)
    assert live.model.topic("a").estimate == BetaEstimate(alpha=4, beta=1)
    assert live.model.topic("b").estimate == BetaEstimate(alpha=1, beta=2)
    assert live.model.strategies["b"][Strategy.hint] == BetaEstimate(alpha=2, beta=1)


def test_topic_policies() -> None:
    model = trained(trained(MasteryModel(), "a", [True] * 6), "b", [False] * 2)
    rng = random.Random(0)
    topics = ("a", "b", "c")
    # weakest: the lowest mean (b: 1/4), every time
    assert {model.pick_topic(topics, 0.99, rng, "weakest") for _ in range(20)} == {"b"}
    # uniform: every topic, about evenly, mastery ignored
    picks = [model.pick_topic(topics, 0.5, rng, "uniform") for _ in range(3000)]
    assert all(900 < picks.count(t) < 1100 for t in topics)
    # round robin: in turn, by questions asked so far (8 asked: 8 % 3 = 2 -> "c")
    assert model.pick_topic(topics, 0.99, rng, "round_robin") == "c"
    assert model.record_answer("c", True).pick_topic(topics, 0.99, rng, "round_robin") == "a"


def test_strategy_policies() -> None:
    model = MasteryModel()
    for _ in range(8):
        model = model.record_reteach("a", Strategy.worked_example, True)
    rng = random.Random(0)
    assert {model.pick_strategy("a", rng, "fixed:hint") for _ in range(20)} == {Strategy.hint}
    picks = [model.pick_strategy("a", rng, "uniform") for _ in range(3000)]
    assert all(900 < picks.count(s) < 1100 for s in Strategy)


def test_from_counts_rebuilds_the_same_estimate() -> None:
    from teachloop.store.records import MasteryCounts

    counts = MasteryCounts.model_validate(
        {
            "topics": [{"topic": "a", "successes": 3, "failures": 1, "difficulty": 4}],
            "strategies": [{"topic": "a", "strategy": "hint", "successes": 1, "failures": 2}],
        }
    )
    model = MasteryModel.from_counts(counts)
    assert model.topic("a").estimate == BetaEstimate(alpha=4, beta=2)
    assert model.topic("a").difficulty == 4
    assert model.strategies["a"][Strategy.hint] == BetaEstimate(alpha=2, beta=3)


def test_evidence_from_elsewhere_is_added_once() -> None:
    from teachloop.store.records import MasteryCounts

    def counts(topics: list[tuple], strategies: list[tuple]) -> MasteryCounts:
        return MasteryCounts.model_validate(
            {
                "topics": [
                    {"topic": t, "successes": s, "failures": f, "difficulty": 5}
                    for t, s, f in topics
                ],
                "strategies": [
                    {"topic": t, "strategy": k, "successes": s, "failures": f}
                    for t, k, s, f in strategies
                ],
            }
        )

    live = LiveEstimate(trained(MasteryModel(), "a", [True, False]))  # difficulty back to 1
    before = counts([("a", 1, 1)], [])
    now = counts([("a", 3, 1), ("b", 0, 2)], [("a", "hint", 1, 0)])
    live.absorb(now, before)
    assert live.model.topic("a").estimate == BetaEstimate(alpha=2 + 2, beta=2)
    assert live.model.topic("b").estimate == BetaEstimate(alpha=1, beta=3)
    assert live.model.strategies["a"][Strategy.hint] == BetaEstimate(alpha=2, beta=1)
    assert live.model.topic("a").difficulty == 1  # its own, not the others'
    live.absorb(now, now)  # nothing new
    assert live.model.topic("a").estimate == BetaEstimate(alpha=4, beta=2)
