"""The Python API for interaction graphs (README "From Python"): own domains (from Python and by
import path), own backends (a plain function, a LangChain chat model), streaming, the public
lesson graph with LangGraph's checkpointer and as a subgraph, and `teachloop run --follow`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import adds_only_student, current_question, teacher_reply
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from teachloop import (
    Critique,
    FunctionBackend,
    GenerationRequest,
    Question,
    RunConfig,
    Store,
    run_lessons,
    stream_lessons,
)
from teachloop.agents.backends import langchain_backend
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.agents.student import Student
from teachloop.domains import DomainSet, build_domains, builtin_domains, heldout_problems
from teachloop.errors import ConfigError
from teachloop.graphs import LessonState, initial_state, lesson_graph, lesson_log
from teachloop.records import RunRecord
from teachloop.training.evaluate import evaluate

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def own_domain(monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """examples/own_domain.py's PythonOutputDomain, importable as ``own_domain``."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import own_domain

    yield own_domain.PythonOutputDomain


def runs_the_code(request: GenerationRequest) -> str:
    """A student that answers python.output questions by running the line, except len() ones."""
    from own_domain import run_line

    code = current_question(request.prompt).split("? ", 1)[1]
    return " 99\n" if "len(" in code else f" {run_line(code)}\n"


# -- own domains ---------------------------------------------------------------------------------


def test_a_python_domain_runs_lessons_builds_pairs_and_is_evaluated(
    own_domain: type, make_config: Callable[..., RunConfig]
) -> None:
    domain = own_domain()
    config = make_config(topics=("python.output",), lessons=6, lesson={"questions": 3})
    student = ScriptedBackend(runs_the_code)
    result = run_lessons(
        config,
        domains=[domain],
        teacher_backend=ScriptedBackend(teacher_reply),
        student_backend=student,
        progress=False,
    )
    assert (result.lessons, result.questions) == (6, 18)
    store = Store(config.db)
    outcomes = store.query(
        "SELECT q.text, c.correct FROM messages q JOIN messages c ON c.question_id = q.message_id"
        " WHERE q.kind = 'question' AND c.kind = 'critique' AND c.attempt = 0"
    ).to_pylist()
    # The domain's verifier judged them: right exactly where the student ran the code.
    assert outcomes and all(o["correct"] == ("len(" not in o["text"]) for o in outcomes)
    assert any(o["correct"] for o in outcomes) and not all(o["correct"] for o in outcomes)
    pairs = store.run_pairs("test-run", rules=("reference",))
    assert pairs and all(p.prompt.rstrip().endswith("Answer:") for p in pairs)
    assert all("len(" in p.prompt.rsplit("Question:", 1)[1] for p in pairs)  # its misses
    domains = DomainSet([*builtin_domains().values(), domain])
    problems = heldout_problems(domains, ("python.output",), 10, 7)
    student = ScriptedBackend(runs_the_code)
    scored = asyncio.run(evaluate(Student(student, domains), problems, version="x", seed=7))
    right = sum("len(" not in p.question for p in problems)
    assert (scored.questions, scored.correct) == (10, right)


def test_a_domain_by_import_path_from_toml(own_domain: type, tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('topics = ["python.output"]\ndomains = ["own_domain:PythonOutputDomain"]\n')
    config = RunConfig.from_file(path)
    domains = build_domains(config)
    assert isinstance(domains.domain_for("python.output"), own_domain)
    # Stored configs name a domain by its import path, instances included.
    assert '"domains":["own_domain:PythonOutputDomain"]' in config.model_dump_json()
    assert '"domains":["own_domain:PythonOutputDomain"]' in (
        config.with_overrides(domains=(own_domain(),)).model_dump_json()
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:Thing", "cannot import 'no_such_module_xyz'"),
        ("own_domain:Missing", "module 'own_domain' has no 'Missing'"),
        ("own_domain:run_line", "not a teachloop.domains.Domain"),
    ],
)
def test_a_bad_domain_path_is_one_line_naming_it(own_domain: type, spec: str, message: str) -> None:
    config = RunConfig(topics=("arithmetic.addition",), domains=(spec,))
    with pytest.raises(ConfigError) as err:
        build_domains(config)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_domain_spec_that_is_neither_path_nor_domain_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"domains\.0: .*import path"):
        RunConfig.validated({"domains": ["not a path"]})


# -- own backends --------------------------------------------------------------------------------


def test_a_plain_async_function_is_the_student(make_config: Callable[..., RunConfig]) -> None:
    calls: list[str] = []

    async def student(request: GenerationRequest) -> str:
        calls.append(request.prompt)
        await asyncio.sleep(0)
        return adds_only_student(request)

    config = make_config(lessons=4, lesson={"questions": 2})
    result = run_lessons(
        config,
        teacher_backend=ScriptedBackend(teacher_reply),
        student_backend=FunctionBackend(student),
        progress=False,
    )
    answers = (
        Store(config.db)
        .query("SELECT model, endpoint, latency_s FROM messages WHERE kind = 'answer'")
        .to_pylist()
    )
    assert result.questions == 8 and len(answers) == len(calls) >= 8
    assert {(a["model"], a["endpoint"]) for a in answers} == {("student", "function")}
    assert all(a["latency_s"] > 0 for a in answers)


class _FakeChat:
    """A LangChain-shaped chat model (``ainvoke`` -> message with ``content``)."""

    model_name = "fake-chat"

    def __init__(self) -> None:
        self.stops: list[list[str] | None] = []

    async def ainvoke(self, prompt: str, stop: list[str] | None = None) -> object:
        from langchain_core.messages import AIMessage

        self.stops.append(stop)
        return AIMessage(
            content=[{"type": "text", "text": " 42\nQuestion: more"}, {"type": "image"}],
            usage_metadata={"input_tokens": 11, "output_tokens": 3, "total_tokens": 14},
        )


def test_a_langchain_chat_model_through_the_shim() -> None:
    chat = _FakeChat()
    backend = langchain_backend(chat)
    reply = asyncio.run(backend.complete(GenerationRequest(prompt="Q", stop=("\n",))))
    assert reply.text == " 42"  # content blocks joined, cut at the stop string
    g = reply.generation
    assert (g.model, g.endpoint, g.prompt_tokens, g.completion_tokens) == (
        "fake-chat",
        "langchain",
        11,
        3,
    )
    assert chat.stops == [["\n"]]


# -- streaming -----------------------------------------------------------------------------------


def test_streamed_messages_come_in_turn_order_and_equal_the_log(
    make_config: Callable[..., RunConfig],
) -> None:
    config = make_config(lessons=5, concurrency=3, lesson={"questions": 2, "max_reteaches": 1})
    teacher, student = ScriptedBackend(teacher_reply), ScriptedBackend(adds_only_student)

    async def collect() -> tuple[list, object]:
        stream = stream_lessons(config, teacher_backend=teacher, student_backend=student)
        return [m async for m in stream], stream.result

    streamed, result = asyncio.run(collect())
    assert result is not None and result.lessons == 5
    store = Store(config.db)
    by_lesson: dict[str, list] = {}
    for m in streamed:
        by_lesson.setdefault(m.lesson_id, []).append(m)
    assert len(by_lesson) == 5
    for lesson_id, messages in by_lesson.items():
        assert [m.turn for m in messages] == list(range(len(messages)))
        assert messages == store.transcript(lesson_id)
    assert {m.kind for m in streamed} == {"question", "answer", "critique", "reteach"}


def test_follow_prints_every_message(
    make_config: Callable[..., RunConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from teachloop import cli
    from teachloop.graphs import runner

    monkeypatch.setattr(
        runner,
        "build_backends",
        lambda *a: (ScriptedBackend(teacher_reply), ScriptedBackend(adds_only_student)),
    )
    db = tmp_path / "follow.duckdb"
    args = ["run", "--db", str(db), "--lessons", "3", "--run-id", "followed", "--follow"]
    assert cli.main(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("followed-L")]
    logged = Store(db).query("SELECT lesson_id, turn FROM messages ORDER BY ALL").to_pylist()
    assert len(lines) == len(logged) > 3
    assert sorted(line.split(" ]")[0].split(" [")[0] for line in lines) == sorted(
        r["lesson_id"] for r in logged
    )


# -- the lesson graph itself ---------------------------------------------------------------------


def test_the_lesson_graph_runs_with_the_in_memory_checkpointer(
    make_config: Callable[..., RunConfig],
) -> None:
    config = make_config(lesson={"questions": 2, "max_reteaches": 1})
    graph = lesson_graph(
        config,
        teacher=ScriptedBackend(teacher_reply),
        student=ScriptedBackend(adds_only_student),
        checkpointer=InMemorySaver(),
    )
    thread = {"configurable": {"thread_id": "mine-L0"}}
    state = asyncio.run(graph.ainvoke(initial_state("mine", "mine-L0"), thread))
    assert state["questions_asked"] == 2 and state["end_reason"].value == "budget"
    assert [m.turn for m in state["messages"]] == list(range(len(state["messages"])))
    assert sum(isinstance(m, Question) for m in state["messages"]) == 2
    saved = asyncio.run(graph.aget_state(thread))
    assert saved.values["messages"] == state["messages"] and not saved.next


class _Course(LessonState):
    verdicts: int


def test_the_lesson_graph_as_a_subgraph_of_a_parent_graph(
    make_config: Callable[..., RunConfig],
) -> None:
    config = make_config(lesson={"questions": 3, "max_reteaches": 0})
    lesson = lesson_graph(
        config, teacher=ScriptedBackend(teacher_reply), student=ScriptedBackend(adds_only_student)
    )
    parent = StateGraph(_Course)
    parent.add_node("lesson", lesson)
    parent.add_node(
        "count", lambda s: {"verdicts": sum(isinstance(m, Critique) for m in s["messages"])}
    )
    parent.add_edge(START, "lesson")
    parent.add_edge("lesson", "count")
    parent.add_edge("count", END)
    course = parent.compile(checkpointer=InMemorySaver())
    start = {**initial_state("course", "course-L0"), "verdicts": 0}
    final = asyncio.run(course.ainvoke(start, {"configurable": {"thread_id": "c"}}))
    assert final["verdicts"] == 3 and final["questions_asked"] == 3
    # A lesson from a graph of one's own is logged like the runner's.
    store = Store(config.db)
    store.write_run(
        RunRecord(
            run_id="course", lessons_planned=1, teacher_model="t", student_model="s", config="{}"
        )
    )
    store.write_lessons([lesson_log(final)])
    assert store.transcript("course-L0") == final["messages"]


# -- the front door ------------------------------------------------------------------------------


def test_every_public_name_imports_from_teachloop() -> None:
    """``teachloop.__all__`` is the public API (the loop and experiments moved to
    ``teachloop.training``: users' ``from teachloop import run_loop`` must keep working)."""
    import teachloop
    from teachloop.training.experiment import run_experiment
    from teachloop.training.loop import RoundResult, run_loop

    for name in teachloop.__all__:
        assert getattr(teachloop, name) is not None, name
    assert (teachloop.run_loop, teachloop.RoundResult) == (run_loop, RoundResult)
    assert teachloop.run_experiment is run_experiment
