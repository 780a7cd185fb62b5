"""A progress bar for long steps (lessons, evaluation, scoring), or nothing when not wanted."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self) -> None:
        return None

    def update(self, completed: int) -> None:
        return None


class _Bar:
    def __init__(self, label: str, total: int, completed: int) -> None:
        self.progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.task = self.progress.add_task(label, total=total, completed=completed)

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def advance(self) -> None:
        self.progress.advance(self.task)

    def update(self, completed: int) -> None:
        self.progress.update(self.task, completed=completed)


def progress_bar(label: str | None, total: int, completed: int = 0) -> _Bar | _NoProgress:
    """A bar of ``completed``/``total`` under ``label`` (``advance``, ``update``); None: none."""
    return _Bar(label, total, completed) if label is not None else _NoProgress()
