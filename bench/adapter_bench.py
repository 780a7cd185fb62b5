"""In-process generation with a merged LoRA adapter vs the base model, same requests, same run.

Issue 16: with a promoted adapter the in-process backend was 2.5x slower one request at a time
and 8-16x slower batched. The merged model had kept PEFT's frozen parameters
(``requires_grad=False``), and PyTorch's matmul runs a frozen weight times a non-contiguous
input (the LM head reading the prompt's last position) as a bmm over the weight expanded per
row instead of one mm. The backend now gives the merged model the base model's flags back.

Three models, each a ``TransformersBackend`` loaded before timing: the base model, the base
with the adapter merged (as the backend loads it), and -- unless ``--no-before`` -- the same
merged model with its parameters frozen again, which is what the backend served before the fix.
Each scenario runs on all of them back to back (best of ``--repeat``), so a busy machine slows
them alike. Requests: ``Question: What is i + (i+7)?``, greedy, 12 new tokens, no stop string.

Without ``--adapter`` it makes an adapter shaped like the trainer's (TrainingConfig's rank, alpha
and target modules) with small random B weights: the cost of generation does not depend on the
values, and the replies stay close to the base model's, so every model writes the same number
of tokens (the table shows them). Usage (about 4 minutes on 2 busy cores):

    .venv/bin/python bench/adapter_bench.py [--adapter runs/adapters/v0001] [--dtype float32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import torch  # here, in the main thread: the profiler must start where torch registered it

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from figures import Figure, cpu_name

from teachloop.agents.backends.base import Completion, GenerationRequest
from teachloop.agents.backends.transformers_backend import TransformersBackend
from teachloop.agents.embedded import prepare_embedded_model
from teachloop.config import TrainingConfig

MAX_TOKENS = 12
SCENARIOS = [("8, one after another", 8, False), ("8 at once", 8, True), ("24 at once", 24, True)]


def make_adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter shaped like the trainer's, B weights small and random (not zero)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shape = TrainingConfig()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=shape.lora_r,
        lora_alpha=shape.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(shape.target_modules),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 1e-3)
    peft_model.save_pretrained(out)
    return out


def requests(n: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt=f"Question: What is {i} + ({i}+7)?", max_tokens=MAX_TOKENS)
        for i in range(n)
    ]


async def run(backend: TransformersBackend, n: int, batched: bool) -> tuple[float, int]:
    """Wall time and completion tokens of ``n`` requests, all at once or one after another."""
    started = time.perf_counter()
    if batched:
        done: list[Completion] = await asyncio.gather(*(backend.complete(r) for r in requests(n)))
    else:
        done = [await backend.complete(r) for r in requests(n)]
    return time.perf_counter() - started, sum(c.generation.completion_tokens for c in done)


def lm_head_kernel(backend: TransformersBackend) -> str:
    """The kernel that multiplies the prompt step's hidden states with the LM head."""
    from torch.profiler import ProfilerActivity, profile

    vocab = backend._model.get_output_embeddings().weight.shape[0]
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        backend._generate([r.model_copy(update={"max_tokens": 1}) for r in requests(2)])
    for event in prof.events():
        if event.name in ("aten::mm", "aten::bmm") and any(
            shape and shape[-1] == vocab for shape in event.input_shapes
        ):
            return f"{event.name} {event.input_shapes}"
    return "?"


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, "
        f"load average {load}"
    )


async def _figures() -> list[Figure]:
    model_dir = prepare_embedded_model()
    with tempfile.TemporaryDirectory(prefix="adapter-bench-") as tmp:
        adapter = make_adapter(model_dir, Path(tmp) / "adapter")
        walls: dict[str, float] = {}
        for label, adapter_dir in [("base", None), ("merged", adapter)]:
            backend = TransformersBackend(model_dir, max_batch_size=32, adapter_dir=adapter_dir)
            await backend.check()
            await run(backend, 1, False)  # warm-up
            walls[label] = (await run(backend, 24, True))[0]
            await backend.aclose()
    return [
        Figure(
            bench="adapter",
            name="merged LoRA adapter / base model, 24 requests at once",
            measured=round(walls["merged"] / walls["base"], 2),
            unit="x",
            target="<= 1.25",
            note=f"base {walls['base']:.1f} s",
        )
    ]


def figures() -> list[Figure]:
    return asyncio.run(_figures())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: the embedded one)")
    parser.add_argument("--adapter", type=Path, help="LoRA adapter (default: make one)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--repeat", type=int, default=1, help="best of N per cell")
    parser.add_argument(
        "--no-before", action="store_true", help="skip the frozen (pre-fix) merged model"
    )
    args = parser.parse_args()

    model_dir = args.model or prepare_embedded_model()
    with tempfile.TemporaryDirectory(prefix="adapter-bench-") as tmp:
        adapter = args.adapter or make_adapter(model_dir, Path(tmp) / "adapter")
        models: dict[str, TransformersBackend] = {}
        for label, adapter_dir in [("base", None), ("adapter", adapter), ("before", adapter)]:
            if label == "before" and args.no_before:
                continue
            b = TransformersBackend(
                model_dir, dtype=args.dtype, max_batch_size=32, adapter_dir=adapter_dir
            )
            await b.check()
            if label == "before":
                # What the backend served before the fix: PEFT leaves every parameter frozen.
                b._model.requires_grad_(False)
            await run(b, 1, False)  # warm-up
            models[label] = b
        try:
            print(f"machine: {machine()}")
            print(f"model: {model_dir} ({args.dtype}); adapter: {adapter}")
            print("LM head on the prompt step:")
            for label, b in models.items():
                print(f"  {label:8} {lm_head_kernel(b)}")
            best: dict[tuple[str, str], float] = {}
            tokens: dict[tuple[str, str], int] = {}
            for _ in range(args.repeat):
                for scenario, n, batched in SCENARIOS:
                    for label, b in models.items():
                        wall, toks = await run(b, n, batched)
                        key = (scenario, label)
                        best[key] = min(wall, best.get(key, wall))
                        tokens[key] = toks
        finally:
            for b in models.values():
                await b.aclose()

    header = "| requests | base | adapter (merged) | ratio |"
    rule = "|---|---|---|---|"
    if "before" in models:
        header += " adapter, frozen (before the fix) | ratio |"
        rule += "---|---|"
    print(f"\n{header}\n{rule}")
    for scenario, _, _ in SCENARIOS:
        base = best[(scenario, "base")]
        row = f"| {scenario} | {base:.2f} s |"
        for label in [lbl for lbl in models if lbl != "base"]:
            wall = best[(scenario, label)]
            row += f" {wall:.2f} s | {wall / base:.2f}x |"
        print(row)
    counts = {label: [tokens[(s, label)] for s, _, _ in SCENARIOS] for label in models}
    print(f"\ncompletion tokens per scenario: {counts}")
    if len({tuple(c) for c in counts.values()}) > 1:
        print("warning: the models wrote different numbers of tokens; ratios compare unequal work")
    print(f"machine after: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
