"""Token-level knowledge distillation (method = "kd"): the loss on hand-made tensors, the
student/teacher alignment, and short jobs on the tiny random Gemma."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tiny_model import build_tiny_model

import teachloop.training.kd as kd_module
from teachloop.config import TrainingConfig
from teachloop.errors import ConfigError
from teachloop.training.kd import IGNORE, KDCollator, kd_loss, tokenize_kd_example
from teachloop.training.trainer import TRAIN_INFO_FILE, TrainingExample, train_adapter

# A high rate so that 3 steps visibly move a tiny model's adapter.
FAST = TrainingConfig(method="kd", steps=3, batch_size=2, learning_rate=1e-3, max_length=64)


def question(a: int, b: int) -> str:
    return f"Question: What is {a} + {b}?\nAnswer:"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def examples() -> list[TrainingExample]:
    # The teacher sees the solution before the same question (context distillation).
    return [
        TrainingExample(
            prompt=question(a, b),
            chosen=f" {a + b}",
            rejected=f" {a * b}",
            teacher_prompt=f"The sum of {a} and {b} is {a + b}.\n{question(a, b)}",
        )
        for a, b in [(12, 7), (3, 5), (40, 2), (9, 9), (1, 0), (25, 25)]
    ]


# --- the loss, on tensors ---------------------------------------------------------------------

# 2 answer positions over a 3-token vocabulary (batch of 1), plus nothing masked.
STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 0.0, 1.0], [1.5, 1.5, -0.5]]
TARGETS = [1, 2]


def softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(z / t) for z in row]
    return [e / sum(exps) for e in exps]


def hand_kl(p_rows: list[list[float]], q_rows: list[list[float]], t: float) -> float:
    """Mean over positions of KL(p_T || q_T) = sum_v p_T(v) * (log p_T(v) - log q_T(v))."""
    total = 0.0
    for p_logits, q_logits in zip(p_rows, q_rows, strict=True):
        p, q = softmax(p_logits, t), softmax(q_logits, t)
        total += sum(pv * (math.log(pv) - math.log(qv)) for pv, qv in zip(p, q, strict=True))
    return total / len(p_rows)


def as_batch(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float64)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_pure_kl_equals_the_hand_computed_sums(direction, temperature) -> None:
    mask = torch.tensor([[True, True]])
    labels = torch.tensor([TARGETS])
    got = kd_loss(
        as_batch(STUDENT), as_batch(TEACHER), mask, labels, temperature, 1.0, direction
    ).item()
    if direction == "forward":  # KL(teacher || student)
        kl = hand_kl(TEACHER, STUDENT, temperature)
    else:  # KL(student || teacher)
        kl = hand_kl(STUDENT, TEACHER, temperature)
    assert kl > 0
    assert got == pytest.approx(temperature**2 * kl, rel=1e-6)


def test_the_two_directions_differ_and_identical_logits_give_zero() -> None:
    mask, labels = torch.tensor([[True, True]]), torch.tensor([TARGETS])
    forward = kd_loss(as_batch(STUDENT), as_batch(TEACHER), mask, labels, 1.0, 1.0, "forward")
    reverse = kd_loss(as_batch(STUDENT), as_batch(TEACHER), mask, labels, 1.0, 1.0, "reverse")
    assert forward.item() != pytest.approx(reverse.item())
    same = kd_loss(as_batch(STUDENT), as_batch(STUDENT), mask, labels, 3.0, 1.0, "reverse")
    assert same.item() == pytest.approx(0.0, abs=1e-12)


def test_pure_ce_is_torch_cross_entropy_on_the_answer_positions() -> None:
    # Batch of 2 x 3 positions; the first position of each row is prompt (masked, label -100).
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    labels = torch.tensor([[IGNORE, 4, 0], [IGNORE, 2, IGNORE]])
    mask = labels != IGNORE
    got = kd_loss(student, teacher, mask, labels, 2.0, 0.0, "forward")
    expected = F.cross_entropy(student.reshape(-1, 5), labels.reshape(-1), ignore_index=IGNORE)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # By hand for the STUDENT example: mean of -log softmax(z)[target].
    hand = -sum(
        math.log(softmax(row, 1.0)[y]) for row, y in zip(STUDENT, TARGETS, strict=True)
    ) / len(TARGETS)
    ce = kd_loss(
        as_batch(STUDENT), as_batch(TEACHER), torch.tensor([[True, True]]),
        torch.tensor([TARGETS]), 2.0, 0.0, "forward",
    )  # fmt: skip
    assert ce.item() == pytest.approx(hand, rel=1e-9)


def test_mixed_alpha_is_the_weighted_sum() -> None:
    mask, labels = torch.tensor([[True, True]]), torch.tensor([TARGETS])
    args = (as_batch(STUDENT), as_batch(TEACHER), mask, labels, 2.0)
    kl = kd_loss(*args, 1.0, "forward").item()  # already times T^2
    ce = kd_loss(*args, 0.0, "forward").item()
    assert kd_loss(*args, 0.3, "forward").item() == pytest.approx(0.3 * kl + 0.7 * ce, rel=1e-9)


def test_masked_positions_contribute_nothing() -> None:
    # The same two answer positions, now after two prompt positions holding wild logits.
    prompt_rows = [[50.0, -20.0, 7.0], [-3.0, 40.0, 0.0]]
    teacher_prompt_rows = [[-9.0, 9.0, 9.0], [0.0, 0.0, 100.0]]
    student = as_batch(prompt_rows + STUDENT).requires_grad_(True)
    teacher = as_batch(teacher_prompt_rows + TEACHER).requires_grad_(True)
    labels = torch.tensor([[IGNORE, IGNORE, *TARGETS]])
    mask = labels != IGNORE
    for alpha in (0.0, 0.5, 1.0):
        for direction in ("forward", "reverse"):
            got = kd_loss(student, teacher, mask, labels, 2.0, alpha, direction)
            alone = kd_loss(
                as_batch(STUDENT), as_batch(TEACHER), torch.tensor([[True, True]]),
                torch.tensor([TARGETS]), 2.0, alpha, direction,
            )  # fmt: skip
            assert got.item() == pytest.approx(alone.item(), rel=1e-12)
    loss = kd_loss(student, teacher, mask, labels, 2.0, 0.5, "forward")
    loss.backward()
    assert torch.all(student.grad[0, :2] == 0) and torch.any(student.grad[0, 2:] != 0)
    assert teacher.grad is None  # the teacher is a target, never trained
    # Nothing to learn from: a finite zero, not 0/0.
    none = kd_loss(student, teacher, torch.zeros_like(mask), labels, 2.0, 0.5, "forward")
    assert none.item() == 0.0


# --- alignment of the student's and the teacher's sequences -----------------------------------


def test_teacher_and_student_share_the_answer_tokens_after_different_prompts(
    tokenizer, examples
) -> None:
    e = examples[0]
    row = tokenize_kd_example(tokenizer, e.prompt, e.chosen, e.teacher_prompt, max_length=64)
    assert row is not None
    student_answer = [t for t in row["labels"] if t != IGNORE]
    teacher_answer = [t for t in row["teacher_labels"] if t != IGNORE]
    assert student_answer == teacher_answer and student_answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(student_answer, skip_special_tokens=True) == " 19"
    n = len(student_answer)
    assert row["input_ids"][-n:] == row["teacher_input_ids"][-n:] == student_answer
    # The prompts differ: the teacher reads the solution first, so its sequence is longer.
    assert len(row["teacher_input_ids"]) > len(row["input_ids"])
    assert tokenizer.decode(row["input_ids"][:-n], skip_special_tokens=True) == e.prompt
    assert tokenizer.decode(row["teacher_input_ids"][:-n], skip_special_tokens=True) == (
        e.teacher_prompt
    )
    # max_length bounds both sequences: the answer is cut to fit after the longer prompt.
    teacher_prompt_len = len(row["teacher_input_ids"]) - n
    cut = tokenize_kd_example(
        tokenizer, e.prompt, e.chosen, e.teacher_prompt, max_length=teacher_prompt_len + 1
    )
    assert cut is not None and len(cut["teacher_input_ids"]) == teacher_prompt_len + 1
    assert [t for t in cut["labels"] if t != IGNORE] == student_answer[:1]
    too_short = tokenize_kd_example(
        tokenizer, e.prompt, e.chosen, e.teacher_prompt, max_length=teacher_prompt_len
    )
    assert too_short is None


def test_the_collator_pads_both_sequences() -> None:
    rows = [
        {"input_ids": [2, 5, 6], "labels": [IGNORE, IGNORE, 6], "teacher_input_ids": [2, 9, 5, 6],
         "teacher_labels": [IGNORE, IGNORE, IGNORE, 6]},
        {"input_ids": [2, 5, 7, 8], "labels": [IGNORE, IGNORE, 7, 8],
         "teacher_input_ids": [2, 9, 9, 5, 7, 8], "teacher_labels": [IGNORE] * 4 + [7, 8]},
    ]  # fmt: skip
    batch = KDCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[2, 5, 6, 0], [2, 5, 7, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch["labels"][0].tolist() == [IGNORE, IGNORE, 6, IGNORE]
    assert batch["teacher_input_ids"].shape == (2, 6)
    assert batch["teacher_attention_mask"].sum(1).tolist() == [4, 6]


# --- jobs on the tiny model -------------------------------------------------------------------


def lora_weights(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(adapter_dir / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def kd_job(tiny_model, examples, tmp_path_factory):
    """One kd job, recording what the student and the teacher were each asked to score."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    calls: list[dict] = []
    real = kd_module.completion_logits

    def spy(model, input_ids, attention_mask, labels):
        adapters_off = [
            m.disable_adapters for m in model.modules() if isinstance(m, BaseTunerLayer)
        ]
        logits, tokens = real(model, input_ids, attention_mask, labels)
        calls.append(
            {
                "input_ids": input_ids.clone(),
                "attention_mask": attention_mask.clone(),
                "tokens": tokens.clone(),
                "adapters_off": adapters_off,
                "grad": torch.is_grad_enabled(),
                "training": model.training,
            }
        )
        return logits, tokens

    kd_module.completion_logits = spy
    try:
        out = tmp_path_factory.mktemp("kd") / "v1"
        result = train_adapter(tiny_model, examples, out, FAST, progress=False)
    finally:
        kd_module.completion_logits = real
    return result, out, calls


def test_a_kd_job_moves_the_adapter_and_saves_it(tiny_model, kd_job) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, out, _ = kd_job
    assert result.method == "kd" and (result.steps, result.examples) == (3, 6)
    assert [s.step for s in result.log] == [1, 2, 3]
    assert all(math.isfinite(s.loss) and s.loss > 0 for s in result.log)
    assert all(s.reward_margin is None for s in result.log)
    lora_b = [w for name, w in lora_weights(out).items() if "lora_B" in name]
    assert len(lora_b) == 2 * 7
    assert all(w.abs().sum() > 0 for w in lora_b), "LoRA B starts at zero: training moved it"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(out))
    assert list(model.peft_config) == ["default"]
    info = json.loads((out / TRAIN_INFO_FILE).read_text())
    assert TrainingConfig.model_validate(info["config"]) == FAST


def test_the_teacher_scores_the_answer_after_the_context_prompt(tokenizer, examples, kd_job):
    _, _, calls = kd_job
    assert len(calls) == 2 * FAST.steps  # per step: the student, then the teacher
    by_prompt = {e.prompt: e.teacher_prompt for e in examples}
    for student, teacher in zip(calls[::2], calls[1::2], strict=True):
        # The student: LoRA on, with gradients; the teacher: the same weights, LoRA off, no grad.
        assert student["grad"] and student["training"] and not any(student["adapters_off"])
        assert not teacher["grad"] and not teacher["training"] and all(teacher["adapters_off"])
        assert teacher["input_ids"].shape[1] > student["input_ids"].shape[1]
        # Aligned: the same answer tokens, in the same order.
        assert torch.equal(student["tokens"], teacher["tokens"]) and student["tokens"].numel() > 0
        for s_ids, s_mask, t_ids, t_mask in zip(
            student["input_ids"], student["attention_mask"],
            teacher["input_ids"], teacher["attention_mask"], strict=True,
        ):  # fmt: skip
            s_text = tokenizer.decode(s_ids[s_mask.bool()], skip_special_tokens=True)
            t_text = tokenizer.decode(t_ids[t_mask.bool()], skip_special_tokens=True)
            prompt = next(p for p in by_prompt if s_text.startswith(p))
            answer = s_text[len(prompt) :]
            assert t_text == by_prompt[prompt] + answer  # the context prompt, then the same answer


def test_the_teacher_is_the_base_model_so_an_identical_prompt_gives_zero_kl(
    tiny_model, examples, tmp_path
) -> None:
    # A fresh adapter starts as the identity (B = 0): at step 1 the student is the base model,
    # so with the student's own prompt as the teacher's, pure KL (either direction) is exactly 0.
    same = [e.model_copy(update={"teacher_prompt": e.prompt}) for e in examples]
    config = FAST.model_copy(update={"steps": 1, "kd_alpha": 1.0, "kd_direction": "reverse"})
    result = train_adapter(tiny_model, same, tmp_path / "same", config, progress=False)
    assert result.log[0].loss == pytest.approx(0.0, abs=1e-6)


def test_a_separate_teacher_directory_gives_the_same_losses(
    tiny_model, examples, kd_job, tmp_path
) -> None:
    """`kd_teacher`: the base model loaded a second time is the same teacher as the adapter-off
    student, so the job is the same, step for step."""
    config = FAST.model_copy(update={"kd_teacher": tiny_model})
    result = train_adapter(tiny_model, examples, tmp_path / "sep", config, progress=False)
    assert [s.loss for s in result.log] == pytest.approx([s.loss for s in kd_job[0].log], abs=1e-5)


def test_kd_without_a_teacher_prompt_is_one_line_before_any_model_loads(examples, tmp_path):
    mixed = [*examples[:2], examples[2].model_copy(update={"teacher_prompt": None})]
    # No model directory at all: the check must come first.
    with pytest.raises(
        ValueError, match=r"^kd needs a teacher_prompt on every example: 1 of 3"
    ) as e:
        train_adapter(tmp_path / "nowhere", mixed, tmp_path / "out", FAST, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="kd_teacher is not a model directory"):
        config = FAST.model_copy(update={"kd_teacher": tmp_path / "no-teacher"})
        train_adapter(tmp_path / "nowhere", examples, tmp_path / "out", config, progress=False)
    assert list(tmp_path.iterdir()) == []
    # SFT and DPO ignore it.
    plain = TrainingExample(prompt="Q", chosen=" 1", rejected=" 2")
    assert plain.teacher_prompt is None


def test_kd_settings_are_checked_in_the_config() -> None:
    from teachloop.config import RunConfig

    config = RunConfig.validated(
        {"training": {"method": "kd", "kd_temperature": 4.0, "kd_direction": "reverse"}}
    )
    assert (config.training.kd_temperature, config.training.kd_alpha) == (4.0, 0.5)
    for bad in ({"kd_alpha": 1.5}, {"kd_temperature": 0}, {"kd_direction": "both"}):
        with pytest.raises(ConfigError, match=r"training\.kd_"):
            RunConfig.validated({"training": bad})
