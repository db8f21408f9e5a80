"""``mm-rerank adapt``: learned fusion adapted to your labelled queries, or to your corpus alone.

With ``--data labels.jsonl`` (and/or ``--clicks``): mines hard negatives from both collections, scores
them, trains learned fusion (pairwise on the hard negatives, calibrated per modality). With ``--db DB``
and no labels: label-free adaptation (pseudo-queries from the corpus's captions, titles and passages,
pseudo-labelled through the first stage and the scorer). Either way it saves a reranker folder that
``mm-rerank query --reranker``, ``load_reranker`` and the framework adapters load, and prints a report
of every step. Bad labels exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from mm_rerank_components.cli._common import connection_args, retriever_from_args, scorer_arg, scorer_help


def register(sub: Any) -> None:
    adapt = sub.add_parser(
        "adapt",
        help="train a reranker on your labelled queries or your corpus alone (learned fusion, calibration)",
        description=(
            "Adapt the reranker to your data. Labels: the eval JSONL format or FlagEmbedding lines "
            '{"query": ..., "pos": [...], "neg": [...]}; optionally a click log {"query", "shown", '
            '"clicked"}. With --db/--server the label documents are found in your database by content; '
            "without, they are embedded into a temporary database. Every query given is training data: "
            "hold your test queries out of the file (or use --split dev). With --db DB and no labels: "
            "label-free adaptation to your corpus (pseudo-queries from its captions, titles and passages)."
        ),
    )
    adapt.add_argument("--data", type=Path, default=None, help="labelled queries (JSONL)")
    adapt.add_argument("--clicks", type=Path, default=None, help="a click log (JSONL): weak labels")
    adapt.add_argument("--out", type=Path, required=True, help="the reranker folder to write")
    connection_args(adapt)
    adapt.add_argument(
        "--scorer",
        type=scorer_arg,
        default="starter",
        metavar="SPEC",
        help=scorer_help(
            "raw scorer: the offline starter models (default), the model-free fake (tests), first-stage "
            "(fusion of the retrieval signals only), a local model folder or any scorer spec"
        ),
    )
    _lora_args(adapt)
    adapt.add_argument(
        "--metadata-field",
        action="append",
        default=[],
        metavar="NAME",
        help="a numeric metadata field to use as a feature (repeatable)",
    )
    _fusion_args(adapt)
    adapt.add_argument("--k-text", type=int, default=16, help="passages mined per query (default 16)")
    adapt.add_argument("--k-image", type=int, default=16, help="pictures mined per query (default 16)")
    adapt.add_argument(
        "--split",
        choices=("dev", "test"),
        default=None,
        help='train only on queries of this split (their "split" field, else the eval\'s fixed hash)',
    )
    adapt.add_argument(
        "--images",
        choices=("preview", "original"),
        default="preview",
        help="what the scorer reads for a picture: the stored preview (default, as mm-rerank query) or "
        "the original file",
    )
    adapt.add_argument("--json", action="store_true", help="print the report as JSON")
    adapt.set_defaults(handler=run)


def _lora_args(adapt: Any) -> None:
    """The LoRA fine-tuning options (model scorers only)."""
    adapt.add_argument(
        "--lora",
        action="store_true",
        help="first fine-tune the model scorer (cross-encoder:PATH, vlm:PATH, llm:PATH) with LoRA on the "
        "mined pools: BCE, then pairwise on the hard negatives; the adapter is saved in the folder",
    )
    adapt.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (default 8)")
    adapt.add_argument(
        "--lora-epochs", type=int, default=2, help="epochs of each LoRA stage, BCE and pairwise (default 2)"
    )


def _fusion_args(adapt: Any) -> None:
    """The learned-fusion and label-free options."""
    adapt.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    adapt.add_argument(
        "--l2", type=float, default=0.01, help="L2 penalty on the fusion weights (default 0.01)"
    )
    adapt.add_argument(
        "--listwise",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the listwise features (each raw score's share of a softmax over its query's list); "
        "default: off with labels, on without",
    )
    adapt.add_argument(
        "--modality-floor",
        type=int,
        default=None,
        metavar="K",
        help="keep at least K candidates of each modality in every query's top 10 (0-5; default 0 with "
        "labels, 2 without)",
    )
    adapt.add_argument(
        "--bm25",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the BM25 features (default: on with labels, off without)",
    )
    adapt.add_argument(
        "--prior",
        choices=("default", "none"),
        default="default",
        help="start from the shipped default's model and pull towards it (default, when the scorer is "
        "the starter; with or without labels), or 'none' to fit from scratch",
    )
    adapt.add_argument(
        "--allow-unmatched",
        action="store_true",
        help="train although some label documents match no record of --db (they are listed); "
        "default: an error naming file:line and the nearest record",
    )
    adapt.add_argument(
        "--max-queries",
        type=int,
        default=600,
        metavar="N",
        help="without labels: pseudo-queries made from the corpus (default 600)",
    )
    adapt.add_argument(
        "--pair-field",
        action="append",
        default=[],
        metavar="NAME",
        help="without labels: a metadata field that ties a passage and a picture to one document "
        "(repeatable; records sharing a file stem or a caption always pair)",
    )


def _options(args: argparse.Namespace, label_free: bool) -> Any:
    from mm_rerank_components.adapt.corpus import LabelFreeOptions
    from mm_rerank_components.adapt.pipeline import AdaptOptions, label_free_options

    base = label_free_options() if label_free else AdaptOptions()
    chosen = {
        name: value
        for name, value in (
            ("listwise", args.listwise),
            ("modality_floor", args.modality_floor),
            ("bm25", args.bm25),
        )
        if value is not None
    }
    return replace(
        base,
        k_text=args.k_text,
        k_image=args.k_image,
        seed=args.seed,
        l2=args.l2,
        metadata_fields=tuple(args.metadata_field),
        splits=(args.split,) if args.split else None,
        candidate_image=args.images,
        lora=args.lora,
        lora_options={
            "rank": args.lora_rank,
            "bce_epochs": args.lora_epochs,
            "pairwise_epochs": args.lora_epochs,
        },
        allow_unmatched=args.allow_unmatched,
        prior=None if args.prior == "none" else "default",
        label_free=LabelFreeOptions(
            max_queries=args.max_queries, pair_fields=tuple(args.pair_field), seed=args.seed
        ),
        **chosen,
    )


def run(args: argparse.Namespace) -> int:
    from mm_rerank_components.adapt.corpus import UnmatchedLabelError
    from mm_rerank_components.adapt.labels import LabelError
    from mm_rerank_components.adapt.pipeline import AdaptLabelsError, adapt, format_report

    has_db = args.db is not None or args.server is not None or args.host is not None
    label_free = args.data is None and args.clicks is None
    if label_free and not has_db:
        print(
            "mm-rerank adapt: error: give --data LABELS.jsonl and/or --clicks CLICKS.jsonl, or --db DB "
            "(or --server) alone to adapt to your corpus without labels",
            file=sys.stderr,
        )
        return 2
    if label_free and args.lora:
        print("mm-rerank adapt: error: --lora needs labels (--data or --clicks)", file=sys.stderr)
        return 2
    retriever = retriever_from_args(args) if has_db else None
    messages = None if args.json else (lambda m: print(f"... {m}", file=sys.stderr))
    try:
        options = _options(args, label_free)
        result = adapt(
            args.data,
            clicks=args.clicks,
            out=args.out,
            retriever=retriever,
            embedder=args.embedder,
            scorer=args.scorer,
            options=options,
            progress=messages,
        )
    except (LabelError, UnmatchedLabelError, AdaptLabelsError) as exc:
        print(f"mm-rerank adapt: bad labels: {exc}", file=sys.stderr)
        return 2
    for modality in result.report.get("modalities_without_positive", []):
        print(
            f"mm-rerank adapt: FALLBACK: no {modality} record gave a pseudo-labelled positive; {modality} "
            "candidates use the pooled calibration",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(result.report, indent=2, default=str))
    else:
        print(format_report(result.report))
    return 0
