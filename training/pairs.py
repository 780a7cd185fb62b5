"""Preference pairs from the log: the training side's names for what the store builds.

The rules (``self_corrected``, ``reference``; ``self_corrected_leaked``, built but not trained on
unless ``[training].pair_rules`` asks), deduplication, the normalisation filter and the
incremental watermark are the store's SQL: see ``teachloop.store.pairs``.
"""

from __future__ import annotations

from collections.abc import Sequence

from teachloop.store.interface import LogStore
from teachloop.store.pairs import RULES, TRAINED_RULES, WATERMARK_KEY
from teachloop.store.records import PairBuild, PreferencePair


def build_pairs(store: LogStore) -> PairBuild:
    """Turn the lessons logged since the last build into preference pairs, in one transaction
    (pairs and the moved watermark commit together, or neither does)."""
    return store.build_pairs()


def unused_pairs(store: LogStore, rules: Sequence[str] = TRAINED_RULES) -> list[PreferencePair]:
    """Pairs of these rules no completed training job has consumed yet, oldest first."""
    return store.unused_pairs(rules)


__all__ = [
    "RULES",
    "TRAINED_RULES",
    "WATERMARK_KEY",
    "PairBuild",
    "PreferencePair",
    "build_pairs",
    "unused_pairs",
]
