"""reasoning-gym's tasks as topics: ``"reasoning_gym.<task>"``, generated and verified by the
library itself (``reasoning_gym.create_dataset``, each task's own ``score_answer``).

Difficulty: teachloop's difficulty ``d`` is the task's curriculum at global level ``d - 1``
(``set_global_level``: every attribute at that level, or at its last one where it has fewer),
so difficulty 1 is the curriculum's easiest setting. A task has as many difficulties as its
longest attribute has levels, at most 5; a task without a curriculum (``gsm_symbolic``) has one,
its default configuration. Options in ``[reasoning_gym.<task>]`` go to the task's config over
the level's values (e.g. ``min_animals``), at every difficulty.

A problem records where it came from (``Problem.origin`` = task/level/index), so ``verify``
regenerates the source record the task's ``score_answer`` needs instead of carrying it around.
The verdict's score is the task's score; correct means its full score. Nothing reasoning-gym
generates is stored in this repository: its gsm_symbolic templates are CC BY-NC-ND.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from teachloop.domains.base import MAX_DIFFICULTY, MIN_DIFFICULTY, Domain, Problem, Verdict
from teachloop.errors import ConfigError
from teachloop.messages import ErrorCategory

PREFIX = "reasoning_gym."
# Items are indexed 0.._SIZE-1 at seed 0 (an item is Random(seed + index)'s): plenty of
# distinct questions per level, and a size every task builds instantly.
_SIZE = 100_000
_EXAMPLES = 3


@cache
def _library() -> Any:
    # Imported on first use: it takes ~2 s and most runs use no reasoning-gym topic.
    try:
        import reasoning_gym
        import reasoning_gym.factory
    except ImportError as e:  # pragma: no cover - a default dependency
        raise ConfigError(f"reasoning-gym is not installed ({e}): pip install teachloop") from None
    return reasoning_gym


def task_of(topic: str) -> str:
    return topic.removeprefix(PREFIX)


def worked_solution(cot: str, answer: str) -> str:
    """A chain of thought ending in ``#### <answer>`` (gsm_symbolic's ``answer_cot``) in the
    student's shown-work form: its non-empty lines, then ``Answer: <answer>``."""
    lines = [ln.rstrip() for ln in cot.splitlines() if ln.strip()]
    if lines and lines[-1].lstrip().startswith("####"):
        lines.pop()
    return "\n".join([*lines, f"Answer: {answer}"])


class ReasoningGymDomain(Domain):
    """The reasoning-gym tasks ``tasks`` (names from ``reasoning_gym.factory.DATASETS``), with
    per-task options (keyword arguments of the task's config)."""

    name = "reasoning_gym"
    instruction = "Each answer is written exactly as its question asks."

    def __init__(
        self, tasks: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        rg = _library()
        self.tasks = tuple(dict.fromkeys(tasks))
        self.options = {t: dict((options or {}).get(t, {})) for t in self.tasks}
        for task in self.tasks:
            if task not in rg.factory.DATASETS:
                raise ConfigError(
                    f"topic {PREFIX}{task}: reasoning-gym has no task {task!r} "
                    "(its tasks: reasoning_gym.factory.DATASETS)"
                )
        unused = set(options or {}) - set(self.tasks)
        if unused:
            raise ConfigError(
                f"reasoning_gym.{sorted(unused)[0]}: options for a task that is not a topic "
                f"(add {PREFIX}{sorted(unused)[0]} to topics)"
            )
        self.topics = tuple(PREFIX + t for t in self.tasks)
        self._levels = {t: self._level_count(t) for t in self.tasks}
        self._examples: dict[str, tuple[Problem, ...]] = {}
        for task in self.tasks:  # bad options fail now, with the task's name
            for level in range(self._levels[task]):
                self._dataset(task, level)

    def _level_count(self, task: str) -> int:
        curricula = _library().factory.CURRICULA
        if task not in curricula:
            return 1
        attributes = curricula[task]().attributes.values()
        return min(MAX_DIFFICULTY, max((len(a.levels) for a in attributes), default=1))

    def max_difficulty(self, topic: str) -> int:
        return self._levels.get(task_of(topic), MAX_DIFFICULTY)

    @cache  # noqa: B019 (one domain per run; datasets are small objects)
    def _dataset(self, task: str, level: int) -> Any:
        rg = _library()
        settings: dict[str, Any] = {"size": _SIZE, "seed": 0}
        if task in rg.factory.CURRICULA:
            curriculum = rg.factory.CURRICULA[task]()
            curriculum.set_global_level(level)
            settings = dict(vars(curriculum.generate_configuration(settings)))
        try:
            return rg.create_dataset(task, **{**settings, **self.options[task]})
        except (TypeError, ValueError, AssertionError) as e:
            raise ConfigError(f"reasoning_gym.{task}: bad option ({e})") from None

    def _problem(self, task: str, level: int, index: int) -> Problem:
        entry = self._dataset(task, level)[index]
        answer = str(entry["answer"]).strip()
        cot = entry.get("metadata", {}).get("answer_cot")
        return Problem(
            topic=PREFIX + task,
            difficulty=level + 1,
            question=str(entry["question"]).strip(),
            answer=answer,
            solution=worked_solution(cot, answer) if isinstance(cot, str) else "",
            origin=f"{task}/{level}/{index}",
        )

    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        self._check_request(topic, difficulty)
        return self._problem(task_of(topic), difficulty - 1, rng.randrange(_SIZE))

    def entry(self, problem: Problem) -> dict[str, Any]:
        """The reasoning-gym record ``problem`` was generated from."""
        task, level, index = problem.origin.rsplit("/", 2)
        return self._dataset(task, int(level))[int(index)]

    def verify(self, problem: Problem, final_answer: str | None) -> Verdict:
        if final_answer is None:
            return Verdict(correct=False, error_category=ErrorCategory.no_answer)
        task = task_of(problem.topic)
        try:
            score = float(
                self._dataset(task, problem.difficulty - 1).score_answer(
                    final_answer, self.entry(problem)
                )
            )
        except Exception:  # a verifier must not raise on any student text
            score = 0.0
        score = min(1.0, max(0.0, score))
        return Verdict(correct=score >= 1.0, score=score)

    def extract_answer(self, text: str) -> str | None:
        """The first non-empty line, as written: the task's verifier normalises it."""
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        return line or None

    def examples(self, topic: str, shown_work: bool = False) -> tuple[Problem, ...]:
        """Three problems of the task at its easiest level (fixed: the same in every run)."""
        if topic not in self._examples:
            self._check_request(topic, MIN_DIFFICULTY)
            rng = random.Random(f"examples/{topic}")
            self._examples[topic] = tuple(
                self._problem(task_of(topic), MIN_DIFFICULTY - 1, rng.randrange(_SIZE))
                for _ in range(_EXAMPLES)
            )
        return self._examples[topic]


def reasoning_gym_domain(
    topics: Iterable[str], options: Mapping[str, Mapping[str, Any]]
) -> ReasoningGymDomain | None:
    """The domain of the ``reasoning_gym.*`` topics among ``topics``; None if there are none
    (and no options: options for tasks that are not topics are an error)."""
    tasks = [task_of(t) for t in topics if t.startswith(PREFIX)]
    if not tasks and not options:
        return None
    return ReasoningGymDomain(tasks, options)
