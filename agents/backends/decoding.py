"""Continuous batching for the in-process backend: requests join and leave one running batch
at every decode step, instead of waiting for a whole ``generate`` call to end.

With static batching a call runs until its longest row is done: a student's 4-token answer
waits for a teacher's 40-token reply batched with it, and a request that arrives meanwhile
waits for the whole call. Lessons alternate short and long calls, so at 8 lessons in flight
the batches were half idle (measured: 5.3 rows per call, 39% of row-steps spent on rows
already finished). Here each step feeds every active row's last token; a row leaves as soon
as it ends (its stop string, EOS or ``max_tokens``) and waiting requests join at the next
step: their prompts are prefilled in the same forward pass that decodes the running rows
(``_forward_with_batch``), so the weights are read once for both.

The batch's KV cache is one ``DynamicCache`` with rows padded to a common length (masked
columns on the left, and between a reused prefix and the rest of a prompt): a joining group is
prefilled into a cache of its own (in the batch's pass: its tokens packed after the batch's in
one row for the linear layers, attention per group), then both caches are padded on the left
to the longer one and concatenated. Leading columns every row pads are cut when rows leave,
so the cache stays as long as its longest live row. A decode step writes its column into
spare room after the cached ones (``_AppendInPlace``) rather than copying the cache. Each row
keeps its own positions (RoPE) and attention mask, so a row's tokens are those it would get
alone (greedy; bit-identical in float32; in bfloat16 the rounding of a matrix product depends
on how many rows it has, so near-ties may break differently).
Models with sliding-window layers (Gemma 3: 512 tokens) keep only the window's keys there, so a
group joins a running batch only if the batch stays within the window until its rows end;
otherwise it waits until the batch drains and starts the next one.

Prompts share long beginnings (each role's few-shot preamble), and a token's keys and values
depend only on the tokens before it, so a joining prompt starts from the longest beginning it
shares with one of the last 32 prompts prefilled and computes only the rest.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from teachloop.agents.backends.base import GenerationRequest, truncate_at_stop

# Columns of spare room a cache layer takes when it must copy anyway (see ``_AppendInPlace``).
SPARE_COLUMNS = 64


@dataclass(frozen=True)
class RowResult:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(eq=False)
class _Row:
    key: object  # the caller's handle, returned with the result
    request: GenerationRequest
    prompt_tokens: int
    tokens: list[int] = field(default_factory=list)
    window: int = 0  # tokens to decode when looking for a stop string


class Decoder:
    """One running batch over ``model``; not thread-safe (one generation thread drives it)."""

    def __init__(self, model: Any, tokenizer: Any, eos_ids: set[int]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        window = getattr(model.config, "sliding_window", None)
        # Longest a batch may grow to while rows join and leave (the cache's columns are
        # rearranged then, which a layer holding only the window's last keys cannot follow).
        self.limit: int | None = window - 1 if window else None
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # [rows, cache length], 0 where a row pads
        self.prefixes = _Prefixes()
        self.packs = _packable(model)

    def step(
        self, joining: list[tuple[object, GenerationRequest]], leaving: set[object] = frozenset()
    ) -> tuple[list[tuple[object, RowResult]], bool]:
        """Drop the rows of ``leaving`` (callers that went away), prefill ``joining`` into the
        batch if it fits (see the module's docstring), then decode one token for every row.
        Returns the rows that ended, and whether ``joining`` joined (else: offer it again)."""
        finished: list[tuple[object, RowResult]] = []
        if leaving:
            self._keep([i for i, r in enumerate(self.rows) if r.key not in leaving])
        joined = decoded = False
        with torch.inference_mode():
            if joining:
                prompts = self.tokenizer([r.prompt for _, r in joining]).input_ids
                if joined := self._fits(max(map(len, prompts)), joining):
                    decoded = bool(self.rows) and self.packs  # the join's pass decodes them
                    finished += self._join(joining, prompts)
            if self.rows and not decoded:
                finished += self._decode()
        return finished, joined

    def run(self, requests: list[GenerationRequest]) -> list[RowResult]:
        """``requests`` as one batch, decoded to the end (the backend's worker steps instead)."""
        results: dict[object, RowResult] = {}
        finished, _ = self.step(list(enumerate(requests)))
        results.update(finished)
        while self.rows:
            results.update(self.step([])[0])
        return [results[i] for i in range(len(requests))]

    def _fits(self, prompt_length: int, joining: list[tuple[object, GenerationRequest]]) -> bool:
        if not self.rows or self.limit is None:
            return True
        assert self.mask is not None
        # Every row can still grow by its remaining tokens; the batch is as long as its longest.
        grow = max(
            [r.max_tokens for _, r in joining]
            + [r.request.max_tokens - len(r.tokens) for r in self.rows]
        )
        return max(self.mask.shape[1], prompt_length) + grow <= self.limit

    # -- the forward passes ------------------------------------------------------------------

    def _join(
        self, joining: list[tuple[object, GenerationRequest]], prompts: list[list[int]]
    ) -> list[tuple[object, RowResult]]:
        """Prefill the joining ``prompts`` (token ids), each on top of the longest prefix of it
        already computed (``_Prefixes``): row r's columns are [pad | its prefix's keys | pad |
        the rest of its prompt], its positions those of its own tokens."""
        hits = [self.prefixes.longest(p) for p in prompts]
        known = max(len(h) for h in hits)
        rest = max(len(p) - len(h) for p, h in zip(prompts, hits, strict=True))
        if self.limit is not None and known + rest > self.limit:
            hits, known, rest = [_Prefix() for _ in prompts], 0, max(map(len, prompts))
        n = len(prompts)
        ids = torch.full((n, rest), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, known + rest), dtype=torch.long)
        for r, (prompt, hit) in enumerate(zip(prompts, hits, strict=True)):
            tail = prompt[len(hit) :]
            ids[r, rest - len(tail) :] = torch.tensor(tail)
            mask[r, known - len(hit) : known] = 1
            mask[r, known + rest - len(tail) :] = 1
        ids, mask = ids.to(self.model.device), mask.to(self.model.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, known:]
        cache = _cache(self.model.config)
        if known:
            some = next(h for h in hits if len(h))  # shapes for the rows without a hit
            for i in range(len(some.keys)):
                keys = [_pad_left((h or some).keys[i][:, :, : len(h)], known) for h in hits]
                values = [_pad_left((h or some).values[i][:, :, : len(h)], known) for h in hits]
                cache.update(torch.cat(keys), torch.cat(values), i)
        if self.rows and self.packs:
            logits = self._forward_with_batch(ids, mask, positions, cache)
        else:
            logits = self._forward(ids, mask, positions, cache)
        if self.limit is None or known + rest <= self.limit:  # windowed layers hold every column
            for r, prompt in enumerate(prompts):
                real = mask[r].bool()
                self.prefixes.add(
                    prompt,
                    [layer.keys[r : r + 1, :, real] for layer in cache.layers],
                    [layer.values[r : r + 1, :, real] for layer in cache.layers],
                )
        rows = [
            _Row(
                key=key,
                request=request,
                prompt_tokens=len(prompts[i]),
                window=max((len(s) for s in request.stop), default=0) + 4,
            )
            for i, (key, request) in enumerate(joining)
        ]
        self._merge(rows, cache, mask)
        # The logits are the batch's rows' (when decoded with it), then the joining ones'.
        return self._advance(logits, range(len(self.rows) - len(logits), len(self.rows)))

    def _decode(self) -> list[tuple[object, RowResult]]:
        last, positions = self._next_inputs()
        logits = self._forward(last, self.mask, positions, self.cache)
        return self._advance(logits, range(len(self.rows)))

    def _next_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's last token and its position ([rows, 1] each), for the step that feeds
        them; the mask grows by the column they take."""
        assert self.mask is not None
        last = torch.tensor([[r.tokens[-1]] for r in self.rows], device=self.model.device)
        # The token fed is a row's last one: its position is the tokens before it.
        positions = torch.tensor(
            [[r.prompt_tokens + len(r.tokens) - 1] for r in self.rows], device=self.model.device
        )
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        return last, positions

    def _forward_with_batch(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """One forward pass for the batch's next token and the joining rows (``ids`` after
        ``cache``, as ``_forward`` takes them): the logits of the batch's rows, then of the
        joining ones. Every token goes through the linear layers in one packed row, so the
        weights are read once for both; a join's forward of its own read them all again (~70
        ms of its ~100 ms on Gemma 3 270M, 25% of the model's time at 8 in flight). Attention
        runs per group, on each group's own cache and transformers' own masks for it
        (``_Packed``), so each row computes what it would alone."""
        rows = len(self.rows)
        last, batch_positions = self._next_inputs()
        packed = _Packed(
            [
                _Group(self.cache, _masks(self.model, self.cache, self.mask, batch_positions)),
                _Group(cache, _masks(self.model, cache, mask, positions)),
            ],
            shapes=[(rows, 1), tuple(ids.shape)],
        )
        n, length = ids.shape
        # Each group's rows' last tokens: the batch's tokens, then each joining row's last.
        keep = torch.cat([torch.arange(rows), rows + torch.arange(1, n + 1) * length - 1]).to(
            self.model.device
        )
        config = self.model.config
        implementation = config._attn_implementation
        config._attn_implementation = _PACKED  # this pass only: the model thread is ours
        try:
            logits = self.model(
                input_ids=torch.cat([last.flatten(), ids.flatten()])[None],
                position_ids=torch.cat([batch_positions.flatten(), positions.flatten()])[None],
                past_key_values=packed,
                use_cache=True,
                logits_to_keep=keep,
                packed=packed,
            ).logits[0]
        finally:
            config._attn_implementation = implementation
        return logits

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """The model on ``ids`` after ``cache``: the logits of each row's last token."""
        return self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]

    def _advance(self, logits: torch.Tensor, rows: range) -> list[tuple[object, RowResult]]:
        """Pick each row's next token from its logits, then retire the rows that ended."""
        # One pass for every row's greedy token: an argmax per row over the 262k-token vocabulary
        # took ~1 ms each in bfloat16 (8 ms of a 100 ms step at 8 rows); ``max`` over the batch
        # takes ~0.8 ms, and picks the same (first) index on ties.
        greedy = logits.max(-1).indices.tolist()
        chosen = [
            greedy[k] if self.rows[i].request.temperature <= 0 else _sample(logits[k], self.rows[i])
            for k, i in enumerate(rows)
        ]
        for token, i in zip(chosen, rows, strict=True):
            self.rows[i].tokens.append(token)
        done = [i for i in rows if self._ended(self.rows[i])]
        if not done:
            return []
        results = [(self.rows[i].key, self._result(self.rows[i])) for i in done]
        ended = set(done)
        self._keep([i for i in range(len(self.rows)) if i not in ended])
        return results

    def _ended(self, row: _Row) -> bool:
        if row.tokens[-1] in self.eos_ids or len(row.tokens) >= row.request.max_tokens:
            return True
        if not row.request.stop:
            return False
        tail = self.tokenizer.decode(row.tokens[-row.window :], skip_special_tokens=False)
        return any(s in tail for s in row.request.stop)

    def _result(self, row: _Row) -> RowResult:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        return RowResult(
            text=truncate_at_stop(text, row.request.stop),
            prompt_tokens=row.prompt_tokens,
            completion_tokens=len(row.tokens),
        )

    # -- the batch's cache -------------------------------------------------------------------

    def _merge(self, rows: list[_Row], cache: Any, mask: torch.Tensor) -> None:
        """Append prefilled ``rows`` (their ``cache`` and ``mask``) to the batch."""
        if self.cache is None or not self.rows:
            self.rows, self.cache, self.mask = rows, cache, mask
            return
        assert self.mask is not None
        length = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, length), _pad_left(new.keys, length)])
            old.values = torch.cat([_pad_left(old.values, length), _pad_left(new.values, length)])
        self.mask = torch.cat([_pad_left(self.mask, length, -1), _pad_left(mask, length, -1)])
        self._sync_lengths()
        self.rows = self.rows + rows

    def _keep(self, indices: list[int]) -> None:
        """Keep only the rows at ``indices``; cut the leading columns that all of them pad."""
        if len(indices) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in indices]
        if not self.rows:
            self.cache = self.mask = None
            return
        assert self.mask is not None
        index = torch.tensor(indices, device=self.mask.device)
        mask = self.mask[index]
        cut = int(mask.cumsum(-1).eq(0).sum(-1).min())  # leading pad columns shared by all rows
        if self.limit is not None and mask.shape[1] > self.limit:
            cut = 0  # a batch that started past the window: its windowed layers hold fewer columns
        self.mask = mask[:, cut:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, cut:]
            layer.values = layer.values[index, :, cut:]
        if cut:
            self._sync_lengths()

    def _sync_lengths(self) -> None:
        """A sliding-window layer counts the tokens it has seen to place its mask; after the
        batch's columns change, that count is the batch's length."""
        assert self.mask is not None
        for layer in self.cache.layers:
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = self.mask.shape[1]


# -- one forward pass for two groups of rows -----------------------------------------------

_PACKED = "teachloop_packed"
_LAYER_TYPES = {"full_attention", "sliding_attention"}


@dataclass(eq=False)
class _Group:
    """Rows that share a cache in a packed pass: their cache, transformers' attention masks
    for them per layer type (made before the pass), and the current layer's keys and values."""

    cache: Any
    masks: dict[str, torch.Tensor | None]
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None


class _Packed:
    """The cache a packed pass hands the model: groups of rows ([rows, tokens] each) laid out
    one after another in one row. A layer's keys and values go to each group's own cache,
    and ``_packed_attention`` attends each group's queries to them."""

    def __init__(self, groups: list[_Group], shapes: list[tuple[int, int]]) -> None:
        self.groups = groups
        self.shapes = shapes

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` ([1, heads, packed tokens, dim]) as each group's [rows, heads, tokens, dim]."""
        sizes = [rows * tokens for rows, tokens in self.shapes]
        return [
            part.unflatten(1, shape).transpose(0, 1)
            for part, shape in zip(x[0].split(sizes, dim=1), self.shapes, strict=True)
        ]

    def update(
        self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for group, k, v in zip(self.groups, self.split(keys), self.split(values), strict=True):
            group.keys, group.values = group.cache.update(k, v, layer_idx)
        return keys, values


def _packed_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    packed: _Packed | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Each group's queries attend to its own keys, as in a pass of its own (transformers' sdpa
    attention, its own mask); the output is packed again ([1, tokens, heads, dim])."""
    assert packed is not None
    layer_types = getattr(module.config, "layer_types", None)
    layer_type = layer_types[module.layer_idx] if layer_types else "full_attention"
    outputs = []
    for group, q in zip(packed.groups, packed.split(query), strict=True):
        out, _ = sdpa_attention_forward(
            module, q, group.keys, group.values, group.masks[layer_type], **kwargs
        )
        outputs.append(out.flatten(0, 1))  # [rows, tokens, heads, dim] -> [rows * tokens, ...]
    return torch.cat(outputs)[None], None


AttentionInterface.register(_PACKED, _packed_attention)


def _packable(model: Any) -> bool:
    """Whether joins can share the batch's pass: sdpa attention, and only full or sliding-window
    attention layers (whose masks transformers builds per group)."""
    config = model.config
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    return config._attn_implementation == "sdpa" and layer_types <= _LAYER_TYPES


def _masks(
    model: Any, cache: Any, mask: torch.Tensor, positions: torch.Tensor
) -> dict[str, torch.Tensor | None]:
    """The attention masks the model would make for a pass of ``positions`` ([rows, tokens])
    after ``cache``, with ``mask`` the rows' padding over the cache and the new tokens."""
    config = model.config
    # Only the shape, dtype and device of the embeddings are read.
    embeds = torch.empty((*positions.shape, 1), dtype=model.dtype, device=positions.device)
    arguments = {
        "config": config,
        "inputs_embeds": embeds,
        "attention_mask": mask,
        "past_key_values": cache,
        "position_ids": positions,
    }
    masks = {"full_attention": create_causal_mask(**arguments)}
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        masks["sliding_attention"] = create_sliding_window_causal_mask(**arguments)
    return masks


class _AppendInPlace:
    """A cache layer that writes a decode step's keys and values into spare columns after its
    cached ones, where transformers' layers copy the whole cache into a new tensor at every
    step (``torch.cat``: ~9 ms of a ~100 ms step at 8 rows on Gemma 3 270M). ``keys`` and
    ``values`` stay views of the first columns of a larger buffer; anything that replaces them
    (the decoder's joins and leaves) makes the next step copy once into a new buffer. Columns
    past a view are never part of it, so writing there changes no tensor anyone holds."""

    keys: torch.Tensor
    values: torch.Tensor
    is_initialized: bool
    _rooms: tuple[torch.Tensor, torch.Tensor] | None = None  # the buffers keys, values start

    def _append(self, key_states: torch.Tensor, value_states: torch.Tensor) -> bool:
        if not self.is_initialized or not self.keys.numel():
            return False
        rooms = self._rooms or (None, None)
        self.keys, key_room = _append_columns(self.keys, key_states, rooms[0])
        self.values, value_room = _append_columns(self.values, value_states, rooms[1])
        self._rooms = key_room, value_room
        return True


class _FullLayer(_AppendInPlace, DynamicLayer):
    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._append(key_states, value_states):
            return self.keys, self.values
        return super().update(key_states, value_states, *args, **kwargs)


class _WindowLayer(_AppendInPlace, DynamicSlidingWindowLayer):
    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Inside the window the layer keeps every column, as a full one does; past it, it drops
        # the oldest, which the base class does.
        added = key_states.shape[-2]
        if self.cumulative_length + added < self.sliding_window and self._append(
            key_states, value_states
        ):
            self.cumulative_length += added
            return self.keys, self.values
        return super().update(key_states, value_states, *args, **kwargs)


def _cache(config: Any) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose attention layers append in place."""
    cache = DynamicCache(config=config)
    cache.layers = [_in_place(layer) for layer in cache.layers]
    return cache


def _in_place(layer: Any) -> Any:
    if type(layer) is DynamicSlidingWindowLayer:
        return _WindowLayer(sliding_window=layer.sliding_window)
    if type(layer) is DynamicLayer:
        return _FullLayer()
    return layer  # other kinds (linear attention, ...) keep transformers' own


def _append_columns(
    x: torch.Tensor, new: torch.Tensor, room: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` with ``new``'s columns (axis -2) after its own, and the buffer it starts: ``room``
    if ``x`` is its start and it has space, else a copy with ``SPARE_COLUMNS`` more."""
    n, added = x.shape[-2], new.shape[-2]
    if (
        room is None
        or room.shape[:-2] != x.shape[:-2]
        or room.shape[-1] != x.shape[-1]
        or room.shape[-2] < n + added
        or room.data_ptr() != x.data_ptr()
        or room.stride() != x.stride()
    ):
        room = x.new_empty((*x.shape[:-2], n + added + SPARE_COLUMNS, x.shape[-1]))
        room[..., :n, :] = x
    room[..., n : n + added, :] = new
    return room[..., : n + added, :], room


@dataclass
class _Prefix:
    """The keys and values (per layer, [1, heads, tokens, dim]) of a prompt's first tokens."""

    tokens: tuple[int, ...] = ()
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)


class _Prefixes:
    """The last prompts prefilled, to start new ones from their longest shared beginning (the
    few-shot preambles: a prompt's keys depend only on the tokens before them). A hit stops
    one token short of the prompt, whose logits the prefill must compute."""

    def __init__(self, capacity: int = 32, shortest: int = 8) -> None:
        self.entries: OrderedDict[tuple[int, ...], _Prefix] = OrderedDict()
        self.capacity = capacity
        self.shortest = shortest

    def longest(self, prompt: list[int]) -> _Prefix:
        best, length = _Prefix(), 0
        for tokens, entry in self.entries.items():
            n = _shared(tokens, prompt, len(prompt) - 1)
            if n > length:
                best, length = entry, n
        if length < self.shortest:
            return _Prefix()
        self.entries.move_to_end(best.tokens)
        return _Prefix(tuple(prompt[:length]), best.keys, best.values)

    def add(self, prompt: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        tokens = tuple(prompt)
        self.entries[tokens] = _Prefix(tokens, keys, values)
        self.entries.move_to_end(tokens)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)


def _sample(logits: torch.Tensor, row: _Row) -> int:
    probs = torch.softmax(logits.float() / row.request.temperature, dim=-1)
    return int(torch.multinomial(probs, 1))


def _shared(a: tuple[int, ...], b: list[int], most: int) -> int:
    """How many leading tokens ``a`` and ``b`` share, at most ``most``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y or n >= most:
            break
        n += 1
    return n


def _pad_left(x: torch.Tensor, length: int, dim: int = -2) -> torch.Tensor:
    """``x`` padded with zeros at the start of ``dim`` (a KV tensor's sequence axis, or a mask's
    last one) to ``length``."""
    missing = length - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)
