"""A domain of your own: "what does this Python line print?", checked by running the code.

    python examples/own_domain.py

Runs a few lessons on it with the embedded model, builds preference pairs from them and
evaluates the student on a held-out set of the same domain. From the command line the same
domain is `domains = ["own_domain:PythonOutputDomain"]` in a config (run from this directory,
or with it on PYTHONPATH) and `--config ... --topics`-free: the topics are in the config.

($TEACHLOOP_EXAMPLE_MODEL and $TEACHLOOP_EXAMPLE_DIR choose another model and output folder:
the test suite runs every example on a tiny model.)
"""

from __future__ import annotations

import contextlib
import io
import os
import random
from pathlib import Path

from teachloop import Domain, Problem, RunConfig, Store, Verdict, run_lessons
from teachloop.answers import canonical_answer
from teachloop.domains import exact_verdict
from teachloop.training.jobs import evaluate_version

MODEL = os.environ.get("TEACHLOOP_EXAMPLE_MODEL", "embedded:gemma-3-270m")
OUT = Path(os.environ.get("TEACHLOOP_EXAMPLE_DIR", "runs/examples"))

# One line of Python per difficulty level, each printing one integer.
_TEMPLATES = {
    1: ["print({a} + {b})", "print(len('{word}'))"],
    2: ["print({a} * {b} - {c})", "print(len('{word}') * {a})"],
    3: ["print(sum(range({a})))", "print(max([{a}, {b}, {c}]) - min([{a}, {b}, {c}]))"],
    4: [
        "print(sum(i * i for i in range({a})))",
        "print(len([c for c in '{word}' if c in 'aeiou']))",
    ],
    5: ["print(sum(range({a}, {b} + {a})) % {c})", "print(int('{a}{b}') // {c})"],
}
_WORDS = ["teacher", "student", "lesson", "banana", "graph", "duck", "python", "answer"]


def run_line(code: str) -> str:
    """What the line prints (our own generated code: trusted)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {"__builtins__": {"print": print, "len": len, "sum": sum, "range": range,
                                     "max": max, "min": min, "int": int}})  # fmt: skip
    return out.getvalue().strip()


class PythonOutputDomain(Domain):
    name = "python"
    topics = ("python.output",)

    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        self._check_request(topic, difficulty)
        template = rng.choice(_TEMPLATES[difficulty])
        code = template.format(
            a=rng.randint(2, 12), b=rng.randint(2, 12), c=rng.randint(2, 9), word=rng.choice(_WORDS)
        )
        output = run_line(code)
        return Problem(
            topic=topic,
            difficulty=difficulty,
            question=f"What does this Python line print? {code}",
            answer=canonical_answer(output),
            solution=f"Run it step by step: {code} prints {output}.\nAnswer: {output}",
            hint="Evaluate the innermost expression first, then the call around it.",
        )

    def verify(self, problem: Problem, final_answer: str | None) -> Verdict | None:
        # The check is the code itself: run the line again and compare what it prints.
        code = problem.question.split("? ", 1)[1]
        return exact_verdict(canonical_answer(run_line(code)), final_answer)


def main() -> None:
    config = RunConfig(
        db=OUT / "own_domain.duckdb",
        run_id="own-domain",
        lessons=4,
        topics=("python.output",),
        lesson={"questions": 2, "max_reteaches": 1},
        eval={"per_topic": 10},
        teacher={"model": MODEL, "max_tokens": 40},
        student={"model": MODEL, "max_tokens": 10},
        domains=(PythonOutputDomain(),),
    )
    result = run_lessons(config, progress=False)
    print(f"{result.lessons} lessons, {result.questions} questions on python.output")
    pairs = Store(config.db).run_pairs("own-domain")
    print(
        f"{len(pairs)} preference pairs" + (f", e.g. chosen {pairs[0].chosen!r}" if pairs else "")
    )
    score = evaluate_version(config, "base")
    print(f"held-out accuracy of the base student: {score.correct}/{score.questions}")


if __name__ == "__main__":
    main()
