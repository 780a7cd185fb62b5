"""Domains: where questions come from and how answers are checked.

Built-in generators (arithmetic, unit conversion) make problems at graded difficulty with exact
reference answers, reference solutions and hints; a user's question bank (JSONL or Parquet)
supplies fixed questions. ``verify`` is exact where it can be; it returns None where only a
judge (the teacher LLM) can decide, e.g. a long free-text answer.

One module a job; import from here, not from the modules:

- ``base``: ``Problem``, ``Verdict``, ``exact_verdict``, the ``Domain`` base class (the
  extension point for a domain of your own: its docstring is the contract) and ``DomainSet``
- ``arithmetic``: ``ArithmeticDomain``
- ``units``: ``UnitsDomain``
- ``banks``: ``QuestionBank``, ``load_bank``
- ``heldout``: ``heldout_problems``, ``heldout_questions`` (the held-out evaluation set and
  other named splits), ``uniform_problems`` (even draws over topics and difficulties)
- ``reasoning_gym``: ``ReasoningGymDomain``, reasoning-gym's tasks as ``reasoning_gym.<task>``
  topics (loaded by ``build_domains`` when a config names such topics)
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

# answers_match and error_category are teachloop.answers' own; re-exported as before.
from teachloop.answers import answers_match, error_category
from teachloop.domains.arithmetic import ArithmeticDomain
from teachloop.domains.banks import QuestionBank, load_bank
from teachloop.domains.base import (
    GENERIC_EXAMPLES,
    MAX_DIFFICULTY,
    MIN_DIFFICULTY,
    PARTIAL_CREDIT,
    Domain,
    DomainSet,
    Problem,
    Verdict,
    exact_verdict,
)
from teachloop.domains.heldout import (
    distinct_problems,
    heldout_problems,
    heldout_questions,
    uniform_problems,
)
from teachloop.domains.units import UnitsDomain
from teachloop.errors import ConfigError

if TYPE_CHECKING:
    from teachloop.config import RunConfig


def load_domain(path: str) -> Domain:
    """The domain an import path names: ``"package.module:ClassName"`` (a ``Domain`` subclass,
    built with no arguments) or ``"package.module:instance"``. The working directory is
    searched first, as for a script, so a module beside the config works from the CLI."""
    module_name, _, attr = path.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except ImportError as e:
        raise ConfigError(f"domains: cannot import {module_name!r} for {path!r}: {e}") from None
    except AttributeError:
        raise ConfigError(f"domains: module {module_name!r} has no {attr!r}") from None
    domain = found() if isinstance(found, type) and issubclass(found, Domain) else found
    if not isinstance(domain, Domain):
        raise ConfigError(
            f"domains: {path!r} is a {type(found).__name__}, not a teachloop.domains.Domain "
            "subclass or instance"
        )
    return domain


def builtin_domains() -> dict[str, Domain]:
    return {"arithmetic": ArithmeticDomain(), "units": UnitsDomain()}


def _reasoning_gym(config: RunConfig) -> list[Domain]:
    # Imported here: only configs with reasoning_gym.* topics load the library.
    from teachloop.domains.reasoning_gym import reasoning_gym_domain

    domain = reasoning_gym_domain(config.topics, config.reasoning_gym)
    return [domain] if domain is not None else []


def build_domains(config: RunConfig) -> DomainSet:
    """The domains a config asks for: the built-ins, its question banks and its own domains
    (``config.domains``). Every configured topic is checked here, so an unknown one fails
    before any model loads."""
    domains = DomainSet(
        [
            *builtin_domains().values(),
            *_reasoning_gym(config),
            *(load_bank(p) for p in config.banks),
            *(load_domain(d) if isinstance(d, str) else d for d in config.domains),
        ]
    )
    for topic in config.topics:
        domains.domain_for(topic)
    return domains


__all__ = [
    "GENERIC_EXAMPLES",
    "MAX_DIFFICULTY",
    "MIN_DIFFICULTY",
    "PARTIAL_CREDIT",
    "ArithmeticDomain",
    "Domain",
    "DomainSet",
    "Problem",
    "QuestionBank",
    "UnitsDomain",
    "Verdict",
    "answers_match",
    "build_domains",
    "builtin_domains",
    "distinct_problems",
    "error_category",
    "exact_verdict",
    "heldout_problems",
    "heldout_questions",
    "load_bank",
    "load_domain",
    "uniform_problems",
]
