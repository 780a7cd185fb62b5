"""The student agent: answers a question, and answers again with the teacher's reteach.

`request` is the one place a student's generation request is built, so held-out evaluation
(`attempt`, through `teachloop.training.evaluate`) asks exactly what a lesson's first attempt
asks: same prompt, stop strings, max_tokens and temperature.
"""

from __future__ import annotations

from teachloop.agents.backends.base import Backend, Completion, GenerationRequest
from teachloop.agents.prompts import student_prompt
from teachloop.answers import extract_final_answer
from teachloop.messages import Answer, Question, Reteach, message_id


class Student:
    def __init__(self, backend: Backend, *, max_tokens: int = 12, temperature: float = 0.0):
        self.backend = backend
        self.max_tokens = max_tokens
        self.temperature = temperature

    def request(self, question: str, reteach: Reteach | None = None) -> GenerationRequest:
        """What the student sends for ``question`` (the text), with the teacher's reteach if
        there is one."""
        return GenerationRequest(
            prompt=student_prompt(
                question,
                reteach.explanation if reteach else "",
                reteach.worked_example if reteach else "",
            ),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            stop=("\n",),  # one line is one answer; the few-shot format continues after it
        )

    async def attempt(self, question: str) -> tuple[Completion, str | None]:
        """A first attempt at ``question`` outside any lesson (held-out evaluation): the reply,
        and the final answer parsed from it as a lesson's answer would be."""
        completion = await self.backend.complete(self.request(question))
        return completion, extract_final_answer(completion.text)

    async def answer(self, question: Question, reteach: Reteach | None, *, turn: int) -> Answer:
        request = self.request(question.text, reteach)
        completion = await self.backend.complete(request)
        return Answer(
            message_id=message_id(question.lesson_id, turn),
            run_id=question.run_id,
            lesson_id=question.lesson_id,
            turn=turn,
            text=completion.text.strip(),
            prompt=request.prompt,
            generation=completion.generation,
            question_id=question.message_id,
            attempt=reteach.attempt if reteach else 0,
            final_answer=extract_final_answer(completion.text),
        )
