"""The viewer's pages: a Starlette app that renders Jinja2 templates from the store's reads.

Read-only by construction: every route is a GET, the store is opened read-only (every DuckDB
connection it makes is), and no route takes SQL or a file name; query parameters are checked
against what they may be and passed to the store as SQL parameters. Model-written text is
untrusted: Jinja2 escapes everything (autoescape), and the Content-Security-Policy allows no
script at all (the pages have none), so text that slipped through would still not run.

Each request opens and closes its own connections (through the store), so a run writing the
same file gets in between requests, and a reload shows what it wrote since.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Collection
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from teachloop.errors import TeachloopError
from teachloop.messages import Critique, Question
from teachloop.store.browse import LessonFilter, LogState, Outcome, RunRow
from teachloop.store.store import Store
from teachloop.training import experiment_report, report
from teachloop.training.comparison import summarize_experiment

PAGE_SIZE = 50
# Host headers the app answers when it listens on loopback: a page on another site that gets a
# browser to resolve its own name to 127.0.0.1 (DNS rebinding) is refused.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# No script anywhere (the pages need none), styles and images from the viewer only.
CSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'"
STATUSES = ("complete", "failed", "interrupted")
REFRESH_CHOICES = (2, 5, 10, 30)


def app(
    db: str | Path | Store,
    *,
    allowed_hosts: Collection[str] | None = LOOPBACK_HOSTS,
    page_size: int = PAGE_SIZE,
) -> ASGIApp:
    """The viewer as an ASGI app over ``db`` (a DuckDB file, a lake target, or a ``Store``).

    A path or target is opened read-only (``Store.open(read_only=True)``: a missing or older
    database is a ``StoreError`` here, before anything serves). ``allowed_hosts``: the Host
    headers answered (default: loopback names only); None answers any, for a server behind a
    proxy or on another interface."""
    store = db if isinstance(db, Store) else Store.open(db, read_only=True)
    viewer = _Viewer(store, page_size)
    pages = {
        "/": viewer.runs,
        "/runs/{run_id}": viewer.run,
        "/runs/{run_id}/lessons": viewer.lessons,
        "/lessons/{lesson_id}": viewer.lesson,
        "/pairs": viewer.pairs,
        "/training": viewer.training,
        "/plots/{name}": viewer.report_plot,
        "/experiments/{name}": viewer.experiment,
        "/experiments/{name}/plots/{plot}": viewer.experiment_plot,
    }
    routes = [Route(path, viewer.reading(page)) for path, page in pages.items()]
    routes.append(Route("/static/view.css", viewer.css))
    web = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: viewer.http_error,
            TeachloopError: viewer.store_error,
        },
    )
    return _Guard(web, allowed_hosts)


class _Guard:
    """Outermost ASGI layer: refuses unknown Host headers, adds the security headers to every
    response, and notes when the request started (the pages show how long they took)."""

    def __init__(self, inner: Starlette, allowed_hosts: Collection[str] | None) -> None:
        self.inner = inner
        self.allowed = None if allowed_hosts is None else frozenset(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = _hostname(headers.get(b"host", b"").decode("latin-1"))
        if self.allowed is not None and host not in self.allowed:
            response = Response(
                "unknown Host header: this viewer answers only on its own address\n",
                status_code=400,
                media_type="text/plain",
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["started"] = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                ]
            await send(message)

        await self.inner(scope, receive, send_with_headers)


def _hostname(host: str) -> str:
    """The name in a Host header, without its port (``[::1]:8000`` -> ``::1``)."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# -- formatting ---------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.3f}"


def _when(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: Any) -> str:
    """A cell of a table read as rows (the report's tables)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return _when(value)
    if isinstance(value, int | float) or value is None:
        return _num(value)
    return str(value)


def _estimate(alpha_beta: tuple[float, float] | list[float] | None) -> str:
    """A Beta(alpha, beta) estimate of first-try success as its mean."""
    if not alpha_beta:
        return "–"
    alpha, beta = alpha_beta
    return f"{alpha / (alpha + beta):.2f} (α {alpha:g}, β {beta:g})"


def _segment(value: str) -> str:
    """A value as one URL path segment."""
    return quote(value, safe="")


# -- pages ----------------------------------------------------------------------------------------


class _Viewer:
    def __init__(self, store: Store, page_size: int) -> None:
        self.store = store
        self.page_size = page_size
        self.env = Environment(
            loader=PackageLoader("teachloop.view", "templates"),
            autoescape=True,  # every value is escaped, model-written text above all
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            pct=_pct, num=_num, when=_when, cell=_cell, estimate=_estimate, seg=_segment
        )
        self.stylesheet = files("teachloop.view").joinpath("static/view.css").read_bytes()
        # Plots by name, with the state of the log they were drawn from: a figure costs 0.3-2.5 s
        # to draw (the learning curves most), and a page refreshing every few seconds would
        # redraw it each time. Redrawn as soon as the log has changed.
        self.plots: dict[str, tuple[LogState, bytes | None]] = {}
        self.plots_lock = threading.Lock()

    def reading(self, page: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """``page`` with the log kept open while it reads (its several reads then share one
        open database; the connection is still per request, so a writing run gets in between
        requests). A plain function: Starlette runs it in its thread pool."""

        @functools.wraps(page)
        def read(request: Request) -> Response:
            with self.store.reading():
                return page(request)

        return read

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        refresh = _refresh(request)
        started = request.scope.get("state", {}).get("started", time.perf_counter())
        html = self.env.get_template(template).render(
            request=request,
            root=request.scope.get("root_path", ""),  # the prefix where the app is mounted
            db=self.store.path.name if self.store.path else "lake",
            refresh=refresh,
            refresh_choices=REFRESH_CHOICES,
            link=lambda **changes: _link(request, **changes),
            elapsed_ms=lambda: f"{1000 * (time.perf_counter() - started):.0f}",
            **context,
        )
        return HTMLResponse(html, status_code=status)

    # -- runs -----------------------------------------------------------------------------------

    def runs(self, request: Request) -> Response:
        page = self.store.run_page(offset=_offset(request), limit=self.page_size)
        models = self.store.run_models([r.run_id for r in page.items])
        return self.render(request, "runs.html", page=page, models=models)

    def _run(self, request: Request) -> RunRow:
        """The run the path names, or a 404 page."""
        run_id = request.path_params["run_id"]
        summary = self.store.run_row(run_id)
        if summary is None:
            raise HTTPException(404, f"run {run_id!r} is not in this log")
        return summary

    def run(self, request: Request) -> Response:
        summary = self._run(request)
        run_id = summary.run_id
        return self.render(
            request,
            "run.html",
            run=summary,
            topics=self.store.topic_accuracy(run_id),
            strategies=self.store.strategy_rows(run_id),
            models=self.store.run_models([run_id]),
        )

    def lessons(self, request: Request) -> Response:
        summary = self._run(request)
        run_id = summary.run_id
        topics = self.store.run_topics(run_id)
        leaked = _choice(request, "leaked", ("yes", "no"))
        where = LessonFilter(
            topic=_choice(request, "topic", topics),
            outcome=_choice(request, "outcome", [o.value for o in Outcome]),
            leaked=None if leaked is None else leaked == "yes",
            status=_choice(request, "status", STATUSES),
        )
        page = self.store.lesson_page(run_id, where, offset=_offset(request), limit=self.page_size)
        return self.render(
            request,
            "lessons.html",
            run=summary,
            page=page,
            where=where,
            topics=topics,
            outcomes=list(Outcome),
            statuses=STATUSES,
        )

    def lesson(self, request: Request) -> Response:
        lesson_id = request.path_params["lesson_id"]
        lesson = self.store.lesson(lesson_id)
        if lesson is None:
            raise HTTPException(404, f"lesson {lesson_id!r} is not in this log")
        messages = self.store.transcript(lesson_id)
        pairs = self.store.pair_page(lesson_id=lesson_id, limit=1000).items
        chosen = request.query_params.get("pair")
        marked = {s for p in pairs if p.pair_id == chosen for s in p.source_ids}
        return self.render(
            request,
            "lesson.html",
            lesson=lesson,
            messages=messages,
            # the verdict on each answer, and the estimate after each question
            verdicts={m.answer_id: m for m in messages if isinstance(m, Critique)},
            mastery={s.question_index: s for s in self.store.lesson_mastery(lesson_id)},
            questions={m.message_id: m for m in messages if isinstance(m, Question)},
            neighbours=self.store.lesson_neighbours(lesson),
            pairs=pairs,
            marked=marked,
            chosen_pair=chosen if marked else None,
            tokens=sum(
                m.generation.prompt_tokens + m.generation.completion_tokens
                for m in messages
                if m.generation
            ),
        )

    # -- pairs ----------------------------------------------------------------------------------

    def pairs(self, request: Request) -> Response:
        rules = self.store.pair_rules()
        run_id = request.query_params.get("run") or None
        topic = request.query_params.get("topic") or None
        page = self.store.pair_page(
            run_id=run_id,
            rule=_choice(request, "rule", rules),
            topic=topic,
            offset=_offset(request),
            limit=self.page_size,
        )
        return self.render(
            request, "pairs.html", page=page, rules=rules, run_id=run_id, topic=topic
        )

    # -- training and experiments -----------------------------------------------------------------

    def training(self, request: Request) -> Response:
        versions = self.store.model_versions()
        students = {
            base: self.store.current_student(base).version
            for base in dict.fromkeys(v.base_model for v in versions)
        }
        jobs = self.store.training_job_summary()
        pairs = self.store.pairs_by_rule()
        grid = self.store.accuracy_by_version().to_pylist()
        plots = {
            report.ACCURACY_PNG: bool(grid),
            report.LEARNING_PNG: bool(self.store.run_page(limit=1).total),
            report.TRAINING_PNG: any(s for s in jobs.column("steps").to_pylist()),
            report.PAIRS_PNG: bool(pairs.num_rows),
        }
        return self.render(
            request,
            "training.html",
            versions=versions,
            students=students,
            jobs=_rows(jobs),
            job_errors={j.job_id: j.error for j in self.store.training_jobs() if j.error},
            latest=_rows(self.store.latest_evaluations()),
            grid=grid,
            grid_topics=grid[0]["topics"] if grid else [],
            pairs=_rows(pairs),
            plots=[name for name, shown in plots.items() if shown],
            experiments=self.store.experiments(),
        )

    def report_plot(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in report.PLOTS:
            raise HTTPException(404, f"no plot named {name!r}")
        return _png(self._drawn(name, lambda: report.plot_png(self.store, name)), name)

    def _drawn(self, key: str, draw: Callable[[], bytes | None]) -> bytes | None:
        state = self.store.log_state()
        with self.plots_lock:
            cached = self.plots.get(key)
        if cached is not None and cached[0] == state:
            return cached[1]
        png = draw()
        with self.plots_lock:
            self.plots[key] = (state, png)
        return png

    def _summary(self, name: str) -> experiment_report.ExperimentSummary:
        if name not in self.store.experiments() or not self.store.arm_results(name):
            raise HTTPException(404, f"experiment {name!r} has no results in this log")
        return summarize_experiment(self.store, name)

    def experiment(self, request: Request) -> Response:
        name = request.path_params["name"]
        summary = self._summary(name)
        plots = [p for p in experiment_report.PLOTS if p != experiment_report.TARGETING_PNG]
        if summary.targeting:
            plots.append(experiment_report.TARGETING_PNG)
        return self.render(
            request,
            "experiment.html",
            name=name,
            summary=summary,
            tables=experiment_report.tables(summary),
            plots=plots,
        )

    def experiment_plot(self, request: Request) -> Response:
        plot = request.path_params["plot"]
        if plot not in experiment_report.PLOTS:
            raise HTTPException(404, f"no plot named {plot!r}")
        name = request.path_params["name"]

        def draw() -> bytes | None:
            return experiment_report.plot_png(self._summary(name), plot)

        return _png(self._drawn(f"experiment/{name}/{plot}", draw), plot)

    def css(self, request: Request) -> Response:
        return Response(self.stylesheet, media_type="text/css")

    # -- errors ---------------------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self.render(
            request, "error.html", status=exc.status_code, code=exc.status_code, detail=exc.detail
        )

    async def store_error(self, request: Request, exc: Exception) -> Response:
        # The log could not be read (another process held it past the wait, a file gone):
        # one line, and a reload may well work.
        return self.render(request, "error.html", status=503, code=503, detail=str(exc))


def _png(data: bytes | None, name: str) -> Response:
    if data is None:
        raise HTTPException(404, f"plot {name!r} has nothing to show yet")
    return Response(data, media_type="image/png")


def _rows(table: Any) -> dict[str, Any]:
    """A table read in one of the report's shapes (a pyarrow table): its columns and rows."""
    return {"columns": table.column_names, "rows": [list(r.values()) for r in table.to_pylist()]}


def _offset(request: Request) -> int:
    text = request.query_params.get("offset", "0")
    if not text.isdigit():
        raise HTTPException(400, "offset must be a whole number >= 0")
    return int(text)


def _choice(request: Request, name: str, allowed: Collection[str]) -> Any:
    """A filter's value, one of ``allowed``; absent or empty: None."""
    value = request.query_params.get(name) or None
    if value is not None and value not in allowed:
        raise HTTPException(400, f"{name} must be one of: {', '.join(allowed) or '(none yet)'}")
    return value


def _refresh(request: Request) -> int | None:
    text = request.query_params.get("refresh", "")
    return int(text) if text.isdigit() and 1 <= int(text) <= 3600 else None


def _link(request: Request, **changes: object) -> str:
    """This page's query with ``changes`` (None removes a parameter); a filter's change starts
    the list from its first page."""
    params: dict[str, str] = dict(request.query_params)
    if any(k != "offset" and k != "refresh" for k in changes):
        params.pop("offset", None)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return "?" + urlencode(params)


__all__ = ["LOOPBACK_HOSTS", "PAGE_SIZE", "app"]
