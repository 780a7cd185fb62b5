"""The training job: fit a LoRA adapter to a student's mistakes with TRL (DPO, SFT or KD) on CPU.

One call is one job: load the base model (plus, optionally, the parent version's adapter),
train for a fixed number of optimizer steps, and write the adapter to ``out_dir`` atomically.
Heavy imports (torch, transformers, TRL, PEFT) happen inside the functions so that importing
this module stays cheap. Hyperparameters are ``teachloop.config.TrainingConfig``, the same
model a config file's ``[training]`` fills. KD (token-level distillation from the base model
shown the solution) is in ``training/kd.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from teachloop.config import TrainingConfig
from teachloop.errors import ConfigError
from teachloop.store.records import PreferencePair

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback

TRAIN_INFO_FILE = "teachloop-train.json"
ADAPTER_NAME = "default"  # PEFT's name for the trained adapter; TRL adds a frozen "ref" copy


class TrainingExample(BaseModel):
    """What the trainer takes: one preference pair; SFT trains on ``prompt`` -> ``chosen`` and
    ignores ``rejected``. ``chosen`` and ``rejected`` are completions as they follow the prompt
    (``teachloop.messages.as_completion``): the trainer joins them to it unchanged.

    KD distils ``chosen`` (the reference answer in the student's format) from a teacher that
    reads ``teacher_prompt`` (the same question with the solution shown before it) instead of
    ``prompt``; required for KD, ignored by DPO and SFT.
    """

    model_config = ConfigDict(frozen=True)

    prompt: str
    chosen: str
    rejected: str
    teacher_prompt: str | None = None

    @classmethod
    def of_pair(cls, pair: PreferencePair) -> TrainingExample:
        """A logged preference pair as the trainer takes it (jobs' and experiments' data)."""
        return cls(prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected)


class StepLog(BaseModel):
    """What the trainer logged after one optimizer step (reward fields: DPO only)."""

    model_config = ConfigDict(frozen=True)

    step: int
    loss: float
    reward_margin: float | None = None  # mean (chosen - rejected) implicit reward
    reward_accuracy: float | None = None  # fraction of pairs with chosen reward > rejected
    # DPO: mean log-probability of the chosen and the rejected answers under the policy. A
    # growing margin with a falling chosen log-prob means DPO pushes the rejected answers down
    # rather than the right ones up.
    chosen_logp: float | None = None
    rejected_logp: float | None = None
    learning_rate: float | None = None
    step_time_s: float | None = None  # forward + backward + optimizer step, no data loading


class TrainResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    adapter_dir: Path
    method: str
    steps: int
    examples: int
    log: list[StepLog]
    wall_time_s: float  # the whole job: load, data preparation, training, save
    mean_step_time_s: float  # measured per optimizer step, excluding model load


def train_adapter(
    base_model_dir: Path,
    examples: list[TrainingExample],
    out_dir: Path,
    config: TrainingConfig = TrainingConfig(),  # noqa: B008 (frozen, so a shared default is safe)
    *,
    parent_adapter: Path | None = None,
    progress: bool = True,
    on_step: Callable[[StepLog], None] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``examples``; save it and ``teachloop-train.json`` to ``out_dir``.

    ``parent_adapter``: continue training that adapter instead of a fresh one. For DPO the
    reference is then the parent (TRL keeps a frozen copy), so each version is pulled only
    relative to the previous one; a fresh adapter's reference is the base model.
    ``on_step`` is called after every optimizer step (e.g. to stream the log to a store); if it
    raises, the job stops and nothing is written to ``out_dir``.
    """
    started = time.perf_counter()
    if not examples:
        raise ValueError("no training examples: a training job needs at least one pair")
    _check_trl_args(config)
    base_model_dir, out_dir = Path(base_model_dir), Path(out_dir)
    if config.method == "kd":
        _check_kd(examples, config)
    if not (base_model_dir / "config.json").is_file():
        raise FileNotFoundError(f"not a model directory (no config.json): {base_model_dir}")
    if parent_adapter is not None:
        parent_adapter = Path(parent_adapter)
        if not (parent_adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(f"not an adapter directory: {parent_adapter}")
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        raise FileExistsError(f"adapter output already exists: {out_dir}")
    # Never reach for the hub: the base model is always a local directory.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling of out_dir, so the final rename stays on one filesystem and is atomic.
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        with _progress_bars(progress):
            recorder = _StepRecorder(on_step)
            trainer = _build_trainer(
                base_model_dir,
                examples,
                config,
                parent_adapter,
                work / "trainer",
                recorder,
                progress,
            )
            if not progress:
                from transformers.trainer_callback import PrinterCallback

                # With tqdm off, HF prints every log dict instead; silent means silent.
                trainer.remove_callback(PrinterCallback)
            with _score_labelled_positions_only():
                trainer.train()
            model = trainer.accelerator.unwrap_model(trainer.model)
            staged = work / "adapter"
            # Only the trained adapter: not TRL's "ref" copy, never the (frozen) embeddings.
            model.save_pretrained(
                str(staged), selected_adapters=[ADAPTER_NAME], save_embedding_layers=False
            )
        times = recorder.step_times
        result = TrainResult(
            adapter_dir=out_dir,
            method=config.method,
            steps=trainer.state.global_step,
            examples=len(examples),
            log=recorder.log,
            wall_time_s=time.perf_counter() - started,
            mean_step_time_s=sum(times) / len(times) if times else math.nan,
        )
        info = {
            "config": config.model_dump(mode="json"),
            "base_model_dir": str(base_model_dir),
            "parent_adapter": str(parent_adapter) if parent_adapter else None,
            "result": result.model_dump(mode="json"),
            "versions": _versions(),
        }
        (staged / TRAIN_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        staged.rename(out_dir)  # replaces an empty out_dir; fails rather than merge into one
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def merge_adapter(base_model_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Save the base model with ``adapter_dir`` merged into its weights (and the tokenizer) as a
    model directory at ``out_dir``: a student that later adapters start from."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"model output already exists: {out_dir}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(work)
        AutoTokenizer.from_pretrained(base_model_dir).save_pretrained(work)
        work.rename(out_dir)  # atomic: a killed merge leaves no half model behind
    finally:
        if work.exists():
            shutil.rmtree(work)
    return out_dir


def load_train_info(adapter_dir: Path) -> dict[str, Any]:
    """The ``teachloop-train.json`` written beside an adapter (config, log, timings, versions)."""
    return json.loads((Path(adapter_dir) / TRAIN_INFO_FILE).read_text())


class _StepRecorder:
    """Turns the trainer's per-step logs into StepLogs and times each optimizer step."""

    def __init__(self, on_step: Callable[[StepLog], None] | None) -> None:
        self.on_step = on_step
        self.log: list[StepLog] = []
        self.step_times: list[float] = []
        self._began: float | None = None

    def step_begin(self) -> None:
        self._began = time.perf_counter()

    def step_end(self) -> None:
        if self._began is not None:
            self.step_times.append(time.perf_counter() - self._began)
            self._began = None

    def logged(self, step: int, logs: dict[str, float] | None) -> None:
        # The end-of-training summary has "train_loss", not "loss": only per-step logs count.
        if not logs or "loss" not in logs:
            return
        entry = StepLog(
            step=step,
            loss=float(logs["loss"]),
            reward_margin=_float_or_none(logs.get("rewards/margins")),
            reward_accuracy=_float_or_none(logs.get("rewards/accuracies")),
            chosen_logp=_float_or_none(logs.get("logps/chosen")),
            rejected_logp=_float_or_none(logs.get("logps/rejected")),
            learning_rate=_float_or_none(logs.get("learning_rate")),
            step_time_s=self.step_times[-1] if self.step_times else None,
        )
        self.log.append(entry)
        if self.on_step is not None:
            self.on_step(entry)

    def as_callback(self) -> TrainerCallback:
        """A TrainerCallback feeding this recorder (built here: transformers imports lazily).

        on_step_begin fires after the batch is fetched and on_step_end after the optimizer
        step, before logging, so step times leave out data loading and the on_step consumer.
        """
        from transformers import TrainerCallback

        recorder = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                recorder.step_begin()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                recorder.step_end()

            def on_log(
                self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any
            ) -> None:
                recorder.logged(state.global_step, logs)

        return _Callback()


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _build_trainer(
    base_model_dir: Path,
    examples: list[TrainingExample],
    config: TrainingConfig,
    parent_adapter: Path | None,
    scratch: Path,
    recorder: _StepRecorder,
    progress: bool,
) -> Trainer:
    import torch
    from datasets import Dataset
    from peft import LoraConfig

    model, tokenizer = _load_model(base_model_dir, config, parent_adapter)
    # A fresh adapter is made by the trainer from peft_config; a parent is already attached.
    peft_config = None
    if parent_adapter is None:
        peft_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        )
    common: dict[str, Any] = {
        "output_dir": str(scratch),  # required; nothing is saved there (save_strategy="no")
        "max_steps": config.steps,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": config.learning_rate,
        "max_length": config.max_length,
        "seed": config.seed,
        # A GPU when there is one, else the CPU (`[training.trl] use_cpu` overrides). TRL
        # defaults to bf16 autocast and gradient checkpointing; both only slow a small fp32
        # model down on CPU (and bf16 autocast is lossy there).
        "use_cpu": not torch.cuda.is_available(),
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,
        "dataloader_pin_memory": False,  # no GPU to pin for; avoids a warning
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": not progress,
    }
    if config.method == "dpo":
        from trl import DPOTrainer

        data = Dataset.from_list([e.model_dump() for e in examples])
        return DPOTrainer(
            model=model,
            args=_trl_args(common, config, beta=config.beta),
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[recorder.as_callback()],
        )
    if config.method == "kd":
        return _build_kd_trainer(model, tokenizer, examples, config, peft_config, common, recorder)
    from trl import SFTTrainer

    data = Dataset.from_list([{"prompt": e.prompt, "completion": e.chosen} for e in examples])
    return SFTTrainer(
        model=model,
        # Loss on the answer only.
        args=_trl_args(common, config, completion_only_loss=True),
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[recorder.as_callback()],
    )


def _build_kd_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[TrainingExample],
    config: TrainingConfig,
    peft_config: Any,
    common: dict[str, Any],
    recorder: _StepRecorder,
) -> Trainer:
    """SFT's trainer with the KD loss (``training/kd.py``), on pre-tokenized student/teacher
    sequence pairs."""
    from datasets import Dataset

    from teachloop.training import kd

    rows = [
        kd.tokenize_kd_example(
            tokenizer, e.prompt, e.chosen, str(e.teacher_prompt), config.max_length
        )
        for e in examples
    ]
    kept = [r for r in rows if r is not None]
    if not kept:
        raise ValueError(
            f"kd: no example's answer fits in max_length={config.max_length} after its prompts"
        )
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    teacher = kd.load_teacher(config.kd_teacher, tokenizer) if config.kd_teacher else None
    return kd.make_kd_trainer_class()(
        model=model,
        args=_trl_args(common, config, completion_only_loss=True),
        train_dataset=Dataset.from_list(kept),
        data_collator=kd.KDCollator(pad_token_id=pad_id),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[recorder.as_callback()],
        kd_temperature=config.kd_temperature,
        kd_alpha=config.kd_alpha,
        kd_direction=config.kd_direction,
        teacher_model=teacher,
    )


def _check_kd(examples: list[TrainingExample], config: TrainingConfig) -> None:
    """Refuse a KD job that cannot run, in one line, before a model is loaded."""
    missing = [i for i, e in enumerate(examples) if e.teacher_prompt is None]
    if missing:
        raise ValueError(
            f"kd needs a teacher_prompt on every example: {len(missing)} of {len(examples)} "
            f"have none (first: example {missing[0]})"
        )
    if config.kd_teacher is not None and not (Path(config.kd_teacher) / "config.json").is_file():
        raise FileNotFoundError(f"kd_teacher is not a model directory: {config.kd_teacher}")


def _trl_config_class(method: str) -> type:
    from trl import DPOConfig, SFTConfig

    return DPOConfig if method == "dpo" else SFTConfig


def _check_trl_args(config: TrainingConfig) -> None:
    """Refuse an unknown ``training.trl`` key before a model is loaded, in one line."""
    import dataclasses

    cls = _trl_config_class(config.method)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in config.trl:
        if key not in known:
            raise ConfigError(f"training.trl.{key}: not a {cls.__name__} argument (see TRL's docs)")


def _trl_args(common: dict[str, Any], config: TrainingConfig, **ours: Any) -> Any:
    """TRL's config object: teachloop's settings, then the user's ``training.trl`` arguments
    (they may override the defaults above, e.g. ``report_to`` or ``use_cpu``; the ones
    teachloop owns are refused when the config is read)."""
    return _trl_config_class(config.method)(**{**common, **ours, **config.trl})


def _load_model(
    base_model_dir: Path, config: TrainingConfig, parent_adapter: Path | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The float32 base model (plus the parent adapter, trainable) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    set_seed(config.seed)  # LoRA init and dropout
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    if parent_adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(
            model, str(parent_adapter), adapter_name=ADAPTER_NAME, is_trainable=True
        )
    return model, tokenizer


@contextlib.contextmanager
def _score_labelled_positions_only() -> Iterator[None]:
    """Make TRL project only the labelled (completion) positions onto the vocabulary on CPU too.

    TRL 1.16 does this only where Triton runs (`compact = _use_triton(device)` in
    `trl.trainer.utils`, the forward that `add_fused_lm_head` installs); elsewhere it scores
    every position, prompt included, to keep tile shapes fixed for compilers. On CPU nothing
    recompiles, and with Gemma's 262k vocabulary the wasted projection made DPO steps ~3x slower
    (measured: 18-21 s -> 5.5-6.3 s per step, equal losses). The masked positions contribute
    zero either way.

    Why a private name: TRL 1.16 has no public switch for it (`add_fused_lm_head` takes none,
    nor do `DPOConfig`/`SFTConfig`; `padding_free` drops padding, not the prompt), and the
    speed-up is most of a training step on CPU. Only `trl.trainer.utils`'s name is replaced, so
    TRL's own kernels (which import `_use_triton` into their module) still pick their CPU path.
    If TRL renames or stops consulting it, training stays right but slow here (this does
    nothing), and `tests/test_trainer.py` fails: `test_trl_still_consults_use_triton` reads
    TRL's source, the loss test checks the patch is exact and in effect.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Silence the datasets/transformers progress bars for a quiet job, restoring them after."""
    import datasets
    from transformers.utils import logging as hf_logging

    was_datasets, was_hf = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_datasets:
            datasets.enable_progress_bars()
        if was_hf:
            hf_logging.enable_progress_bar()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "trl", "peft"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found
