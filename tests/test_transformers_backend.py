"""The in-process transformers backend (on a tiny random model) and embedded-model preparation."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import random_lora_adapter
from tiny_model import build_tiny_model, greedy_text, load_reference

from teachloop.agents import embedded
from teachloop.agents.backends import decoding
from teachloop.agents.backends.base import Completion, GenerationRequest
from teachloop.agents.backends.decoding import Decoder, RowResult
from teachloop.agents.backends.transformers_backend import (
    TransformersBackend,
    extract_json_object,
)
from teachloop.errors import BackendUnavailable, ConfigError

PROMPTS = [
    "Question: What is 2 + 3?\nAnswer:",
    "Hi",
    "Question: What is the sum of 12 and 99, and then times 7 minus 4?\nAnswer:",
    "Answer: 42",
    "What is",
]
TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gemma"))


@pytest.fixture
async def backend(tiny_dir: Path) -> AsyncIterator[TransformersBackend]:
    # float32: batched vs. alone must be bit-identical for the equality tests.
    b = TransformersBackend(tiny_dir, dtype="float32", batch_window_s=0.05, name="tiny")
    await b.check()
    yield b
    await b.aclose()


def count_prefills(monkeypatch: pytest.MonkeyPatch, decoded: list[int] | None = None) -> list[int]:
    """The list collects each prefill's rows (a group of requests joining the batch),
    ``decoded`` each decode step's."""
    calls: list[int] = []
    join, decode = Decoder._join, Decoder._decode

    def counted_join(self: Decoder, joining: list, prompts: list) -> Any:
        calls.append(len(joining))
        return join(self, joining, prompts)

    def counted_decode(self: Decoder) -> Any:
        if decoded is not None:
            decoded.append(len(self.rows))
        return decode(self)

    monkeypatch.setattr(Decoder, "_join", counted_join)
    monkeypatch.setattr(Decoder, "_decode", counted_decode)
    return calls


async def run_all(backend: TransformersBackend, requests: list[GenerationRequest]) -> list[Any]:
    return await asyncio.wait_for(
        asyncio.gather(*(backend.complete(r) for r in requests), return_exceptions=True),
        TIMEOUT_S,
    )


async def run_alone(
    backend: TransformersBackend, requests: list[GenerationRequest]
) -> list[Completion]:
    return [await asyncio.wait_for(backend.complete(r), TIMEOUT_S) for r in requests]


async def test_concurrent_requests_share_one_prefill(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_prefills(monkeypatch)
    results = await run_all(backend, [GenerationRequest(prompt=p, max_tokens=8) for p in PROMPTS])
    assert all(isinstance(r, Completion) for r in results)
    assert len(calls) < len(PROMPTS)
    assert sum(calls) == len(PROMPTS)
    assert backend.prefills == len(calls)


async def test_max_batch_size_is_respected(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = TransformersBackend(tiny_dir, dtype="float32", max_batch_size=2, batch_window_s=0.05)
    try:
        await b.check()
        decoded: list[int] = []
        calls = count_prefills(monkeypatch, decoded)
        await run_all(b, [GenerationRequest(prompt=p, max_tokens=4) for p in PROMPTS])
        assert calls and max(calls) <= 2 and sum(calls) == len(PROMPTS)
        assert decoded and max(decoded) <= 2
    finally:
        await b.aclose()


async def test_greedy_and_sampling_requests_share_a_batch(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Temperature is per row: greedy rows beside sampled ones still say what they say alone."""
    greedy = [GenerationRequest(prompt=p, max_tokens=6) for p in PROMPTS[:2]]
    alone = await run_alone(backend, greedy)
    calls = count_prefills(monkeypatch)
    sampled = [GenerationRequest(prompt=p, max_tokens=6, temperature=0.7) for p in PROMPTS[:2]]
    results = await run_all(backend, [*greedy, *sampled])
    assert all(isinstance(r, Completion) for r in results)
    assert calls == [4]
    assert [c.text for c in results[:2]] == [c.text for c in alone]


async def test_a_request_joins_a_running_batch_and_leaves_when_done(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Continuous batching: a short request that arrives while a long one decodes joins at the
    next step and returns before the long one ends; both say what they say alone."""
    long_req = GenerationRequest(prompt=PROMPTS[2], max_tokens=40)
    short_req = GenerationRequest(prompt=PROMPTS[0], max_tokens=3)
    alone = await run_alone(backend, [long_req, short_req])
    assert alone[0].generation.completion_tokens == 40  # no early EOS: it runs the whole way
    decoded: list[int] = []
    calls = count_prefills(monkeypatch, decoded)
    order: list[str] = []

    async def tracked(name: str, request: GenerationRequest, after_steps: int) -> Completion:
        while len(decoded) < after_steps:
            await asyncio.sleep(0.001)
        c = await backend.complete(request)
        order.append(name)
        return c

    long_c, short_c = await asyncio.wait_for(
        asyncio.gather(tracked("long", long_req, 0), tracked("short", short_req, 5)), TIMEOUT_S
    )
    assert calls == [1, 1] and order == ["short", "long"]
    assert 2 in decoded  # they were decoded together
    assert [long_c.text, short_c.text] == [c.text for c in alone]
    assert long_c.generation.completion_tokens == alone[0].generation.completion_tokens


async def test_prompts_start_from_the_longest_prefix_already_computed(
    backend: TransformersBackend,
) -> None:
    """A prompt that shares a preamble with one prefilled before is prefilled from the end of
    the shared part, and still gives what transformers' own generate gives."""
    tokenizer, model = load_reference(backend.model_dir)
    preamble = "Question: What is 1 + 1?\nAnswer: 2\n\n"
    first = GenerationRequest(prompt=preamble + "Question: What is 2 + 2?\nAnswer:", max_tokens=8)
    second = GenerationRequest(prompt=preamble + "Question: What is 7 + 5?\nAnswer:", max_tokens=8)
    prefilled: list[int] = []
    original = backend._model.forward

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if kwargs["input_ids"].shape[1] > 1:
            prefilled.append(kwargs["input_ids"].shape[1])
        return original(*args, **kwargs)

    backend._model.forward = wrapped
    done = await run_alone(backend, [first, second])
    assert [c.text for c in done] == [
        greedy_text(tokenizer, model, r.prompt, r.max_tokens) for r in (first, second)
    ]
    a, b = (tokenizer(r.prompt).input_ids for r in (first, second))
    shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert shared > 10  # the preamble
    assert prefilled == [
        done[0].generation.prompt_tokens,
        done[1].generation.prompt_tokens - shared,
    ]


async def test_batches_past_the_sliding_window_match_generate(
    backend: TransformersBackend,
) -> None:
    """The tiny model's sliding window is 64 tokens: a request that runs past it, alone or
    beside others (which then wait for the batch to drain), gives what transformers' own
    generate gives."""
    tokenizer, model = load_reference(backend.model_dir)
    long_prompt = "Question: " + "one plus two and three, " * 8 + "\nAnswer:"
    assert len(tokenizer(long_prompt).input_ids) + 30 > 64
    requests = [GenerationRequest(prompt=long_prompt, max_tokens=30)] + [
        GenerationRequest(prompt=p, max_tokens=20) for p in PROMPTS[:3]
    ]
    expected = [greedy_text(tokenizer, model, r.prompt, r.max_tokens) for r in requests]
    together = await run_all(backend, requests)
    assert [c.text for c in together] == expected


@pytest.mark.parametrize("packs", [True, False])
def test_a_join_decodes_the_running_batch_in_the_same_forward(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, packs: bool
) -> None:
    """Requests that join a running batch are prefilled in the batch's own decode pass (one
    forward per step; with ``packs`` off, as for models it cannot pack, a prefill of their
    own first). Joiners with and without a reused prefix, the tiny model's sliding-window and
    full layers: every text is what generate gives."""
    tokenizer, model = load_reference(tiny_dir)
    decoder = Decoder(model, tokenizer, {tokenizer.eos_token_id})
    assert decoder.packs  # sdpa, full and sliding-window layers
    decoder.packs = packs
    forwards: list[bool] = []  # per forward: was it packed
    original = model.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        forwards.append("packed" in kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counted)
    preamble = "Question: What is 1 + 1?\nAnswer: 2\n\n"
    requests = [
        GenerationRequest(prompt=preamble + PROMPTS[0], max_tokens=30),
        GenerationRequest(prompt=preamble + PROMPTS[2], max_tokens=12),  # shares the preamble
        GenerationRequest(prompt=PROMPTS[1], max_tokens=10),
        GenerationRequest(prompt=PROMPTS[3], max_tokens=6),
    ]
    arrivals = {0: [0], 4: [1, 2], 9: [3]}  # step -> requests joining then
    results: dict[object, RowResult] = {}
    per_step: list[int] = []
    step = 0
    while step <= max(arrivals) or decoder.rows:
        before = len(forwards)
        arriving = [(i, requests[i]) for i in arrivals.get(step, [])]
        finished, joined = decoder.step(arriving)
        assert joined == bool(arriving)  # within the window: nobody waits
        results.update(finished)
        per_step.append(len(forwards) - before)
        step += 1
    assert [results[i].text for i in range(len(requests))] == [
        greedy_text(tokenizer, model, r.prompt, r.max_tokens) for r in requests
    ]
    joins_into_batch = [per_step[s] for s in arrivals if s > 0]
    assert joins_into_batch == ([1, 1] if packs else [2, 2])
    assert sum(forwards) == (2 if packs else 0)
    assert per_step[0] == 2  # the first request: its prefill, then a decode step


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_arrivals_give_what_generate_gives(tiny_dir: Path, seed: int) -> None:
    """Requests arrive at random steps, zero to three at a time, some sharing a preamble with
    earlier ones, with 1 to 20 tokens each: whatever the schedule (joins packed into the
    batch's pass, rows leaving as others join, waits at the sliding window), every text is
    what generate gives for the prompt alone."""
    import random

    rng = random.Random(seed)
    tokenizer, model = load_reference(tiny_dir)
    decoder = Decoder(model, tokenizer, {tokenizer.eos_token_id})
    preambles = ["", "Question: What is 1 + 1?\nAnswer: 2\n\n", "Answer: 7\n"]
    requests = [
        GenerationRequest(
            prompt=rng.choice(preambles) + rng.choice(PROMPTS), max_tokens=rng.randint(1, 20)
        )
        for _ in range(14)
    ]
    waiting = list(enumerate(requests))
    results: dict[object, RowResult] = {}
    while waiting or decoder.rows:
        arriving = waiting[: rng.randint(0, 3)] if waiting else []
        finished, joined = decoder.step(arriving)
        if joined:
            waiting = waiting[len(arriving) :]
        results.update(finished)
    assert [results[i].text for i in range(len(requests))] == [
        greedy_text(tokenizer, model, r.prompt, r.max_tokens) for r in requests
    ]


async def test_decode_steps_append_to_the_cache_in_place(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decode step writes its keys into spare columns of the layer's buffer (no copy of the
    cache); when the spare columns run out the layer copies once into a larger buffer. With
    3 spare columns both happen many times, and every text is still what generate gives."""
    monkeypatch.setattr(decoding, "SPARE_COLUMNS", 3)
    tokenizer, model = load_reference(backend.model_dir)
    buffers: list[tuple[int, int]] = []  # per decode step: layer 0's keys, (address, columns)
    decode = Decoder._decode

    def tracked(self: Decoder) -> Any:
        finished = decode(self)
        keys = self.cache.layers[0].keys if self.rows else None
        if keys is not None:
            buffers.append((keys.data_ptr(), keys.shape[-2]))
        return finished

    monkeypatch.setattr(Decoder, "_decode", tracked)
    requests = [GenerationRequest(prompt=p, max_tokens=20) for p in PROMPTS[:3]]
    together = await run_all(backend, requests)
    assert [c.text for c in together] == [
        greedy_text(tokenizer, model, r.prompt, r.max_tokens) for r in requests
    ]
    grown = [b for a, b in itertools.pairwise(buffers) if b[1] == a[1] + 1]
    in_place = [b for a, b in itertools.pairwise(buffers) if b[0] == a[0]]
    assert len(grown) > 10
    assert len(in_place) >= len(grown) / 2  # 3 of every 4 steps when rows stay
    assert len({address for address, _ in buffers}) > 3  # and copies when the room is full


async def test_every_step_runs_on_the_backends_own_thread(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyTorch's OpenMP workers belong to the thread that calls in: steps must not wander over
    the event loop's shared executor, even while other blocking work keeps it busy."""
    threads: set[int] = set()
    step = Decoder.step

    def tracked(self: Decoder, *args: Any) -> Any:
        threads.add(threading.get_ident())
        return step(self, *args)

    monkeypatch.setattr(Decoder, "step", tracked)
    done = asyncio.Event()

    async def keep_the_executor_busy() -> None:
        while not done.is_set():
            await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.001) for _ in range(3)))

    busy = asyncio.create_task(keep_the_executor_busy())
    results = await run_all(backend, [GenerationRequest(prompt=p, max_tokens=12) for p in PROMPTS])
    done.set()
    await busy
    assert all(isinstance(r, Completion) for r in results)
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_batched_output_equals_output_alone(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Different prompt lengths (left padding), max_tokens and stops in one batch.
    requests = [
        GenerationRequest(prompt=p, max_tokens=6 + 3 * i, stop=("\n",) if i % 2 else ())
        for i, p in enumerate(PROMPTS)
    ]
    alone = await run_alone(backend, requests)
    calls = count_prefills(monkeypatch)
    together = await run_all(backend, requests)
    assert len(calls) == 1
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.generation.completion_tokens for c in together] == [
        c.generation.completion_tokens for c in alone
    ]
    assert len({c.text for c in alone}) > 1, "the tiny model should not ignore its prompt"


def _stop_inside(text: str) -> tuple[str, int]:
    """A two-character substring of ``text`` whose first occurrence is past the start."""
    for i in range(2, len(text) - 1):
        stop = text[i : i + 2]
        if text.find(stop) == i and stop.strip():
            return stop, i
    raise AssertionError(f"no usable stop string in {text!r}")


async def test_stop_strings_truncate_and_end_generation_early(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = PROMPTS[0]
    full = (await run_alone(backend, [GenerationRequest(prompt=prompt, max_tokens=24)]))[0]
    stop, index = _stop_inside(full.text)
    stopped_req = GenerationRequest(prompt=prompt, max_tokens=24, stop=(stop,))
    stopped = (await run_alone(backend, [stopped_req]))[0]
    assert stopped.text == full.text[:index]
    assert stopped.generation.completion_tokens < full.generation.completion_tokens

    # In a batch, one request's stop string must not cut another request's output.
    calls = count_prefills(monkeypatch)
    free_req = GenerationRequest(prompt=prompt, max_tokens=24)
    both = await run_all(backend, [stopped_req, free_req])
    assert len(calls) == 1
    assert both[0].text == stopped.text
    assert both[1].text == full.text


async def test_token_counts_are_real(backend: TransformersBackend) -> None:
    tokenizer = backend._tokenizer
    results = await run_all(backend, [GenerationRequest(prompt=p, max_tokens=7) for p in PROMPTS])
    for prompt, c in zip(PROMPTS, results, strict=True):
        assert c.generation.prompt_tokens == len(tokenizer(prompt).input_ids)
        assert c.generation.prompt_tokens >= 2  # <bos> plus at least one token
        assert 1 <= c.generation.completion_tokens <= 7
        assert c.generation.model == "tiny"
        assert c.generation.endpoint == "in-process"
        assert c.generation.latency_s > 0


async def test_a_model_exception_reaches_every_caller(backend: TransformersBackend) -> None:
    original = backend._model.forward

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom in forward")

    backend._model.forward = broken
    results = await run_all(backend, [GenerationRequest(prompt=p) for p in PROMPTS[:3]])
    assert all(isinstance(r, RuntimeError) and "boom" in str(r) for r in results)

    backend._model.forward = original  # the worker survived and serves again
    ok = await run_all(backend, [GenerationRequest(prompt="Hi", max_tokens=3)])
    assert isinstance(ok[0], Completion)


async def test_aclose_fails_waiting_callers(tiny_dir: Path) -> None:
    b = TransformersBackend(tiny_dir, dtype="float32", max_batch_size=1, batch_window_s=0.0)
    await b.check()
    release = threading.Event()
    original = b._model.forward

    def slow(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        return original(*args, **kwargs)

    b._model.forward = slow
    tasks = [asyncio.create_task(b.complete(GenerationRequest(prompt=p))) for p in PROMPTS[:3]]
    await asyncio.sleep(0.2)  # the first request is now in its prefill, the rest waiting
    await b.aclose()
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), TIMEOUT_S)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    with pytest.raises(BackendUnavailable):
        await b.complete(GenerationRequest(prompt="Hi"))


async def test_missing_model_dir_is_backend_unavailable(tmp_path: Path) -> None:
    b = TransformersBackend(tmp_path / "nope")
    with pytest.raises(BackendUnavailable, match="cannot load model"):
        await b.check()
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(b.complete(GenerationRequest(prompt="Hi")), TIMEOUT_S)
    await b.aclose()


def _scripted(replies: list[str], seen: list[GenerationRequest]) -> Callable[..., Any]:
    async def submit(request: GenerationRequest) -> RowResult:
        seen.append(request)
        return RowResult(replies[len(seen) - 1], 5, 3)

    return submit


async def test_json_schema_retries_until_required_keys_parse(
    backend: TransformersBackend,
) -> None:
    seen: list[GenerationRequest] = []
    backend._submit = _scripted(  # type: ignore[method-assign]
        ["no json here", '{"other": 1}', 'Sure: {"answer": 5, "why": "2+3"} done'], seen
    )
    schema = {"type": "object", "required": ["answer"]}
    c = await backend.complete(GenerationRequest(prompt="Q", json_schema=schema))
    assert json.loads(c.text) == {"answer": 5, "why": "2+3"}
    assert [r.temperature for r in seen] == sorted({r.temperature for r in seen})  # bumped
    assert all(r.json_schema is None for r in seen)
    assert c.generation.completion_tokens == 9  # three attempts of 3 tokens


async def test_json_schema_gives_back_last_text_after_three_failures(
    backend: TransformersBackend,
) -> None:
    seen: list[GenerationRequest] = []
    backend._submit = _scripted(["a", "b", "c", "d"], seen)  # type: ignore[method-assign]
    c = await backend.complete(GenerationRequest(prompt="Q", json_schema={"required": ["x"]}))
    assert c.text == "c"
    assert len(seen) == 3


def test_extract_json_object() -> None:
    assert extract_json_object('x {"a": {"b": 1}} y', ["a"]) == '{"a": {"b": 1}}'
    assert extract_json_object('{"a": 1', ["a"]) is None
    assert extract_json_object('{"b": 1} {"a": 2}', ["a"]) == '{"a": 2}'
    assert extract_json_object("[1, 2]", []) is None


# -- a merged LoRA adapter (issue 16) --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_adapter(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for the tiny model with random B weights, so merging it changes what the
    model says."""
    return random_lora_adapter(tiny_dir, tmp_path_factory.mktemp("tiny-adapter") / "v0001")


def _loaded(model_dir: Path, adapter_dir: Path | None, dtype: str) -> TransformersBackend:
    b = TransformersBackend(model_dir, dtype=dtype, adapter_dir=adapter_dir)
    b._load()
    return b


def _matrix_products(backend: TransformersBackend, requests: list[GenerationRequest]) -> list[Any]:
    """The matrix-product kernels one generate call runs, with their input shapes, in order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        backend._generate(requests)
    kernels = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")
    return [(e.name, e.input_shapes) for e in prof.events() if e.name in kernels]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_merged_adapter_leaves_the_base_models_parameters_as_they_were(
    tiny_dir: Path, tiny_adapter: Path, dtype: str
) -> None:
    """The cause of issue 16: PEFT froze every parameter and the merged model kept them frozen.
    Dtype, tying and module types were already the base model's; the flags were not."""
    base = _loaded(tiny_dir, None, dtype)._model
    merged = _loaded(tiny_dir, tiny_adapter, dtype)._model
    assert type(merged) is type(base)
    assert [type(m) for m in merged.modules()] == [type(m) for m in base.modules()]
    params = dict(merged.named_parameters())
    assert list(params) == [n for n, _ in base.named_parameters()]
    for name, p in base.named_parameters():
        assert params[name].dtype == p.dtype, name
        assert params[name].requires_grad == p.requires_grad, name
    for model in (base, merged):
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        assert tied == bool(model.config.tie_word_embeddings)


def test_merged_adapter_runs_the_base_models_matrix_products(
    tiny_dir: Path, tiny_adapter: Path
) -> None:
    """The LM head reads the prompt's last position (a non-contiguous slice): with a frozen
    weight PyTorch ran it as a bmm over the weight expanded per row instead of one mm."""
    requests = [GenerationRequest(prompt=p, max_tokens=3) for p in PROMPTS[:3]]
    base = _matrix_products(_loaded(tiny_dir, None, "bfloat16"), requests)
    merged = _matrix_products(_loaded(tiny_dir, tiny_adapter, "bfloat16"), requests)
    assert any(name == "aten::mm" for name, _ in base)
    assert merged == base


async def test_merged_adapter_replies_equal_unmerged_peft_replies(
    tiny_dir: Path, tiny_adapter: Path
) -> None:
    """Greedy replies through the backend (merged; batched and one at a time) equal PEFT's with
    the adapter unmerged, and differ from the base model's."""
    tokenizer, base_model = load_reference(tiny_dir)
    base_texts = [greedy_text(tokenizer, base_model, p, 10) for p in PROMPTS]
    _, unmerged = load_reference(tiny_dir, tiny_adapter)
    expected = [greedy_text(tokenizer, unmerged, p, 10) for p in PROMPTS]
    assert expected != base_texts  # the adapter does something

    b = TransformersBackend(tiny_dir, dtype="float32", adapter_dir=tiny_adapter)
    try:
        requests = [GenerationRequest(prompt=p, max_tokens=10) for p in PROMPTS]
        batched = await run_all(b, requests)
        alone = await run_alone(b, requests)
    finally:
        await b.aclose()
    assert [c.text for c in batched] == expected
    assert [c.text for c in alone] == expected


# -- embedded model preparation (conversion faked; the real one is the slow test) ------------


def test_prepare_converts_once_and_never_leaves_half_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    converted: list[Path] = []

    def fake_convert(out_dir: Path) -> None:
        converted.append(out_dir)
        (out_dir / "config.json").write_text("{}")
        (out_dir / embedded._MARKER).write_text(json.dumps({"format": embedded._FORMAT_VERSION}))

    def failing_convert(out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(embedded, "_convert", failing_convert)
    with pytest.raises(RuntimeError):
        embedded.prepare_embedded_model(tmp_path)
    models = tmp_path / "models"
    assert list(models.iterdir()) == []  # neither a target nor a leftover temp dir

    # A directory without the marker (e.g. copied by hand) is rebuilt, not trusted.
    target = embedded.embedded_model_dir(tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    monkeypatch.setattr(embedded, "_convert", fake_convert)
    assert embedded.prepare_embedded_model(tmp_path) == target
    assert embedded.is_prepared(target)
    assert embedded.prepare_embedded_model(tmp_path) == target
    assert len(converted) == 1
    assert [p.name for p in models.iterdir()] == [target.name]


def test_default_cache_root_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEACHLOOP_CACHE", str(tmp_path))
    assert embedded.embedded_model_dir() == tmp_path / "models" / "gemma-3-270m"


def test_resolve_model_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert embedded.resolve_model_path(str(tmp_path)) == tmp_path
    with pytest.raises(ConfigError, match="no-such-model"):
        embedded.resolve_model_path(str(tmp_path / "no-such-model"))
    monkeypatch.setattr(embedded, "prepare_embedded_model", lambda: tmp_path / "prepared")
    assert embedded.resolve_model_path(embedded.EMBEDDED_MODEL) == tmp_path / "prepared"


# -- the real embedded model -----------------------------------------------------------------


@pytest.mark.slow
async def test_real_embedded_model_prepares_and_answers(tmp_path: Path) -> None:
    model_dir = await asyncio.to_thread(embedded.prepare_embedded_model, tmp_path)
    assert embedded.is_prepared(model_dir)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    ids = tokenizer("Hello").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    chat = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert chat == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"

    b = TransformersBackend(model_dir, name=embedded.EMBEDDED_MODEL)
    try:
        c = await b.complete(
            GenerationRequest(
                prompt="Question: What is 2 + 3?\nAnswer:", max_tokens=16, stop=("\n",)
            )
        )
    finally:
        await b.aclose()
    assert c.text.strip(), "empty reply"
    assert any(ch.isdigit() for ch in c.text), f"no digit in {c.text!r}"
    assert c.generation.prompt_tokens > 5 and c.generation.completion_tokens >= 1

    started = time.monotonic()
    assert embedded.prepare_embedded_model(tmp_path) == model_dir
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [(False, False, "float32"), (True, False, "bfloat16"), (False, True, "bfloat16")],
)
def test_auto_dtype_is_bfloat16_only_where_the_cpu_computes_in_it(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, expected: str
) -> None:
    import torch

    from teachloop.agents.backends.transformers_backend import model_dtype

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert model_dtype("auto") == getattr(torch, expected)
    assert model_dtype("bfloat16") == torch.bfloat16 and model_dtype("float32") == torch.float32
