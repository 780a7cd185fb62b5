"""Selection per example: which of a pool of generated questions the student has answered to
train on (issue 29's second experiment design).

The pool is scored once per seed (the student's answers, and the loss of the reference answer
under the student); each rule then orders the pool, and a budget of n takes the first n, so
every budget of a curve trains on a prefix of the same order:

- ``random``: a seeded shuffle (the uniform arm of a pool design);
- ``failed``: the student's wrong answers, shuffled (its failures, as LLM2LLM trains on);
- ``correct``: its right answers, shuffled (a negative control: what it already knows);
- ``loss``: highest loss of the reference answer first (no teacher needed).

``select_in_rounds`` is the closed loop over the same rules: the student is re-measured on the
pool between rounds, so each round targets what it lacks after the last.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from teachloop.agents.student import Student
from teachloop.config import PoolSelect
from teachloop.domains import Problem
from teachloop.training.evaluate import Scored


class PoolItem(BaseModel):
    """A pool question, the student's answer to it, and the reference answer's loss."""

    model_config = ConfigDict(frozen=True)

    problem: Problem
    prompt: str
    completion: str  # the reference completion, as the student's prompt continues
    answer: str | None  # the final answer read from the student's reply
    correct: bool
    loss: float | None = None  # mean token loss of `completion` (only where a rule needs it)

    @classmethod
    def answered(cls, student: Student, problem: Problem, scored: Scored) -> PoolItem:
        """``problem`` as ``student`` answered it (``scored``), with its reference completion."""
        return cls(
            problem=problem,
            prompt=student.prompt(problem.question, problem.topic),
            completion=student.reference_completion(problem),
            answer=scored.answer,
            correct=scored.correct,
        )


def select(pool: Sequence[PoolItem], rule: PoolSelect, seed: int) -> list[PoolItem]:
    """``pool`` in the order ``rule`` trains on it (every item it may take, best first)."""
    rng = random.Random(f"select/{rule}/{seed}")
    if rule == "loss":
        if any(item.loss is None for item in pool):
            raise ValueError("rule 'loss' needs every pool item's loss")
        # Ties (and equal losses) keep the pool's order: deterministic.
        return sorted(pool, key=lambda item: -float(item.loss or 0.0))
    if rule == "random":
        chosen = list(pool)
    else:
        chosen = [item for item in pool if item.correct == (rule == "correct")]
    rng.shuffle(chosen)
    return chosen


def completion_losses(
    model_dir: Path,
    pairs: Sequence[tuple[str, str]],
    *,
    adapter: Path | None = None,
    batch_size: int = 16,
) -> list[float]:
    """Mean per-token negative log-likelihood of each completion after its prompt under the
    model in ``model_dir`` (plus ``adapter``, merged), in batches. Prompt and completion are
    tokenized apart and joined, as the trainer joins them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses: list[float] = []
    for start in range(0, len(pairs), batch_size):
        rows = []
        for prompt, completion in pairs[start : start + batch_size]:
            p = tokenizer(prompt)["input_ids"]
            c = tokenizer(completion, add_special_tokens=False)["input_ids"]
            rows.append((p + c, len(p)))
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (row, prompt_len) in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            labels[i, prompt_len : len(row)] = torch.tensor(row[prompt_len:])
        # Only the positions that predict a completion token meet the 262k-vocabulary head
        # (most of a row is its prompt): the union over the batch's rows.
        keep = torch.arange(min(n for _, n in rows) - 1, width - 1)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
        target = labels[:, keep + 1]
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), target.clamp(min=0), reduction="none"
        )
        counted = (target != -100).float()
        per_row = (nll * counted).sum(1) / counted.sum(1).clamp(min=1)
        losses += per_row.tolist()
    return losses


def select_in_rounds(
    pool: Sequence[PoolItem],
    rule: PoolSelect,
    seed: int,
    budget: int,
    rounds: int,
    *,
    rescore: Callable[[int, list[PoolItem]], list[PoolItem]],
    train: Callable[[int, list[PoolItem]], None],
) -> list[list[PoolItem]]:
    """The closed loop: in each round, pick the round's share of ``budget`` from the pool items
    not yet trained on by ``rule`` and ``train`` on them; before every round after the first,
    ``rescore`` the remaining items with the student as trained so far (its answers and
    losses), so each round targets what the student lacks now. A round whose rule finds too few
    items (the student now answers them) tops up at random from the rest, so the total budget
    stays ``budget``. Returns each round's items."""
    shares = [budget // rounds + (r < budget % rounds) for r in range(rounds)]
    remaining, picked = list(pool), []
    for r, share in enumerate(shares):
        if r > 0:
            remaining = rescore(r, remaining)
        chosen = select(remaining, rule, seed + 1000 * r)[:share]
        taken = {id(i) for i in chosen}
        if len(chosen) < share:
            rest = [i for i in select(remaining, "random", seed + 1000 * r) if id(i) not in taken]
            chosen += rest[: share - len(chosen)]
            taken = {id(i) for i in chosen}
        train(r, chosen)
        picked.append(chosen)
        remaining = [i for i in remaining if id(i) not in taken]
    return picked
