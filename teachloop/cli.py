"""The `teachloop` command: a thin shell over the Python API."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from teachloop.config import RunConfig
from teachloop.errors import TeachloopError


def _cmd_run(args: argparse.Namespace) -> int:
    from teachloop.graphs.runner import new_run_id, run_lessons

    config = RunConfig.from_file(args.config) if args.config else RunConfig()
    config = config.with_overrides(
        db=args.db, lessons=args.lessons, concurrency=args.concurrency, run_id=args.run_id
    )
    if config.run_id is None:  # fixed up front so an interrupted run can be resumed by id
        config = config.with_overrides(run_id=new_run_id())
    try:
        result = run_lessons(config, progress=not args.quiet)
    except KeyboardInterrupt:
        print(
            f"interrupted: logged lessons are in {config.db}; resume with --run-id {config.run_id}",
            file=sys.stderr,
        )
        return 130
    result.render()
    return 0 if result.lessons_failed == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teachloop", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run lessons and log them to DuckDB")
    run.add_argument("--config", type=Path, help="TOML run config (default: built-in defaults)")
    run.add_argument("--db", type=Path, help="DuckDB file to log to (overrides the config)")
    run.add_argument("--lessons", type=int, help="number of lessons")
    run.add_argument("--concurrency", type=int, help="lessons in flight at once")
    run.add_argument("--run-id", help="resume (or name) this run")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from packages, never a hub
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    try:
        return args.func(args)
    except TeachloopError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
