"""`make bench`: every benchmark that fits 30 minutes on 2 cores, one JSON file of results and a
table of figure, target, measured, pass/fail.

    .venv/bin/python bench/run_all.py [--only store,orchestration] [--out runs/bench]
                                      [--readme README.md]

Each benchmark measures its ratios within its own run (absolute times on a shared machine
vary). ``--readme`` rewrites the table between README's ``<!-- bench:begin -->`` and
``<!-- bench:end -->`` markers from the results. With ``--only``, the other benchmarks' figures
are kept from the earlier results file. Exits 1 if a figure misses its target.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from figures import Figure, machine
from rich.console import Console
from rich.table import Table

# name -> module in bench/ with `figures() -> list[Figure]`, in the order they run.
BENCHES = {
    "orchestration": "orchestration_bench",
    "store": "store_bench",
    "embedded": "embedded_bench",
    "adapter": "adapter_bench",
    "lake": "lake_bench",
    "view": "view_bench",
}
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def markdown(results: dict) -> str:
    lines = [
        f"Measured {results['date'][:10]} by `make bench` on {results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores, Python {results['machine']['python']} "
        f"(load average at start {results['machine']['load_average_at_start'][0]}); "
        "raw results in `runs/bench/results.json`.",
        "",
        "| benchmark | figure | target | measured | |",
        "|---|---|---|---:|---|",
    ]
    for f in map(Figure.model_validate, results["figures"]):
        verdict = {True: "pass", False: "**miss**", None: ""}[f.passed]
        note = f" ({f.note})" if f.note else ""
        lines.append(
            f"| {f.bench} | {f.name}{note} | {f.target or ''} | {number(f.measured)} {f.unit} "
            f"| {verdict} |"
        )
    return "\n".join(lines)


def update_readme(path: Path, table: str) -> None:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} section to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHES)}")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--readme", type=Path, help="rewrite this README's bench table")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(BENCHES)
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    console = Console()
    results: dict = {"date": datetime.now(UTC).isoformat(), "machine": machine(), "figures": []}
    seconds: dict[str, float] = {}
    for name in chosen:
        console.print(f"[bold]{name}[/bold] ...")
        started = time.perf_counter()
        module = importlib.import_module(BENCHES[name])
        figures: list[Figure] = module.figures()
        seconds[name] = round(time.perf_counter() - started, 1)
        results["figures"] += [f.model_dump() for f in figures]
        for f in figures:
            console.print(f"  {f.name}: {number(f.measured)} {f.unit}")
    results["seconds"] = seconds
    earlier = args.out / "results.json"
    if args.only and earlier.exists():  # keep what was not rerun, in the usual order
        old = json.loads(earlier.read_text())
        kept = [f for f in old["figures"] if f["bench"] not in chosen]
        order = list(BENCHES)
        results["figures"] = sorted(
            kept + results["figures"], key=lambda f: order.index(f["bench"])
        )
        results["seconds"] = {**old.get("seconds", {}), **seconds}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    table = Table(title=f"make bench ({sum(seconds.values()):.0f} s)")
    for column in ("benchmark", "figure", "target", "measured", "result"):
        table.add_column(column, justify="right" if column == "measured" else "left")
    figures = [Figure.model_validate(f) for f in results["figures"]]
    for f in figures:
        verdict = {True: "[green]pass", False: "[red]miss", None: ""}[f.passed]
        table.add_row(f.bench, f.name, f.target or "", f"{number(f.measured)} {f.unit}", verdict)
    console.print(table)
    console.print(f"results: {args.out / 'results.json'}")
    if args.readme:
        update_readme(args.readme, markdown(results))
        console.print(f"rewrote the bench table in {args.readme}")
    sys.exit(1 if any(f.passed is False for f in figures) else 0)


if __name__ == "__main__":
    main()
