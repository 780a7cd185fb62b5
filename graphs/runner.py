"""Drive many lessons concurrently and log them.

Lessons run as asyncio tasks (at most ``concurrency`` at once), so their model requests overlap
and backends can batch them. A LangGraph checkpointer (SQLite beside the database) records every
step: rerunning with the same run id skips lessons already in the store and resumes the others
from their last checkpoint. Finished lessons reach DuckDB through one writer that batches them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime

from langgraph.graph.state import CompiledStateGraph

from teachloop.agents.backends import Backend, LoraAdapter, build_backends
from teachloop.agents.mastery import MasteryModel
from teachloop.config import RunConfig
from teachloop.domains import Domain, DomainSet, build_domains
from teachloop.errors import BackendUnavailable, CatalogUnavailable
from teachloop.graphs.checkpoints import open_checkpointer
from teachloop.graphs.lesson import (
    LessonAgents,
    LessonState,
    build_lesson_graph,
    checkpoint_serde,
    initial_state,
)
from teachloop.graphs.summary import RunResult, summarize
from teachloop.progress import progress_bar
from teachloop.records import (
    AnyMessage,
    EndReason,
    LessonLog,
    LessonRecord,
    LessonStatus,
    ModelVersion,
    RunRecord,
    versioned_model,
)
from teachloop.store.records import MasteryCounts
from teachloop.store.store import Store

_FLUSH_EVERY_S = 1.0
# How often a worker with a share of a run reads what the other workers' lessons showed.
_PEERS_EVERY_S = 5.0

# Called with each message as a lesson produces it (streaming, `teachloop run --follow`).
OnMessage = Callable[[AnyMessage], None]


def lesson_id(run_id: str, index: int) -> str:
    return f"{run_id}-L{index:05d}"


def run_lessons(
    config: RunConfig,
    *,
    domains: Sequence[Domain] = (),
    teacher_backend: Backend | None = None,
    student_backend: Backend | None = None,
    progress: bool = True,
    on_message: OnMessage | None = None,
) -> RunResult:
    """Run ``config.lessons`` lessons and log them to ``config.db``; returns the run's summary.

    ``domains``: your own ``Domain`` instances, beside the built-in ones and the config's
    (``config.topics`` names the topics to teach). Backends default to what the config
    describes; pass any ``Backend`` (e.g. a ``FunctionBackend``) to put your own model behind a
    role (you then close it). ``on_message`` is called with each message as it is produced."""
    return asyncio.run(
        arun_lessons(
            config,
            domains=domains,
            teacher_backend=teacher_backend,
            student_backend=student_backend,
            progress=progress,
            on_message=on_message,
        )
    )


async def arun_lessons(
    config: RunConfig,
    *,
    domains: Sequence[Domain] = (),
    teacher_backend: Backend | None = None,
    student_backend: Backend | None = None,
    progress: bool = True,
    on_message: OnMessage | None = None,
) -> RunResult:
    """``run_lessons`` in a running event loop."""
    config = config.with_domains(domains)
    domain_set = build_domains(config)
    store = Store.of(config)
    config = config.with_run_id()
    run_id = config.run_id
    assert run_id is not None
    student_version = promoted_student(store, config)
    async with lesson_backends(config, student_version, teacher_backend, student_backend) as (
        teacher,
        student,
    ):
        runner = _Runner(
            config, run_id, store, domain_set, teacher, student, student_version, on_message
        )
        return await runner.run(progress=progress)


@asynccontextmanager
async def lesson_backends(
    config: RunConfig,
    version: ModelVersion,
    teacher: Backend | None = None,
    student: Backend | None = None,
) -> AsyncIterator[tuple[Backend, Backend]]:
    """The run's teacher and student, checked: the given ones, else the config's (the student
    with ``version``'s adapter), which are closed at the end (given ones are the caller's)."""
    owned = teacher is None and student is None
    if teacher is None or student is None:
        built = await asyncio.to_thread(build_backends, config, LoraAdapter.of(version))
        teacher, student = teacher or built[0], student or built[1]
    distinct = list({id(b): b for b in (teacher, student)}.values())
    try:
        for backend in distinct:
            await backend.check()
        yield teacher, student
    finally:
        if owned:
            for backend in distinct:
                await backend.aclose()


class LessonStream:
    """The messages of a run as they are produced: ``async for message in stream``. The run
    logs everything to the store exactly as ``run_lessons`` does; once the iteration ends,
    ``result`` is its summary. Messages of different lessons interleave; each lesson's come
    in turn order. Leaving the loop early stops the run (its lessons resume on a rerun)."""

    def __init__(self, config: RunConfig, **run: object) -> None:
        self.config = config
        self.run = run
        self.result: RunResult | None = None

    async def __aiter__(self) -> AsyncIterator[AnyMessage]:
        queue: asyncio.Queue[AnyMessage | None] = asyncio.Queue()

        async def drive() -> RunResult:
            try:
                return await arun_lessons(
                    self.config, on_message=queue.put_nowait, progress=False, **self.run
                )  # type: ignore[arg-type]
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(drive())
        try:
            while (message := await queue.get()) is not None:
                yield message
            self.result = await task  # the run's own error, if it failed
        finally:
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task


def stream_lessons(
    config: RunConfig,
    *,
    domains: Sequence[Domain] = (),
    teacher_backend: Backend | None = None,
    student_backend: Backend | None = None,
) -> LessonStream:
    """Run lessons as ``run_lessons`` does and yield each ``Question``, ``Answer``,
    ``Critique`` and ``Reteach`` as it is produced:

        async for message in stream_lessons(config):
            print(message.kind, message.lesson_id)
    """
    return LessonStream(
        config, domains=domains, teacher_backend=teacher_backend, student_backend=student_backend
    )


class _Runner:
    def __init__(
        self,
        config: RunConfig,
        run_id: str,
        store: Store,
        domains: DomainSet,
        teacher_backend: Backend,
        student_backend: Backend,
        student_version: ModelVersion,
        on_message: OnMessage | None = None,
    ) -> None:
        self.config = config
        self.student_version = student_version
        self.student_model = versioned_model(config.student.model, student_version.version)
        self.run_id = run_id
        self.store = store
        self.agents = LessonAgents.from_config(config, domains, teacher_backend, student_backend)
        self.on_message = on_message
        self.pending: list[LessonLog] = []
        self.failed: list[str] = []
        # A share of a run (a Ray worker): its own lessons, and what the others' showed so far.
        self.share: set[str] | None = None
        self.peers_seen: MasteryCounts | None = None
        # Every write on one thread: the default executor's threads each grow a malloc arena
        # of their own, and resident memory with them (the soak test measures it).
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")

    async def run(self, *, progress: bool) -> RunResult:
        """The whole run in this process: recorded, its lessons driven, summarized."""
        cfg = self.config
        started = time.perf_counter()
        start_run(self.store, cfg, self.student_model)
        done = self.store.finished_lessons(self.run_id)
        status = "interrupted"
        try:
            with progress_bar("lessons" if progress else None, cfg.lessons, len(done)) as bar:
                await self.lessons(range(cfg.lessons), bar.advance)
            status = "failed" if self.failed else "complete"
        except BackendUnavailable:
            status = "failed"
            raise
        finally:
            self.store.finish_run(self.run_id, status)
        return summarize(
            self.store,
            self.run_id,
            self.agents.estimate.model,
            cfg.topics,
            wall_time_s=time.perf_counter() - started,
            lessons_resumed=len(done),
        )

    async def lessons(self, indices: Iterable[int], advance: Callable[[], None]) -> None:
        """Drive the lessons ``indices`` of the run that are not in the store yet (new ones
        from the start, interrupted ones from their checkpoint) and log them; ``advance`` is
        called as each ends. A whole run calls it with every index, a Ray worker with its
        share (``graphs.distributed``)."""
        cfg = self.config
        indices = list(indices)
        done = self.store.finished_lessons(self.run_id)
        # What this student showed before: this run's finished lessons (a resume), earlier
        # rounds of the same version, earlier versions at a discount.
        counts = self.store.mastery_counts(
            self.student_model,
            decay=cfg.lesson.carry_decay,
            run_id=None if cfg.lesson.carry_over else self.run_id,
        )
        self.agents.estimate.model = MasteryModel.from_counts(
            counts, start_difficulty=cfg.lesson.start_difficulty
        )
        if len(set(indices)) < cfg.lessons:
            # Other workers run the rest: their lessons' evidence joins this estimate as they
            # are logged (``_absorb_peers``), so targeting stays run-wide.
            self.share = {lesson_id(self.run_id, i) for i in indices}
            self.peers_seen = self._peer_counts()
        todo = [i for i in indices if lesson_id(self.run_id, i) not in done]
        reconnect_s = cfg.store.reconnect_timeout_s
        async with open_checkpointer(cfg.db, checkpoint_serde(), reconnect_s) as saver:
            self.saver = saver
            graph = build_lesson_graph(self.agents, saver)
            stop_flushing = asyncio.Event()
            flusher = asyncio.create_task(self._flush_periodically(stop_flushing))
            try:
                gate = asyncio.Semaphore(cfg.concurrency)

                async def one(index: int) -> None:
                    async with gate:
                        await self._lesson(graph, index)
                    advance()

                async with asyncio.TaskGroup() as tasks:
                    for index in todo:
                        tasks.create_task(one(index))
            except* (BackendUnavailable, CatalogUnavailable) as group:
                raise group.exceptions[0] from None
            finally:
                # Stop, don't cancel: cancelling would leave a write under way running in its
                # thread, holding the file open while the summary reads it.
                stop_flushing.set()
                await flusher
                await self._flush()  # whatever happened, logged lessons reach the store
                self.writer.shutdown()

    async def _lesson(self, graph: CompiledStateGraph, index: int) -> None:
        lid = lesson_id(self.run_id, index)
        thread = {"configurable": {"thread_id": lid}}
        state: LessonState | None = None
        error: str | None = None
        try:
            if await self.saver.aget_tuple(thread) is None:  # a new lesson
                start = initial_state(self.run_id, lid, index, datetime.now(UTC))
                state = await self._drive(graph, start, thread)
            elif (snapshot := await graph.aget_state(thread)).tasks:
                # Interrupted mid-lesson: continue from the checkpoint. `tasks`, not `next`: a
                # task whose writes were saved before the kill is no longer in `next`, but its
                # writes are not applied to the state until the graph resumes.
                state = await self._drive(graph, None, thread)
            else:  # finished before the kill, not yet in the store
                state = snapshot.values
        except BackendUnavailable as e:  # ends the run; this lesson records why
            await self._log_unfinished(graph, thread, LessonStatus.failed, _one_line(e))
            raise
        except CatalogUnavailable:  # ends the run; the lesson resumes from its checkpoint
            raise
        except asyncio.CancelledError:  # Ctrl-C, or another lesson ended the run
            await self._log_unfinished(graph, thread, LessonStatus.interrupted, None)
            raise
        except Exception as e:  # one broken lesson must not end the run; its reason is logged
            error = _one_line(e)
            self.failed.append(lid)
        if state is None:  # failed: log it as far as its checkpoint goes
            state = (await graph.aget_state(thread)).values
        self.pending.append(lesson_log(state, error))

    async def _drive(
        self, graph: CompiledStateGraph, start: LessonState | None, thread: dict
    ) -> LessonState:
        """Run the lesson to its end and return its final state; with ``on_message``, stream
        each node's update and hand on the messages it added (a resumed lesson's earlier ones
        were handed on before)."""
        # "sync": a step's checkpoint is handed to the saver before the next step starts (the
        # saver is synchronous anyway, so "async" only added a task per step).
        if self.on_message is None:
            return await graph.ainvoke(start, thread, durability="sync")
        final: LessonState | None = None
        modes = ["updates", "values"]
        async for mode, chunk in graph.astream(start, thread, stream_mode=modes, durability="sync"):
            if mode == "values":
                final = chunk
                continue
            for node_update in chunk.values():
                for message in (node_update or {}).get("messages", ()):
                    self.on_message(message)
        assert final is not None
        return final

    async def _log_unfinished(
        self, graph: CompiledStateGraph, thread: dict, status: LessonStatus, error: str | None
    ) -> None:
        """A lesson the run stops in the middle of is logged as far as its checkpoint goes, with
        its status (`failed` with the reason, or `interrupted`); a rerun resumes it and replaces
        the row. Messages keep their stable ids, so nothing is duplicated."""
        state = (await graph.aget_state(thread)).values
        if state:
            log = lesson_log(state, error, status=status)
            self.pending.append(log)

    async def _flush_periodically(self, stop: asyncio.Event) -> None:
        peeked = time.monotonic()
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _FLUSH_EVERY_S)
            # A failed write keeps its lessons pending; the next flush, at the latest the
            # final one, writes them or reports why it cannot.
            with suppress(Exception):
                await self._flush()
            if self.share is not None and time.monotonic() - peeked >= _PEERS_EVERY_S:
                peeked = time.monotonic()
                with suppress(Exception):  # others' evidence helps; a failed read is no error
                    await self._absorb_peers()

    def _peer_counts(self) -> MasteryCounts:
        assert self.share is not None
        return self.store.mastery_counts(self.student_model, run_id=self.run_id, exclude=self.share)

    async def _absorb_peers(self) -> None:
        loop = asyncio.get_running_loop()
        now = await loop.run_in_executor(self.writer, self._peer_counts)
        assert self.peers_seen is not None
        self.agents.estimate.absorb(now, self.peers_seen)
        self.peers_seen = now

    async def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.writer, self.store.write_lessons, batch)
        except BaseException:
            self.pending[:0] = batch  # not written: the next flush tries these again
            raise
        for log in batch:  # stored lessons need no checkpoint; keeps the file from growing
            if log.lesson.status is LessonStatus.complete:
                await self.saver.adelete_thread(log.lesson.lesson_id)


def start_run(store: Store, config: RunConfig, student_model: str) -> None:
    """Record the run's start (a resumed run keeps its first start time)."""
    assert config.run_id is not None
    store.write_run(
        RunRecord(
            run_id=config.run_id,
            lessons_planned=config.lessons,
            teacher_model=config.teacher.model,
            student_model=student_model,
            config=config.model_dump_json(),
        )
    )


def promoted_student(store: Store, config: RunConfig) -> ModelVersion:
    """The student model lessons use: the store's promoted version of the configured model when
    there is one and the config follows it, else the base model."""
    base = ModelVersion(version="base", method="base", base_model=config.student.model)
    if not config.student.follow_promoted:
        return base
    return store.current_student(config.student.model)


def _one_line(e: Exception) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0]


def lesson_log(
    state: LessonState, error: str | None = None, status: LessonStatus | None = None
) -> LessonLog:
    """A lesson's final (or last checkpointed) state as the store logs it
    (``Store.write_lessons``): what a graph of your own uses to log its lessons."""
    if status is None:
        status = LessonStatus.failed if error else LessonStatus.complete
    if status is LessonStatus.interrupted:
        end_reason = EndReason.interrupted
    elif error:
        end_reason = EndReason.error
    else:  # the graph ended the lesson and said why
        end_reason = state["end_reason"]
    record = LessonRecord(
        lesson_id=state["lesson_id"],
        run_id=state["run_id"],
        lesson_index=state["lesson_index"],
        status=status,
        end_reason=end_reason,
        error=error,
        started_at=state["started_at"],
    )
    return LessonLog(lesson=record, messages=state["messages"], mastery=state["snapshots"])
