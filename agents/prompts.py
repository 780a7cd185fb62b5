"""Prompt templates: Jinja2, one per role's request, overridable in a config's ``[prompts]``.

The defaults are completion-style with few-shot examples, because the embedded models are base
models (no chat template, no instruction tuning): the examples fix the format. A role on a chat
endpoint (``api = "chat"``) gets chat messages instead (``ChatPrompt``): a system message, the
few-shot examples as user/assistant turns, and the request as the last user turn.

Templates are rendered in Jinja2's sandbox with undefined names as errors, so a typo in a
user's template stops the run with the template's name rather than sending a broken prompt.
The variables each template sees are listed in ``TEMPLATE_VARIABLES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict

from teachloop.domains import GENERIC_EXAMPLES, Domain
from teachloop.errors import ConfigError

# Direct answers: the question's answer on the "Answer:" line. Shown work: the worked solution,
# whose last line is "Answer: <answer>" (teachloop.domains.Problem.worked_solution).
STUDENT = """\
{{ instruction }}
{%- if shown_work %} Show your work, then give the final answer on a line "Answer: ...".{% endif %}

{% for ex in examples -%}
Question: {{ ex.question }}
{{ ex.worked_solution if shown_work else "Answer: " ~ ex.answer }}

{% endfor -%}
{% if worked_example %}{{ worked_example }}

{% endif -%}
{% if explanation %}Teacher: {{ explanation }}
{% endif -%}
Question: {{ question }}
{{ "" if shown_work else "Answer:" }}"""

STUDENT_SYSTEM = """\
{{ instruction }}
{%- if shown_work %} Show your work step by step, then end with a line "Answer: <answer>".
{%- else %} Reply with the answer only.{% endif %}"""

FEEDBACK = """\
A teacher marks a student's answer and writes one sentence of feedback.
{%- if work %} It names the first step where the student's work goes wrong.{% endif %}

Question: What is 47 + 38?
Correct answer: 85
Student answered: 75
Feedback: You forgot to carry: 7 + 8 = 15, so write 5 and carry 1 into the tens.

Question: {{ question }}
{% if solution %}Reference solution: {{ solution }}
{% endif -%}
Correct answer: {{ reference }}
{% if work %}Student's work: {{ work }}
{% endif -%}
Student answered: {{ got }}
Feedback:"""

_STRATEGIES = {
    "hint": (
        "Give a short hint about the method, without the final answer.",
        "Question: What is 36 + 47?\nHint: Add the ones first (6 + 7 = 13), "
        "then the tens, and remember the carry.",
        "Hint:",
    ),
    "worked_example": (
        "Explain the method in one sentence, without the final answer; a worked example follows.",
        "Question: What is 36 + 47?\nExplanation: Add the ones, carry the ten, then add the tens.",
        "Explanation:",
    ),
    "step_by_step": (
        "Explain the steps one at a time, and stop before the final result: the student "
        "finishes it.",
        "Question: What is 36 + 47?\nSteps: First add the ones: 6 + 7 = 13, write 3 and "
        "carry 1. Then add the tens and the carry, and put the two digits together.",
        "Steps:",
    ),
}

# The teacher writes the reteach with privileged access to the reference solution; the example
# teaches the method and leaves the final answer to the student (what still states it is masked
# before the student sees it, and flagged ``leaked``).
RETEACH = """\
A teacher helps a student who got a question wrong. {{ instruction }}

{{ example }}

Question: {{ question }}
Reference solution (for the teacher): {{ solution }}
Student answered: {{ got }}
{{ cue }}"""

JUDGE = """\
A teacher checks whether a student's answer means the same as the reference,
and replies in JSON.

Question: What is the capital of France?
Reference: Paris
Student answered: paris, the capital city
Verdict: {"correct": true, "feedback": "Right: Paris is the capital."}

Question: Why do plants need light?
Reference: to make sugar by photosynthesis
Student answered: to stay warm
Verdict: {"correct": false, "feedback": "Light powers photosynthesis, which makes sugar."}

Question: {{ question }}
Reference: {{ reference }}
Student answered: {{ got }}
Verdict:"""

# A chat teacher: one system message, and the completion template's task as the user turn
# without its few-shot example (an instruct model needs the instruction, not the pattern).
TEACHER_SYSTEM = """\
You are a patient teacher. You see the reference solution, the student does not. Never state \
the final answer: the student must find it."""

FEEDBACK_CHAT = """\
Question: {{ question }}
{% if solution %}Reference solution: {{ solution }}
{% endif -%}
Correct answer: {{ reference }}
{% if work %}Student's work: {{ work }}
{% endif -%}
Student answered: {{ got }}
In one sentence, tell the student what went wrong\
{%- if work %}, naming the first step of its work that differs from the reference{% endif %}."""

RETEACH_CHAT = """\
Question: {{ question }}
Reference solution (for you only): {{ solution }}
Student answered: {{ got }}
{{ instruction }}"""

JUDGE_CHAT = """\
Question: {{ question }}
Reference: {{ reference }}
Student answered: {{ got }}
Does the student's answer mean the same as the reference? Reply in JSON: \
{"correct": true or false, "feedback": "one sentence"}."""

DEFAULTS: Mapping[str, str] = {
    "student": STUDENT,
    "student_system": STUDENT_SYSTEM,
    "feedback": FEEDBACK,
    "reteach": RETEACH,
    "judge": JUDGE,
    "teacher_system": TEACHER_SYSTEM,
    "feedback_chat": FEEDBACK_CHAT,
    "reteach_chat": RETEACH_CHAT,
    "judge_chat": JUDGE_CHAT,
}

# What each template may use (documented in docs/real-tasks.md, "Prompts").
TEMPLATE_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "student": (
        "instruction",
        "shown_work",
        "examples",
        "worked_example",
        "explanation",
        "question",
    ),
    "student_system": ("instruction", "shown_work"),
    "feedback": ("question", "reference", "solution", "work", "got"),
    "reteach": ("instruction", "example", "cue", "question", "solution", "got"),
    "judge": ("question", "reference", "got"),
    "teacher_system": (),
    "feedback_chat": ("question", "reference", "solution", "work", "got"),
    "reteach_chat": ("instruction", "question", "solution", "got"),
    "judge_chat": ("question", "reference", "got"),
}

_ENV = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


@cache
def _compiled(source: str) -> Any:
    return _ENV.from_string(source)


def render(name: str, source: str, **variables: object) -> str:
    """Render template ``name`` (its text ``source``); a broken template is a ``ConfigError``
    naming it."""
    try:
        return _compiled(source).render(**variables)
    except TemplateError as e:
        raise ConfigError(f"prompts.{name}: {e}") from None


def check_template(name: str, source: str) -> None:
    """Parse and trial-render a template with placeholder values (config validation)."""
    if name not in DEFAULTS:
        raise ConfigError(f"prompts.{name}: unknown template; known: {', '.join(DEFAULTS)}")
    trial: dict[str, object] = dict.fromkeys(TEMPLATE_VARIABLES[name], "x")
    if "examples" in trial:
        trial["examples"] = []
    render(name, source, **trial)


class ChatPrompt(BaseModel):
    """A request as chat messages: what a role on a chat endpoint is sent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str = ""
    shots: tuple[tuple[str, str], ...] = ()  # (user, assistant) few-shot turns
    user: str

    def messages(self) -> tuple[dict[str, str], ...]:
        out: list[dict[str, str]] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        for question, reply in self.shots:
            out += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
        out.append({"role": "user", "content": self.user})
        return tuple(out)


class Prompts:
    """The templates a run uses: the defaults, with the config's ``[prompts]`` over them."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        for name, source in (overrides or {}).items():
            check_template(name, source)
        self.templates: dict[str, str] = {**DEFAULTS, **(overrides or {})}

    def render(self, name: str, **variables: object) -> str:
        return render(name, self.templates[name], **variables)

    def strategy(self, strategy: str) -> tuple[str, str, str]:
        """(instruction, example, cue) of a reteach strategy."""
        return _STRATEGIES[strategy]


DEFAULT_PROMPTS = Prompts()


def student_prompt(question: str, explanation: str = "", worked_example: str = "") -> str:
    """The default prompt of a direct numeric answer (the built-in domains' student prompt,
    ``Student.prompt`` for their topics)."""
    return DEFAULT_PROMPTS.render(
        "student",
        instruction=Domain.instruction,
        shown_work=False,
        examples=GENERIC_EXAMPLES,
        worked_example=worked_example.strip(),
        explanation=" ".join(explanation.split()),
        question=question.strip(),
    )
