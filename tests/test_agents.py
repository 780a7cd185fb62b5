"""Teacher and student agents on their own, with scripted backends."""

import random

import pytest
from conftest import teacher_reply

from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.agents.prompts import student_prompt
from teachloop.agents.student import Student
from teachloop.agents.teacher import JUDGEMENT_SCHEMA, Teacher
from teachloop.answers import extract_final_answer
from teachloop.config import LessonConfig
from teachloop.domains import Domain, DomainSet, Problem, Verdict, builtin_domains
from teachloop.errors import ConfigError
from teachloop.messages import Strategy, parse_message

DOMAINS = DomainSet(builtin_domains().values())


def test_student_prompt_puts_the_reteach_before_the_question() -> None:
    prompt = student_prompt(
        "What is 3 + 4?", "Add the\nones.", "Question: What is 1 + 1?\nAnswer: 2"
    )
    assert prompt.endswith(
        "Question: What is 1 + 1?\nAnswer: 2\n\nTeacher: Add the ones.\n"
        "Question: What is 3 + 4?\nAnswer:"
    )
    assert student_prompt("What is 3 + 4?").endswith("\n\nQuestion: What is 3 + 4?\nAnswer:")


async def test_reteach_strategies_shape_what_the_student_sees() -> None:
    teacher = Teacher(ScriptedBackend(teacher_reply), DOMAINS)
    student = Student(ScriptedBackend(lambda r: " 0"))
    rng = random.Random(3)
    problem = teacher.make_problem("arithmetic.multiplication", 2, rng)
    question = teacher.ask(problem, run_id="r", lesson_id="r-L0", turn=0, index=0)
    answer = await student.answer(question, None, turn=1)
    assert answer.final_answer == "0"
    by_strategy = {
        s: await teacher.reteach(problem, question, answer, s, random.Random(4), turn=3)
        for s in Strategy
    }
    hint = by_strategy[Strategy.hint]
    assert hint.explanation.startswith(problem.hint) and hint.worked_example == ""
    worked = by_strategy[Strategy.worked_example].worked_example
    assert worked.startswith("Question: What is ") and problem.question not in worked
    # the worked example is a different problem, solved correctly by the domain
    similar_question = worked.splitlines()[0].removeprefix("Question: ")
    similar_answer = extract_final_answer(worked.splitlines()[-1])
    a, b = similar_question.removeprefix("What is ").removesuffix("?").split(" × ")
    assert similar_answer == str(int(a) * int(b))
    again = await student.answer(question, by_strategy[Strategy.worked_example], turn=4)
    assert again.attempt == 1
    assert worked in again.prompt and again.prompt.endswith(f"{question.text}\nAnswer:")
    assert by_strategy[Strategy.step_by_step].explanation == "Look at each place value in turn."


async def test_a_reteach_that_states_the_answer_is_flagged_leaked() -> None:
    problem = Teacher(ScriptedBackend(teacher_reply), DOMAINS).make_problem(
        "arithmetic.multiplication", 3, random.Random(5)
    )
    a, b = problem.question.removeprefix("What is ").removesuffix("?").split(" × ")
    replies = {
        f" Multiply: {a} × {b} = {problem.answer}.": True,  # the answer, stated
        f" Multiply {a} by {b}, one digit at a time.": False,  # only the question's numbers
        f" The result is {int(problem.answer):,}.": True,  # written differently, same value
        f" It is about {int(problem.answer) + 1}.": False,
    }
    unmasked = LessonConfig(mask_answers=False)
    for reply, leaked in replies.items():
        teacher = Teacher(ScriptedBackend(lambda r, reply=reply: reply), DOMAINS, policy=unmasked)
        question = teacher.ask(problem, run_id="r", lesson_id="r-L0", turn=0, index=0)
        answer = await Student(ScriptedBackend(lambda r: " 0")).answer(question, None, turn=1)
        reteach = await teacher.reteach(
            problem, question, answer, Strategy.step_by_step, random.Random(0), turn=3
        )
        assert reteach.leaked is leaked, reply
        assert reteach.explanation == reply.strip() and reteach.written == ""
        assert parse_message(reteach.model_dump_json()) == reteach


async def test_a_reteach_is_sent_with_the_answer_masked_and_logged_as_written() -> None:
    problem = Teacher(ScriptedBackend(teacher_reply), DOMAINS).make_problem(
        "arithmetic.multiplication", 3, random.Random(5)
    )
    a, b = problem.question.removeprefix("What is ").removesuffix("?").split(" × ")
    value = int(problem.answer)
    replies = {  # what the LLM wrote -> what the student is sent
        f"Multiply: {a} × {b} = {value}.": f"Multiply: {a} × {b} = ___.",
        f"The result is {value:,}, or {value}.0 exactly.": "The result is ___, or ___ exactly.",
        f"Multiply {a} by {b}; it is about {value + 1}.": (
            f"Multiply {a} by {b}; it is about {value + 1}."
        ),
    }
    for written, sent in replies.items():
        teacher = Teacher(ScriptedBackend(lambda r, w=written: w), DOMAINS)
        question = teacher.ask(problem, run_id="r", lesson_id="r-L0", turn=0, index=0)
        answer = await Student(ScriptedBackend(lambda r: " 0")).answer(question, None, turn=1)
        reteach = await teacher.reteach(
            problem, question, answer, Strategy.step_by_step, random.Random(0), turn=3
        )
        assert reteach.explanation == sent and reteach.text == sent
        assert reteach.written == (written if sent != written else "")
        assert not reteach.leaked
        # The student's next prompt carries what was sent, never the answer.
        retry = Student(ScriptedBackend(lambda r: " 0")).request(
            question.text, question.topic, reteach
        )
        assert str(value) not in retry.prompt.rsplit("Teacher:", 1)[1]


def test_a_text_answer_is_masked_in_any_case(tmp_path) -> None:
    from teachloop.domains import load_bank

    bank = tmp_path / "geo.jsonl"
    bank.write_text(
        '{"topic": "geo.capitals", "question": "Capital of France?", "answer": "Paris"}\n'
    )
    teacher = Teacher(ScriptedBackend(teacher_reply), DomainSet([load_bank(bank)]))
    problem = teacher.make_problem("geo.capitals", 1, random.Random(0))
    masked = teacher.mask_answer(problem, "It is PARIS, on the Seine (not Parisian).")
    assert masked == "It is ___, on the Seine (not Parisian)."


def test_a_free_text_answer_leaks_by_its_words(tmp_path) -> None:
    from teachloop.domains import load_bank

    bank = tmp_path / "geo.jsonl"
    bank.write_text(
        '{"topic": "geo.capitals", "question": "Capital of France?", "answer": "Paris"}\n'
    )
    teacher = Teacher(ScriptedBackend(teacher_reply), DomainSet([load_bank(bank)]))
    problem = teacher.make_problem("geo.capitals", 1, random.Random(0))
    assert teacher.gives_away(problem, "Think of the city on the Seine: it is  PARIS.")
    assert not teacher.gives_away(problem, "Think of the city on the Seine.")
    # a word, not a substring: a Parisian is not Paris
    assert not teacher.gives_away(problem, "Ask a Parisian where the Seine flows.")


async def test_critique_uses_the_verifier_not_the_llm_for_the_verdict() -> None:
    teacher = Teacher(ScriptedBackend(lambda r: " Yes, well done!"), DOMAINS)
    problem = teacher.make_problem("units.length", 2, random.Random(5))
    question = teacher.ask(problem, run_id="r", lesson_id="r-L0", turn=0, index=0)
    wrong = await Student(ScriptedBackend(lambda r: " -1")).answer(question, None, turn=1)
    right = await Student(ScriptedBackend(lambda r: f" {problem.answer}")).answer(
        question, None, turn=1
    )
    bad = await teacher.critique(problem, question, wrong, turn=2)
    good = await teacher.critique(problem, question, right, turn=2)
    assert (bad.correct, good.correct) == (False, True)
    assert good.feedback == f"Correct: {problem.answer}." and good.generation is None
    assert bad.feedback == "Yes, well done!" and bad.score < 1.0


async def test_free_text_bank_answers_are_judged_by_the_teacher_llm(tmp_path) -> None:
    from teachloop.domains import load_bank

    bank = tmp_path / "bio.jsonl"
    bank.write_text(
        '{"topic": "bio.cells", "question": "Why do cells need mitochondria?",'
        ' "answer": "to turn nutrients into usable energy as ATP"}\n'
    )
    domains = DomainSet([*builtin_domains().values(), load_bank(bank)])
    critiques = {}
    requests = []
    replies = {
        "yes": ' {"correct": true, "feedback": "Right: ATP."}',
        "no": '{"correct": false, "feedback": "Think of ATP."}',
        "maybe": " maybe",
        "partial": '{"correct": true}',
    }
    for name, reply in replies.items():
        backend = ScriptedBackend(lambda r, reply=reply: requests.append(r) or reply)
        teacher = Teacher(backend, domains)
        problem = teacher.make_problem("bio.cells", 1, random.Random(0))
        question = teacher.ask(problem, run_id="r", lesson_id="r-L0", turn=0, index=0)
        answer = await Student(ScriptedBackend(lambda r: " they make energy"), domains).answer(
            question, None, turn=1
        )
        critiques[name] = await teacher.critique(problem, question, answer, turn=2)
    # the judge asks for the Judgement schema (structured output) and nothing else is asked
    assert len(requests) == 4
    assert all(r.json_schema == JUDGEMENT_SCHEMA and r.stop == () for r in requests)
    assert JUDGEMENT_SCHEMA["required"] == ["correct", "feedback"]
    verdicts = {k: (c.correct, c.error_category.value, c.feedback) for k, c in critiques.items()}
    assert verdicts["yes"] == (True, "none", "Right: ATP.")
    assert verdicts["no"] == (False, "judged", "Think of ATP.")
    # a reply that does not parse never counts as correct, and the reason is recorded
    for name in ("maybe", "partial"):
        assert verdicts[name][:2] == (False, "judged")
        assert "to turn nutrients into usable energy" in verdicts[name][2]
    assert critiques["yes"].parse_error is critiques["no"].parse_error is None
    assert "judge reply is not a Judgement" in (critiques["maybe"].parse_error or "")
    assert "feedback: Field required" in (critiques["partial"].parse_error or "")
    assert parse_message(critiques["partial"].model_dump_json()) == critiques["partial"]


async def test_an_attempt_outside_a_lesson_is_a_lessons_first_attempt() -> None:
    """`Student.attempt` (held-out evaluation) sends the request `answer` sends for a first
    attempt, and parses the reply into the same final answer."""
    backend = ScriptedBackend(lambda r: " 42 apples\nQuestion: junk")
    student = Student(backend, max_tokens=5, temperature=0.3)
    teacher = Teacher(ScriptedBackend(teacher_reply), DOMAINS)
    problem = teacher.make_problem("arithmetic.addition", 1, random.Random(0))
    question = teacher.ask(problem, run_id="r", lesson_id="r-L0", turn=0, index=0)
    answer = await student.answer(question, None, turn=1)
    completion, final = await student.attempt(problem)
    assert backend.requests == [student.request(question.text, question.topic)] * 2
    assert backend.requests[0].max_tokens == 5 and backend.requests[0].temperature == 0.3
    assert final == answer.final_answer == "42" and completion.text == " 42 apples"
    assert answer.prompt == backend.requests[0].prompt


def test_a_difficulty_all_held_out_falls_back_to_the_nearest_one() -> None:
    """units.length has 18 distinct questions at difficulty 1: with all of them held out, the
    teacher asks at difficulty 2 instead of failing the lesson; with every level held out it
    stops with the config error."""
    domains = DomainSet(builtin_domains().values())
    units = domains.domain_for("units.length")
    level_one = {units.generate("units.length", 1, random.Random(i)).question for i in range(3000)}
    assert len(level_one) == 18
    teacher = Teacher(ScriptedBackend(teacher_reply), domains, reserved=frozenset(level_one))
    problems = [teacher.make_problem("units.length", 1, random.Random(i)) for i in range(20)]
    assert {p.difficulty for p in problems} == {2}
    assert not {p.question for p in problems} & level_one
    everything = frozenset(
        units.generate("units.length", d, random.Random(i)).question
        for d in (1, 2)
        for i in range(5000)
    )
    only_two_levels = DomainSet([_TwoLevels(units)])
    stuck = Teacher(ScriptedBackend(teacher_reply), only_two_levels, reserved=everything)
    with pytest.raises(ConfigError, match="every question drawn is in the held-out"):
        stuck.make_problem("units.length", 1, random.Random(0))


class _TwoLevels(Domain):
    """units.length with every difficulty mapped onto 1 and 2: a domain with few questions."""

    name = "two-levels"
    topics = ("units.length",)

    def __init__(self, units: Domain) -> None:
        self.units = units

    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        return self.units.generate(topic, 1 + (difficulty > 1), rng)

    def verify(self, problem: Problem, final_answer: str | None) -> Verdict | None:
        return self.units.verify(problem, final_answer)
