"""One lesson as a LangGraph state machine, public so a LangGraph user can run, stream, checkpoint
and embed it (README, "From Python"):

    graph = lesson_graph(config, teacher=teacher_backend, student=student_backend)
    state = await graph.ainvoke(initial_state("my-run", "my-run-L0"))

    START -> ask -> answer -> critique -+-> ask (right, or no reteaches left: next question)
                    ^                   +-> END (budget spent / all mastered)
                    +----- reteach <----+ (wrong, reteaches left)

Each node is one agent's turn and adds one typed message: ``ask`` (the teacher picks a topic and
difficulty and asks), ``answer`` (the student), ``critique`` (the teacher judges; the final
verdict on a question also updates the estimate), ``reteach`` (the teacher explains). One
superstep per message keeps LangGraph's per-step cost (and a checkpoint per step) at the
minimum the protocol needs.

The nodes' dependencies (teacher, student, settings, the run's live estimate) are bound into
the graph as ``LessonAgents`` (its docstring says why not LangGraph's runtime context, and who
owns the estimate). Random choices are seeded by lesson and turn. Topic and strategy choices
read the run's live estimate (``LessonAgents.estimate``, shared by every lesson in flight and
updated after each judged question), so they depend on what other lessons have shown so far; a
checkpoint holds each step's result, so a lesson resumed from its last checkpoint continues
from the choices it made, and each question records the estimate it was chosen from
(``Question.chosen_from``).

``messages`` and ``snapshots`` are LangGraph ``DeltaChannel``s: a checkpoint stores the step's
new messages, not the whole list again, so a step costs the same early and late in a lesson.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal, TypedDict, TypeVar

from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from teachloop.agents.backends.base import Backend
from teachloop.agents.mastery import BetaEstimate, LiveEstimate, MasteryModel, TopicState
from teachloop.agents.prompts import Prompts
from teachloop.agents.student import Student
from teachloop.agents.teacher import Teacher
from teachloop.config import LessonConfig, RunConfig
from teachloop.domains import Domain, DomainSet, Problem, build_domains, heldout_questions
from teachloop.messages import (
    Answer,
    Critique,
    ErrorCategory,
    Generation,
    Question,
    Reteach,
    Role,
    Strategy,
)
from teachloop.records import AnyMessage, EndReason, MasterySnapshot, outcome

M = TypeVar("M", Question, Answer, Critique, Reteach)


class LessonState(TypedDict):
    """A lesson's state, as ``ainvoke`` returns it and as a parent graph shares it.

    run_id, lesson_id, lesson_index, started_at: the lesson's identity (``initial_state``).
    messages: every ``Question``, ``Answer``, ``Critique`` and ``Reteach`` in turn order (each
        node appends; ``stream_mode="updates"`` shows each one as it is produced).
    snapshots: the mastery estimate of each question's topic after it was judged.
    problem, attempt: the question in progress (its problem holds the reference answer and the
        topic and difficulty: never shown to the student).
    questions_asked: questions judged so far; end_reason: why the lesson ended (None until then).
    """

    run_id: str
    lesson_id: str
    lesson_index: int
    started_at: datetime
    messages: Annotated[list[AnyMessage], DeltaChannel(_extend)]
    snapshots: Annotated[list[MasterySnapshot], DeltaChannel(_extend)]
    problem: Problem | None
    attempt: int
    questions_asked: int
    # Set by critique when the lesson is over (budget spent or all mastered); the graph
    # ends on it and the log records it, so the reason is decided in one place.
    end_reason: EndReason | None


def initial_state(
    run_id: str, lesson_id: str, lesson_index: int = 0, now: datetime | None = None
) -> LessonState:
    """The input of a new lesson. Its ids go into every message it logs: keep them unique per
    store (the runner uses ``<run_id>-L<index>``)."""
    return LessonState(
        run_id=run_id,
        lesson_id=lesson_id,
        lesson_index=lesson_index,
        started_at=now or datetime.now(UTC),
        messages=[],
        snapshots=[],
        problem=None,
        attempt=0,
        questions_asked=0,
        end_reason=None,
    )


@dataclass(frozen=True)
class LessonAgents:
    """What the lesson graph's nodes work with, bound into the graph when it is built.

    Not LangGraph's runtime context (``context_schema``, ``Runtime``), on purpose. A context is
    supplied by whoever invokes the graph, per invocation, and a subgraph sees its parent's
    (``Runtime.merge``: a child run without one inherits the parent's): so the graph
    ``lesson_graph`` returns would have no agents when a user runs it as
    ``graph.ainvoke(initial_state(...))`` or adds it as a node of their own graph (whose
    context is theirs), unless every caller built and passed ours. Bound here, the graph is
    whole wherever it runs. LangGraph also documents the context as immutable run-scoped data,
    and ``estimate`` is mutable, shared by every lesson in flight.
    ``tests/test_lesson_graph.py`` pins the LangGraph behaviour this rests on.

    ``estimate``, the run's live estimate, has one owner: whoever builds these agents. The
    runner (``graphs.runner._Runner``) builds one per run (per share on Ray), seeds it from the
    store's counts when the run starts or resumes and adds other workers' evidence
    (``LiveEstimate.absorb``); ``lesson_graph`` builds one per compiled graph, from the prior.
    Inside a lesson only the critique node writes it (a question's final verdict,
    ``LiveEstimate.record``); ask and reteach read it.
    """

    teacher: Teacher
    student: Student
    topics: tuple[str, ...]
    lesson: LessonConfig
    seed: int
    estimate: LiveEstimate = field(default_factory=lambda: LiveEstimate(MasteryModel()))

    @classmethod
    def from_config(
        cls, config: RunConfig, domains: DomainSet, teacher: Backend, student: Backend
    ) -> LessonAgents:
        """The agents ``config`` describes, on the given backends; the teacher never asks a
        question of the config's held-out set."""
        prompts = Prompts(config.prompts)
        return cls(
            teacher=Teacher(
                teacher,
                domains,
                max_tokens=config.teacher.max_tokens,
                temperature=config.teacher.temperature,
                reserved=heldout_questions(
                    domains, config.topics, config.eval.per_topic, config.eval.seed
                ),
                policy=config.lesson,
                api=config.teacher.api,
                prompts=prompts,
            ),
            student=Student.for_config(student, domains, config, prompts),
            topics=config.topics,
            lesson=config.lesson,
            seed=config.seed,
        )


def lesson_graph(
    config: RunConfig,
    *,
    teacher: Backend,
    student: Backend,
    domains: Sequence[Domain] = (),
    checkpointer: BaseCheckpointSaver | None = None,
) -> CompiledStateGraph:
    """The compiled lesson graph for ``config``'s topics and lesson settings, with the teacher
    and student on the given backends (``build_backends(config)``, or a ``FunctionBackend``)
    and ``domains`` beside the config's own. Pass any LangGraph checkpointer (in-memory,
    SQLite, Postgres) to make lessons resumable by thread id; leave it out to embed the graph
    as a subgraph of yours (it then uses the parent's). Nothing is logged: ``run_lessons``
    logs what it runs; a graph of your own logs what you choose (``Store.write_lessons``)."""
    agents = LessonAgents.from_config(
        config, build_domains(config.with_domains(domains)), teacher, student
    )
    return build_lesson_graph(agents, checkpointer)


def _rng(agents: LessonAgents, state: LessonState) -> random.Random:
    return random.Random(f"{agents.seed}/{state['lesson_id']}/{len(state['messages'])}")


def _last(messages: list[AnyMessage], kind: type[M]) -> M:
    return next(m for m in reversed(messages) if isinstance(m, kind))


def build_lesson_graph(
    agents: LessonAgents, checkpointer: BaseCheckpointSaver | None = None
) -> CompiledStateGraph:
    teacher, student, cfg = agents.teacher, agents.student, agents.lesson

    def ask(state: LessonState) -> dict:
        rng = _rng(agents, state)
        estimate = agents.estimate.model
        topic, difficulty = teacher.choose(estimate, agents.topics, rng)
        problem = teacher.make_problem(topic, difficulty, rng)
        question = teacher.ask(
            problem,
            run_id=state["run_id"],
            lesson_id=state["lesson_id"],
            turn=len(state["messages"]),
            index=state["questions_asked"],
            chosen_from=estimate,
        )
        return {"problem": problem, "attempt": 0, "messages": [question]}

    async def answer(state: LessonState) -> dict:
        messages = state["messages"]
        reteach = _last(messages, Reteach) if state["attempt"] > 0 else None
        reply = await student.answer(_last(messages, Question), reteach, turn=len(messages))
        return {"messages": [reply]}

    async def critique(state: LessonState) -> dict:
        messages = state["messages"]
        assert state["problem"] is not None
        verdict = await teacher.critique(
            state["problem"], _last(messages, Question), _last(messages, Answer), turn=len(messages)
        )
        update: dict = {"messages": [verdict]}
        if verdict.correct or state["attempt"] >= cfg.max_reteaches:
            update.update(_judged(state, [*messages, verdict]))
        return update

    def _judged(state: LessonState, messages: list[AnyMessage]) -> dict:
        """The question's final verdict: record it in the run's estimate, snapshot the topic,
        and end the lesson when its budget is spent or every topic is mastered."""
        question = _last(messages, Question)
        judged = outcome(messages, question.message_id)
        assert judged is not None  # called on a critique of this question
        # A reteach happened: did it work?
        reteach = None if judged.strategy is None else (judged.strategy, judged.correct_final)
        mastery = agents.estimate.record(
            question.topic,
            judged.correct_first,
            reteach,
            max_difficulty=teacher.max_difficulty(question.topic),
        )
        topic_state = mastery.topic(question.topic)
        snapshot = MasterySnapshot(
            run_id=state["run_id"],
            lesson_id=state["lesson_id"],
            question_index=question.question_index,
            topic=question.topic,
            alpha=topic_state.estimate.alpha,
            beta=topic_state.estimate.beta,
            mean=topic_state.estimate.mean,
            difficulty=topic_state.difficulty,
        )
        asked = state["questions_asked"] + 1
        end_reason = None
        if asked >= cfg.questions:
            end_reason = EndReason.budget
        elif mastery.all_mastered(agents.topics, cfg.mastery_target):
            end_reason = EndReason.mastered
        return {
            "snapshots": [snapshot],
            "questions_asked": asked,
            "problem": None,
            "end_reason": end_reason,
        }

    async def reteach(state: LessonState) -> dict:
        messages = state["messages"]
        assert state["problem"] is not None
        rng = _rng(agents, state)
        question = _last(messages, Question)
        strategy = teacher.pick_strategy(agents.estimate.model, question.topic, rng)
        lesson = await teacher.reteach(
            state["problem"], question, _last(messages, Answer), strategy, rng, turn=len(messages)
        )
        return {"messages": [lesson], "attempt": state["attempt"] + 1}

    def after_critique(state: LessonState) -> Literal["reteach", "ask", "__end__"]:
        if state["end_reason"]:
            return END
        return "reteach" if state["problem"] is not None else "ask"

    graph = StateGraph(LessonState)
    graph.add_node("ask", ask)
    graph.add_node("answer", answer)
    graph.add_node("critique", critique)
    graph.add_node("reteach", reteach)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", "answer")
    graph.add_edge("answer", "critique")
    graph.add_conditional_edges("critique", after_critique)
    graph.add_edge("reteach", "answer")
    return graph.compile(checkpointer=checkpointer)


def _extend(value: list, batches: Sequence[list]) -> list:
    """The reducer of the message and snapshot channels: append each step's new items."""
    return [*value, *(item for batch in batches for item in batch)]


# Types stored in checkpoints: allow-listed for LangGraph's msgpack deserializer.
CHECKPOINT_TYPES: list[tuple[str, ...]] = [
    (cls.__module__, cls.__name__)
    for cls in (
        *(
            Question,
            Answer,
            Critique,
            Reteach,
            Generation,
            Role,
            Strategy,
            ErrorCategory,
            EndReason,
        ),
        *(MasteryModel, TopicState, BetaEstimate, MasterySnapshot, Problem),
    )
]


def checkpoint_serde() -> JsonPlusSerializer:
    """LangGraph's serializer with the lesson's types allow-listed: what a saver of lesson
    checkpoints needs to read them back."""
    return JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES)
