"""The student agent: answers a question, and answers again with the teacher's reteach.

`request` is the one place a student's generation request is built, so held-out evaluation
(`attempt`, through `teachloop.training.evaluate`) asks exactly what a lesson's first attempt
asks: same prompt, stop strings, max_tokens and temperature. The prompt's few-shot examples,
instruction and answer extraction come from the question's domain; the answer's form (direct,
or shown work ending in an ``Answer:`` line) and the templates from the config.
"""

from __future__ import annotations

import re

from teachloop.agents.backends.base import Backend, Completion, GenerationRequest
from teachloop.agents.prompts import DEFAULT_PROMPTS, ChatPrompt, Prompts
from teachloop.config import RunConfig
from teachloop.domains import DomainSet, Problem, builtin_domains
from teachloop.messages import Answer, Question, Reteach, as_completion, message_id

# Shown work ends in a line "Answer: <answer>" (markdown bold and "Final answer:" tolerated).
_FINAL_LINE = re.compile(r"^[ \t*_#]*(?:final\s+)?answer[ \t*_]*:[ \t*_]*(.*)$", re.I | re.M)


def shown_work_answer(text: str) -> str | None:
    """The text of the first ``Answer:`` line of a shown-work reply (what follows the work);
    None when the reply has none or it is empty: the form was not kept, so there is no
    answer."""
    m = _FINAL_LINE.search(text)
    return (m[1].strip() or None) if m else None


class Student:
    def __init__(
        self,
        # None: a student that only builds requests and training targets (experiments' data).
        backend: Backend | None,
        domains: DomainSet | None = None,
        *,
        max_tokens: int = 12,
        temperature: float = 0.0,
        shown_work: bool = False,
        api: str = "completions",
        prompts: Prompts = DEFAULT_PROMPTS,
    ):
        self.backend = backend
        self.domains = domains if domains is not None else DomainSet(builtin_domains().values())
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.shown_work = shown_work
        self.chat = api == "chat"
        self.prompts = prompts

    @classmethod
    def for_config(
        cls,
        backend: Backend | None,
        domains: DomainSet,
        config: RunConfig,
        prompts: Prompts | None = None,
    ) -> Student:
        """The student ``config`` describes (``[student]``, ``[prompts]``) on ``backend``."""
        return cls(
            backend,
            domains,
            max_tokens=config.student.max_tokens,
            temperature=config.student.temperature,
            shown_work=config.student.shown_work,
            api=config.student.api,
            prompts=prompts or Prompts(config.prompts),
        )

    def prompt(
        self, question: str, topic: str, *, explanation: str = "", worked_example: str = ""
    ) -> str:
        """The completion prompt for ``question`` of ``topic``: the domain's instruction and
        few-shot examples, then the teacher's reteach if any, then the question."""
        domain = self.domains.domain_for(topic)
        return self.prompts.render(
            "student",
            instruction=domain.instruction,
            shown_work=self.shown_work,
            examples=domain.examples(topic, self.shown_work),
            worked_example=worked_example.strip(),
            explanation=" ".join(explanation.split()),
            question=question.strip(),
        )

    def reference_completion(self, problem: Problem) -> str:
        """What a right reply to ``prompt(problem.question, ...)`` is, as a training target:
        the answer after the prompt's ``Answer:``, or with shown work the worked solution."""
        return as_completion(
            problem.worked_solution if self.shown_work else problem.answer, self.shown_work
        )

    def request(
        self, question: str, topic: str, reteach: Reteach | None = None
    ) -> GenerationRequest:
        """What the student sends for ``question`` (the text) of ``topic``, with the teacher's
        reteach if there is one."""
        domain = self.domains.domain_for(topic)
        explanation = " ".join(reteach.explanation.split()) if reteach else ""
        worked = reteach.worked_example.strip() if reteach else ""
        examples = domain.examples(topic, self.shown_work)
        prompt = self.prompt(question, topic, explanation=explanation, worked_example=worked)
        if self.shown_work:
            # A new few-shot item, or a blank line, ends the work (the examples have none).
            stop: tuple[str, ...] = () if self.chat else ("\nQuestion:", "\n\n")
        else:
            stop = ("\n",)  # one line is one answer; the few-shot format continues after it
        chat = None
        if self.chat:
            teacher = "\n\n".join(
                p for p in (worked, explanation and f"Teacher: {explanation}") if p
            )
            chat = ChatPrompt(
                system=self.prompts.render(
                    "student_system", instruction=domain.instruction, shown_work=self.shown_work
                ),
                shots=tuple(
                    (p.question, p.worked_solution if self.shown_work else p.answer)
                    for p in examples
                ),
                user=f"{teacher}\n\n{question.strip()}" if teacher else question.strip(),
            )
        return GenerationRequest(
            prompt=prompt,
            chat=chat,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            stop=stop,
        )

    def final_answer(self, text: str, topic: str) -> str | None:
        """The final answer in a reply, as the topic's domain extracts it (in shown-work mode
        from the ``Answer:`` line only: work without it has no answer)."""
        if self.shown_work:
            found = shown_work_answer(text)
            if found is None:
                return None
            text = found
        return self.domains.domain_for(topic).extract_answer(text)

    async def _complete(self, request: GenerationRequest) -> Completion:
        if self.backend is None:
            raise RuntimeError("this Student builds requests only: it has no backend")
        return await self.backend.complete(request)

    async def attempt(self, problem: Problem) -> tuple[Completion, str | None]:
        """A first attempt at ``problem`` outside any lesson (held-out evaluation): the reply,
        and the final answer parsed from it as a lesson's answer would be."""
        completion = await self._complete(self.request(problem.question, problem.topic))
        return completion, self.final_answer(completion.text, problem.topic)

    async def answer(self, question: Question, reteach: Reteach | None, *, turn: int) -> Answer:
        request = self.request(question.text, question.topic, reteach)
        completion = await self._complete(request)
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
            final_answer=self.final_answer(completion.text, question.topic),
            shown_work=self.shown_work,
        )
