"""How long does a cold ``mm-rerank query`` take end to end? (issue 21: <= 3 s on the quickstart database)

Each run is a fresh process, so nothing is warm but the operating system's file cache. The runs are
rotated with two baselines that show the machine's load: ``python -c pass`` (interpreter start) and
``python -c "import torch"`` (what a torch-based query pays before it does anything). By default the
query runs both ways: with the torch-free text runtime (what ``mm-rerank query`` does) and with
``--text-runtime torch`` (the reference, and the path before issue 21's cut), so their ratio comes from
one run. Then one more run each under ``python -X importtime`` and cProfile gives the per-phase table.

    python scripts/quickstart.py            # builds .cache/quickstart_db once
    python benchmarks/cold_query.py [--db .cache/quickstart_db] [--runs 5] [--out FILE]

Prints a table (median/min/max wall and CPU seconds per variant, then the phases) and writes JSON
(default ``benchmarks/results/cold_query.json``). The load average is read before and after; on a shared
machine compare the variants' ratios, not the absolute figures.

"Cold" is a fresh process as a user starts one: one unmeasured round first fills the operating system's
file cache and Python's bytecode cache (``__pycache__``; the children run without
``PYTHONDONTWRITEBYTECODE``, which would make every start compile the package's 70-odd modules again;
``--no-bytecode`` keeps it, to measure that too).
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QUESTION = "Which farm animal gives us milk?"
#: Functions whose cumulative cProfile time the phase table shows (file suffix, function name, label).
PHASES = (
    ("cli/_common.py", "retriever_from_args", "retriever (imports chromadb)"),
    ("retrievers/chroma.py", "_open_client", "open the database"),
    ("cli/query.py", "_make_reranker", "reranker (default fusion, scorer)"),
    ("cli/shell.py", "warm_up_for", "warm-up (text model load, collections)"),
    ("cli/query.py", "_timed_query", "queries (cold + warm: first stage + rerank)"),
    ("starter/models.py", "embed_texts", "text embedding (with the model's first load)"),
)


def _load() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("mm-rerank")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mm_rerank_components.cli"]


def variants(db: Path, question: str, with_torch_runtime: bool) -> dict[str, list[str]]:
    query = ["query", question, "--db", str(db), "--json"]
    out = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "mm-rerank query": [*_cli(), *query],
    }
    if with_torch_runtime:
        out["mm-rerank query --text-runtime torch"] = [*_cli(), *query, "--text-runtime", "torch"]
    return out


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one fresh process; raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def import_times(argv: list[str], env: dict[str, str], top: int = 10) -> dict[str, float]:
    """Seconds spent importing each top-level package's own modules (``-X importtime`` self times summed
    per package, so chromadb's dependencies count under their own names), the ``top`` largest, and the
    total, from one run."""
    python = [sys.executable, "-X", "importtime", "-m", "mm_rerank_components.cli", *argv]
    done = subprocess.run(python, capture_output=True, text=True, env=env)
    per_package: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        if own.strip().isdigit():
            package = name.strip().split(".")[0]
            per_package[package] = per_package.get(package, 0.0) + int(own) / 1e6
    largest = dict(sorted(per_package.items(), key=lambda kv: -kv[1])[:top])
    return {"all imports": sum(per_package.values()), **largest}


def profile_phases(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Cumulative seconds of the :data:`PHASES` in one cProfile run (profiling slows Python code)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "query.prof"
        python = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "mm_rerank_components.cli", *argv]
        subprocess.run(python, capture_output=True, text=True, env=env, check=True)
        stats: dict[Any, Any] = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    phases = {"whole run (profiled)": max(v[3] for v in stats.values())}
    for suffix, function, label in PHASES:
        phases[label] = sum(v[3] for k, v in stats.items() if k[0].endswith(suffix) and k[2] == function)
    return phases


def measure(args: argparse.Namespace) -> dict[str, Any]:
    dropped = {"OMP_NUM_THREADS", "MM_RERANK_TEXT_RUNTIME"} | (
        set() if args.no_bytecode else {"PYTHONDONTWRITEBYTECODE"}
    )
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    runs = variants(args.db, args.question, not args.no_torch_runtime)
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    for argv in runs.values():  # unmeasured: the file cache and __pycache__ as a user's second start has them
        timed(argv, env)
    load_before = _load()
    names = list(runs)
    for i in range(args.runs):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotated: no variant always first
            wall, cpu = timed(runs[name], env)
            walls[name].append(wall)
            cpus[name].append(cpu)
    load_after = _load()
    query = ["query", args.question, "--db", str(args.db), "--json"]
    return {
        "question": args.question,
        "db": str(args.db),
        "runs": args.runs,
        "bytecode_cache": not args.no_bytecode,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_after,
        "wall_s": {name: summary(v) for name, v in walls.items()},
        "cpu_s": {name: summary(v) for name, v in cpus.items()},
        "all_wall_s": walls,
        "imports_s": {
            "numpy runtime": import_times(query, env),
            "torch runtime": import_times([*query, "--text-runtime", "torch"], env),
        },
        "phases_s": {
            "numpy runtime": profile_phases(query, env),
            "torch runtime": profile_phases([*query, "--text-runtime", "torch"], env),
        },
        "target_s": 3.0,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"cold mm-rerank query {result['question']!r} on {result['db']}: {result['runs']} fresh processes "
        f"per variant, rotated; bytecode cache {'on' if result['bytecode_cache'] else 'off'}; "
        f"{result['cpus']} CPUs, load {result['load_before']} -> {result['load_after']}",
        f"{'variant':<40} {'wall median':>11} {'min':>6} {'max':>6} {'CPU median':>11}",
    ]
    for name, wall in result["wall_s"].items():
        cpu = result["cpu_s"][name]["median"]
        lines.append(
            f"{name:<40} {wall['median']:>10.2f}s {wall['min']:>5.2f}s {wall['max']:>5.2f}s {cpu:>10.2f}s"
        )
    lines.append("\nimport seconds by package (-X importtime self times, one run each; the largest):")
    for runtime, found in result["imports_s"].items():
        lines.append(f"  {runtime:<14} " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()))
    lines.append("\nphases (cumulative, cProfile, one run each; profiling inflates Python-heavy code):")
    runtimes = list(result["phases_s"])
    lines.append(f"  {'phase':<46}" + "".join(f"{r:>15}" for r in runtimes))
    for label in result["phases_s"][runtimes[0]]:
        lines.append(f"  {label:<46}" + "".join(f"{result['phases_s'][r][label]:>14.2f}s" for r in runtimes))
    query = result["wall_s"]["mm-rerank query"]["median"]
    verdict = "met" if query <= result["target_s"] else "missed"
    lines.append(
        f"\nmedian cold query {query:.2f} s: the {result['target_s']:.0f} s target is {verdict} at this load"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", type=Path, default=Path(".cache/quickstart_db"), help="Chroma folder")
    parser.add_argument("--question", default=QUESTION, help=f"the text query (default {QUESTION!r})")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per variant (default 5)")
    parser.add_argument(
        "--no-torch-runtime", action="store_true", help="skip the --text-runtime torch variant"
    )
    parser.add_argument(
        "--no-bytecode", action="store_true", help="keep PYTHONDONTWRITEBYTECODE (compile on every start)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cold_query.json"), help="JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    if not (args.db / "chroma.sqlite3").is_file():
        parser.error(
            f"--db {str(args.db)!r} holds no Chroma database: run python scripts/quickstart.py first"
        )
    if shutil.which(_cli()[0]) is None and not Path(_cli()[0]).is_file():
        parser.error("mm-rerank is not installed in this environment: pip install -e .")
    result = measure(args)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
