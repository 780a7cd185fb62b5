"""Drawing sets of problems: the held-out set (the problems evaluation asks, and so the
questions lessons must never ask), other named splits, and even draws for training data.

It lives beside the generators because both sides use it: ``training.evaluate`` asks these
questions, and the teacher (through the runner) leaves them out of lessons.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection, Sequence

from teachloop.domains.base import MAX_DIFFICULTY, MIN_DIFFICULTY, Domain, DomainSet, Problem

# Fresh draws tried at one difficulty before moving on (a question bank may run out).
_DRAWS_PER_DIFFICULTY = 50


def _difficulties(i: int, top: int = MAX_DIFFICULTY) -> list[int]:
    """The difficulty for the i-th problem of a topic (cycling 1..top), then the others in
    turn."""
    span = top - MIN_DIFFICULTY + 1
    return [MIN_DIFFICULTY + (i + k) % span for k in range(span)]


def heldout_problems(
    domains: DomainSet,
    topics: Sequence[str],
    per_topic: int,
    seed: int,
    *,
    split: str = "heldout",
    exclude: Collection[str] = (),
) -> list[Problem]:
    """``per_topic`` problems for each topic, difficulties cycling 1..5, no question text twice.

    Deterministic in (topics, per_topic, seed); each topic has its own generator
    (``random.Random(f"{split}/{seed}/{topic}")``), so adding a topic leaves the others' problems
    unchanged. A domain that cannot produce enough distinct questions (a small question bank)
    gives fewer for that topic rather than repeating one. ``split`` names another draw (an
    experiment's per-seed validation and test splits); ``exclude``: questions it must not
    contain (another split's), so splits are disjoint by construction.
    """
    if per_topic < 0:
        raise ValueError("per_topic must be >= 0")
    seen: set[str] = set(domains.example_questions(dict.fromkeys(topics))) | set(exclude)
    problems: list[Problem] = []
    for topic in dict.fromkeys(topics):  # a topic named twice is evaluated once
        rng = random.Random(f"{split}/{seed}/{topic}")
        problems += distinct_problems(domains.domain_for(topic), topic, per_topic, rng, seen)
    return problems


def distinct_problems(
    domain: Domain, topic: str, count: int, rng: random.Random, seen: set[str]
) -> list[Problem]:
    """Up to ``count`` problems of ``topic``, the i-th at a difficulty cycling 1..5 (or the
    topic's ``max_difficulty``; the next levels when one runs dry), none whose question is in
    ``seen``, which grows with them. Fewer when the domain has no fresh questions left (a small
    question bank)."""
    problems: list[Problem] = []
    top = domain.max_difficulty(topic)
    for i in range(count):
        problem = None
        for difficulty in _difficulties(i, top):
            for _ in range(_DRAWS_PER_DIFFICULTY):
                candidate = domain.generate(topic, difficulty, rng)
                if candidate.question not in seen:
                    problem = candidate
                    break
            if problem is not None:
                break
        if problem is None:
            break  # this topic has no fresh questions left
        seen.add(problem.question)
        problems.append(problem)
    return problems


def heldout_questions(
    domains: DomainSet, topics: Sequence[str], per_topic: int, seed: int
) -> frozenset[str]:
    """The questions lessons must not ask: the held-out set's, and the few-shot examples'
    (their answers are in the student's prompt)."""
    return domains.example_questions(topics) | frozenset(
        p.question for p in heldout_problems(domains, topics, per_topic, seed)
    )


def uniform_problems(
    domains: DomainSet,
    topics: Sequence[str],
    n: int,
    seed: int,
    reserved: Collection[str],
    *,
    draw: str = "uniform",
) -> list[Problem]:
    """``n`` problems evenly over topics (in turn) and difficulties (cycling 1..5), none in
    ``reserved`` and none twice: what standard distillation trains on. ``draw`` names the
    generator stream (``random.Random(f"{draw}/{seed}/{topic}")``), so two draws with other
    names are independent."""
    seen = set(reserved)
    per_topic = [
        distinct_problems(
            domains.domain_for(topic),
            topic,
            n // len(topics) + (i < n % len(topics)),
            random.Random(f"{draw}/{seed}/{topic}"),
            seen,
        )
        for i, topic in enumerate(topics)
    ]
    # Topics in turn (a topic that ran dry just drops out).
    return [p for turn in itertools.zip_longest(*per_topic) for p in turn if p is not None]
