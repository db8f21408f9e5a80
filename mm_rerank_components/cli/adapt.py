"""``mm-rerank adapt --data labels.jsonl --out FOLDER``: learned fusion adapted to your labelled queries.

Mines hard negatives from both collections, scores them, trains learned fusion (pairwise on the hard
negatives, calibrated per modality) and saves a reranker folder that ``mm-rerank query --reranker``,
``MultimodalReranker.load`` and the framework adapters load. Prints a report of every step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mm_rerank_components.cli._common import connection_args, retriever_from_args


def register(sub: Any) -> None:
    adapt = sub.add_parser(
        "adapt",
        help="train a reranker on your labelled queries (hard negatives, learned fusion, calibration)",
        description=(
            "Adapt the reranker to your data. Labels: the eval JSONL format or FlagEmbedding lines "
            '{"query": ..., "pos": [...], "neg": [...]}; optionally a click log {"query", "shown", '
            '"clicked"}. With --db/--server the label documents are found in your database by content; '
            "without, they are embedded into a temporary database. Every query given is training data: "
            "hold your test queries out of the file (or use --split dev)."
        ),
    )
    adapt.add_argument("--data", type=Path, default=None, help="labelled queries (JSONL)")
    adapt.add_argument("--clicks", type=Path, default=None, help="a click log (JSONL): weak labels")
    adapt.add_argument("--out", type=Path, required=True, help="the reranker folder to write")
    connection_args(adapt)
    adapt.add_argument(
        "--scorer",
        type=_scorer_arg,
        default="starter",
        metavar="{starter,fake,first-stage,cross-encoder:PATH,vlm:PATH,llm:PATH}",
        help="raw scorer: the offline starter models (default), the model-free fake (tests), "
        "first-stage (fusion of the retrieval signals only), or a local model folder",
    )
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
    adapt.add_argument(
        "--metadata-field",
        action="append",
        default=[],
        metavar="NAME",
        help="a numeric metadata field to use as a feature (repeatable)",
    )
    adapt.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    adapt.add_argument(
        "--l2", type=float, default=0.01, help="L2 penalty on the fusion weights (default 0.01)"
    )
    adapt.add_argument(
        "--listwise",
        action="store_true",
        help="add the listwise features (each raw score's share of a softmax over its query's list)",
    )
    adapt.add_argument(
        "--modality-floor",
        type=int,
        default=0,
        metavar="K",
        help="keep at least K candidates of each modality in every query's top 10 (0-5, default 0)",
    )
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


def _scorer_arg(text: str) -> str:
    from mm_rerank_components.adapt.pipeline import MODEL_SCORER_KINDS, SCORER_NAMES

    kind, sep, path = text.partition(":")
    if text in SCORER_NAMES or (sep and kind in MODEL_SCORER_KINDS and path):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown scorer {text!r}; use {', '.join(SCORER_NAMES)} or KIND:PATH with KIND one of "
        f"{', '.join(MODEL_SCORER_KINDS)}"
    )


def run(args: argparse.Namespace) -> int:
    from mm_rerank_components.adapt.labels import LabelError
    from mm_rerank_components.adapt.pipeline import adapt, format_report

    if args.data is None and args.clicks is None:
        print(
            "mm-rerank adapt: error: give --data LABELS.jsonl, --clicks CLICKS.jsonl, or both",
            file=sys.stderr,
        )
        return 2
    retriever = None
    if args.db is not None or args.server is not None or args.host is not None:
        retriever = retriever_from_args(args)
    messages = None if args.json else (lambda m: print(f"... {m}", file=sys.stderr))
    try:
        result = adapt(
            args.data,
            clicks=args.clicks,
            out=args.out,
            retriever=retriever,
            embedder=args.embedder,
            scorer=args.scorer,
            k_text=args.k_text,
            k_image=args.k_image,
            seed=args.seed,
            l2=args.l2,
            metadata_fields=args.metadata_field,
            listwise=args.listwise,
            modality_floor=args.modality_floor,
            splits=(args.split,) if args.split else None,
            candidate_image=args.images,
            lora=args.lora,
            lora_options={
                "rank": args.lora_rank,
                "bce_epochs": args.lora_epochs,
                "pairwise_epochs": args.lora_epochs,
            },
            progress=messages,
        )
    except LabelError as exc:
        print(f"mm-rerank adapt: bad labels: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.report, indent=2, default=str))
    else:
        print(format_report(result.report))
    return 0
