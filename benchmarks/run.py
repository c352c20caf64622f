"""Run the benchmark suite and write its results as Markdown and JSON.

Usage::

    python -m benchmarks.run            # full suite, about an hour on 2 cores
    python -m benchmarks.run --quick    # every part on a tiny budget, 1 to 2 minutes
    python -m benchmarks.run --parts overhead,growth --out /tmp/results

Results go to ``<out>/<full|quick>.md`` and ``.json`` (default out:
benchmarks/results). Each part runs in its own temporary folder with its
own MLflow store and Optuna journal, one part after another, so that the
ratios in one results file are measured side by side on the same machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks._common import Section, fmt, machine_facts, quiet_logs

OWN_PARTS = ("overhead", "growth", "quality", "scaling", "memory")
# Benchmarks with their own command line: ``python -m benchmarks.bench_<name> [--quick] --output FILE``.
SCRIPT_PARTS = ("strategies", "pruning")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def run_part(name: str, *, quick: bool, workdir: Path) -> Section:
    """Run one of the suite's own benchmarks in ``workdir``."""
    module = importlib.import_module(f"benchmarks.bench_{name}")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        section: Section = module.run(quick=quick, workdir=workdir)
    section.seconds = time.perf_counter() - started
    return section


def run_script_part(name: str, *, quick: bool, out: Path) -> Section:
    """Run a benchmark that has its own command line; its JSON lands beside ours."""
    suffix = "-quick" if quick else ""
    # bench_strategies takes a folder for its Markdown and JSON, bench_pruning a JSON file path.
    if name == "strategies":
        output = out / f"strategies{suffix}"
    else:
        output = out / name / f"{name}{suffix}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", f"benchmarks.bench_{name}", "--output", str(output)]
    if quick:
        command.append("--quick")
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, check=False)
    seconds = time.perf_counter() - started
    status = "finished" if completed.returncode == 0 else f"failed with status {completed.returncode}"
    return Section(
        name=name,
        title=name.capitalize(),
        columns=["command", "status", "results"],
        rows=[[" ".join(command[1:]), status, output.name]],
        notes=["This benchmark reports its own table; see its section of docs/benchmarks.md."],
        seconds=seconds,
    )


def render_markdown(sections: list[Section], facts: dict[str, Any], *, quick: bool, started: str) -> str:
    """Render the results as a Markdown page: header, then one table per part."""
    versions = ", ".join(f"{name} {version}" for name, version in facts["versions"].items())
    lines = [
        f"# Benchmark results ({'quick' if quick else 'full'} run)",
        "",
        f"- date: {started}",
        f"- machine: {facts['cores']} cores, {facts['cpu_model']}, {facts['memory_gib']} GiB, {facts['os']}",
        f"- load average at start: {facts.get('load_average', 'n/a')}",
        f"- versions: {versions}",
        f"- mlflow_hpo source: `{facts['mlflow_hpo_source']}`, repository commit {facts.get('commit', 'n/a')}",
        f"- command: `{facts['command']}`",
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.target:
            verdict = {True: "met", False: "missed", None: "not checked"}[section.target_met]
            lines += [f"Target: {section.target} — **{verdict}**.", ""]
        lines.append("| " + " | ".join(section.columns) + " |")
        lines.append("| " + " | ".join("---" for _ in section.columns) + " |")
        for row in section.rows:
            lines.append("| " + " | ".join(fmt(cell) for cell in row) + " |")
        lines.append("")
        for note in section.notes:
            lines.append(f"- {note}")
        lines += [f"- part took {section.seconds:.0f} s.", ""]
    return "\n".join(lines)


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _git_commit() -> str:
    completed = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, check=False
    )
    return completed.stdout.strip() or "n/a"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the mlflow_hpo benchmark suite.")
    parser.add_argument("--quick", action="store_true", help="run every part on a tiny budget (1 to 2 minutes on 2 busy cores)")
    parser.add_argument(
        "--parts",
        default=",".join(OWN_PARTS),
        help=f"comma-separated parts to run, from {', '.join(OWN_PARTS + SCRIPT_PARTS)}; default: {', '.join(OWN_PARTS)}",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the results files")
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in args.parts if part not in OWN_PARTS + SCRIPT_PARTS]
    if unknown:
        parser.error(f"unknown parts {', '.join(unknown)}; choose from {', '.join(OWN_PARTS + SCRIPT_PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts = machine_facts()
    facts["load_average"] = _load_average()
    facts["commit"] = _git_commit()
    facts["command"] = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    sections: list[Section] = []
    markdown = ""
    with tempfile.TemporaryDirectory(prefix="mlflow-hpo-bench-") as folder:
        for part in args.parts:
            print(f"[benchmarks] {part} ...", flush=True)
            if part in SCRIPT_PARTS:
                section = run_script_part(part, quick=args.quick, out=out)
            else:
                section = run_part(part, quick=args.quick, workdir=Path(folder) / part)
            sections.append(section)
            print(f"[benchmarks] {part} took {section.seconds:.0f} s; target met: {section.target_met}", flush=True)
            # Written after every part, so a long run shows its finished parts early.
            markdown = write_results(out, sections, facts, quick=args.quick, started=started)
    print(markdown)
    return 0


def write_results(out: Path, sections: list[Section], facts: dict[str, Any], *, quick: bool, started: str) -> str:
    """Write ``<out>/<full|quick>.md`` and ``.json``; return the Markdown."""
    stem = "quick" if quick else "full"
    markdown = render_markdown(sections, facts, quick=quick, started=started)
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    payload = {"date": started, "quick": quick, "machine": facts,
               "sections": [dataclasses.asdict(section) for section in sections]}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return markdown


if __name__ == "__main__":
    sys.exit(main())
