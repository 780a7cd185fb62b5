"""The lesson graph's branches, driven by scripted students of known behaviour; its outcomes
agree with the log's."""

from datetime import UTC, datetime
from typing import TypedDict

from conftest import current_question, teacher_reply
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime

from teachloop import Store
from teachloop.agents.backends.base import GenerationRequest
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.agents.student import Student
from teachloop.agents.teacher import Teacher
from teachloop.config import LessonConfig
from teachloop.domains import DomainSet, builtin_domains
from teachloop.graphs.lesson import LessonAgents, build_lesson_graph, initial_state
from teachloop.graphs.runner import run_lessons
from teachloop.messages import Answer, Critique, Question, Reteach
from teachloop.records import outcome

ADD = ("arithmetic.addition",)


async def run_lesson(respond, lesson: LessonConfig, topics=ADD) -> list:
    agents = LessonAgents(
        teacher=Teacher(ScriptedBackend(teacher_reply), DomainSet(builtin_domains().values())),
        student=Student(ScriptedBackend(respond)),
        topics=topics,
        lesson=lesson,
        seed=0,
    )
    graph = build_lesson_graph(agents)
    state = initial_state("r", "r-L00000", 0, datetime.now(UTC))
    final = await graph.ainvoke(state)
    return final["messages"]


def solve(question: str) -> int:
    a, b = question.removeprefix("What is ").removesuffix("?").split(" + ")
    return int(a) + int(b)


def right(request: GenerationRequest) -> str:
    return f" {solve(current_question(request.prompt))}"


def wrong(request: GenerationRequest) -> str:
    return " -1"


def right_after_reteach(request: GenerationRequest) -> str:
    return right(request) if "Teacher:" in request.prompt else wrong(request)


def kinds(messages: list) -> list[str]:
    return [m.kind for m in messages]


async def test_correct_answers_need_no_reteach_and_budget_ends_lesson() -> None:
    messages = await run_lesson(right, LessonConfig(questions=3, mastery_target=1.0))
    assert kinds(messages) == ["question", "answer", "critique"] * 3
    assert all(m.correct for m in messages if isinstance(m, Critique))
    assert [m.turn for m in messages] == list(range(9))


async def test_wrong_answer_is_retaught_then_answered_again() -> None:
    messages = await run_lesson(right_after_reteach, LessonConfig(questions=1, max_reteaches=2))
    assert kinds(messages) == ["question", "answer", "critique", "reteach", "answer", "critique"]
    question, first, c0, reteach, second, c1 = messages
    assert isinstance(reteach, Reteach) and reteach.attempt == 1
    assert isinstance(second, Answer) and second.attempt == 1
    assert "Teacher:" in second.prompt and "Teacher:" not in first.prompt
    assert (c0.correct, c1.correct) == (False, True)
    assert c1.answer_id == second.message_id and c1.question_id == question.message_id


async def test_retries_stop_at_max_reteaches() -> None:
    messages = await run_lesson(wrong, LessonConfig(questions=1, max_reteaches=2))
    assert kinds(messages).count("reteach") == 2
    assert [m.attempt for m in messages if isinstance(m, Answer)] == [0, 1, 2]
    none = await run_lesson(wrong, LessonConfig(questions=2, max_reteaches=0))
    assert kinds(none) == ["question", "answer", "critique"] * 2


async def test_lesson_ends_early_once_every_topic_is_mastered() -> None:
    messages = await run_lesson(right, LessonConfig(questions=20, mastery_target=0.75))
    questions = [m for m in messages if isinstance(m, Question)]
    # Beta(1,1) prior: after 3 straight successes the mean is 0.8 >= 0.75 with enough evidence.
    assert len(questions) == 3


async def test_questions_get_harder_as_the_student_succeeds() -> None:
    messages = await run_lesson(right, LessonConfig(questions=5, mastery_target=1.0))
    assert [m.difficulty for m in messages if isinstance(m, Question)] == [1, 2, 3, 4, 5]


async def test_wrong_answer_gets_llm_feedback_and_a_category() -> None:
    messages = await run_lesson(wrong, LessonConfig(questions=1, max_reteaches=0))
    critique = messages[2]
    assert isinstance(critique, Critique)
    assert critique.feedback == "Look at each place value in turn."
    assert critique.generation is not None
    assert critique.error_category.value in {"sign", "wrong", "close", "magnitude"}


def test_the_graph_and_the_log_agree_on_every_questions_outcome(make_config) -> None:
    """First try and final have one definition (``teachloop.records.outcome``), which the graph
    applies live and the store's ``question_outcomes`` view states in SQL: on generated lessons
    (right at once, fixed by a reteach, never fixed) both give every question the same outcome."""

    def mixed(request: GenerationRequest) -> str:
        n = solve(current_question(request.prompt))
        fixed = "Teacher:" in request.prompt and n % 2 == 0
        return right(request) if n % 3 == 0 or fixed else wrong(request)

    config = make_config(
        lessons=6, topics=ADD, lesson={"questions": 4, "max_reteaches": 2, "mastery_target": 1.0}
    )
    run_lessons(
        config,
        teacher_backend=ScriptedBackend(teacher_reply),
        student_backend=ScriptedBackend(mixed),
        progress=False,
    )
    store = Store(config.db)
    fields = ("correct_first", "correct_final", "reteaches", "leaked")
    rows = store.query(f"SELECT question_id, {', '.join(fields)} FROM question_outcomes")
    logged = {r.pop("question_id"): r for r in rows.to_pylist()}
    live = {}
    for lesson in store.lessons(run_id="test-run"):
        messages = store.transcript(lesson.lesson_id)
        for q in (m for m in messages if isinstance(m, Question)):
            judged = outcome(messages, q.message_id)
            assert judged is not None
            live[q.message_id] = judged.model_dump(include=set(fields))
    assert live == logged and len(live) == 24
    kinds_seen = {(o["correct_first"], o["correct_final"], o["reteaches"]) for o in live.values()}
    assert {(True, True, 0), (False, True, 1), (False, False, 2)} <= kinds_seen


def test_a_subgraph_sees_its_parents_runtime_context_not_its_own() -> None:
    """Why ``LessonAgents`` are bound into the graph rather than passed as LangGraph's runtime
    context (graphs/lesson.py): a graph cannot carry a context of its own; it gets the one its
    invoker passes, and as a subgraph its parent's. If this fails, LangGraph lets a compiled
    graph keep its context: reconsider ``context_schema`` for the lesson graph."""

    class State(TypedDict):
        seen: str

    def node(state: State, runtime: Runtime[dict]) -> dict:
        return {"seen": repr(runtime.context)}

    child_graph = StateGraph(State, context_schema=dict)
    child_graph.add_node("node", node)
    child_graph.add_edge(START, "node")
    child = child_graph.compile()
    parent_graph = StateGraph(State)
    parent_graph.add_node("lesson", child)
    parent_graph.add_edge(START, "lesson")
    parent = parent_graph.compile()
    assert child.invoke({"seen": ""}) == {"seen": "None"}  # invoked as ``lesson_graph`` is
    assert parent.invoke({"seen": ""}) == {"seen": "None"}
    assert parent.invoke({"seen": ""}, context={"user": 1}) == {"seen": "{'user': 1}"}
