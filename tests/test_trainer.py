"""Training jobs on a tiny random Gemma (fast) and one on the real embedded model (slow)."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

import torch
from safetensors.torch import load_file
from tiny_model import build_tiny_model

from teachloop.config import TrainingConfig
from teachloop.errors import ConfigError
from teachloop.training.trainer import (
    TRAIN_INFO_FILE,
    StepLog,
    TrainingExample,
    _load_model,
    train_adapter,
)

# A high rate so that 2-3 steps visibly move a tiny model's adapter.
FAST = TrainingConfig(steps=3, batch_size=2, learning_rate=1e-3, max_length=64)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def examples() -> list[TrainingExample]:
    return [
        TrainingExample(
            prompt=f"Question: What is {a} + {b}?\nAnswer:",
            chosen=f" {a + b}",
            rejected=f" {a * b}",
        )
        for a, b in [(12, 7), (3, 5), (40, 2), (9, 9), (1, 0), (25, 25)]
    ]


@pytest.fixture(scope="module")
def parent(tiny_model: Path, examples: list[TrainingExample], tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("parent") / "v1"
    train_adapter(tiny_model, examples, out, FAST, progress=False)
    return out


def lora_weights(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def leftovers(parent_dir: Path) -> list[str]:
    """Temporary work directories that a job left beside its output."""
    return [p.name for p in parent_dir.iterdir() if ".tmp-" in p.name]


def assert_loads_with_peft(base: Path, adapter: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    assert list(model.peft_config) == ["default"]  # TRL's "ref" copy is not saved


def test_dpo_job_trains_and_saves_an_adapter(tiny_model, examples, tmp_path) -> None:
    streamed: list[StepLog] = []
    out = tmp_path / "adapters" / "v1"
    result = train_adapter(tiny_model, examples, out, FAST, progress=False, on_step=streamed.append)

    assert result.adapter_dir == out and result.method == "dpo"
    assert (result.steps, result.examples) == (3, len(examples))
    assert [s.step for s in result.log] == [1, 2, 3] and streamed == result.log
    for s in result.log:
        assert math.isfinite(s.loss)
        assert s.reward_margin is not None and math.isfinite(s.reward_margin)
        assert s.reward_accuracy is not None and s.step_time_s is not None
        assert s.chosen_logp is not None and s.rejected_logp is not None
        assert s.chosen_logp < 0 and s.rejected_logp < 0  # log-probabilities of whole answers
    # Step 1 is scored before any update and the fresh adapter starts as the identity (B = 0),
    # so policy == reference there: the DPO loss is exactly log 2 and the margin 0.
    assert result.log[0].loss == pytest.approx(math.log(2), abs=1e-5)
    assert result.log[0].reward_margin == pytest.approx(0.0, abs=1e-6)
    assert result.log[-1].reward_margin != 0.0
    assert 0 < result.mean_step_time_s < result.wall_time_s

    weights = lora_weights(out)
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert len(lora_b) == 2 * 7  # 2 layers x 7 projections
    assert all(w.abs().sum() > 0 for w in lora_b), "LoRA B starts at zero: training moved it"
    assert_loads_with_peft(tiny_model, out)

    info = json.loads((out / TRAIN_INFO_FILE).read_text())
    assert TrainingConfig.model_validate(info["config"]) == FAST
    assert len(info["result"]["log"]) == 3
    assert leftovers(out.parent) == []


def test_sft_job_trains_on_the_chosen_answers(tiny_model, examples, tmp_path) -> None:
    out = tmp_path / "sft"
    config = FAST.model_copy(update={"method": "sft"})
    result = train_adapter(tiny_model, examples, out, config, progress=False)

    assert result.method == "sft" and [s.step for s in result.log] == [1, 2, 3]
    assert all(math.isfinite(s.loss) and s.loss > 0 for s in result.log)
    assert all(s.reward_margin is None and s.reward_accuracy is None for s in result.log)
    weights = lora_weights(out)
    assert all(w.abs().sum() > 0 for name, w in weights.items() if "lora_B" in name)
    assert_loads_with_peft(tiny_model, out)


def test_parent_adapter_is_loaded_trainable_with_its_weights(tiny_model, parent) -> None:
    model, _ = _load_model(tiny_model, FAST, parent)
    saved = lora_weights(parent)
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(saved) > 0
    for name, param in loaded.items():
        assert param.requires_grad, name
        key = name.replace(".default.", ".")  # PEFT drops the adapter name on disk
        assert torch.equal(param.detach(), saved[key]), name


def test_continuing_from_a_parent_starts_from_its_weights(
    tiny_model, examples, parent, tmp_path
) -> None:
    # A zero learning rate leaves the loaded adapter as it was: the output is the parent, even
    # though this config asks for another LoRA shape (a parent's shape wins).
    frozen = FAST.model_copy(update={"learning_rate": 0.0, "steps": 1, "lora_r": 4})
    same = train_adapter(tiny_model, examples, tmp_path / "same", frozen, parent_adapter=parent)
    assert lora_weights(tmp_path / "same").keys() == lora_weights(parent).keys()
    for name, w in lora_weights(tmp_path / "same").items():
        assert torch.equal(w, lora_weights(parent)[name]), name
    # DPO's reference is the parent, so the first step again sees no margin.
    assert same.log[0].reward_margin == pytest.approx(0.0, abs=1e-6)

    child = tmp_path / "child"
    train_adapter(tiny_model, examples, child, FAST, parent_adapter=parent, progress=False)
    assert any(
        not torch.equal(w, lora_weights(parent)[name]) for name, w in lora_weights(child).items()
    )
    json_info = json.loads((child / TRAIN_INFO_FILE).read_text())
    assert json_info["parent_adapter"] == str(parent)


def test_no_examples_is_an_error(tiny_model, tmp_path) -> None:
    with pytest.raises(ValueError, match="no training examples"):
        train_adapter(tiny_model, [], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_overwritten(tiny_model, examples, tmp_path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        train_adapter(tiny_model, examples, tmp_path / "out", FAST, progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_a_job_that_fails_midway_leaves_no_adapter(tiny_model, examples, tmp_path) -> None:
    def fail_at_step_2(entry: StepLog) -> None:
        if entry.step == 2:
            raise RuntimeError("store went away")

    out = tmp_path / "v2"
    with pytest.raises(RuntimeError, match="store went away"):
        train_adapter(tiny_model, examples, out, FAST, progress=False, on_step=fail_at_step_2)
    assert not out.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_dpo_on_the_embedded_model_then_generate(tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from teachloop.agents.embedded import prepare_embedded_model
    from teachloop.agents.prompts import student_prompt

    base = prepare_embedded_model()
    examples = [
        TrainingExample(
            prompt=student_prompt(f"What is {a} + {b}?"),
            chosen=f" {a + b}",
            rejected=f" {a + b + 10}",
        )
        for a, b in [(23, 58), (47, 36), (15, 9), (64, 27)]
    ]
    out = tmp_path / "v1"
    result = train_adapter(base, examples, out, TrainingConfig(steps=2), progress=False)
    assert len(result.log) == 2 and all(math.isfinite(s.loss) for s in result.log)
    print(f"DPO step on the embedded model: {result.mean_step_time_s:.2f} s")

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(out)
    ).eval()
    inputs = tokenizer(student_prompt("What is 31 + 45?"), return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip(), "the adapted model generated nothing"


def test_trl_still_consults_use_triton() -> None:
    """`_score_labelled_positions_only` replaces a private TRL name (no public switch exists in
    TRL 1.16: see its docstring). This fails, naming what changed, the day TRL renames it or
    its fused LM head stops deciding compact scoring by it; then find the new switch (or drop
    the patch and accept ~3x slower DPO steps on CPU)."""
    import inspect

    import trl
    import trl.trainer.utils as trl_utils

    assert callable(getattr(trl_utils, "_use_triton", None)), (
        f"TRL {trl.__version__} has no trl.trainer.utils._use_triton: "
        "training/trainer.py's CPU speed-up does nothing"
    )
    source = inspect.getsource(trl_utils.add_fused_lm_head)
    assert "compact = _use_triton(hidden_states.device)" in source, (
        f"TRL {trl.__version__}'s add_fused_lm_head no longer decides compact scoring by "
        "_use_triton: training/trainer.py's CPU speed-up does nothing"
    )


@pytest.mark.parametrize("method", ["dpo", "sft"])
def test_scoring_only_labelled_positions_changes_no_loss(
    tiny_model, examples, tmp_path, monkeypatch, method
) -> None:
    """The CPU speed-up (project only completion positions onto the vocabulary) must be exact,
    and must really be in effect during training."""
    import trl.trainer.utils as trl_utils

    import teachloop.training.trainer as trainer_module

    compact_calls: list[bool] = []
    original = trl_utils._use_triton

    def fast(tag: str) -> list[float]:
        result = train_adapter(
            tiny_model,
            examples,
            tmp_path / tag,
            TrainingConfig(method=method, steps=3, batch_size=2),
            progress=False,
        )
        return [s.loss for s in result.log]

    with_patch = fast("patched")
    seen = trl_utils._use_triton
    assert seen is original  # restored after training
    # Without the patch: TRL's own CPU path, scoring every position.
    monkeypatch.setattr(trainer_module, "_score_labelled_positions_only", contextlib.nullcontext)
    monkeypatch.setattr(
        trl_utils, "_use_triton", lambda d: compact_calls.append(True) or original(d)
    )
    without = fast("plain")
    assert compact_calls, "TRL no longer consults _use_triton: the speed-up is gone"
    assert with_patch == pytest.approx(without, abs=1e-5)


def test_trl_arguments_pass_through_to_the_trainer(tiny_model, examples, tmp_path) -> None:
    """`[training.trl]` reaches TRL's config: a constant schedule keeps every step's learning
    rate at the configured one (TRL's default schedule decays it linearly)."""
    decaying = train_adapter(tiny_model, examples, tmp_path / "a", FAST, progress=False)
    assert decaying.log[0].learning_rate != decaying.log[-1].learning_rate
    constant = FAST.model_copy(update={"trl": {"lr_scheduler_type": "constant"}})
    result = train_adapter(tiny_model, examples, tmp_path / "b", constant, progress=False)
    assert [s.learning_rate for s in result.log] == pytest.approx([FAST.learning_rate] * 3)


def test_an_unknown_trl_argument_is_one_line_before_any_model_loads(examples, tmp_path) -> None:
    config = FAST.model_copy(update={"trl": {"gradient_acumulation_steps": 2}})
    # No model directory at all: the check must come first.
    with pytest.raises(
        ConfigError, match=r"training\.trl\.gradient_acumulation_steps: not a DPOConfig"
    ):
        train_adapter(tmp_path / "nowhere", examples, tmp_path / "out", config, progress=False)


def test_trl_arguments_that_teachloop_owns_are_refused_in_the_config() -> None:
    from teachloop.config import RunConfig

    with pytest.raises(ConfigError, match=r"training\.trl: .*max_steps.*use training\.steps"):
        RunConfig.validated({"training": {"trl": {"max_steps": 3}}})
    config = RunConfig.validated({"training": {"trl": {"report_to": ["tensorboard"]}}})
    assert config.training.trl == {"report_to": ["tensorboard"]}
