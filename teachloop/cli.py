"""The `teachloop` command: a thin shell over the Python API."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from teachloop.config import RunConfig, db_target
from teachloop.environment import check_torch_companions
from teachloop.errors import CatalogUnavailable, ConfigError, InputFileError, TeachloopError
from teachloop.store.lake import is_lake
from teachloop.store.store import Store

if TYPE_CHECKING:
    from collections.abc import Callable

    from teachloop.graphs.distributed import RayOptions
    from teachloop.messages import Message
    from teachloop.store.experiments import ArmResult
    from teachloop.training.jobs import GateDecision


def _cmd_run(args: argparse.Namespace) -> int:
    from teachloop.graphs.runner import run_lessons

    config = _config(args).with_overrides(
        lessons=args.lessons, concurrency=args.concurrency, run_id=args.run_id
    )
    config = config.with_run_id()  # printed if interrupted, to resume by
    on_message = _follower() if args.follow else None
    if args.ray and args.follow:
        raise ConfigError("--follow shows one process's lessons: leave it out with --ray")
    try:
        with _serving(config, args.serve):
            if options := _ray_options(args):
                from teachloop.graphs.distributed import run_lessons_on_ray

                result = run_lessons_on_ray(config, options, progress=not args.quiet)
            else:
                result = run_lessons(
                    config, progress=not (args.quiet or args.follow), on_message=on_message
                )
    except KeyboardInterrupt:
        print(
            f"interrupted: logged lessons are in {config.db}; resume with --run-id {config.run_id}",
            file=sys.stderr,
        )
        return 130
    except CatalogUnavailable as e:  # what was logged stays; the rest resumes
        raise CatalogUnavailable(
            f"{e}; logged lessons are in the lake: resume with --run-id {config.run_id}"
        ) from None
    result.render()
    return 0 if result.lessons_failed == 0 else 1


def _follower() -> Callable[[Message], None]:
    """Prints each message as it is produced: the dialogue of every lesson in flight."""
    from rich.markup import escape

    from teachloop.store.replay import render_line

    console = Console(highlight=False, soft_wrap=True)
    colours = {"teacher": "cyan", "student": "yellow"}

    def show(message: Message) -> None:
        colour = colours.get(message.sender.value, "white")
        console.print(f"[{colour}]{escape(render_line(message))}[/]")

    return show


def _print_table(table: pa.Table, fmt: str, out: Path | None) -> None:
    if out is not None:
        if out.suffix != ".parquet":
            raise InputFileError(f"--out {out}: only .parquet files are written")
        pq.write_table(table, out)
        print(f"wrote {table.num_rows} rows to {out}")
        return
    if fmt == "csv":
        # DuckDB's writer quotes only where needed (Arrow's quotes every string and header),
        # so `$(teachloop sql ... --format csv | tail -1)` is a bare value.
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "out.csv"
            duckdb.from_arrow(table).write_csv(str(path))
            sys.stdout.write(path.read_text(encoding="utf-8"))
    elif fmt == "json":
        print(json.dumps(table.to_pylist(), default=str, indent=1))
    else:
        view = Table(show_lines=False)
        for name in table.column_names:
            view.add_column(name, overflow="fold")
        for row in table.to_pylist():
            view.add_row(*(_cell(v) for v in row.values()))
        # Piped output is not cut to 80 columns: it is read by people scrolling, or by tools.
        Console(width=None if sys.stdout.isatty() else 250).print(view)
        print(f"({table.num_rows} rows)")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _open_existing(args: argparse.Namespace, *, read_only: bool = False) -> Store:
    """The existing log that ``--db`` and its lake options name. ``read_only`` for the commands
    that only read it: nothing writes to the file, not even a schema migration (an older file is
    refused with the upgrade command)."""
    db, data_path = args.db, args.data_path
    _check_lake_options(db, data_path)
    if isinstance(db, Path) and not db.exists():
        raise InputFileError(f"database {db} does not exist")
    return Store.open(db, read_only=read_only, data_path=data_path)


def _check_lake_options(db: Path | str, data_path: Path | None) -> None:
    if data_path is not None and not is_lake(db):
        raise ConfigError(
            f"--data-path is a lake's option (--db ducklake:postgres:...), and {db} is a DuckDB "
            "file: leave it out"
        )


def _cmd_sql(args: argparse.Namespace) -> int:
    table = _open_existing(args, read_only=True).read_only_query(args.query)
    _print_table(table, args.format, args.out)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from teachloop.store.replay import render_transcript

    messages = _open_existing(args, read_only=True).transcript(args.lesson_id)
    if not messages:
        raise InputFileError(f"lesson {args.lesson_id!r} is not in {args.db}")
    print(render_transcript(messages, args.format))
    return 0


def _cmd_lessons(args: argparse.Namespace) -> int:
    store = _open_existing(args, read_only=True)
    lessons = store.lessons(run_id=args.run, topic=args.topic, status=args.status)
    table = (
        pa.Table.from_pylist(
            [
                lesson.model_dump(
                    include={
                        "lesson_id",
                        "status",
                        "end_reason",
                        "questions",
                        "correct_first",
                        "correct_after_reteach",
                        "error",
                    }
                )
                for lesson in lessons
            ]
        )
        if lessons
        else pa.table({"lesson_id": pa.array([], pa.string())})
    )
    _print_table(table, args.format, None)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    counts = _open_existing(args, read_only=True).export_run(args.run, args.out)
    print(
        f"exported run {args.run} to {args.out}: "
        + ", ".join(f"{n} {t}" for t, n in counts.items())
    )
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    _check_lake_options(args.db, args.data_path)
    store = Store(args.db, data_path=args.data_path)
    for source in args.sources:
        added = store.merge(source)
        print(f"merged {source}: " + ", ".join(f"+{n} {t}" for t, n in added.items()))
    return 0


def _config(args: argparse.Namespace) -> RunConfig:
    config = RunConfig.from_file(args.config) if args.config else RunConfig()
    _check_lake_options(args.db or config.db, args.data_path)
    data_path = args.data_path
    return config.with_overrides(db=args.db, store={"data_path": data_path} if data_path else None)


def _cmd_pairs(args: argparse.Namespace) -> int:
    from teachloop.training.pairs import build_pairs

    built = build_pairs(_open_existing(args))
    added = ", ".join(f"{n} {rule}" for rule, n in built.added.items())
    print(f"{built.lessons} new lessons -> pairs added: {added}; unused pairs: {built.unused}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from teachloop.training.jobs import train

    _open_existing(args)
    job = train(
        _config(args), method=args.method, from_version=args.from_version, progress=not args.quiet
    )
    print(job.message)
    if job.status == "complete":
        print(
            f"final loss {job.final_loss:.4f}, reward margin {job.final_reward_margin}, "
            f"{job.mean_step_time_s:.2f} s/step, {job.wall_time_s:.0f} s in all"
        )
    return 0


def _print_gate(gate: GateDecision) -> None:
    table = Table(title=f"held-out accuracy: {gate.version} vs {gate.incumbent}")
    for col in ("topic", "questions", gate.incumbent, gate.version):
        table.add_column(col, justify="left" if col == "topic" else "right")
    for score in gate.result.topics:
        old = gate.incumbent_result.topic(score.topic)
        table.add_row(
            score.topic,
            str(score.questions),
            f"{old.accuracy:.0%}" if old else "-",
            f"{score.accuracy:.0%}",
        )
    table.add_row(
        "overall",
        str(gate.result.questions),
        f"{gate.incumbent_result.accuracy:.0%}",
        f"{gate.result.accuracy:.0%}",
        style="bold",
    )
    Console(width=None if sys.stdout.isatty() else 110).print(table)
    if gate.version == gate.incumbent:
        print(f"{gate.version} is the promoted student")
    elif gate.promoted:
        print(f"promoted {gate.version}: later lessons use it")
    else:
        print(
            f"not promoted: {gate.version} regressed on {', '.join(gate.regressed) or 'nothing'}"
            " (or --no-promote)"
        )


def _cmd_eval(args: argparse.Namespace) -> int:
    from teachloop.training.jobs import evaluate_and_promote

    _open_existing(args)
    config = _config(args)
    with _serving(config, args.serve):
        _print_gate(evaluate_and_promote(config, args.model, promote=not args.no_promote))
    return 0


def _cmd_loop(args: argparse.Namespace) -> int:
    from teachloop.training.loop import RoundResult, run_loop

    config = _config(args).with_overrides(run_id=args.run_id)

    def show(r: RoundResult) -> None:
        r.run.render()
        added = sum(r.pairs.added.values())
        print(f"round {r.round}: {added} new pairs; {r.job.message}")
        if r.gate:
            _print_gate(r.gate)
        if r.maintenance:
            print(f"lake maintained: {r.maintenance.render()}")
        print("seconds per step: " + ", ".join(f"{k} {v}" for k, v in r.seconds.items()))

    with _serving(config, args.serve):
        run_loop(
            config,
            rounds=args.rounds,
            every_s=args.every,
            progress=not args.quiet,
            on_round=show,
            ray=_ray_options(args),
            maintain=args.maintain,
        )
    return 0


def _seeds(text: str) -> tuple[int, ...]:
    """ "0-4" or "0,2,7" (or both: "0-2,9")."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            seeds.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: seeds look like 0-4 or 0,2,7") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r}: no seeds")
    return tuple(dict.fromkeys(seeds))


def _cmd_experiment(args: argparse.Namespace) -> int:
    from teachloop.training.comparison import summarize_experiment
    from teachloop.training.experiment import run_experiment
    from teachloop.training.experiment_report import render_markdown, write_experiment_report

    config = _config(args)
    name = config.experiment.name
    store = Store.of(config)
    out = args.out or store.home / "experiments" / name

    def show(r: ArmResult) -> None:
        print(
            f"seed {r.seed} {r.arm}: {r.correct}/{r.questions} right ({r.examples} examples, "
            f"{r.steps} steps, {r.train_wall_s:.0f} s training)",
            flush=True,
        )

    with _serving(config, args.serve):
        run_experiment(config, seeds=args.seeds, out=out, progress=not args.quiet, on_arm=show)
    summary = summarize_experiment(store, name)
    path = write_experiment_report(summary, out)
    print(render_markdown(summary))
    print(f"report: {path}")
    return 0


def _serving(config: RunConfig, enabled: bool) -> AbstractContextManager[object]:
    """The config's vLLM servers around a command (`--serve`), stopped however it ends."""
    if not enabled:
        return contextlib.nullcontext()
    from teachloop.agents.serving import ServerSet

    return ServerSet(config, on_status=lambda msg: print(msg, file=sys.stderr))


def _cmd_serve(args: argparse.Namespace) -> int:
    from teachloop.agents.serving import ServerSet, log_tail

    config = RunConfig.from_file(args.config)
    servers = ServerSet(config, log_dir=args.logs, on_status=print)
    # SIGTERM (a service manager, `kill`) stops the servers the way Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        servers.start()
        table = Table("server", "roles", "model", "endpoint", "pid", "log")
        for e in servers.endpoints:
            table.add_row(e.name, ",".join(e.roles), e.model, e.url, str(e.pid), str(e.log))
        Console().print(table)
        print("serving; Ctrl-C stops all servers", flush=True)
        while not (dead := servers.dead()):
            time.sleep(1.0)
        for name, code, log in dead:
            print(f"error: server {name} exited ({code}); the end of {log}:", file=sys.stderr)
            print(log_tail(log), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping servers", file=sys.stderr)
        return 0
    finally:
        servers.stop()


def _cmd_promote(args: argparse.Namespace) -> int:
    from teachloop.training.jobs import promote

    version = promote(_open_existing(args), args.version)
    print(f"promoted {version.version}: lessons now use it as the student of {version.base_model}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from teachloop.training.comparison import summarize_experiment
    from teachloop.training.experiment_report import write_experiment_report
    from teachloop.training.report import write_report

    store = _open_existing(args, read_only=True)
    print(f"report: {write_report(store, args.out)}")
    # Experiments in the log get their own report each, from their stored rows.
    for name in store.experiments():
        if store.arm_results(name):
            path = write_experiment_report(summarize_experiment(store, name), args.out / name)
            print(f"experiment {name}: {path}")
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    try:
        from teachloop.view import serve
    except ModuleNotFoundError as e:  # a plain install: the viewer is an extra
        raise TeachloopError(
            f"teachloop view needs the view extra ({e.name} is missing): "
            "pip install 'teachloop[view]'"
        ) from None
    return serve(_open_existing(args, read_only=True), host=args.host, port=args.port)


def _cmd_migrate(args: argparse.Namespace) -> int:
    if args.source or args.target:
        if not (args.source and args.target) or args.db:
            raise ConfigError("copy a log with --from SOURCE --to TARGET (and no --db)")
        if isinstance(args.source, Path) and not args.source.exists():
            raise InputFileError(f"database {args.source} does not exist")
        _check_lake_options(args.target, args.data_path)
        target = Store(args.target, data_path=args.data_path)
        added = target.merge(args.source)
        print(
            f"copied {args.source} to {target.location}: "
            + ", ".join(f"+{n} {t}" for t, n in added.items())
        )
        return 0
    if args.db is None:
        raise ConfigError("migrate needs --db (upgrade a log in place) or --from and --to")
    if isinstance(args.db, Path) and not args.db.exists():
        raise InputFileError(f"database {args.db} does not exist")
    _check_lake_options(args.db, args.data_path)
    # as it is, so the version it had can be reported
    store = Store(args.db, create=False, data_path=args.data_path)
    before = store.migrate()
    now = store.schema_version()
    if before == now:
        print(f"{args.db} is at schema version {now}: nothing to do")
    else:
        print(f"upgraded {args.db} from schema version {before} to {now}")
    return 0


def _cmd_lake_maintain(args: argparse.Namespace) -> int:
    store = _open_existing(args)
    report = store.maintain(keep_days=args.keep_days, grace_hours=args.grace_hours)
    print(report.render())
    return 0


def _ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="spread the lessons over Ray workers writing one lake: local (a private cluster "
        "here), auto (this machine's cluster) or the head's host:port",
    )
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (with --ray)")


def _ray_options(args: argparse.Namespace) -> RayOptions | None:
    if not args.ray:
        return None
    from teachloop.graphs.distributed import RayOptions

    return RayOptions(address=args.ray, workers=args.workers)


def _db_args(
    parser: argparse.ArgumentParser,
    *,
    required: bool = True,
    help: str = "DuckDB file or ducklake:postgres:... lake",
) -> None:
    """``--db`` and the lake options that go with it: every command that takes ``--db`` takes
    them all, so flags copied from one command work in the next."""
    parser.add_argument("--db", type=db_target, required=required, help=help)
    parser.add_argument(
        "--data-path",
        type=Path,
        help="a lake's data directory, mounted at this path on every machine: where a new lake "
        "puts its files (overrides [store] data_path); an existing lake's catalog remembers "
        "it, and a different one is refused",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teachloop", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(loads_models=False)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run lessons and log them to DuckDB")
    run.add_argument("--config", type=Path, help="TOML run config (default: built-in defaults)")
    _db_args(
        run, required=False, help="DuckDB file or ducklake:postgres:... lake (overrides the config)"
    )
    run.add_argument("--lessons", type=int, help="number of lessons")
    run.add_argument("--concurrency", type=int, help="lessons in flight at once")
    run.add_argument("--run-id", help="resume (or name) this run")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--follow", action="store_true", help="print every message live (instead of the bar)"
    )
    run.add_argument("--serve", action="store_true", help="start the config's [[servers]] first")
    _ray_args(run)
    run.set_defaults(func=_cmd_run, loads_models=True)

    serve = sub.add_parser("serve", help="start the config's vLLM servers; Ctrl-C stops them")
    serve.add_argument("--config", type=Path, required=True)
    serve.add_argument("--logs", type=Path, help="server log directory (default: <db dir>/servers)")
    serve.set_defaults(func=_cmd_serve, loads_models=True)

    sql = sub.add_parser("sql", help="run a read-only SQL query on the log")
    _db_args(sql)
    sql.add_argument("query", help="SELECT ... (statements that write are refused)")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sql.add_argument("--out", type=Path, help="write the result to this .parquet file")
    sql.set_defaults(func=_cmd_sql)

    replay = sub.add_parser("replay", help="print a lesson's dialogue turn by turn")
    _db_args(replay)
    replay.add_argument("lesson_id")
    replay.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    replay.set_defaults(func=_cmd_replay)

    lessons = sub.add_parser("lessons", help="list logged lessons")
    _db_args(lessons)
    lessons.add_argument("--run", help="only this run")
    lessons.add_argument("--topic", help="only lessons that asked about this topic")
    lessons.add_argument("--status", choices=["complete", "failed", "interrupted"])
    lessons.add_argument("--format", choices=["table", "csv", "json"], default="table")
    lessons.set_defaults(func=_cmd_lessons)

    export = sub.add_parser("export", help="write one run's rows to Parquet files")
    _db_args(export)
    export.add_argument("--run", required=True)
    export.add_argument("--out", type=Path, required=True, help="directory for the .parquet files")
    export.set_defaults(func=_cmd_export)

    merge = sub.add_parser("merge", help="merge databases or exports into one database")
    _db_args(merge, help="the database to merge into")
    merge.add_argument(
        "sources", type=Path, nargs="+", help="teachloop .duckdb files or export dirs"
    )
    merge.set_defaults(func=_cmd_merge)

    pairs = sub.add_parser("pairs", help="build preference pairs from lessons not yet used")
    _db_args(pairs)
    pairs.set_defaults(func=_cmd_pairs)

    train = sub.add_parser("train", help="train a LoRA student version on unused pairs")
    _db_args(train)
    train.add_argument("--config", type=Path, help="TOML config ([training], [student])")
    train.add_argument("--method", choices=["dpo", "sft"])
    train.add_argument("--from", dest="from_version", help="parent version (default: promoted)")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=_cmd_train, loads_models=True)

    ev = sub.add_parser("eval", help="held-out accuracy of a version; promote it if no regression")
    _db_args(ev)
    ev.add_argument("--model", required=True, help="model version, e.g. v0001 or base")
    ev.add_argument("--config", type=Path, help="TOML config (topics, [eval])")
    ev.add_argument("--no-promote", action="store_true", help="measure only")
    ev.add_argument("--serve", action="store_true", help="start the config's [[servers]] first")
    ev.set_defaults(func=_cmd_eval, loads_models=True)

    loop = sub.add_parser("loop", help="lessons -> pairs -> train -> eval -> promote, N rounds")
    loop.add_argument("--config", type=Path, required=True)
    _db_args(loop, required=False, help="DuckDB file or lake (overrides the config)")
    loop.add_argument("--rounds", type=int, default=1)
    loop.add_argument("--every", type=float, default=0.0, help="seconds between round starts")
    loop.add_argument("--run-id", help="prefix of the rounds' run ids (resume)")
    loop.add_argument("--quiet", action="store_true")
    loop.add_argument("--serve", action="store_true", help="start the config's [[servers]] first")
    _ray_args(loop)
    loop.add_argument(
        "--maintain", action="store_true", help="lake maintain after each round (lakes only)"
    )
    loop.set_defaults(func=_cmd_loop, loads_models=True)

    ex = sub.add_parser(
        "experiment", help="train arms on equal budgets over seeds and compare them (resumable)"
    )
    ex.add_argument("--config", type=Path, required=True, help="TOML with an [experiment]")
    _db_args(ex, required=False, help="DuckDB file or lake (overrides the config)")
    ex.add_argument("--seeds", type=_seeds, help="e.g. 0-4 or 0,2,7 (default: the config's)")
    ex.add_argument("--out", type=Path, help="adapters and report (default: <db dir>/experiments)")
    ex.add_argument("--quiet", action="store_true")
    ex.add_argument("--serve", action="store_true", help="start the config's [[servers]] first")
    ex.set_defaults(func=_cmd_experiment, loads_models=True)

    promote = sub.add_parser("promote", help="make a version the student (also to roll back)")
    _db_args(promote)
    promote.add_argument("version", help="e.g. v0001, or base")
    promote.set_defaults(func=_cmd_promote)

    report = sub.add_parser("report", help="write plots and a Markdown summary")
    _db_args(report)
    report.add_argument("--out", type=Path, required=True)
    report.set_defaults(func=_cmd_report)

    view = sub.add_parser(
        "view", help="serve a read-only web viewer of the log until Ctrl-C (needs [view])"
    )
    _db_args(view)
    view.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other is reachable without a login)",
    )
    view.add_argument("--port", type=int, default=8000, help="0: any free port")
    view.set_defaults(func=_cmd_view)

    migrate = sub.add_parser(
        "migrate",
        help="upgrade a log written by an older teachloop (read-only commands refuse it), or "
        "copy a log between a DuckDB file and a lake (--from, --to; rerunning adds nothing)",
    )
    _db_args(migrate, required=False, help="the log to upgrade in place (--data-path: also --to's)")
    migrate.add_argument("--from", dest="source", type=db_target, help="the log to copy")
    migrate.add_argument(
        "--to", dest="target", type=db_target, help="the file or lake to copy into"
    )
    migrate.set_defaults(func=_cmd_migrate)

    lake = sub.add_parser("lake", help="look after a lake (DuckLake)")
    lake_sub = lake.add_subparsers(dest="lake_command", required=True)
    maintain = lake_sub.add_parser(
        "maintain",
        help="compact small files and duplicate rows, expire old snapshots, delete files no "
        "snapshot uses and orphaned files older than a grace period",
    )
    _db_args(maintain)
    maintain.add_argument(
        "--keep-days",
        type=float,
        default=7.0,
        help="snapshots younger than this stay (time travel)",
    )
    maintain.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        help="orphaned files younger than this stay (a writer may still be committing them)",
    )
    maintain.set_defaults(func=_cmd_lake_maintain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from packages, never a hub
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    try:
        if args.loads_models:  # where transformers is imported; querying logs needs no torch
            check_torch_companions()
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except TeachloopError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
