"""The student agent: answers a question, and answers again with the teacher's reteach."""

from __future__ import annotations

from teachloop.agents.backends.base import Backend, GenerationRequest
from teachloop.agents.prompts import student_prompt
from teachloop.answers import extract_final_answer
from teachloop.messages import Answer, Question, Reteach, message_id


class Student:
    def __init__(self, backend: Backend, *, max_tokens: int = 12, temperature: float = 0.0):
        self.backend = backend
        self.max_tokens = max_tokens
        self.temperature = temperature

    async def answer(self, question: Question, reteach: Reteach | None, *, turn: int) -> Answer:
        prompt = student_prompt(
            question.text,
            reteach.explanation if reteach else "",
            reteach.worked_example if reteach else "",
        )
        completion = await self.backend.complete(
            GenerationRequest(
                prompt=prompt,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                stop=("\n",),  # one line is one answer; the few-shot format continues after it
            )
        )
        return Answer(
            message_id=message_id(question.lesson_id, turn),
            run_id=question.run_id,
            lesson_id=question.lesson_id,
            turn=turn,
            text=completion.text.strip(),
            prompt=prompt,
            generation=completion.generation,
            question_id=question.message_id,
            attempt=reteach.attempt if reteach else 0,
            final_answer=extract_final_answer(completion.text),
        )
