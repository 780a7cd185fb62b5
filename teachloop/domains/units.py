"""Unit conversion: metric length and mass, and time, with exact decimal answers."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import ClassVar

from teachloop.answers import canonical_number
from teachloop.domains.base import Domain, Problem, Verdict, exact_verdict

# (singular, plural, size in the topic's smallest unit), largest first.
_UNITS: dict[str, tuple[tuple[str, str, int], ...]] = {
    "units.length": (
        ("kilometre", "kilometres", 1_000_000),
        ("metre", "metres", 1_000),
        ("centimetre", "centimetres", 10),
        ("millimetre", "millimetres", 1),
    ),
    "units.mass": (
        ("kilogram", "kilograms", 1_000_000),
        ("gram", "grams", 1_000),
        ("milligram", "milligrams", 1),
    ),
    "units.time": (
        ("hour", "hours", 3_600),
        ("minute", "minutes", 60),
        ("second", "seconds", 1),
    ),
}

# Per difficulty: (largest conversion factor, neighbouring units only, decimals in the
# big-unit quantity, largest whole part, whether small -> big (division) questions appear).
_UNIT_LEVELS: dict[int, tuple[int, bool, int, int, bool]] = {
    1: (100, True, 0, 9, False),
    2: (1_000, True, 0, 99, False),
    3: (1_000, True, 1, 99, True),
    4: (1_000_000, False, 2, 99, True),
    5: (1_000_000, False, 3, 999, True),
}


def _unit_name(unit: tuple[str, str, int], quantity: Decimal) -> str:
    return unit[0] if quantity == 1 else unit[1]


class UnitsDomain(Domain):
    """Metric length and mass, and time; exact decimal answers at graded difficulty."""

    name = "units"
    topics: ClassVar[tuple[str, ...]] = tuple(_UNITS)

    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        self._check_request(topic, difficulty)
        max_factor, adjacent_only, decimals, max_whole, allow_divide = _UNIT_LEVELS[difficulty]
        units = _UNITS[topic]
        candidates = [
            (big, small)
            for i, big in enumerate(units)
            for small in (units[i + 1 : i + 2] if adjacent_only else units[i + 1 :])
        ]
        pairs = [(b, s) for b, s in candidates if b[2] // s[2] <= max_factor]
        if not pairs:  # mass has no factor under 1000: use its smallest one
            smallest = min(b[2] // s[2] for b, s in candidates)
            pairs = [(b, s) for b, s in candidates if b[2] // s[2] == smallest]
        big, small = rng.choice(pairs)
        factor = big[2] // small[2]
        # Choose the quantity in the big unit, so both directions stay exact decimals
        # (division by 60 would otherwise give 1.666...).
        scale = 10**decimals
        units_value = rng.randint(scale, max_whole * scale)  # at least 1 whole big unit
        if decimals and units_value % 10 == 0:
            units_value += rng.randint(1, 9)  # use every decimal place the level asks for
        big_qty = Decimal(units_value).scaleb(-decimals)
        small_qty = big_qty * factor  # exact: few digits, far below the context precision
        divide = allow_divide and rng.random() < 0.5
        factor_line = f"1 {big[0]} = {factor} {small[1]}"
        if divide:
            given, asked, answer = (small_qty, small), big, big_qty
            how = f"{factor_line}, so divide: {canonical_number(small_qty)} ÷ {factor}"
            hint = f"Find how many {small[1]} make one {big[0]}, then divide by that number."
        else:
            given, asked, answer = (big_qty, big), small, small_qty
            how = f"{factor_line}, so multiply: {canonical_number(big_qty)} × {factor}"
            hint = f"Find how many {small[1]} make one {big[0]}, then multiply by that number."
        qty, unit = given
        return Problem(
            topic=topic,
            difficulty=difficulty,
            question=f"How many {asked[1]} are in {canonical_number(qty)} {_unit_name(unit, qty)}?",
            answer=canonical_number(answer),
            solution=f"{how} = {canonical_number(answer)}.\nAnswer: {canonical_number(answer)}",
            hint=hint,
        )

    def verify(self, problem: Problem, final_answer: str | None) -> Verdict:
        return exact_verdict(problem.answer, final_answer)
