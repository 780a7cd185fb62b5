"""Render a logged lesson for people (text, Markdown) or programs (JSON)."""

from __future__ import annotations

import json
from typing import Literal

from teachloop.messages import Answer, Critique, Message, Question, Reteach

Format = Literal["text", "markdown", "json"]


def _header(m: Message) -> str:
    match m:
        case Question():
            return f"question {m.question_index + 1} · {m.topic} · difficulty {m.difficulty}"
        case Answer():
            parsed = m.final_answer if m.final_answer is not None else "(none)"
            return f"answer, attempt {m.attempt} · parsed: {parsed}"
        case Critique():
            verdict = "correct" if m.correct else f"wrong ({m.error_category.value})"
            return f"critique, attempt {m.attempt} · {verdict} · score {m.score:.2f}"
        case Reteach():
            return f"reteach before attempt {m.attempt} · strategy: {m.strategy.value}"
    raise TypeError(type(m))


def _body(m: Message) -> str:
    if isinstance(m, Question):
        return f"{m.text}\n(reference answer: {m.reference_answer})"
    return m.text


def render_transcript(messages: list[Message], fmt: Format = "text") -> str:
    if fmt == "json":
        return json.dumps([json.loads(m.model_dump_json()) for m in messages], indent=2)
    if not messages:
        return ""
    lines: list[str] = []
    if fmt == "markdown":
        lines.append(f"## Lesson `{messages[0].lesson_id}` (run `{messages[0].run_id}`)\n")
        for m in messages:
            lines.append(f"**{m.turn}. {m.sender.value}**: {_header(m)}\n")
            lines.extend(f"> {line}" for line in _body(m).splitlines() or [""])
            lines.append("")
        return "\n".join(lines)
    lines.append(f"lesson {messages[0].lesson_id} (run {messages[0].run_id})")
    for m in messages:
        lines.append(f"[{m.turn:>2}] {m.sender.value:<7} {_header(m)}")
        lines.extend(f"       {line}" for line in _body(m).splitlines())
    return "\n".join(lines)


def render_line(m: Message) -> str:
    """One message on one line, for watching a run live (``teachloop run --follow``)."""
    text = " ".join(_body(m).split())
    return f"{m.lesson_id} [{m.turn:>2}] {m.sender.value:<7} {_header(m)} | {text}"
