"""`teachloop view`: every page over HTTP on a log made by a scripted run (with hand-made training
and experiment rows), filters and paging, 404s, hostile message text, a run writing while the
viewer reads, the command's one-line errors, and (slow) a real headless Chromium."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import helpers
import pytest
from conftest import adds_only_student, current_question, teacher_reply
from lake_support import Postgres
from markupsafe import escape
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from teachloop import RunConfig, Store, run_lessons
from teachloop.agents.backends.base import GenerationRequest
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.messages import (
    Answer,
    Critique,
    ErrorCategory,
    Generation,
    Question,
    Reteach,
    Strategy,
    message_id,
)
from teachloop.records import (
    EndReason,
    LessonLog,
    LessonRecord,
    LessonStatus,
    ModelVersion,
    RunRecord,
)
from teachloop.store.experiments import ArmResult, ExperimentRecord, QuestionOutcome
from teachloop.store.records import EvaluationRow, TrainingJob
from teachloop.view import app

TESTS = Path(__file__).parent
ROOT = TESTS.parent
TOPICS = ("arithmetic.addition", "arithmetic.multiplication")
BASE = "http://127.0.0.1"
_MUL = re.compile(r"What is (\d+) × (\d+)\?")
TEACHER_SAYS = teacher_reply(None).strip()  # type: ignore[arg-type]


def reteachable_student(request: GenerationRequest) -> str:
    """The conftest student, who also gets a multiplication right once it has been retaught
    (so lessons have every outcome: right first try, fixed by a reteach, still wrong)."""
    question = current_question(request.prompt)
    m = _MUL.search(question)
    if m and TEACHER_SAYS in request.prompt and int(m[1]) % 2 == 0:
        return f" {int(m[1]) * int(m[2])}\n"
    return adds_only_student(request)


def fill_training(store: Store) -> None:
    """What a loop round leaves, through the store's own writes: a DPO job that made v0001 from
    some pairs, held-out evaluations of base and v0001, v0001 promoted, and a failed job."""
    steps = [{"step": i, "loss": 0.7 - 0.1 * i, "reward_margin": 0.2 * i} for i in range(1, 4)]
    store.ensure_base("student")
    started = datetime(2026, 1, 2, tzinfo=UTC)
    store.start_job(
        TrainingJob(job_id="job-1", method="dpo", from_version="base", status="running",
                    pairs=2, started_at=started)
    )  # fmt: skip
    pairs = [p.pair_id for p in store.pair_page(limit=2).items]
    store.complete_job(
        "job-1",
        ModelVersion(version="v0001", parent_version="base", method="dpo", base_model="student",
                     adapter_path="adapters/v0001", job_id="job-1"),
        pairs,
        json.dumps(steps),
    )  # fmt: skip
    store.start_job(
        TrainingJob(job_id="job-2", method="sft", from_version="v0001", status="running",
                    started_at=started + timedelta(hours=1))
    )  # fmt: skip
    store.fail_job("job-2", "out of memory")
    store.write_evaluation(
        [
            EvaluationRow(
                eval_id=f"e-{version}",
                version=version,
                topic=topic,
                questions=10,
                correct=correct,
                accuracy=correct / 10,
                seed=0,
                created_at=started,
            )
            for version, scores in (("base", (9, 2)), ("v0001", (9, 6)))
            for topic, correct in zip(TOPICS, scores, strict=True)
        ]
    )
    store.promote("v0001")


def fill_experiment(store: Store, name: str = "exp") -> None:
    """An experiment's rows as `teachloop experiment` stores them: three arms on two seeds."""
    store.write_experiment(ExperimentRecord(experiment=name, config="{}"), [0, 1])
    skill = {"base": 0.3, "uniform_sft": 0.5, "selective_sft": 0.7}
    for seed in (0, 1):
        for arm, p in skill.items():
            outcomes = [
                QuestionOutcome(
                    experiment=name,
                    seed=seed,
                    arm=arm,
                    question_index=i,
                    topic=TOPICS[i % 2],
                    difficulty=1,
                    question=f"q{i}",
                    correct=(i * 7 + seed) % 10 < 10 * p,
                )
                for i in range(20)
            ]
            result = ArmResult(
                experiment=name,
                seed=seed,
                arm=arm,
                data="none" if arm == "base" else arm.split("_")[0],
                method=None if arm == "base" else "sft",
                examples=0 if arm == "base" else 8,
                steps=0 if arm == "base" else 4,
                teacher_tokens=100 if arm == "selective_sft" else 0,
                data_wall_s=1.0,
                train_wall_s=2.0,
                eval_wall_s=0.5,
                questions=20,
                correct=sum(o.correct for o in outcomes),
                adapter_path=None,
            )
            store.write_arm_result(result, outcomes)


@pytest.fixture(scope="module")
def built_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scripted run of 6 lessons, its pairs, training rows and an experiment: built once."""
    config = RunConfig.validated(
        {
            "db": tmp_path_factory.mktemp("view") / "log.duckdb",
            "run_id": "test-run",
            "lessons": 6,
            "concurrency": 2,
            "topics": TOPICS,
        }
    )
    run_lessons(
        config,
        teacher_backend=ScriptedBackend(teacher_reply, name="teacher"),
        student_backend=ScriptedBackend(reteachable_student, name="student"),
        progress=False,
    )
    store = Store(config.db)
    store.build_pairs()
    fill_training(store)
    fill_experiment(store)
    return config.db


@pytest.fixture
def log(built_log: Path, tmp_path: Path) -> Path:
    """A copy of the built log for one test (the browser test merges into its own)."""
    return Path(shutil.copy(built_log, tmp_path / "log.duckdb"))


def client(db: Path | Store, **options: object) -> TestClient:
    return TestClient(app(db, **options), base_url=BASE)  # type: ignore[arg-type]


def hrefs(page: str, pattern: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(rf'href="({pattern}[^"]*)"', page)]


# -- every page ---------------------------------------------------------------------------------


def test_every_page_renders_a_scripted_run(log: Path) -> None:
    store = Store.open(log, read_only=True)
    web = client(log)

    runs = web.get("/")
    assert runs.status_code == 200
    assert "content-security-policy" in runs.headers
    assert hrefs(runs.text, "/runs/test-run") == ["/runs/test-run", "/runs/test-run/lessons"]
    summary = store.run_summary("test-run")
    assert summary is not None and summary.lessons == 6
    assert f"{100 * summary.first_try_accuracy:.1f}%" in runs.text
    assert "teacher: teacher" in runs.text and "student: student" in runs.text  # models

    run = web.get("/runs/test-run").text
    for topic in store.topic_accuracy("test-run"):
        assert f"?topic={topic.topic}" in run
    assert "Reteach strategies" in run

    lessons = web.get("/runs/test-run/lessons").text
    links = hrefs(lessons, "/lessons/")
    assert links == [f"/lessons/{lesson.lesson_id}" for lesson in store.lessons()]

    for lesson in store.lessons():
        page = web.get(f"/lessons/{lesson.lesson_id}").text
        messages = store.transcript(lesson.lesson_id)
        turns = re.findall(r'<li id="([^"]+)" class="msg (teacher|student) (\w+)', page)
        assert [(t[0], t[1], t[2]) for t in turns] == [
            (m.message_id, m.sender.value, m.kind) for m in messages
        ]
        for m in messages:
            assert escape(m.text) in page
            if isinstance(m, Question):
                assert f"difficulty {m.difficulty}" in page and m.topic in page
                assert "chosen from the estimate:" in page
            if isinstance(m, Answer):
                assert f"extracted final answer: <code>{m.final_answer}" in page
            if isinstance(m, Reteach):
                assert m.strategy.value in page
        assert page.count('class="verdict') >= len([m for m in messages if m.kind == "answer"])

    pairs = web.get("/pairs").text
    assert len(hrefs(pairs, "/lessons/")) == min(
        50, store.pair_page(limit=1).total
    )  # every pair links to its turns

    training = web.get("/training").text
    for text in ("v0001", "job-1", "out of memory", "the student now", "self_corrected"):
        assert text in training
    images = re.findall(r'<img src="([^"]+)"', training)
    assert len(images) == 4
    for src in images:
        png = web.get(src)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert hrefs(training, "/experiments/") == ["/experiments/exp"]

    experiment = web.get("/experiments/exp").text
    assert all(f"<td>{arm}</td>" in experiment for arm in ("base", "uniform_sft"))
    assert "Per topic" in experiment
    for src in re.findall(r'<img src="([^"]+)"', experiment):
        assert web.get(src).content.startswith(b"\x89PNG")


def test_lessons_filter_and_page(log: Path) -> None:
    store = Store.open(log, read_only=True)
    web = client(log, page_size=2)
    all_ids = [lesson.lesson_id for lesson in store.lessons(run_id="test-run")]

    def listed(query: str = "") -> tuple[int, list[str]]:
        page = web.get(f"/runs/test-run/lessons{query}")
        assert page.status_code == 200, page.text
        total = int(re.search(r'id="lesson-total">([\d,]+)<', page.text)[1].replace(",", ""))
        return total, [h.rsplit("/", 1)[1] for h in hrefs(page.text, "/lessons/")]

    seen: list[str] = []
    for offset in range(0, 8, 2):
        total, ids = listed(f"?offset={offset}")
        assert total == 6
        seen += ids
    assert seen == all_ids
    assert listed("?offset=100") == (6, [])  # past the end: nothing, and the total

    outcomes = store.query(
        "SELECT lesson_id, bool_or(correct_first) AS first, bool_or(correct_final AND NOT "
        "correct_first) AS fixed, bool_or(NOT correct_final) AS wrong FROM question_outcomes "
        "GROUP BY lesson_id"
    ).to_pylist()
    for outcome in ("first", "fixed", "wrong"):
        expected = sorted(r["lesson_id"] for r in outcomes if r[outcome])
        name = {"first": "first_try"}.get(outcome, outcome)
        total, _ = listed(f"?outcome={name}")
        assert total == len(expected), outcome
        assert total > 0  # the reteachable student gives every outcome
    multiplication = store.lessons(run_id="test-run", topic="arithmetic.multiplication")
    assert listed("?topic=arithmetic.multiplication")[0] == len(multiplication)
    assert listed("?status=complete")[0] == 6
    assert listed("?status=failed")[0] == 0
    assert listed("?leaked=no")[0] == 6 and listed("?leaked=yes")[0] == 0
    # a run whose reteach stated the answer (helpers' hand-made lessons are of run "r")
    store = Store(log)
    store.write_run(
        RunRecord(run_id="r", lessons_planned=2, teacher_model="t", student_model="s", config="{}")
    )
    store.write_lessons(
        [
            helpers.lesson("r-L0", [(" 4", False), (" 5", True)], leaked=True),
            helpers.lesson("r-L1", [(" 5", True)]),
        ]
    )
    leaked = web.get("/runs/r/lessons?leaked=yes").text
    assert hrefs(leaked, "/lessons/") == ["/lessons/r-L0"]
    assert hrefs(web.get("/runs/r/lessons?leaked=no").text, "/lessons/") == ["/lessons/r-L1"]
    assert "leaked the answer" in web.get("/lessons/r-L0").text
    # paging links keep the filters; a new filter starts from the first page
    page = web.get("/runs/test-run/lessons?status=complete&offset=2").text
    assert "?status=complete&amp;offset=4" in page and "?status=complete&amp;offset=0" in page


def test_pairs_link_to_the_turns_they_came_from(log: Path) -> None:
    store = Store.open(log, read_only=True)
    web = client(log)
    pairs = store.pair_page(limit=1000).items
    assert {p.rule for p in pairs} >= {"self_corrected", "reference"}
    listing = web.get("/pairs?rule=self_corrected").text
    links = hrefs(listing, "/lessons/")
    assert len(links) == len([p for p in pairs if p.rule == "self_corrected"])
    pair = next(p for p in pairs if p.rule == "self_corrected")
    link = next(h for h in links if pair.pair_id in h)
    lesson = web.get(link.split("#")[0]).text
    marked = re.findall(r'<li id="([^"]+)" class="msg \w+ \w+ marked"', lesson)
    assert marked == pair.source_ids
    assert link.endswith(f"#{pair.source_ids[0]}")
    # filtered by run and rule, and the rules come from the log
    assert web.get("/pairs?run=nope").text.count('class="pair-source"') == 0
    assert web.get("/pairs?rule=invented").status_code == 400


def test_unknown_ids_and_bad_input_are_clear_pages(log: Path) -> None:
    web = client(log)
    for url in (
        "/runs/nope",
        "/runs/nope/lessons",
        "/lessons/nope",
        "/experiments/nope",
        "/experiments/exp/plots/nope.png",
        "/plots/nope.png",
        "/no/such/page",
    ):
        page = web.get(url)
        assert page.status_code == 404, url
        assert "404: not found" in page.text and "back to the runs" in page.text
    assert "lesson &#39;nope&#39; is not in this log" in web.get("/lessons/nope").text
    for url in ("/runs/test-run/lessons?offset=-1", "/runs/test-run/lessons?status=done"):
        assert web.get(url).status_code == 400
    # nothing but GET, and only on its own address
    assert web.post("/").status_code == 405
    assert web.get("/", headers={"host": "evil.example"}).status_code == 400
    assert web.get("/", headers={"host": "localhost:8000"}).status_code == 200
    assert (
        client(log, allowed_hosts=None).get("/", headers={"host": "x.example"}).status_code == 200
    )


def test_viewing_never_writes_and_mounts_under_a_prefix(log: Path) -> None:
    before = hashlib.sha256(log.read_bytes()).hexdigest()
    outer = Starlette(routes=[Mount("/viewer", app=app(log))])
    web = TestClient(outer, base_url=BASE)
    runs = web.get("/viewer/").text
    assert hrefs(runs, "/viewer/runs/test-run")  # links carry the mount's prefix
    for url in ("/viewer/runs/test-run/lessons", "/viewer/training", "/viewer/pairs"):
        assert web.get(url).status_code == 200
    assert 'href="/viewer/static/view.css"' in runs
    assert hashlib.sha256(log.read_bytes()).hexdigest() == before


def test_plots_are_drawn_once_per_state_of_the_log(log: Path) -> None:
    web = client(log)
    first = web.get("/plots/pairs_by_rule.png").content
    assert web.get("/plots/pairs_by_rule.png").content == first  # the cached drawing
    store = Store(log)
    store.write_lessons(hostile_lessons())  # a lesson with a self-corrected pair
    store.build_pairs()
    again = web.get("/plots/pairs_by_rule.png").content
    assert again.startswith(b"\x89PNG") and again != first


def test_a_lake_is_viewed_like_a_file(log: Path, postgres: Postgres, tmp_path: Path) -> None:
    target, data_path = postgres.lake(tmp_path / "view")
    Store(target, data_path=data_path).merge(log)
    web = client(target)
    lessons = web.get("/runs/test-run/lessons?outcome=fixed").text
    from_file = client(log).get("/runs/test-run/lessons?outcome=fixed").text
    assert hrefs(lessons, "/lessons/") == hrefs(from_file, "/lessons/") != []
    for url in ("/", "/runs/test-run", hrefs(lessons, "/lessons/")[0], "/pairs", "/training"):
        assert web.get(url).status_code == 200, url
    assert web.get("/plots/learning_curves.png").content.startswith(b"\x89PNG")


def test_refresh_toggle_adds_a_meta_refresh(log: Path) -> None:
    web = client(log)
    assert 'http-equiv="refresh"' not in web.get("/").text
    page = web.get("/runs/test-run/lessons?refresh=5&status=complete").text
    assert '<meta http-equiv="refresh" content="5">' in page
    assert '<input type="hidden" name="refresh" value="5">' in page  # filters keep it


# -- hostile text -------------------------------------------------------------------------------

SCRIPT = "<script>document.title='pwned'; window.__xss = 1</script>"
IMG = "<img src=x onerror=\"document.title='pwned'\">"
LINK = "<a href=\"javascript:document.title='pwned'\">click me</a>"


def hostile_lessons(run_id: str = "xss-run") -> list[LessonLog]:
    """A lesson whose every model-written text (and topic, model name) is hostile, and a
    failed one with a hostile error."""
    lid = f"{run_id}-L00000"
    t = datetime(2026, 1, 1, tzinfo=UTC)
    gen = Generation(model=IMG, endpoint=LINK, prompt_tokens=3, completion_tokens=2)
    common = {"run_id": run_id, "lesson_id": lid}

    def at(turn: int) -> dict:
        return {**common, "message_id": message_id(lid, turn), "turn": turn,
                "created_at": t + timedelta(seconds=turn)}  # fmt: skip

    q = Question(
        **at(0),
        text=f"What is 2 + 2? {SCRIPT}",
        question_index=0,
        topic="<b>topic</b>",
        difficulty=1,
        reference_answer=IMG,
        chosen_from={"<b>topic</b>": (1.0, 1.0)},
    )
    wrong = Answer(
        **at(1), text=IMG, question_id=q.message_id, attempt=0, final_answer=SCRIPT,
        prompt=f"Question: {LINK}", generation=gen,
    )  # fmt: skip
    critique = Critique(
        **at(2), text=LINK, question_id=q.message_id, answer_id=wrong.message_id, attempt=0,
        correct=False, score=0.0, error_category=ErrorCategory.wrong, feedback=SCRIPT,
        parse_error=IMG, generation=gen,
    )  # fmt: skip
    reteach = Reteach(
        **at(3), text=SCRIPT + LINK, question_id=q.message_id, attempt=1,
        strategy=Strategy.hint, explanation=SCRIPT, worked_example=IMG, generation=gen,
    )  # fmt: skip
    right = Answer(
        **at(4), text=f"4 {LINK}", question_id=q.message_id, attempt=1, final_answer="4",
        prompt="Question: What is 2 + 2?", generation=gen,
    )  # fmt: skip
    judged = Critique(
        **at(5), text=SCRIPT, question_id=q.message_id, answer_id=right.message_id, attempt=1,
        correct=True, score=1.0, error_category=ErrorCategory.none, feedback="ok",
        generation=gen,
    )  # fmt: skip
    record = LessonRecord(
        lesson_id=lid, run_id=run_id, lesson_index=0, status=LessonStatus.complete,
        end_reason=EndReason.budget, started_at=t, finished_at=t,
    )  # fmt: skip
    failed = record.model_copy(
        update={"lesson_id": f"{run_id}-L00001", "lesson_index": 1, "error": f"boom {SCRIPT}",
                "status": LessonStatus.failed, "end_reason": EndReason.error}
    )  # fmt: skip
    return [
        LessonLog(lesson=record, messages=[q, wrong, critique, reteach, right, judged], mastery=[]),
        LessonLog(lesson=failed, messages=[], mastery=[]),
    ]


@pytest.fixture
def hostile_log(tmp_path: Path) -> Path:
    store = Store(tmp_path / "xss.duckdb")
    store.write_run(
        RunRecord(
            run_id="xss-run", lessons_planned=2, teacher_model=SCRIPT, student_model=IMG,
            config="{}",
        )
    )  # fmt: skip
    store.write_lessons(hostile_lessons())
    assert store.build_pairs().added["self_corrected"] == 1  # a pair of hostile texts too
    return store.path


def test_hostile_message_text_comes_back_escaped(hostile_log: Path) -> None:
    web = client(hostile_log)
    pages = {
        url: web.get(url)
        for url in (
            "/",
            "/runs/xss-run",
            "/runs/xss-run/lessons",
            "/runs/xss-run/lessons?topic=%3Cb%3Etopic%3C%2Fb%3E",
            "/lessons/xss-run-L00000",
            "/pairs",
        )
    }
    for url, page in pages.items():
        assert page.status_code == 200, url
        text = page.text
        for raw in (SCRIPT, IMG, LINK, "<b>topic</b>"):
            assert raw not in text, (url, raw)
        assert not re.search(r"<(script|img)\b", text, re.I), url
        assert not re.search(r"""href=["']?\s*javascript:""", text, re.I), url
        # and were something to slip through, the policy lets no script run
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
    lesson = pages["/lessons/xss-run-L00000"].text
    for text in (SCRIPT, IMG, LINK):
        assert escape(text) in lesson  # shown as text
    assert "&lt;b&gt;topic&lt;/b&gt;" in pages["/runs/xss-run/lessons"].text
    # the hostile topic filters like any other (as a parameter, in a URL-encoded link)
    assert (
        'id="lesson-total">1<' in pages["/runs/xss-run/lessons?topic=%3Cb%3Etopic%3C%2Fb%3E"].text
    )
    assert "?topic=%3Cb%3Etopic%3C/b%3E" in pages["/runs/xss-run"].text


# -- a run writing while the viewer reads -------------------------------------------------------


def test_the_viewer_keeps_up_with_a_run_writing_the_file(tmp_path: Path) -> None:
    """A run in another process writes lessons (a flush every second) while the viewer
    reloads: every request is answered from a short read-only connection, and the lesson count
    grows to the end."""
    db = tmp_path / "live.duckdb"
    env = {**os.environ, "PYTHONPATH": str(TESTS), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(
        [sys.executable, str(TESTS / "scripted_run.py"), str(db), "12", "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    counts: list[int] = []
    try:
        while not db.exists() or Store(db, create=False).schema_version() == 0:
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
        web = None
        while child.poll() is None:
            if web is None:
                try:
                    web = client(db)
                except Exception:  # the schema is still being created
                    time.sleep(0.05)
                    continue
            page = web.get("/runs/killed-run/lessons?refresh=2")
            if page.status_code == 404:  # the run's row is not written yet
                continue
            assert page.status_code == 200, page.text
            counts.append(int(re.search(r'id="lesson-total">(\d+)<', page.text)[1]))
            time.sleep(0.1)
        _, err = child.communicate()
        assert child.returncode == 0, err
    finally:
        if child.poll() is None:
            child.kill()
    final = client(db).get("/runs/killed-run/lessons").text
    assert 'id="lesson-total">12<' in final
    assert counts == sorted(counts) and len(set(counts)) >= 2, counts


# -- the command --------------------------------------------------------------------------------


class Served:
    """`teachloop view` in a child process, with the URL it printed."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "teachloop.cli", "view", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"(http://\S+/)", line)
        assert match, (line, self.process.stderr.read() if self.process.stderr else "")
        self.url = match[1]
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, err


def test_view_command_serves_until_ctrl_c_and_errors_are_one_line(
    log: Path, tmp_path: Path
) -> None:
    import urllib.request

    missing = helpers.teachloop("view", "--db", str(tmp_path / "missing.duckdb"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: database {tmp_path / 'missing.duckdb'} does not exist"
    ]

    served = Served("--db", str(log), "--port", "0")
    try:
        assert served.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(served.url + "runs/test-run") as response:
            assert response.status == 200 and b"test-run" in response.read()
        busy = helpers.teachloop("view", "--db", str(log), "--port", str(served.port))
        assert busy.returncode == 2
        assert busy.stderr.strip().splitlines() == [
            f"error: port {served.port} on 127.0.0.1 is in use: stop what listens there or "
            "pick another with --port"
        ]
    finally:
        code, err = served.stop()
    assert code == 0, err

    everywhere = Served("--db", str(log), "--port", "0", "--host", "0.0.0.0")
    # Stopped once it serves, as a user would: a Ctrl-C inside uvicorn's start-up on a loaded
    # machine once left the process waiting (seen once in a clean-clone run, not reproduced).
    with urllib.request.urlopen(f"http://127.0.0.1:{everywhere.port}/") as response:
        assert response.status == 200
    code, err = everywhere.stop()
    assert code == 0, err
    assert "warning: listening on 0.0.0.0: the viewer has no authentication" in err


# -- a real browser (slow: `make test-slow` installs Debian's chromium first) ---------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def live_server(log: Path, hostile_log: Path) -> Iterator[str]:
    """The viewer of the scripted run, with the hostile lesson merged in, on a real server."""
    Store(log).merge(hostile_log)
    import uvicorn

    from teachloop.view.server import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app(log), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.slow
def test_a_headless_browser_clicks_from_runs_to_a_lesson(live_server: str, tmp_path: Path) -> None:
    # Not skipped when absent: this test is in the slow set, whose `make test-slow` installs
    # the browser first; a missing one is a broken setup to see, not a pass.
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "Debian's chromium and chromium-driver are needed: make install-browser"
    )
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1200,1500")
    # The driver from the same Debian release; Selenium Manager would download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.get(live_server + "/")
        assert driver.title.startswith("Runs")
        driver.find_element(By.LINK_TEXT, "test-run").click()
        assert driver.title.startswith("Run test-run")
        driver.find_element(By.PARTIAL_LINK_TEXT, "Lessons (").click()
        # a lesson with a question fixed by a reteach: every kind of turn
        Select(driver.find_element(By.NAME, "outcome")).select_by_visible_text("fixed by a reteach")
        driver.find_element(By.CSS_SELECTOR, "form.filters button").click()
        WebDriverWait(driver, 10).until(lambda d: "outcome=fixed" in d.current_url)
        driver.find_elements(By.CSS_SELECTOR, "a.lesson-link")[0].click()
        assert driver.title.startswith("Lesson test-run-L")
        turns = driver.find_elements(By.CSS_SELECTOR, "ol.conversation li.msg")
        kinds = {t.get_attribute("class").split()[2] for t in turns}
        assert kinds == {"question", "answer", "critique", "reteach"}
        assert driver.find_elements(By.CSS_SELECTOR, "li.msg.teacher")
        assert driver.find_elements(By.CSS_SELECTOR, "li.msg.student")
        shot = Path(os.environ.get("TEACHLOOP_VIEW_SCREENSHOT", tmp_path / "lesson.png"))
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        # the hostile lesson: its text is on the page as text, and nothing in it ran
        driver.get(live_server + "/runs/xss-run/lessons")
        driver.find_element(By.CSS_SELECTOR, "a.lesson-link").click()
        body = driver.find_element(By.TAG_NAME, "body").text
        assert SCRIPT in body and "click me" in body
        assert driver.title.startswith("Lesson xss-run")  # no script set it to 'pwned'
        assert driver.execute_script("return window.__xss === undefined")
        assert not driver.find_elements(By.CSS_SELECTOR, "main img, main script")
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018
    finally:
        driver.quit()
