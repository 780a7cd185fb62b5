"""Arithmetic: integer +, -, × at graded difficulty, with place-value solutions and hints."""

from __future__ import annotations

import math
import random
from typing import ClassVar

from teachloop.domains.base import Domain, Problem, Verdict, exact_verdict

_PLACE_OP = {"addition": "+", "subtraction": "-", "multiplication": "×"}


def _with_digits(rng: random.Random, digits: int, low: int = 1) -> int:
    return rng.randint(max(low, 10 ** (digits - 1)), 10**digits - 1)


def _place_parts(n: int) -> list[int]:
    """385 -> [300, 80, 5]: the place-value split a pupil writes down (zeros left out)."""
    text = str(n)
    parts = [int(d) * 10 ** (len(text) - i - 1) for i, d in enumerate(text) if d != "0"]
    return parts or [0]


class ArithmeticDomain(Domain):
    """Integer +, -, × with operands of about ``difficulty`` digits."""

    name = "arithmetic"
    topics: ClassVar[tuple[str, ...]] = (
        "arithmetic.addition",
        "arithmetic.subtraction",
        "arithmetic.multiplication",
    )

    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        self._check_request(topic, difficulty)
        op = topic.split(".", 1)[1]
        d = difficulty
        if op == "multiplication":
            # d digits by ceil(d/2) digits: 5x3 digits is already hard long multiplication.
            # Factors 0 and 1 teach nothing, so one-digit factors start at 2.
            a = _with_digits(rng, d, low=2)
            b = _with_digits(rng, math.ceil(d / 2), low=2)
            if rng.random() < 0.5:
                a, b = b, a
            return self._multiplication(topic, d, a, b)
        # One operand has d digits, the other d or d-1, in either order.
        a = _with_digits(rng, d)
        b = _with_digits(rng, rng.choice([d, max(1, d - 1)]))
        if rng.random() < 0.5:
            a, b = b, a
        if op == "addition":
            return self._addition(topic, d, a, b)
        if d <= 3 and a < b:
            a, b = b, a  # negative results only from difficulty 4: a sign is one more thing
        return self._subtraction(topic, d, a, b)

    @staticmethod
    def _question(a: int, op: str, b: int) -> str:
        return f"What is {a} {op} {b}?"

    def _addition(self, topic: str, d: int, a: int, b: int) -> Problem:
        big, small = max(a, b), min(a, b)  # splitting the smaller number takes fewer steps
        steps, total = [], big
        for part in _place_parts(small):
            steps.append(f"{total} + {part} = {total + part}")
            total += part
        solution = (
            f"Add {small} to {big} one place value at a time: "
            + "; ".join(steps)
            + f".\nSo {a} + {b} = {a + b}.\nAnswer: {a + b}"
        )
        return Problem(
            topic=topic,
            difficulty=d,
            question=self._question(a, "+", b),
            answer=str(a + b),
            solution=solution,
            hint="Split one number into its place values and add them to the other one at a time.",
        )

    def _subtraction(self, topic: str, d: int, a: int, b: int) -> Problem:
        big, small = (a, b) if a >= b else (b, a)
        steps, total = [], big
        for part in _place_parts(small):
            steps.append(f"{total} - {part} = {total - part}")
            total -= part
        lines = []
        if a < b:
            lines.append(
                f"{b} is larger than {a}, so work out {b} - {a} and make the result negative."
            )
        lines.append(
            f"Take {small} away from {big} one place value at a time: " + "; ".join(steps) + "."
        )
        lines.append(f"So {a} - {b} = {a - b}.\nAnswer: {a - b}")
        hint = (
            "The second number is larger, so subtract the smaller from the larger "
            "and make the result negative."
            if a < b
            else "Split the number being taken away into its place values "
            "and subtract them one at a time."
        )
        return Problem(
            topic=topic,
            difficulty=d,
            question=self._question(a, "-", b),
            answer=str(a - b),
            solution="\n".join(lines),
            hint=hint,
        )

    def _multiplication(self, topic: str, d: int, a: int, b: int) -> Problem:
        # Split the shorter factor (fewer partial products); a one-digit one is split only if
        # the other factor is longer.
        longer, shorter = (a, b) if len(str(a)) >= len(str(b)) else (b, a)
        split, keep = (shorter, longer) if len(str(shorter)) > 1 else (longer, shorter)
        parts = _place_parts(split)
        hint = (
            "Split one factor into its place values, multiply each part by the other factor, "
            "then add the partial products."
        )
        if len(parts) == 1:
            solution = f"{a} × {b} = {a * b}.\nAnswer: {a * b}"
            hint = "Recall the times table, or add one factor to itself as often as the other says."
        else:
            products = [part * keep for part in parts]
            solution = (
                f"Split {split} into {' + '.join(map(str, parts))} and multiply each part "
                f"by {keep}: "
                + "; ".join(
                    f"{part} × {keep} = {p}" for part, p in zip(parts, products, strict=True)
                )
                + f".\nAdd the partial products: {' + '.join(map(str, products))} = {a * b}."
                + f"\nAnswer: {a * b}"
            )
        return Problem(
            topic=topic,
            difficulty=d,
            question=self._question(a, "×", b),
            answer=str(a * b),
            solution=solution,
            hint=hint,
        )

    def verify(self, problem: Problem, final_answer: str | None) -> Verdict:
        return exact_verdict(problem.answer, final_answer)
