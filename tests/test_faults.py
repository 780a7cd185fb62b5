"""Fault injection: a misbehaving OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py).

Each fault is driven twice: at the backend (bounded retries with backoff, benching, a clear
reason) and through whole runs (a lesson records why it failed and the run goes on, or the run
ends with one line; what was logged stays logged; nothing hangs).
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import openai
import pytest
from conftest import current_question
from fake_openai import FakeOpenAIServer, free_port_url
from helpers import scripted_cli, scripted_env, teachloop

from teachloop import RunConfig, Store, run_lessons
from teachloop.agents.backends.base import GenerationRequest
from teachloop.agents.backends.openai_backend import OpenAIBackend
from teachloop.agents.prompts import student_prompt
from teachloop.agents.student import Student
from teachloop.config import EndpointConfig
from teachloop.errors import BackendUnavailable
from teachloop.graphs.summary import RunResult
from teachloop.messages import Question

pytestmark = pytest.mark.timeout(90)

_ADD = re.compile(r"What is (\d+) \+ (\d+)\?")
_TRANSPORT_FAULTS = ["500", "truncated", "bad_json", "html", "drop", "hang"]
_REASONS = {
    "500": "InternalServerError: Error code: 500",
    "truncated": "APIConnectionError: peer closed connection",
    "bad_json": "MalformedResponse: reply body is not JSON",
    "html": "MalformedResponse: reply is not a completion: '<html>",
    "drop": "APIConnectionError: Server disconnected",
    "hang": "APITimeoutError: Request timed out",
}


def is_student(body: dict) -> bool:
    return body.get("prompt", "").startswith("Each question")


def adds_only(body: dict) -> str:
    """The student is right on addition and wrong otherwise; the teacher writes one sentence."""
    if not is_student(body):
        return " Look at each place value in turn."
    m = _ADD.search(current_question(body["prompt"]))
    return f" {int(m[1]) + int(m[2])}" if m else " 7"


def endpoint(url: str, *, timeout_s: float = 5.0, retries: int = 1) -> EndpointConfig:
    return EndpointConfig(url=url, model="fake-model", timeout_s=timeout_s, max_retries=retries)


def request() -> GenerationRequest:
    return GenerationRequest(prompt=student_prompt("What is 1 + 2?"), max_tokens=4)


def gaps(server: FakeOpenAIServer) -> list[float]:
    t = server.request_times
    return [b - a for a, b in itertools.pairwise(t)]


# --- the backend ------------------------------------------------------------------------------


async def test_http_500_is_retried_with_backoff() -> None:
    with FakeOpenAIServer(adds_only) as server:
        server.faults = ["500", "500"]
        backend = OpenAIBackend([endpoint(server.url, retries=2)])
        out = await backend.complete(request())
        await backend.aclose()
    assert out.text == " 3"
    assert len(server.requests) == 3
    # exponential backoff from 0.5 s, less up to 25% jitter: ~0.5 s, then ~1 s
    first, second = gaps(server)
    assert 0.35 <= first < 1.2 and 0.7 <= second < 2.0


async def test_persistent_500_is_bounded_and_benches_the_endpoint() -> None:
    with FakeOpenAIServer(adds_only) as bad, FakeOpenAIServer(adds_only) as good:
        bad.fault = lambda body: "500"
        backend = OpenAIBackend([endpoint(bad.url, retries=2), endpoint(good.url)])
        start = time.monotonic()
        first = await backend.complete(request())
        assert time.monotonic() - start < 5
        assert len(bad.requests) == 3  # one try and max_retries=2 retries, then the next endpoint
        assert first.generation.endpoint == good.url
        # benched: the next requests go straight to the healthy endpoint
        outs = [await backend.complete(request()) for _ in range(3)]
        assert len(bad.requests) == 3 and {o.generation.endpoint for o in outs} == {good.url}
        await backend.aclose()

    with FakeOpenAIServer(adds_only) as bad:
        bad.fault = lambda body: "500"
        only_bad = OpenAIBackend([endpoint(bad.url)], role="student")
        with pytest.raises(BackendUnavailable) as err:
            await only_bad.complete(request())
        await only_bad.aclose()
    message = str(err.value)
    assert message.startswith(f"student endpoint(s) {bad.url} failed after retries: ")
    assert "InternalServerError: Error code: 500" in message and "\n" not in message


async def test_429_honours_retry_after() -> None:
    with FakeOpenAIServer(adds_only) as server:
        server.retry_after = "1.2"
        server.faults = ["429"]
        backend = OpenAIBackend([endpoint(server.url)])
        out = await backend.complete(request())
        await backend.aclose()
    assert out.text == " 3" and len(server.requests) == 2
    # the server's 1.2 s, not the client's own first backoff (at most 0.5 s)
    assert 1.15 <= gaps(server)[0] < 3.0


async def test_429_retry_after_is_bounded() -> None:
    """A Retry-After beyond the client's bound (120 s) is not waited for: the endpoint is
    benched at once and the request fails over, or fails with a clear reason."""
    with FakeOpenAIServer(adds_only) as limited, FakeOpenAIServer(adds_only) as spare:
        limited.retry_after = "3600"
        limited.fault = lambda body: "429"
        backend = OpenAIBackend([endpoint(limited.url, retries=3), endpoint(spare.url)])
        start = time.monotonic()
        out = await backend.complete(request())
        assert time.monotonic() - start < 3
        assert len(limited.requests) == 1 and out.generation.endpoint == spare.url
        await backend.aclose()
        # a short Retry-After that never ends: max_retries waits, then a one-line error
        limited.retry_after = "0.3"
        alone = OpenAIBackend([endpoint(limited.url, retries=2)], role="teacher")
        limited.requests.clear()
        limited.request_times.clear()
        with pytest.raises(BackendUnavailable, match=r"RateLimitError: Error code: 429"):
            await alone.complete(request())
        await alone.aclose()
    assert len(limited.requests) == 3
    assert all(0.25 <= g < 1.5 for g in gaps(limited))


async def test_connection_refused_is_retried_then_unavailable() -> None:
    url = free_port_url()
    backend = OpenAIBackend([endpoint(url, retries=2)], role="student")
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"APIConnectionError: .*[Cc]onnect"):
        await backend.complete(request())
    elapsed = time.monotonic() - start
    await backend.aclose()
    assert 0.8 <= elapsed < 5  # two backoff sleeps (~0.5 s and ~1 s, less jitter): bounded


async def test_a_hang_past_the_timeout_is_cut_off() -> None:
    with FakeOpenAIServer(adds_only) as server:
        server.fault = lambda body: "hang"
        backend = OpenAIBackend([endpoint(server.url, timeout_s=0.5, retries=1)])
        start = time.monotonic()
        with pytest.raises(BackendUnavailable, match="APITimeoutError: Request timed out"):
            await backend.complete(request())
        assert time.monotonic() - start < 3  # 2 x 0.5 s + one backoff, not hang_s (30 s)
        assert len(server.requests) == 2
        server.fault = None
        server.faults = ["hang"]  # once: the retry gets through
        recovered = OpenAIBackend([endpoint(server.url, timeout_s=0.5, retries=1)])
        assert (await recovered.complete(request())).text == " 3"
        await backend.aclose()
        await recovered.aclose()


@pytest.mark.parametrize("fault", ["truncated", "bad_json", "html", "drop"])
async def test_a_broken_reply_is_retried_then_reported(fault: str) -> None:
    with FakeOpenAIServer(adds_only) as server:
        server.faults = [fault]
        backend = OpenAIBackend([endpoint(server.url, retries=1)])
        assert (await backend.complete(request())).text == " 3"
        assert len(server.requests) == 2
        await backend.aclose()

        server.fault = lambda body: fault
        backend = OpenAIBackend([endpoint(server.url, retries=1)], role="student")
        with pytest.raises(BackendUnavailable) as err:
            await backend.complete(request())
        await backend.aclose()
    assert len(server.requests) == 4
    assert _REASONS[fault] in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("api", ["completions", "chat"])
@pytest.mark.parametrize("fault", ["empty", "no_choices"])
async def test_an_empty_completion_is_empty_text_not_an_error(fault: str, api: str) -> None:
    with FakeOpenAIServer(adds_only) as server:
        server.faults = [fault]
        backend = OpenAIBackend([endpoint(server.url)], api=api)
        out = await backend.complete(request())
        await backend.aclose()
    assert out.text == "" and len(server.requests) == 1


async def test_a_refused_request_is_not_retried() -> None:
    """400 (say, a prompt longer than the model's context) will not succeed on retry."""
    with FakeOpenAIServer(adds_only) as server:
        server.fault = lambda body: "400"
        backend = OpenAIBackend([endpoint(server.url, retries=3)])
        with pytest.raises(openai.BadRequestError):
            await backend.complete(request())
        server.fault = None
        assert (await backend.complete(request())).text == " 3"  # not benched for it
        await backend.aclose()
    assert len(server.requests) == 2


def _question(text: str) -> Question:
    return Question(
        message_id="L-m000",
        run_id="r",
        lesson_id="L",
        turn=0,
        text=text,
        question_index=0,
        topic="arithmetic.addition",
        difficulty=1,
        reference_answer="3",
    )


@pytest.mark.parametrize("reply", ["", "   ", " \n", " ?", " ..."])
async def test_an_empty_student_reply_is_an_answer_with_no_final_answer(reply: str) -> None:
    with FakeOpenAIServer(lambda body: reply) as server:
        student = Student(OpenAIBackend([endpoint(server.url)]))
        answer = await student.answer(_question("What is 1 + 2?"), None, turn=1)
        await student.backend.aclose()
    assert answer.final_answer is None and answer.text == reply.strip()


async def test_a_bare_answer_marker_is_no_answer() -> None:
    with FakeOpenAIServer(lambda body: " Answer:") as server:
        student = Student(OpenAIBackend([endpoint(server.url)]))
        answer = await student.answer(_question("What is 1 + 2?"), None, turn=1)
        await student.backend.aclose()
    assert answer.final_answer is None


# --- whole runs -------------------------------------------------------------------------------


def run_config(
    tmp_path: Path,
    teacher_url: str,
    student_url: str | None = None,
    *,
    lessons: int = 6,
    concurrency: int = 2,
    timeout_s: float = 5.0,
    retries: int = 1,
    run_id: str = "fault-run",
) -> RunConfig:
    """What a TOML file with `[teacher]/[student] backend = "openai"` sections describes."""

    def role(url: str) -> dict:
        return {
            "backend": "openai",
            "model": "embedded:gemma-3-270m",
            "endpoints": [
                {"url": url, "model": "fake-model", "timeout_s": timeout_s, "max_retries": retries}
            ],
        }

    return RunConfig.validated(
        {
            "db": tmp_path / "faults.duckdb",
            "run_id": run_id,
            "lessons": lessons,
            "concurrency": concurrency,
            "topics": ["arithmetic.addition", "arithmetic.multiplication"],
            "lesson": {"questions": 2},
            "teacher": role(teacher_url),
            "student": role(student_url or teacher_url),
        }
    )


def every_nth(n: int, faults: list[str], only=lambda body: True):
    """A fault for every n-th distinct request that `only` accepts, cycling through `faults`.
    A request is faulted on its first arrival only, so one retry always gets through."""
    count = itertools.count(1)
    cycle = itertools.cycle(faults)
    seen: set[str] = set()

    def fault(body: dict) -> str | None:
        key = json.dumps(body, sort_keys=True)
        if key in seen or not only(body):
            return None
        seen.add(key)
        return next(cycle) if next(count) % n == 0 else None

    return fault


def check_log(db: Path, run_id: str) -> dict:
    """The store's invariants: no duplicate messages, each lesson's turns contiguous from 0,
    every complete lesson with its whole budget judged, every failed one with its reason.
    Returns per-status lesson counts."""
    store = Store(db)
    ids = store.query("SELECT count(*) AS n, count(DISTINCT message_id) AS d FROM messages")
    row = ids.to_pylist()[0]
    assert row["n"] == row["d"]
    lessons = store.query(
        """
        SELECT l.lesson_id, l.status, l.questions, l.error,
               count(m.message_id) AS n, coalesce(max(m.turn), -1) AS last,
               count(*) FILTER (WHERE m.kind = 'critique' AND m.attempt = 0) AS judged
        FROM lessons l LEFT JOIN messages m USING (lesson_id)
        WHERE l.run_id = ? GROUP BY ALL""",
        [run_id],
    ).to_pylist()
    for lesson in lessons:
        assert lesson["n"] == lesson["last"] + 1, lesson
        assert lesson["judged"] == lesson["questions"]
        if lesson["status"] == "complete":
            assert lesson["questions"] == 2 and lesson["error"] is None
        elif lesson["status"] == "interrupted":  # in flight when the run stopped
            assert lesson["questions"] <= 2 and lesson["error"] is None
        else:
            assert lesson["status"] == "failed" and lesson["error"], lesson
    counts: dict[str, int] = {}
    for lesson in lessons:
        counts[lesson["status"]] = counts.get(lesson["status"], 0) + 1
    return counts


def payloads(db: Path, lesson_ids: set[str]) -> dict[str, str]:
    rows = Store(db).query("SELECT message_id, lesson_id, payload FROM messages").to_pylist()
    return {r["message_id"]: r["payload"] for r in rows if r["lesson_id"] in lesson_ids}


def assert_resumed_cleanly(
    again: RunResult, db: Path, kept: set[str], before: dict[str, str], *, lessons: int
) -> None:
    """A rerun of a failed run: every lesson complete, those finished before resumed (not
    redone), and nothing they logged changed."""
    assert again.status == "complete"
    assert again.lessons_resumed == len(kept)
    assert check_log(db, "fault-run") == {"complete": lessons}
    assert payloads(db, kept) == before


def test_a_run_rides_out_transient_faults(tmp_path: Path) -> None:
    """Every fault once in a while, on both roles: retries absorb them all, nothing is lost,
    and the verdicts are those of the replies that finally got through."""
    with FakeOpenAIServer(adds_only) as server:
        server.retry_after = "0.1"
        server.fault = every_nth(4, ["500", "429", "truncated", "bad_json", "html", "drop", "hang"])
        config = run_config(tmp_path, server.url, lessons=8, concurrency=4, timeout_s=1.0)
        result = run_lessons(config, progress=False)
        sent = len(server.requests)
    assert result.status == "complete" and result.lessons == 8 and result.lessons_failed == 0
    assert check_log(config.db, "fault-run") == {"complete": 8}
    with_model = sum(result.messages_by_kind.get(k, 0) for k in ("answer", "reteach"))
    assert sent > with_model  # faults were injected and retried
    first = {t.topic: t.first_try_accuracy for t in result.topics}
    assert first.get("arithmetic.addition", 1.0) == 1.0
    assert first.get("arithmetic.multiplication", 0.0) == 0.0


def test_empty_and_unparseable_replies_are_logged_and_judged_wrong(tmp_path: Path) -> None:
    """The student's replies are empty or carry no answer; the teacher's are empty too."""
    junk = itertools.cycle(["", "   ", " ?", " ...", " \n", " I don't know."])
    faults = itertools.cycle(["empty", None, "no_choices", None])

    def reply(body: dict) -> str:
        return next(junk) if is_student(body) else ""

    with FakeOpenAIServer(reply) as server:
        server.fault = lambda body: next(faults) if is_student(body) else None
        config = run_config(tmp_path, server.url, lessons=4)
        result = run_lessons(config, progress=False)
    assert result.status == "complete" and result.lessons_failed == 0
    assert check_log(config.db, "fault-run") == {"complete": 4}
    rows = (
        Store(config.db)
        .query("""
        SELECT a.text, a.final_answer, c.correct, c.error_category, c.text AS feedback
        FROM messages a JOIN messages c USING (question_id, attempt)
        WHERE a.kind = 'answer' AND c.kind = 'critique'""")
        .to_pylist()
    )
    assert rows and not any(r["correct"] for r in rows)
    for r in rows:
        assert r["feedback"].startswith("Not correct.")  # empty teacher reply: fallback text
        if r["text"] == "I don't know.":
            # a text answer (question banks have those) judged against a number: wrong
            assert r["final_answer"] == "i don't know" and r["error_category"] == "wrong"
        else:
            assert r["final_answer"] is None and r["error_category"] == "no_answer", r
    assert sum(r["final_answer"] is None for r in rows) > len(rows) // 2
    reteaches = (
        Store(config.db)
        .query("SELECT payload->>'explanation' AS explanation FROM messages WHERE kind = 'reteach'")
        .column("explanation")
    )
    assert all(e for e in reteaches.to_pylist())  # the domain's hint stands in


def test_a_refused_request_fails_its_lesson_and_the_run_goes_on(tmp_path: Path) -> None:
    with FakeOpenAIServer(adds_only) as server:
        server.fault = every_nth(4, ["400"], only=is_student)
        config = run_config(tmp_path, server.url, lessons=6)
        result = run_lessons(config, progress=False)
        assert result.status == "failed" and result.lessons == 6
        assert 1 <= result.lessons_failed < 6
        counts = check_log(config.db, "fault-run")
        assert counts["failed"] == result.lessons_failed
        errors = Store(config.db).query("SELECT error FROM lessons WHERE status = 'failed'")
        assert set(errors.column("error").to_pylist()) == {
            "BadRequestError: Error code: 400 - injected: prompt too long"
        }
        kept = Store(config.db).finished_lessons("fault-run")
        before = payloads(config.db, kept)

        # the same run id again, the server healthy: the failed lessons resume and finish
        server.fault = None
        again = run_lessons(config, progress=False)
    assert_resumed_cleanly(again, config.db, kept, before, lessons=6)
    assert again.lessons_failed == 0


def test_a_student_endpoint_dying_mid_run_ends_it_with_one_line(tmp_path: Path) -> None:
    with FakeOpenAIServer(adds_only) as teacher, FakeOpenAIServer(adds_only) as student:
        count = itertools.count(1)

        def die(body: dict) -> str | None:
            if next(count) >= 12:
                student.stop_soon()  # from now on: connection refused
                return "drop"
            return None

        student.fault = die
        config = run_config(tmp_path, teacher.url, student.url, lessons=12, concurrency=2)
        start = time.monotonic()
        with pytest.raises(BackendUnavailable) as err:
            run_lessons(config, progress=False)
        assert time.monotonic() - start < 30
        message = str(err.value)
        assert message.startswith(f"student endpoint(s) {student.url} failed after retries: ")
        assert "APIConnectionError" in message and "\n" not in message
        store = Store(config.db)
        assert store.query("SELECT status FROM runs").to_pylist() == [{"status": "failed"}]
        counts = check_log(config.db, "fault-run")
        kept = store.finished_lessons("fault-run")
        assert counts["complete"] == len(kept) and 1 <= len(kept) < 12
        assert counts["failed"] >= 1 and set(counts) <= {"complete", "failed", "interrupted"}
        errors = store.query("SELECT DISTINCT error FROM lessons WHERE status = 'failed'")
        assert errors.column("error").to_pylist() == [f"BackendUnavailable: {message}"]
        before = payloads(config.db, kept)

        # resumed against a healthy student: everything done, nothing logged before changed
        with FakeOpenAIServer(adds_only) as revived:
            healthy = run_config(tmp_path, teacher.url, revived.url, lessons=12)
            again = run_lessons(healthy, progress=False)
    assert_resumed_cleanly(again, config.db, kept, before, lessons=12)
    assert again.lessons == 12


def test_a_hanging_teacher_ends_the_run_in_bounded_time(tmp_path: Path) -> None:
    with FakeOpenAIServer(adds_only) as teacher, FakeOpenAIServer(adds_only) as student:
        teacher.fault = lambda body: "hang" if len(teacher.requests) > 6 else None
        config = run_config(
            tmp_path, teacher.url, student.url, lessons=10, concurrency=3, timeout_s=0.5
        )
        start = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"^teacher endpoint\(s\) .*APITimeoutError"):
            run_lessons(config, progress=False)
        elapsed = time.monotonic() - start
    assert elapsed < 15  # the hang is 30 s; retries + backoff bound it to a few seconds
    store = Store(config.db)
    assert store.query("SELECT status FROM runs").to_pylist() == [{"status": "failed"}]
    counts = check_log(config.db, "fault-run")
    assert counts["failed"] >= 1 and set(counts) <= {"complete", "failed", "interrupted"}
    errors = store.query("SELECT error FROM lessons WHERE status = 'failed'").column("error")
    assert all("APITimeoutError: Request timed out" in e for e in errors.to_pylist())


def test_cli_run_against_a_server_that_dies_prints_one_line(tmp_path: Path) -> None:
    db = tmp_path / "cli.duckdb"
    with FakeOpenAIServer(adds_only) as server:
        served = threading.Event()

        def die(body: dict) -> str | None:
            if len(server.requests) > 10:
                served.set()
                server.stop_soon()
                return "drop"
            return None

        server.fault = die
        config = tmp_path / "run.toml"
        config.write_text(f"""
topics = ["arithmetic.addition", "arithmetic.multiplication"]
[lesson]
questions = 2
[teacher]
backend = "openai"
[[teacher.endpoints]]
url = "{server.url}"
model = "fake-model"
max_retries = 1
[student]
backend = "openai"
model = "embedded:gemma-3-270m"
[[student.endpoints]]
url = "{server.url}"
model = "fake-model"
max_retries = 1
""")
        done = teachloop(
            "run",
            "--config",
            str(config),
            "--db",
            str(db),
            "--lessons",
            "20",
            "--concurrency",
            "2",
            "--run-id",
            "dies",
            "--quiet",
        )
    assert served.is_set()
    assert done.returncode == 2, done.stderr
    # teacher and student share one endpoint config, so one backend (the student's) serves both
    assert done.stderr.startswith(f"error: student endpoint(s) {server.url} failed after retries")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    counts = check_log(db, "dies")
    assert counts["failed"] >= 1 and set(counts) <= {"complete", "failed", "interrupted"}


# --- the command line: Ctrl-C and --debug -----------------------------------------------------

TESTS = Path(__file__).parent


def test_ctrl_c_stops_gracefully_and_the_run_resumes(tmp_path: Path) -> None:
    db = tmp_path / "sigint.duckdb"
    config = tmp_path / "run.toml"
    config.write_text(
        'topics = ["arithmetic.addition", "arithmetic.multiplication"]\n[lesson]\nquestions = 2\n'
    )
    lessons = 40
    cmd = scripted_cli(
        "run",
        "--config",
        str(config),
        "--db",
        str(db),
        "--lessons",
        str(lessons),
        "--concurrency",
        "4",
        "--run-id",
        "sigint-run",
        "--quiet",
    )
    child = subprocess.Popen(
        cmd, env=scripted_env(0.03), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    seen = 0
    while seen < 4 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.1)
        seen = len(Store(db).finished_lessons("sigint-run")) if db.exists() else 0
    assert child.poll() is None, "the run finished before it could be interrupted"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert err == (f"interrupted: logged lessons are in {db}; resume with --run-id sigint-run\n"), (
        err
    )
    store = Store(db)
    assert store.query("SELECT status FROM runs").to_pylist() == [{"status": "interrupted"}]
    kept = store.finished_lessons("sigint-run")
    assert seen <= len(kept) < lessons
    counts = check_log(db, "sigint-run")
    # the lessons in flight are logged as far as they got, marked interrupted
    assert counts["complete"] == len(kept) and counts["interrupted"] >= 1
    assert set(counts) == {"complete", "interrupted"}
    listed = teachloop("lessons", "--db", str(db), "--status", "interrupted", "--format", "csv")
    assert len(listed.stdout.splitlines()) == counts["interrupted"] + 1
    logged = set(store.query("SELECT lesson_id FROM lessons").column("lesson_id").to_pylist())
    before = payloads(db, logged)

    again = subprocess.run(cmd, env=scripted_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "run sigint-run: complete" in again.stdout
    assert check_log(db, "sigint-run") == {"complete": lessons}
    after = payloads(db, logged)  # what was logged stays as it was, interrupted lessons too
    assert {k: after[k] for k in before} == before and len(after) > len(before)
    assert Store(db).query("SELECT status FROM runs").to_pylist() == [{"status": "complete"}]


def test_debug_shows_a_traceback_for_a_teachloop_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("lessons = 2\n[student]\nmodle = 'x'\n")
    plain = teachloop("run", "--config", str(path))
    assert plain.returncode == 2
    assert plain.stderr == f"error: {path}: student.modle: unknown key (check the spelling)\n"
    debug = teachloop("--debug", "run", "--config", str(path))
    assert debug.returncode != 0
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert debug.stderr.rstrip().splitlines()[-1] == (
        f"teachloop.errors.ConfigError: {path}: student.modle: unknown key (check the spelling)"
    )


def test_debug_shows_a_traceback_for_an_endpoint_failure_mid_run(tmp_path: Path) -> None:
    """An error raised inside the run's event loop: one line, or with --debug where it came
    from."""
    with FakeOpenAIServer(adds_only) as server:
        server.fault = lambda body: "500"
        path = tmp_path / "run.toml"
        path.write_text(
            'topics = ["arithmetic.addition"]\n'
            + "".join(
                f'[{role}]\nbackend = "openai"\nmodel = "embedded:gemma-3-270m"\n'
                f'[[{role}.endpoints]]\nurl = "{server.url}"\n'
                'model = "fake-model"\nmax_retries = 0\n'
                for role in ("teacher", "student")
            )
        )
        args = ("run", "--config", str(path), "--db", str(tmp_path / "d.duckdb"), "--quiet")
        plain = teachloop(*args)
        debug = teachloop("--debug", *args)
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1, plain.stderr
    assert plain.stderr.startswith(f"error: student endpoint(s) {server.url} failed after retries")
    assert debug.returncode != 0
    # --debug also turns on debug logging; the traceback comes after it
    assert "Traceback (most recent call last):" in debug.stderr
    assert 'openai_backend.py", line' in debug.stderr
    assert any(
        line.startswith("teachloop.errors.BackendUnavailable: student endpoint(s)")
        for line in debug.stderr.splitlines()
    )
