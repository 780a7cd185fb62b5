"""Real tasks: reasoning-gym topics, shown work, prompt templates, minimal domains (issue 28)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from conftest import current_question
from fake_openai import FakeOpenAIServer

from teachloop import Store, run_lessons
from teachloop.agents.backends.base import GenerationRequest
from teachloop.agents.backends.openai_backend import OpenAIBackend
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.agents.mastery import LiveEstimate, MasteryModel
from teachloop.agents.student import Student, shown_work_answer
from teachloop.agents.teacher import Teacher
from teachloop.config import EndpointConfig, LessonConfig, RunConfig
from teachloop.domains import (
    Domain,
    DomainSet,
    Problem,
    Verdict,
    build_domains,
    heldout_problems,
    heldout_questions,
)
from teachloop.domains.reasoning_gym import ReasoningGymDomain, worked_solution
from teachloop.errors import ConfigError
from teachloop.messages import ErrorCategory

# The tasks of examples/skills.toml and examples/word-problems.toml.
TASKS = (
    "letter_counting",
    "leg_counting",
    "basic_arithmetic",
    "chain_sum",
    "lcm",
    "calendar_arithmetic",
    "spell_backward",
    "count_bits",
    "gcd",
    "simple_equations",
    "gsm_symbolic",
)
THREE = ("reasoning_gym.leg_counting", "reasoning_gym.spell_backward", "reasoning_gym.gcd")


@pytest.fixture(scope="module")
def gym() -> ReasoningGymDomain:
    return ReasoningGymDomain(TASKS)


def _wrong(answer: str) -> str:
    return "Tuesday" if answer == "Monday" else f"x{answer}x"


@pytest.mark.parametrize("task", TASKS)
def test_each_task_generates_from_the_rng_and_verifies_with_its_own_scorer(
    gym: ReasoningGymDomain, task: str
) -> None:
    topic = f"reasoning_gym.{task}"
    for difficulty in range(1, gym.max_difficulty(topic) + 1):
        first = gym.generate(topic, difficulty, random.Random(7))
        assert first == gym.generate(topic, difficulty, random.Random(7))  # deterministic
        assert first.difficulty == difficulty and first.topic == topic
        assert first != gym.generate(topic, difficulty, random.Random(8))
        right = gym.verify(first, first.answer)
        assert right.correct and right.score == 1.0
        wrong = gym.verify(first, _wrong(first.answer))
        assert not wrong.correct and wrong.score < 1.0
        assert gym.verify(first, None).error_category is ErrorCategory.no_answer
        # the record behind the problem is found again from its origin
        assert gym.entry(first)["question"].strip() == first.question


def test_difficulty_is_the_curriculum_level_and_a_task_without_one_has_one(
    gym: ReasoningGymDomain,
) -> None:
    # basic_arithmetic's curriculum: digits per term grow with the level.
    easy = gym.generate("reasoning_gym.basic_arithmetic", 1, random.Random(0))
    hard = gym.generate("reasoning_gym.basic_arithmetic", 4, random.Random(0))
    assert gym.entry(easy)["metadata"]["num_digits"] < gym.entry(hard)["metadata"]["num_digits"]
    assert gym.max_difficulty("reasoning_gym.gsm_symbolic") == 1
    assert gym.max_difficulty("reasoning_gym.gcd") == 4  # its longest attribute has 4 levels
    with pytest.raises(ConfigError, match=r"gsm_symbolic: difficulty must be an integer 1\.\.1"):
        gym.generate("reasoning_gym.gsm_symbolic", 2, random.Random(0))
    # The staircase knows it: a success on a one-level task leaves it at difficulty 1.
    estimate = LiveEstimate(MasteryModel())
    for _ in range(3):
        model = estimate.record("reasoning_gym.gsm_symbolic", True, max_difficulty=1)
    assert model.topic("reasoning_gym.gsm_symbolic").difficulty == 1
    teacher = Teacher(ScriptedBackend(lambda r: ""), DomainSet([gym]))
    assert teacher.choose(
        MasteryModel(start_difficulty=4), ("reasoning_gym.gsm_symbolic",), random.Random(0)
    ) == ("reasoning_gym.gsm_symbolic", 1)


def test_options_pass_through_and_bad_ones_name_the_task() -> None:
    config = RunConfig.validated(
        {
            "topics": ["reasoning_gym.leg_counting"],
            "reasoning_gym": {"leg_counting": {"min_animals": 1, "max_animals": 1}},
        }
    )
    domain = build_domains(config).domain_for("reasoning_gym.leg_counting")
    for seed in range(5):
        problem = domain.generate("reasoning_gym.leg_counting", 3, random.Random(seed))
        assert domain.entry(problem)["metadata"]["num_animals"] == 1
    with pytest.raises(ConfigError, match=r"^reasoning_gym\.leg_counting: bad option"):
        ReasoningGymDomain(["leg_counting"], {"leg_counting": {"no_such_option": 3}})
    with pytest.raises(ConfigError, match=r"^topic reasoning_gym\.nope: reasoning-gym has no task"):
        build_domains(RunConfig.validated({"topics": ["reasoning_gym.nope"]}))
    with pytest.raises(ConfigError, match=r"^reasoning_gym\.gcd: options for a task that is not"):
        ReasoningGymDomain(["leg_counting"], {"gcd": {"min_value": 2}})


def test_the_heldout_set_and_the_examples_are_kept_out_of_lessons(
    gym: ReasoningGymDomain,
) -> None:
    domains = DomainSet([gym])
    reserved = heldout_questions(domains, THREE, 20, seed=3)
    heldout = {p.question for p in heldout_problems(domains, THREE, 20, seed=3)}
    examples = domains.example_questions(THREE)
    assert heldout < reserved and examples < reserved and not heldout & examples
    # The held-out difficulties stay within each task's levels.
    assert {p.difficulty for p in heldout_problems(domains, THREE, 20, seed=3)} == {1, 2, 3, 4, 5}
    teacher = Teacher(ScriptedBackend(lambda r: ""), domains, reserved=reserved)
    rng = random.Random(0)
    asked = [teacher.make_problem(t, 1, rng) for t in THREE for _ in range(60)]
    assert not {p.question for p in asked} & reserved


def test_a_minimal_problem_and_verdict_are_valid() -> None:
    problem = Problem(topic="parity", difficulty=1, question="Is 7 even?", answer="no")
    assert problem.solution == problem.hint == "" and problem.worked_solution == "Answer: no"
    assert Verdict(correct=True) == Verdict(correct=True, score=1.0, error_category="none")
    assert Verdict(correct=False) == Verdict(correct=False, score=0.0, error_category="wrong")
    assert Verdict(correct=False, score=0.5).error_category is ErrorCategory.wrong


class Parity(Domain):
    """The smallest domain a user writes: a question, an answer, a verdict."""

    name = "parity"
    topics = ("parity",)
    instruction = "Each question is answered with yes or no."

    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        self._check_request(topic, difficulty)
        n = rng.randrange(10**difficulty)
        return Problem(
            topic=topic,
            difficulty=difficulty,
            question=f"Is {n} even?",
            answer="yes" if n % 2 == 0 else "no",
        )

    def verify(self, problem: Problem, final_answer: str | None) -> Verdict:
        return Verdict(correct=(final_answer or "").strip().lower() == problem.answer)

    def extract_answer(self, text: str) -> str | None:
        return text.strip().split()[0].strip(".").lower() if text.strip() else None


def test_a_minimal_own_domain_runs_lessons(make_config) -> None:
    config = make_config(topics=("parity",), lessons=3).with_domains([Parity()])

    def student(request: GenerationRequest) -> str:
        assert request.prompt.startswith("Each question is answered with yes or no.")
        return " yes."

    result = run_lessons(
        config,
        teacher_backend=ScriptedBackend(lambda r: " Look at the last digit."),
        student_backend=ScriptedBackend(student),
        progress=False,
    )
    assert result.lessons_failed == 0
    outcomes = Store(config.db).query("SELECT correct_first FROM question_outcomes").to_pylist()
    # "yes" is right on even numbers only
    assert {o["correct_first"] for o in outcomes} == {True, False}


def gym_student(request: GenerationRequest) -> str:
    """Spells words backward and counts legs as 4 per animal; answers 1 to anything else."""
    question = request.prompt.rsplit("Question:", 1)[1]
    if m := re.search(r"backward.*?: (\w+)\s*$", question.strip().splitlines()[0]):
        return f" {m[1][::-1]}\n"
    if "legs" in question:
        counts = re.findall(r"(\d+) \w+", question.split("you have", 1)[-1])
        return f" {4 * sum(int(c) for c in counts)}\n"
    return " 1\n"


def test_a_lesson_run_over_three_reasoning_gym_topics(make_config) -> None:
    config = make_config(topics=THREE, lessons=6, lesson={"questions": 4})
    result = run_lessons(
        config,
        teacher_backend=ScriptedBackend(lambda r: " Work it out step by step."),
        student_backend=ScriptedBackend(gym_student),
        progress=False,
    )
    assert result.lessons_failed == 0 and result.lessons == 6
    store = Store(config.db)
    rows = {
        r["topic"]: r["accuracy"]
        for r in store.query(
            "SELECT topic, avg(correct_first::INT) AS accuracy FROM question_outcomes GROUP BY 1"
        ).to_pylist()
    }
    assert set(rows) <= set(THREE) and len(rows) >= 2
    assert rows.get("reasoning_gym.spell_backward", 1.0) == 1.0  # the scorer accepted them
    assert min(rows.values()) < 1.0  # legs are not 4 per animal: the scorer said so
    finals = store.query(
        "SELECT DISTINCT final_answer FROM unique_messages "
        "WHERE kind = 'answer' AND topic = 'reasoning_gym.spell_backward'"
    ).to_pylist()
    assert finals and all(f["final_answer"].isalpha() for f in finals)  # words, not numbers
    pairs = store.run_pairs("test-run")
    assert pairs and {p.target for p in pairs} == {"answer"}


# -- shown work --------------------------------------------------------------------------------

WORK = """Tom has 3 bags of 12 apples, so 3 × 12 = 36 apples.
He gives away 5, so 36 - 5 = 31.
Then he buys 2 more bags: 2 × 12 = 24, and 31 + 24 = 55.
Answer: 55"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (WORK, "55"),
        (WORK.replace("Answer: 55", "**Answer:** 55 apples."), "55"),
        (WORK.replace("Answer: 55", "Final answer: $55"), "55"),
        (WORK + "\nQuestion: what next?\nAnswer: 7", "55"),  # the first answer line counts
        (WORK.replace("\nAnswer: 55", ""), None),  # work with numbers, no final form
        (WORK.replace("Answer: 55", "Answer:"), None),
        ("", None),
    ],
)
def test_shown_work_answer_is_the_final_form_only(text: str, expected: str | None) -> None:
    student = Student(None, shown_work=True)
    assert student.final_answer(text, "arithmetic.addition") == expected


def test_shown_work_prompts_pairs_and_feedback(make_config) -> None:
    config = make_config(
        topics=("arithmetic.addition",),
        lessons=2,
        student={"shown_work": True, "max_tokens": 200},
        lesson={"questions": 2, "max_reteaches": 1},
    )
    teacher_requests: list[GenerationRequest] = []

    def student(request: GenerationRequest) -> str:
        assert request.prompt.endswith(f"Question: {current_question(request.prompt)}\n")
        assert request.stop == ("\nQuestion:", "\n\n") and request.max_tokens == 200
        return "First add the tens: 10 + 10 = 20.\nThen the ones, 3 + 4 = 7.\nAnswer: 1\n\njunk"

    def teacher(request: GenerationRequest) -> str:
        teacher_requests.append(request)
        return " Add the ones first."

    run_lessons(
        config,
        teacher_backend=ScriptedBackend(teacher),
        student_backend=ScriptedBackend(student),
        progress=False,
    )
    store = Store(config.db)
    # The feedback prompt shows the work beside the reference solution.
    feedback = [r.prompt for r in teacher_requests if r.prompt.rstrip().endswith("Feedback:")]
    assert feedback and all("Student's work: First add the tens" in p for p in feedback)
    assert all("Reference solution:" in p for p in feedback)
    pairs = store.run_pairs("test-run")
    assert pairs and {p.target for p in pairs} == {"solution"}
    store.build_pairs()  # the training queue: a job picks pairs by target
    assert store.unused_pairs(targets=("answer",)) == []
    assert {p.target for p in store.unused_pairs(targets=("solution",))} == {"solution"}
    for pair in pairs:
        assert pair.rejected.startswith("First add the tens")  # the work, no leading space
        assert pair.chosen.startswith("Add ") and re.search(r"\nAnswer: \d+$", pair.chosen)
        assert pair.prompt.endswith("\n")
    shown = store.query(
        "SELECT DISTINCT (payload ->> '$.shown_work')::BOOLEAN AS shown FROM messages "
        "WHERE kind = 'answer'"
    ).to_pylist()
    assert shown == [{"shown": True}]


# -- prompt templates -----------------------------------------------------------------------------


def test_prompt_templates_from_the_config_reach_the_backends(make_config, tmp_path: Path) -> None:
    template = tmp_path / "student.j2"
    template.write_text("Q[{{ topic_free }}]", encoding="utf-8")
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        'topics = ["arithmetic.addition"]\n'
        "[prompts]\n"
        'student = { file = "student.j2" }\n'
        'feedback = "Grade {{ got }} against {{ reference }} for: {{ question }}\\nFeedback:"\n',
        encoding="utf-8",
    )
    # A template that names an unknown variable is refused with its name.
    with pytest.raises(ConfigError, match=r"^prompts\.student: 'topic_free' is undefined"):
        Student(None, prompts=_prompts(RunConfig.from_file(config_file))).prompt(
            "What is 1 + 2?", "arithmetic.addition"
        )
    template.write_text("Solve: {{ question }} ({{ instruction }})\nA:", encoding="utf-8")
    config = make_config(
        topics=("arithmetic.multiplication",),
        lessons=1,
        lesson={"questions": 1},
        prompts=RunConfig.from_file(config_file).prompts,
    )
    teacher = ScriptedBackend(lambda r: " Multiply the ones.")
    student = ScriptedBackend(lambda r: " 0")
    run_lessons(config, teacher_backend=teacher, student_backend=student, progress=False)
    first = student.requests[0].prompt
    assert re.fullmatch(r"Solve: What is \d+ × \d+\? \(Each question .*\)\nA:", first)
    assert teacher.requests[0].prompt.startswith("Grade 0 against ")
    with pytest.raises(ConfigError, match=r"^prompts\.nonsense: unknown template"):
        _prompts(make_config(prompts={"nonsense": "x"}))
    with pytest.raises(ConfigError, match=r"^prompts\.judge: "):
        _prompts(make_config(prompts={"judge": "{% if %}"}))


def _prompts(config: RunConfig):
    from teachloop.agents.prompts import Prompts

    return Prompts(config.prompts)


async def test_a_chat_endpoint_gets_messages_not_a_pasted_completion() -> None:
    with FakeOpenAIServer(lambda body: "42") as server:
        backend = OpenAIBackend([EndpointConfig(url=server.url, model="m")], api="chat")
        student = Student(backend, shown_work=True, api="chat")
        problem = Problem(
            topic="arithmetic.addition", difficulty=1, question="What is 40 + 2?", answer="42"
        )
        try:
            await student.attempt(problem)
        finally:
            await backend.aclose()
    messages = server.requests[0]["messages"]
    assert messages[0]["role"] == "system" and "Answer: <answer>" in messages[0]["content"]
    # the few-shot examples as turns, the question last
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[1]["content"] == "What is 12 + 7?"
    assert messages[2]["content"].endswith("Answer: 19")
    assert messages[-1] == {"role": "user", "content": "What is 40 + 2?"}
    assert "stop" not in server.requests[0] or not server.requests[0]["stop"]


def test_gsm_cot_becomes_the_shown_work_form() -> None:
    cot = "Step one: 2 * 3 = 6\n\nStep two: 6 + 1 = 7\n#### 7"
    assert worked_solution(cot, "7") == "Step one: 2 * 3 = 6\nStep two: 6 + 1 = 7\nAnswer: 7"
    problem = ReasoningGymDomain(["gsm_symbolic"]).generate(
        "reasoning_gym.gsm_symbolic", 1, random.Random(1)
    )
    assert problem.solution.endswith(f"\nAnswer: {problem.answer}")
    assert shown_work_answer(problem.solution) == problem.answer


def test_masking_works_on_a_text_answer_of_a_task(gym: ReasoningGymDomain) -> None:
    problem = gym.generate("reasoning_gym.spell_backward", 2, random.Random(3))
    teacher = Teacher(ScriptedBackend(lambda r: ""), DomainSet([gym]), policy=LessonConfig())
    said = f"Read it from the end: {problem.answer.upper()}."
    assert teacher.mask_answer(problem, said) == "Read it from the end: ___."


# -- the embedded model on examples/skills.toml (slow) -------------------------------------------


@pytest.mark.slow
def test_the_embedded_model_on_the_skills_config(tmp_path: Path) -> None:
    """examples/skills.toml as a user runs it, shortened: lessons on the real model, then the
    held-out table through the gate's path. Every task is asked and verified by its scorer."""
    from teachloop.training.jobs import evaluate_version

    config = RunConfig.from_file(Path(__file__).parent.parent / "examples" / "skills.toml")
    config = config.with_overrides(
        db=tmp_path / "skills.duckdb", run_id="skills", lessons=4, eval={"per_topic": 2}
    )
    result = run_lessons(config, progress=False)
    assert result.status == "complete" and result.lessons_failed == 0
    store = Store(config.db)
    answers = store.query(
        "SELECT topic, final_answer FROM unique_messages WHERE kind = 'answer'"
    ).to_pylist()
    assert {a["topic"] for a in answers} <= set(config.topics) and len(answers) >= 16
    scored = evaluate_version(config, "base", store=store)
    assert [t.topic for t in scored.topics] == list(config.topics)
    assert all(t.questions == 2 for t in scored.topics)


@pytest.mark.parametrize(
    "name", ["skills.toml", "word-problems.toml", "word-problems-instruct.toml"]
)
def test_the_example_configs_load_and_name_known_tasks(name: str) -> None:
    config = RunConfig.from_file(Path(__file__).parent.parent / "examples" / name)
    domains = build_domains(config)
    assert all(t.startswith("reasoning_gym.") and t in domains for t in config.topics)
    if "word-problems" in name:
        assert config.student.shown_work and config.student.max_tokens >= 256
