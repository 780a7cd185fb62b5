"""What does teachloop's training wrapper cost over a plain TRL script?

Runs the same DPO job (same examples, LoRA, hyperparameters and seed) two ways:
  (a) plain: a DPOTrainer + LoRA script written inline here, nothing of teachloop;
  (b) wrapper: ``teachloop.training.trainer.train_adapter``;
in the order a, b, b, a (each twice by default; the mirrored order cancels a linear drift in
machine speed) after an untimed warm-up, and reports the mean time per optimizer step of each (timed
the same way, from on_step_begin to on_step_end), the whole-job time (load + train + save)
and the ratios (b)/(a). It also checks that both runs computed the same losses.

    .venv/bin/python bench/dpo_overhead.py            # the real embedded Gemma 270M
    .venv/bin/python bench/dpo_overhead.py --tiny     # a tiny random model, a quick check

Set TEACHLOOP_CACHE to reuse a converted copy of the embedded model.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Run:
    variant: str
    step_times: list[float]
    job_s: float  # load + data preparation + training + save
    # CPU seconds of the whole job (all threads): less disturbed than wall time by other
    # processes on a shared machine, though busy-waiting threads inflate it somewhat.
    job_cpu_s: float
    losses: list[float]

    @property
    def mean_step_s(self) -> float:
        return statistics.fmean(self.step_times)

    @property
    def median_step_s(self) -> float:
        return statistics.median(self.step_times)


def make_rows(n: int) -> list[dict[str, str]]:
    """Preference pairs in the student's format: a few-shot prompt, right vs wrong answer."""
    from teachloop.agents.student import Student
    from teachloop.config import RunConfig
    from teachloop.domains import build_domains

    config = RunConfig()
    student = Student.for_config(None, build_domains(config), config)
    rows = []
    for i in range(n):
        a, b = 11 + (i * 37) % 80, 5 + (i * 53) % 90
        wrong = a + b + (10 if i % 2 else -1)
        rows.append(
            {
                "prompt": student.prompt(f"What is {a} + {b}?", "arithmetic.addition"),
                "chosen": f" {a + b}",
                "rejected": f" {wrong}",
            }
        )
    return rows


def run_plain(base: Path, rows: list[dict[str, str]], opts: argparse.Namespace, out: Path) -> Run:
    """(a) The job as a plain TRL script: DPOTrainer + a fresh LoRA, the same settings."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.losses: list[float] = []

        def on_step_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            self.times.append(time.perf_counter() - self.began)

        def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    started, started_cpu = time.perf_counter(), time.process_time()
    set_seed(opts.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    args = DPOConfig(
        output_dir=str(out / "scratch"),
        max_steps=opts.steps,
        per_device_train_batch_size=opts.batch_size,
        learning_rate=opts.learning_rate,
        beta=0.1,
        max_length=512,
        seed=opts.seed,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    timer = StepTimer()
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=TARGET_MODULES,
            task_type="CAUSAL_LM",
        ),
        callbacks=[timer],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.model.save_pretrained(str(out / "adapter"))
    return Run(
        "plain TRL",
        timer.times,
        time.perf_counter() - started,
        time.process_time() - started_cpu,
        timer.losses,
    )


def run_wrapper(base: Path, rows: list[dict[str, str]], opts: argparse.Namespace, out: Path) -> Run:
    """(b) The same job through teachloop's train_adapter."""
    from teachloop.config import TrainingConfig
    from teachloop.training.trainer import TrainingExample, train_adapter

    started, started_cpu = time.perf_counter(), time.process_time()
    config = TrainingConfig(
        method="dpo",
        steps=opts.steps,
        batch_size=opts.batch_size,
        learning_rate=opts.learning_rate,
        beta=0.1,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=tuple(TARGET_MODULES),
        max_length=512,
        seed=opts.seed,
    )
    result = train_adapter(
        base, [TrainingExample(**r) for r in rows], out / "adapter", config, progress=False
    )
    step_times = [s.step_time_s for s in result.log if s.step_time_s is not None]
    return Run(
        "train_adapter",
        step_times,
        time.perf_counter() - started,
        time.process_time() - started_cpu,
        [s.loss for s in result.log],
    )


def base_model(tiny: bool, scratch: Path) -> Path:
    if tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from tiny_model import build_tiny_model

        return build_tiny_model(scratch / "tiny-model")
    from teachloop.agents.embedded import prepare_embedded_model

    return prepare_embedded_model()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (quick check)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--examples", type=int, default=32, help="preference pairs")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed first run")
    parser.add_argument("--json", type=Path, help="also write the runs here")
    opts = parser.parse_args(argv)

    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()  # the same for both variants; keeps the report readable
    hf_logging.disable_progress_bar()
    rows = make_rows(opts.examples)
    runners = {"a": run_plain, "b": run_wrapper}
    with tempfile.TemporaryDirectory(prefix="dpo-overhead-") as tmp:
        scratch = Path(tmp)
        base = base_model(opts.tiny, scratch)
        print(f"model {base}, {opts.steps} DPO steps x batch {opts.batch_size}, {len(rows)} pairs")
        print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
        if not opts.no_warmup:
            warm = argparse.Namespace(**{**vars(opts), "steps": 1})
            run_plain(base, rows, warm, scratch / "warmup")
        runs: list[Run] = []
        order = "ab" * opts.repeats if opts.repeats % 2 else "abba" * (opts.repeats // 2)
        for i, key in enumerate(order):
            run = runners[key](base, rows, opts, scratch / f"run{i}")
            runs.append(run)
            # Another busy process on a 2-core machine shows up here: distrust those runs.
            print(
                f"  {run.variant:<14} mean step {run.mean_step_s:7.3f} s  "
                f"median {run.median_step_s:7.3f} s  "
                f"job {run.job_s:7.1f} s, {run.job_cpu_s:7.1f} cpu s  "
                f"(load average {os.getloadavg()[0]:.2f})"
            )
            gc.collect()
        print(f"load average at end: {os.getloadavg()[0]:.2f}")

    plain = [r for r in runs if r.variant == "plain TRL"]
    wrapped = [r for r in runs if r.variant == "train_adapter"]

    def mean_of(selected: list[Run], attr: str) -> float:
        return statistics.fmean(getattr(r, attr) for r in selected)

    # Same seed, data and settings: the two must have computed the same thing.
    loss_gap = max(abs(x - y) for x, y in zip(plain[0].losses, wrapped[0].losses, strict=True))
    print()

    def best_of(selected: list[Run]) -> float:
        return min(r.mean_step_s for r in selected)

    # "best": the least disturbed run of each, the fairest figure on a shared machine.
    columns = [
        ("mean step s", lambda sel: mean_of(sel, "mean_step_s")),
        ("median step s", lambda sel: mean_of(sel, "median_step_s")),
        ("best step s", best_of),
        ("job s", lambda sel: mean_of(sel, "job_s")),
        ("job cpu s", lambda sel: mean_of(sel, "job_cpu_s")),
    ]
    print(f"{'':<16}" + "".join(f"{title:>15}" for title, _ in columns))
    for name, selected in (("(a) plain TRL", plain), ("(b) wrapper", wrapped)):
        print(f"{name:<16}" + "".join(f"{column(selected):>15.3f}" for _, column in columns))
    ratios = {title: column(wrapped) / column(plain) for title, column in columns}
    print(f"{'ratio (b)/(a)':<16}" + "".join(f"{ratio:>15.3f}" for ratio in ratios.values()))
    print(f"largest loss difference between (a) and (b): {loss_gap:.2e}")
    if opts.json:
        opts.json.write_text(
            json.dumps(
                {
                    "runs": [{**asdict(r), "mean_step_s": r.mean_step_s} for r in runs],
                    "ratios": ratios,
                    "loss_gap": loss_gap,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
