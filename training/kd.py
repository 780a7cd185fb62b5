"""Token-level knowledge distillation (``method = "kd"``): the student matches a teacher's
next-token distributions over the reference answer, as in Alballa et al.'s standard and tuned KD.

Loss, over the answer (completion) tokens only, averaged over them::

    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, reference tokens)

where ``p_T = softmax(logits / T)``; ``kd_direction = "reverse"`` uses KL(student_T || teacher_T).
The cross-entropy is at temperature 1 (Hinton et al.); ``T^2`` keeps the KL term's gradients
on the CE's scale as T grows.

**The teacher: context distillation.** With one model family on CPU there is no bigger
teacher, so the teacher is the *same base weights* shown the reference solution in its prompt:
each example has the student's ``prompt``, the reference answer in the student's format
(``completion``), and a ``teacher_prompt`` (the same question with the solution before it, e.g.
``Student.prompt(question, topic, explanation=solution)``). The student is a LoRA adapter, so the
teacher's logits come from the same model with the adapter switched off (PEFT's
``disable_adapter()``, under ``torch.no_grad()``, in eval mode): no second copy of the weights.
With a parent adapter the teacher is still the base model, not the parent. Optionally
``kd_teacher`` names a separate model directory with the same tokenizer (a bigger teacher on a
GPU; ``[training.trl] use_cpu = false`` to train there).

**Alignment.** The student sequence is ``prompt + completion`` tokenized as TRL's SFT does it
(completion + EOS; the completion starts where the tokenized prompt and prompt+completion
diverge). The teacher sequence is ``tokenize(teacher_prompt)`` followed by *the same completion
token ids*, so the two differ only in their prompts' lengths. Labels are -100 on prompt tokens;
the logits at position ``i`` predict token ``i + 1``, so each sequence's completion positions
are where its shifted labels are not -100, and taking them in order pairs student and teacher
position by position (checked: the two label sequences must be equal). Only those positions are
projected onto the vocabulary (``logits_to_keep``), which matters with Gemma's 262k vocabulary.
``max_length`` bounds both sequences: the completion is cut to what fits after the longer
prompt; an example with no completion token left is dropped.

**Why a subclass of TRL's ``SFTTrainer`` and not TRL's own distillation trainers** (TRL
1.16.0): ``GKDTrainer`` (experimental) and ``DistillationTrainer`` feed the teacher the
student's own ``input_ids`` (no separate teacher prompt), need a separate teacher model, and
optimise a generalized JSD without the hard-label CE mix or the ``T^2`` factor (GKD's
``compute_loss`` does not even pass its temperature on); ``DistillationTrainer`` and the
experimental ``SDFTTrainer`` (which does support a privileged teacher context) are on-policy,
generating the completions from the student each step, while these are fixed reference answers.
Subclassing ``SFTTrainer`` keeps its training loop, dataset handling, logging, PEFT wrapping and
CPU settings, and overrides ``compute_loss`` (TRL's documented extension point) with
``kd_loss``; a collator pads the teacher's sequences beside the student's.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from teachloop.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE = -100  # label of a position that is not trained on (prompt, padding)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels_mask: torch.Tensor,
    hard_labels: torch.Tensor,
    temperature: float,
    alpha: float,
    direction: Literal["forward", "reverse"] = "forward",
) -> torch.Tensor:
    """``alpha * T^2 * KL + (1 - alpha) * CE``, averaged over the positions where ``labels_mask``.

    ``student_logits`` and ``teacher_logits``: ``(..., vocab)``, already aligned (position ``i``
    of both predicts ``hard_labels[i]``); ``labels_mask`` and ``hard_labels``: ``(...)``. The
    teacher gets no gradient. No masked position: a zero that still has a gradient path.
    """
    return _kd_terms(
        student_logits, teacher_logits, labels_mask, hard_labels, temperature, alpha, direction
    )[0]


def _kd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels_mask: torch.Tensor,
    hard_labels: torch.Tensor,
    temperature: float,
    alpha: float,
    direction: str,
) -> tuple[torch.Tensor, float, float]:
    """The loss, and the mean KL and CE per token (for the log; nan where not computed)."""
    import torch
    import torch.nn.functional as F

    if direction not in ("forward", "reverse"):
        raise ValueError(f"kd direction must be 'forward' or 'reverse', not {direction!r}")
    mask = labels_mask.bool()
    # At least float32 (bf16 logits lose too much in log_softmax over a large vocabulary).
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    student = student_logits[mask].to(dtype)
    teacher = teacher_logits[mask].detach().to(dtype)
    if student.shape[0] == 0:
        return student_logits.sum() * 0.0, 0.0, 0.0
    loss = student.new_zeros(())
    kl_mean = ce_mean = float("nan")
    if alpha > 0:
        log_s = F.log_softmax(student / temperature, dim=-1)
        log_t = F.log_softmax(teacher / temperature, dim=-1)
        if direction == "forward":  # KL(teacher || student) = sum p_t (log p_t - log p_s)
            kl = (log_t.exp() * (log_t - log_s)).sum(-1)
        else:  # KL(student || teacher)
            kl = (log_s.exp() * (log_s - log_t)).sum(-1)
        kl = kl.mean()
        loss = loss + alpha * temperature**2 * kl
        kl_mean = kl.item()
    if alpha < 1:
        ce = F.cross_entropy(student, hard_labels[mask].long())
        loss = loss + (1 - alpha) * ce
        ce_mean = ce.item()
    return loss, kl_mean, ce_mean


def tokenize_kd_example(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    completion: str,
    teacher_prompt: str,
    max_length: int,
) -> dict[str, list[int]] | None:
    """Student and teacher token sequences sharing the completion's ids (see the module doc).

    Returns ``input_ids``/``labels`` (student) and ``teacher_input_ids``/``teacher_labels``;
    None if no completion token fits in ``max_length`` after the longer prompt.
    """
    eos = tokenizer.eos_token
    if eos and not completion.endswith(eos):
        completion += eos  # as TRL's SFT does for prompt/completion data
    prompt_ids = tokenizer(text=prompt)["input_ids"]
    full = tokenizer(text=prompt + completion)["input_ids"]
    start = 0
    while start < min(len(prompt_ids), len(full)) and prompt_ids[start] == full[start]:
        start += 1
    student_prompt, completion_ids = full[:start], full[start:]
    teacher_prompt_ids = tokenizer(text=teacher_prompt)["input_ids"]
    room = max_length - max(len(student_prompt), len(teacher_prompt_ids))
    completion_ids = completion_ids[: max(room, 0)]
    if not completion_ids:
        return None
    return {
        "input_ids": student_prompt + completion_ids,
        "labels": [IGNORE] * len(student_prompt) + completion_ids,
        "teacher_input_ids": teacher_prompt_ids + completion_ids,
        "teacher_labels": [IGNORE] * len(teacher_prompt_ids) + completion_ids,
    }


@dataclass
class KDCollator:
    """Right-pads the student's and the teacher's sequences (ids, labels, attention masks)."""

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch
        from torch.nn.utils.rnn import pad_sequence

        batch: dict[str, torch.Tensor] = {}
        for prefix in ("", "teacher_"):
            ids = [torch.tensor(e[f"{prefix}input_ids"], dtype=torch.long) for e in examples]
            labels = [torch.tensor(e[f"{prefix}labels"], dtype=torch.long) for e in examples]
            batch[f"{prefix}input_ids"] = pad_sequence(
                ids, batch_first=True, padding_value=self.pad_token_id
            )
            batch[f"{prefix}labels"] = pad_sequence(labels, batch_first=True, padding_value=IGNORE)
            batch[f"{prefix}attention_mask"] = pad_sequence(
                [torch.ones_like(i) for i in ids], batch_first=True, padding_value=0
            )
        return batch


def completion_logits(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits predicting each completion token, ``(n_tokens, vocab)`` in reading order,
    and those tokens: only positions whose next label is not -100 are projected."""
    predicts = labels[:, 1:] != IGNORE  # logits at i predict token i + 1
    keep = predicts.any(dim=0).nonzero().squeeze(-1)
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False
    ).logits
    return logits[predicts[:, keep]], labels[:, 1:][predicts]


def load_teacher(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A separate teacher (``kd_teacher``): float32, frozen, in eval mode; its tokenizer must be
    the student's (the two score the same token ids)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if AutoTokenizer.from_pretrained(model_dir).get_vocab() != tokenizer.get_vocab():
        raise ConfigError(f"kd_teacher {model_dir}: its tokenizer is not the student's")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.requires_grad_(False).eval()


def make_kd_trainer_class() -> type:
    """``SFTTrainer`` with the KD loss (built here so that importing this module stays cheap)."""
    import torch
    from trl import SFTTrainer

    class KDTrainer(SFTTrainer):
        """SFTTrainer whose loss is ``kd_loss`` against a context-distillation teacher."""

        def __init__(
            self,
            *args: Any,
            kd_temperature: float,
            kd_alpha: float,
            kd_direction: str,
            teacher_model: PreTrainedModel | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.kd_temperature, self.kd_alpha, self.kd_direction = (
                kd_temperature,
                kd_alpha,
                kd_direction,
            )
            self.teacher_model = teacher_model
            if teacher_model is not None:
                teacher_model.to(self.args.device)

        def _set_signature_columns_if_needed(self) -> None:
            if self._signature_columns is None:
                self._signature_columns = [
                    "input_ids",
                    "labels",
                    "teacher_input_ids",
                    "teacher_labels",
                ]

        @contextlib.contextmanager
        def _teacher(self, model: Any) -> Iterator[Any]:
            """The separate teacher if there is one, else the student with its adapter off."""
            if self.teacher_model is not None:
                yield self.teacher_model.eval()
                return
            student = self.accelerator.unwrap_model(model)
            if not hasattr(student, "disable_adapter"):
                raise TypeError("kd without kd_teacher needs a PEFT (LoRA) student")
            was_training = student.training
            student.eval()  # no dropout in the teacher
            try:
                with student.disable_adapter():
                    yield student
            finally:
                student.train(was_training)

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, torch.Tensor],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            mode = "train" if self.model.training else "eval"
            student_logits, tokens = completion_logits(
                model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
            )
            with torch.no_grad(), self._teacher(model) as teacher:
                teacher_logits, teacher_tokens = completion_logits(
                    teacher,
                    inputs["teacher_input_ids"],
                    inputs["teacher_attention_mask"],
                    inputs["teacher_labels"],
                )
            if not torch.equal(tokens, teacher_tokens):
                raise RuntimeError("kd: the student's and teacher's completion tokens differ")
            n = tokens.numel()
            loss, kl, ce = _kd_terms(
                student_logits,
                teacher_logits,
                torch.ones(n, dtype=torch.bool, device=tokens.device),
                tokens,
                self.kd_temperature,
                self.kd_alpha,
                self.kd_direction,
            )
            # Like SFT's loss: a mean over the tokens of the whole (accumulated) batch.
            if num_items_in_batch is not None:
                loss = loss * n / torch.as_tensor(num_items_in_batch).clamp(min=1)
            for name, value in (("kd_kl", kl), ("kd_ce", ce)):
                if not math.isnan(value):  # nan: the term has weight 0 and was not computed
                    self._metrics[mode][name].append(value)
            if not return_outputs:
                return loss
            from transformers.modeling_outputs import CausalLMOutput

            # The logits of the answer positions only, (n_tokens, vocab).
            return loss, CausalLMOutput(loss=loss, logits=student_logits)

    return KDTrainer
