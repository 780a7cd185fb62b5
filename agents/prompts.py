"""Prompt templates. Completion-style with few-shot examples, because the embedded models are
base models (no chat template, no instruction tuning): the examples fix the format."""

from __future__ import annotations

STUDENT_PREAMBLE = """Each question is answered with a single number.

Question: What is 12 + 7?
Answer: 19

Question: How many grams are in 2 kilograms?
Answer: 2000

"""


def student_prompt(question: str, explanation: str = "", worked_example: str = "") -> str:
    """What the student sees: the question, preceded by the teacher's reteach if there is one
    (a worked example as one more solved question, then the teacher's explanation)."""
    example = f"{worked_example.strip()}\n\n" if worked_example else ""
    teacher = f"Teacher: {' '.join(explanation.split())}\n" if explanation else ""
    return f"{STUDENT_PREAMBLE}{example}{teacher}Question: {question.strip()}\nAnswer:"


FEEDBACK_EXAMPLE = """A teacher marks a student's answer and writes one sentence of feedback.

Question: What is 47 + 38?
Correct answer: 85
Student answered: 75
Feedback: You forgot to carry: 7 + 8 = 15, so write 5 and carry 1 into the tens.

"""


def feedback_prompt(question: str, reference: str, got: str | None) -> str:
    return (
        f"{FEEDBACK_EXAMPLE}Question: {question.strip()}\nCorrect answer: {reference}\n"
        f"Student answered: {got if got is not None else '(no answer)'}\nFeedback:"
    )


_STRATEGY_EXAMPLES = {
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


def reteach_prompt(strategy: str, question: str, solution: str, got: str | None) -> str:
    """The teacher writes the reteach with privileged access to the reference solution; the
    examples teach the method and leave the final answer to the student (a reteach that states
    it is flagged ``leaked``: copying it is not learning)."""
    instruction, example, cue = _STRATEGY_EXAMPLES[strategy]
    return (
        f"A teacher helps a student who got a question wrong. {instruction}\n\n{example}\n\n"
        f"Question: {question.strip()}\nReference solution (for the teacher): {solution.strip()}\n"
        f"Student answered: {got if got is not None else '(no answer)'}\n{cue}"
    )


JUDGE_EXAMPLE = """A teacher checks whether a student's answer means the same as the reference,
and replies in JSON.

Question: What is the capital of France?
Reference: Paris
Student answered: paris, the capital city
Verdict: {"correct": true, "feedback": "Right: Paris is the capital."}

Question: Why do plants need light?
Reference: to make sugar by photosynthesis
Student answered: to stay warm
Verdict: {"correct": false, "feedback": "Light powers photosynthesis, which makes sugar."}

"""


def judge_prompt(question: str, reference: str, got: str) -> str:
    return (
        f"{JUDGE_EXAMPLE}Question: {question.strip()}\nReference: {reference.strip()}\n"
        f"Student answered: {got.strip()}\nVerdict:"
    )
