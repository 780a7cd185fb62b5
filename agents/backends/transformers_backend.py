"""In-process generation with transformers: the embedded default, so a fresh machine needs no
server. Concurrent ``complete()`` calls are queued and one worker task keeps them in one
continuously batched decode (``decoding.Decoder``: requests join and leave the running batch
at every step), each step run on the backend's own model thread so the event loop stays
responsive.

That thread is always the same one: PyTorch's OpenMP workers belong to the thread that calls
into it, so steps that ran on whichever thread of the event loop's shared executor was free
(beside other blocking work there) started a new worker team while the last one still spun.
On 2 cores a forward then took 1.8x as long (`asyncio.to_thread` vs one thread, 145 vs 81 ms).

With ``adapter_dir`` the backend serves a fine-tuned student: a PEFT LoRA adapter is loaded on
top of the base model and merged into its weights (``merge_and_unload``), so generation costs
what the base model costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from teachloop.agents.backends.base import Backend, Completion, GenerationRequest
from teachloop.errors import BackendUnavailable
from teachloop.messages import Generation

T = TypeVar("T")

if TYPE_CHECKING:  # decoding imports torch: loaded with the model, not with this module
    import torch

    from teachloop.agents.backends.decoding import Decoder, RowResult

ENDPOINT = "in-process"
JSON_ATTEMPTS = 3
# Added to the temperature on each structured-output retry: a greedy retry would repeat itself.
JSON_RETRY_TEMPERATURE_STEP = 0.4


@dataclass(eq=False)  # identity comparison: the worker tracks callers by their pending entry
class _Pending:
    request: GenerationRequest
    future: asyncio.Future[RowResult]
    enqueued_at: float = field(default_factory=time.monotonic)


def model_dtype(name: str) -> torch.dtype:
    """The torch dtype for ``name``; ``"auto"``: bfloat16 where the CPU multiplies it natively
    (AMX or AVX-512 BF16), float32 elsewhere, where bfloat16 is emulated: on an AVX2-only CPU
    200 short answers took 118 s in bfloat16 and 51 s in float32 (docs/performance.md)."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return torch.bfloat16 if native else torch.float32


class TransformersBackend(Backend):
    """A causal LM loaded from a local HF directory, batching concurrent requests.

    The model loads on first use (or in ``check()``), in a worker thread. Per-request stop
    strings, ``max_tokens`` and temperature apply per row, so a request's output in a batch
    matches its output alone (greedy), and a row leaves the batch as soon as it is done.

    ``adapter_dir`` names a PEFT LoRA adapter (``save_pretrained`` output) to merge into the
    base model after loading; the reported model name is then ``{base}+{adapter}`` unless
    ``name`` is given.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: str = "auto",
        max_batch_size: int = 16,
        batch_window_s: float = 0.02,
        name: str | None = None,
        adapter_dir: str | Path | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.model_dir = Path(model_dir)
        self.adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
        self.dtype = dtype
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_s
        default_name = self.model_dir.name
        if self.adapter_dir is not None:
            default_name = f"{default_name}+{self.adapter_dir.name}"
        self.name = name or default_name
        self.prefills = 0  # observability: groups of waiting requests that joined the batch
        self._model: Any = None
        self._tokenizer: Any = None
        # _generate (benches) loads in its caller's thread, everything else on the model thread.
        self._load_lock = threading.Lock()
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-model")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def check(self) -> None:
        await self._on_model_thread(self._load)

    async def aclose(self) -> None:
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self._queue is not None:
            self._fail_queued(BackendUnavailable(f"backend {self.name} was closed"))
        self._model_thread.shutdown(wait=False)  # a step in flight finishes on its own

    async def _on_model_thread(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise BackendUnavailable(f"backend {self.name} was closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._model_thread, fn, *args)

    def _load(self) -> None:
        """Load tokenizer and model once (blocking; call in a thread)."""
        with self._load_lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from transformers import AutoModelForCausalLM, AutoTokenizer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # the run shows its own progress
                tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(
                    self.model_dir, dtype=model_dtype(self.dtype), local_files_only=True
                )
            except Exception as err:
                reason = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                raise BackendUnavailable(
                    f"cannot load model from {self.model_dir}: {reason}"
                ) from err
            if self.adapter_dir is not None:
                model = self._merge_adapter(model)
            model.eval()
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._tokenizer = tokenizer
            self._model = model

    def _merge_adapter(self, model: Any) -> Any:
        """Apply the LoRA adapter in ``adapter_dir`` and fold it into the base weights."""
        adapter_dir = self.adapter_dir
        assert adapter_dir is not None
        if not (adapter_dir / "adapter_config.json").is_file():
            raise BackendUnavailable(
                f"cannot load adapter from {adapter_dir}: no adapter_config.json there"
            )
        try:
            from peft import PeftModel
        except ImportError as err:
            raise BackendUnavailable(
                f"cannot load adapter from {adapter_dir}: peft is not installed "
                "(install teachloop[train])"
            ) from err
        # PEFT freezes every parameter of the model it wraps (is_trainable=False) and
        # merge_and_unload leaves them frozen; the merged model gets the base model's flags back.
        # They are not only about training: PyTorch's matmul folds a 3-D input into one matrix
        # product when the weight requires grad, but multiplies a non-contiguous input with a
        # frozen weight as a batched product over the weight expanded per row. The LM head reads
        # such an input on every prompt step (the last position's slice), so with a frozen head
        # (Gemma's is 262k x 640) each prompt step made one pass over the head's weights per
        # request instead of one per batch: issue 16 measured about 1 s more per request,
        # 2.5-16x the base model's wall time.
        requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        try:
            peft_model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
            merged = peft_model.merge_and_unload()
        except Exception as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise BackendUnavailable(f"cannot load adapter from {adapter_dir}: {reason}") from err
        for name, param in merged.named_parameters():
            param.requires_grad_(requires_grad.get(name, param.requires_grad))
        return merged

    # -- requests ----------------------------------------------------------------------------

    async def complete(self, request: GenerationRequest) -> Completion:
        if request.json_schema is not None:
            return await self._complete_json(request)
        started = time.monotonic()
        row = await self._submit(request)
        return Completion(
            text=row.text,
            generation=Generation(
                model=self.name,
                endpoint=ENDPOINT,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                latency_s=time.monotonic() - started,
            ),
        )

    async def _complete_json(self, request: GenerationRequest) -> Completion:
        """No constrained decoding in-process: generate, check, retry hotter.

        Returns the first reply that holds a JSON object with the schema's required keys (just
        that JSON text), else the last raw reply for the caller to record as a failure. Token
        counts and latency add up all attempts: they are what the reply cost.
        """
        schema = request.json_schema or {}
        required = [k for k in schema.get("required", []) if isinstance(k, str)]
        started = time.monotonic()
        prompt_tokens = completion_tokens = 0
        text = ""
        for attempt in range(JSON_ATTEMPTS):
            temperature = request.temperature + attempt * JSON_RETRY_TEMPERATURE_STEP
            attempt_request = request.model_copy(
                update={"json_schema": None, "temperature": temperature}
            )
            row = await self._submit(attempt_request)
            prompt_tokens += row.prompt_tokens
            completion_tokens += row.completion_tokens
            text = row.text
            found = extract_json_object(text, required)
            if found is not None:
                text = found
                break
        return Completion(
            text=text,
            generation=Generation(
                model=self.name,
                endpoint=ENDPOINT,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_s=time.monotonic() - started,
            ),
        )

    async def _submit(self, request: GenerationRequest) -> RowResult:
        if self._closed:
            raise BackendUnavailable(f"backend {self.name} was closed")
        queue = self._ensure_worker()
        future: asyncio.Future[RowResult] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Pending(request, future))
        return await future

    def _ensure_worker(self) -> asyncio.Queue[_Pending]:
        """Start the worker on the running loop (again, if a previous loop went away)."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._worker is None:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = None
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run_worker(self._queue), name=f"{self.name}-gen")
        return self._queue

    # -- the worker --------------------------------------------------------------------------

    async def _run_worker(self, queue: asyncio.Queue[_Pending]) -> None:
        waiting: list[_Pending] = []
        active: dict[int, _Pending] = {}  # by id: the decoder's key for the row
        decoder: Decoder | None = None
        try:
            while True:
                if not waiting and not active:
                    waiting.append(await queue.get())
                    # Let concurrent callers join the first prefill. Polling with get_nowait,
                    # not wait_for(queue.get()): on Python 3.11 a timeout racing a put can lose it.
                    deadline = time.monotonic() + self.batch_window_s
                    while len(waiting) < self.max_batch_size:
                        while not queue.empty():
                            waiting.append(queue.get_nowait())
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or len(waiting) >= self.max_batch_size:
                            break
                        await asyncio.sleep(min(remaining, 0.005))
                while not queue.empty():  # whatever arrived during the last step
                    waiting.append(queue.get_nowait())
                waiting = [p for p in waiting if not p.future.done()]  # drop cancelled callers
                room = self.max_batch_size - len(active)
                joining = waiting[:room]
                leaving = {key for key, p in active.items() if p.future.done()}
                for key in leaving:
                    del active[key]
                try:
                    if decoder is None:
                        decoder = await self._on_model_thread(self._decoder)
                    finished, joined = await self._on_model_thread(
                        decoder.step, [(id(p), p.request) for p in joining], leaving
                    )
                except Exception as err:
                    # A failed step ends its batch, not the worker: the batch's callers and
                    # those joining it hear why; later requests start a new batch.
                    self._fail([*active.values(), *joining], err)
                    waiting = waiting[len(joining) :]
                    active.clear()
                    decoder = None
                    continue
                if joined:
                    self.prefills += 1
                    waiting = waiting[len(joining) :]
                    active.update((id(p), p) for p in joining)
                for key, row in finished:
                    pending = active.pop(key)  # type: ignore[call-overload]
                    if not pending.future.done():
                        pending.future.set_result(row)
        except asyncio.CancelledError:
            closed = BackendUnavailable(f"backend {self.name} was closed")
            self._fail([*waiting, *active.values()], closed)
            raise
        except BaseException as err:  # a bug here must not leave callers waiting forever
            self._fail([*waiting, *active.values()], err)
            self._fail_queued(err)
            raise

    @staticmethod
    def _fail(pendings: list[_Pending], err: BaseException) -> None:
        for pending in pendings:
            if not pending.future.done():
                pending.future.set_exception(err)

    def _fail_queued(self, err: BaseException) -> None:
        queue = self._queue
        while queue is not None and not queue.empty():
            self._fail([queue.get_nowait()], err)

    def _generate(self, requests: list[GenerationRequest]) -> list[RowResult]:
        """``requests`` as one batch decoded to the end, outside the worker (blocking; for
        benchmarks and kernel tests)."""
        return self._decoder().run(requests)

    def _decoder(self) -> Decoder:
        """A new batch over the model, loaded first (blocking)."""
        from teachloop.agents.backends.decoding import Decoder

        self._load()
        return Decoder(self._model, self._tokenizer, _eos_ids(self._model, self._tokenizer))


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def extract_json_object(text: str, required: list[str]) -> str | None:
    """The first ``{...}`` span of ``text`` that parses as a JSON object with ``required`` keys."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            value, end = None, start
        if isinstance(value, dict) and all(k in value for k in required):
            return text[start:end]
        start = text.find("{", start + 1)
    return None
