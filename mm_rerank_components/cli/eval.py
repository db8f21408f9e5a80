"""``mm-rerank eval ...``: the benchmark runner's command line (:mod:`mm_rerank_components.eval.runner`).

Its options belong to the runner, so the top-level parser hands over its arguments untouched.

Example::

    mm-rerank --threads 1 eval --out reports/eval          # Tux Paint + GCompris, all scorers, depth sweep
    mm-rerank eval --data my_labels.jsonl --scorer starter --out my-report
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mm_rerank_components.cli._common import scorer_arg, scorer_help
from mm_rerank_components.eval.sources import TASK_NAMES as TASKS

SCORERS = ("fake", "first-stage", "starter")


def register(sub: Any) -> None:
    sub.add_parser("eval", help="run the benchmark runner (mm-rerank eval --help)", add_help=False)


def run_raw(argv: list[str]) -> int:
    try:
        import mm_rerank_components.eval.runner  # noqa: F401  (the eval extra is installed)
    except ImportError as exc:
        print(
            f"mm-rerank eval: error: the evaluation runner is not available ({exc}); "
            'pip install "mm-rerank-components[eval]"',
            file=sys.stderr,
        )
        return 1
    return main(argv)


def _depths(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--depths takes integers like 16,32,64,100, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every depth must be >= 1, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    from mm_rerank_components.calibration import METHODS
    from mm_rerank_components.eval.runner import DEFAULT_METHODS, DEPTHS

    parser = argparse.ArgumentParser(
        prog="mm-rerank eval",
        description=(
            "Compare single routes, raw-score merge, RRF, per-list normalisation, calibrated reranking, "
            "the label-free default and the adapted reranker on mixed text+image corpora, with a paired "
            "bootstrap 95% CI for every comparison. Writes report.md, results.json and img/*.png."
        ),
    )
    _add_what_args(parser, METHODS, DEFAULT_METHODS, DEPTHS)
    _add_output_args(parser, METHODS)
    return parser


def _add_what_args(
    parser: argparse.ArgumentParser,
    methods: Sequence[str],
    default_methods: Sequence[str],
    depths: Sequence[int],
) -> None:
    """The data, the scorers and the first stage to measure."""
    parser.add_argument(
        "--task",
        action="append",
        choices=TASKS,
        help="built-in task (repeatable; default: every built-in task unless --data is given). Data comes "
        "from Debian packages via apt-get download, cached under --cache-dir",
    )
    parser.add_argument(
        "--data", action="append", default=[], metavar="JSONL", help="your labelled data (repeatable)"
    )
    parser.add_argument(
        "--scorer",
        action="append",
        type=scorer_arg,
        metavar="SPEC",
        help=scorer_help("second-stage scorer (repeatable; default: fake, first-stage and starter)"),
    )
    parser.add_argument(
        "--calibration",
        action="append",
        choices=methods,
        help=f"calibration fitted on dev queries (repeatable; default: {' '.join(default_methods)})",
    )
    parser.add_argument("--k-text", type=int, default=16, help="text route hits per query (default 16)")
    parser.add_argument("--k-image", type=int, default=16, help="image route hits per query (default 16)")
    parser.add_argument(
        "--depths",
        type=_depths,
        default=list(depths),
        help=f"depth sweep, k_text = k_image (default {','.join(map(str, depths))}; '' to skip)",
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the per-depth latency timing")
    parser.add_argument(
        "--embedder", choices=("starter", "hashing"), default="starter", help="first-stage embeddings"
    )
    parser.add_argument(
        "--image-model",
        choices=("efficientnet-lite0", "efficientnet-lite2"),
        default=None,
        help="the starter's image classifier, for the first stage and the starter scorer (default lite0)",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="another run's results.json: add paired CIs of this run minus that one, row by row",
    )


def _add_output_args(parser: argparse.ArgumentParser, methods: Sequence[str]) -> None:
    """Where the report goes, extra rows and how the run behaves."""
    parser.add_argument(
        "--out", type=Path, default=Path("reports/eval"), help="output folder (default reports/eval)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="data and embedding cache (default ./.cache/data)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--label-free",
        action="store_true",
        help="add the label-free adapted row (adapt_from_corpus on each task's documents; scores "
        "pseudo-query pools, so it takes longer)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 is much faster on a busy machine)"
    )
    parser.add_argument(
        "--write-calibration",
        type=Path,
        default=None,
        metavar="JSON",
        help="also fit the starter scorer's calibration on the pooled dev queries and save it here",
    )
    parser.add_argument(
        "--write-calibration-method", choices=methods, default="platt", help="method for --write-calibration"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")


def _check_line(check: dict[str, Any]) -> str:
    if check["verdict"] == "n/a":
        mark = "n/a, not measurable"
    else:
        mark = check["verdict"] if check["passes"] else f"{check['verdict']}, target not reached"
    return f"[{mark}] {check['name']}: {check['detail']}"


def _print_summary(results: dict[str, Any], out: Path) -> None:
    for name, task in results["tasks"].items():
        print(f"\n{name} (held-out test queries; union recall {task['union_recall']['mean']:.3f})")
        print(f"{'pipeline':34s} {'R@10':>6s} {'nDCG@10':>8s} {'MRR':>6s} {'img@10':>7s}")
        for pipeline, entry in task["pipelines"].items():
            o = entry["test"]["overall"]
            print(
                f"{pipeline:34s} {o['recall@10']:6.3f} {o['ndcg@10']:8.3f} {o['mrr']:6.3f} "
                f"{100 * entry['test']['image_share@10']:6.0f}%"
            )
        for row, info in (task.get("targets") or {}).get("rows", {}).items():
            print(f"  {row} ({info['role']}):")
            for check in info["checks"]:
                print(f"    {_check_line(check)}")
    for row, checks in results.get("pooled", {}).items():
        print(f"\n{row}, pooled over tasks:")
        for check in checks:
            print(f"  {_check_line(check)}")
    compared = results.get("compared_with")
    if compared:
        print(f"\nthis run minus {compared['path']} (held-out test queries, paired 95% CI):")
        for task_name, rows in compared["rows"].items():
            for row, metrics in rows.items():
                cells = "; ".join(
                    f"{m} {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] {r['verdict']}"
                    for m, r in metrics.items()
                )
                print(f"  {task_name} {row}: {cells}")
    print(f"\nreport: {out / 'report.md'}  results: {out / 'results.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``mm-rerank eval`` options, run the evaluation, print the summary; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(None if argv is None else list(argv))
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.k_text < 1 or args.k_image < 1:
        parser.error(f"--k-text and --k-image must be >= 1, got {args.k_text} and {args.k_image}")
    if args.write_calibration is not None and args.scorer and "starter" not in args.scorer:
        parser.error("--write-calibration fits the starter scorer: add --scorer starter")
    if args.threads is not None:
        from mm_rerank_components.cli._common import set_threads

        set_threads(args.threads)
    from mm_rerank_components.eval.datasets import DatasetUnavailableError

    try:
        results = _run(args)
    except (DatasetUnavailableError, ImportError, ValueError, FileNotFoundError, TypeError) as exc:
        print(f"mm-rerank eval: error: {exc}", file=sys.stderr)
        return 2
    _print_summary(results, args.out)
    return 0


def _embedder(args: argparse.Namespace) -> Any:
    from mm_rerank_components.eval.embeddings import HashingEmbedder, StarterEmbedder

    if args.embedder != "starter":
        return HashingEmbedder()
    from mm_rerank_components.starter.models import get_starter_models

    return StarterEmbedder(
        get_starter_models(**({"image_model": args.image_model} if args.image_model else {}))
    )


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """Load the tasks, build the scorers, run the evaluation and the optional extras; the results."""
    from mm_rerank_components.eval.datasets import default_cache_dir
    from mm_rerank_components.eval.runner import DEFAULT_METHODS, build_scorer, run_evaluation

    cache_dir = args.cache_dir or default_cache_dir()
    tasks = _load_tasks(args.task or ([] if args.data else list(TASKS)), args.data, cache_dir)
    embedder = _embedder(args)
    scorers = {
        name: build_scorer(name, image_model=args.image_model) for name in args.scorer or list(SCORERS)
    }
    latency = None
    if "starter" in scorers and not args.no_latency and args.depths:
        from mm_rerank_components.defaults import default_reranker

        def latency() -> Any:
            return default_reranker(build_scorer("starter", cache=False, image_model=args.image_model))

    scored: dict[str, Any] = {}
    results = run_evaluation(
        tasks,
        embedder,
        scorers,
        methods=args.calibration or list(DEFAULT_METHODS),
        k_text=args.k_text,
        k_image=args.k_image,
        depths=args.depths,
        cache_dir=cache_dir / "embeddings",
        out_dir=args.out,
        plots=not args.no_plots,
        # with -v the same lines come through logging
        progress=None if args.verbose else lambda line: print(line, file=sys.stderr, flush=True),
        scored_out=scored,
        latency=latency,
        label_free=args.label_free,
    )
    if args.compare_with is not None:
        _add_comparison(results, args.compare_with, args.out)
    if args.write_calibration is not None:
        from mm_rerank_components.eval.runner import fit_shipped_calibration

        path = fit_shipped_calibration(
            scored, tasks, "starter", args.write_calibration_method, args.write_calibration
        )
        print(f"wrote the starter calibration to {path}", file=sys.stderr)
    return results


def _add_comparison(results: dict[str, Any], other_path: Path, out: Path) -> None:
    import json

    from mm_rerank_components.eval.report import write_json
    from mm_rerank_components.eval.runner import compare_results

    other = json.loads(other_path.read_text(encoding="utf-8"))
    results["compared_with"] = {
        "path": str(other_path),
        "config": other.get("config"),
        "rows": compare_results(results, other),
    }
    write_json(results, out / "results.json")


def _load_tasks(names: Sequence[str], data: Sequence[str], cache_dir: Path | None) -> list[Any]:
    from mm_rerank_components.eval.sources import load_builtin_task
    from mm_rerank_components.eval.tasks import load_labelled_jsonl

    tasks: list[Any] = [load_builtin_task(name, cache_dir) for name in names]
    tasks.extend(load_labelled_jsonl(path) for path in data)
    return tasks
