"""``mm-rerank serve``: the rerank HTTP service (Jina/vLLM ``/v1/rerank``, Cohere ``/v2/rerank``).

With no flags it serves the product default, :func:`~mm_rerank_components.defaults.default_reranker`
(``--scorer starter``: the starter scorer fused with the first stage's signals, as ``mm-rerank query``).
``--db DB`` adds ``POST /v1/search``, which retrieves and reranks in process and returns the rows of
``mm-rerank query --json`` (:mod:`mm_rerank_components.serving.search`).

Runs under uvicorn in this process, or with ``--ray`` as a Ray Serve application with ``--replicas N``.
The API key comes from ``--api-key`` or the ``MM_RERANK_API_KEY`` environment variable (better: it stays
out of the process list).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from typing import Any

from mm_rerank_components.cli._common import embedder_spec, read_captions_error, scorer_arg, scorer_help

_MB = 1024 * 1024


def register(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve reranking over HTTP (Jina/vLLM /v1/rerank, Cohere /v2/rerank, /health, /metrics)",
        description="Serve reranking over HTTP. Global options (-v, --threads N) go before 'serve'.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, local only)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    _scorer_args(serve)
    _batching_args(serve)
    _limit_args(serve)
    _search_args(serve)
    _ray_args(serve)
    serve.set_defaults(handler=run)


def _scorer_args(serve: Any) -> None:
    what = serve.add_argument_group("scorer")
    what.add_argument(
        "--scorer",
        type=scorer_arg,
        default="starter",
        metavar="SPEC",
        help=scorer_help(
            "the scorer (default starter: the product default, default_reranker(), the offline starter "
            "models fused with the first stage's signals sent with each document, as in mm-rerank query; a "
            "module:callable factory may return a scorer or a MultimodalReranker)"
        ),
    )
    what.add_argument(
        "--scorer-kwargs", default=None, help="JSON object of keyword arguments for the scorer or factory"
    )
    what.add_argument(
        "--reranker", default=None, metavar="FOLDER", help="a saved reranker folder (mm-rerank adapt)"
    )
    what.add_argument(
        "--read-captions",
        action="store_true",
        help="also read each captioned picture's caption as a passage, as mm-rerank query --read-captions "
        "(learned fusion only: the default or --reranker FOLDER; see docs/calibration.md)",
    )
    what.add_argument("--device", default="cpu", help="torch device for model scorers (default cpu)")
    what.add_argument(
        "--model-name",
        default=None,
        help="model id echoed in responses (default a short id: mm-rerank-default, reranker:FOLDER or the "
        "scorer's name; the full scorer name is in GET /info and /metrics)",
    )


def _batching_args(serve: Any) -> None:
    batching = serve.add_argument_group("micro-batching")
    batching.add_argument("--batch-size", type=int, default=64, help="most candidates per scoring pass (64)")
    batching.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="wait for more calls after the first (5)"
    )
    batching.add_argument("--no-micro-batching", action="store_true", help="score every request on its own")
    batching.add_argument("--score-workers", type=int, default=1, help="scoring passes at once (1)")
    batching.add_argument("--max-concurrency", type=int, default=64, help="requests handled at once (64)")
    batching.add_argument(
        "--cpu-slots", type=int, default=None, help="requests parsed and decoded at once (default: CPU count)"
    )


def _limit_args(serve: Any) -> None:
    limits = serve.add_argument_group("limits and safety")
    limits.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body in MB (32)")
    limits.add_argument("--max-documents", type=int, default=1000, help="most documents per request (1000)")
    limits.add_argument("--max-image-mb", type=float, default=10.0, help="largest image in MB (10)")
    limits.add_argument("--max-image-pixels", type=int, default=40_000_000, help="largest image in pixels")
    limits.add_argument("--allow-urls", action="store_true", help="fetch http(s) image URLs (off by default)")
    limits.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' (or MM_RERANK_API_KEY)"
    )
    limits.add_argument(
        "--timeout", type=float, default=60.0, help="seconds a request may wait for scores (60)"
    )
    limits.add_argument(
        "--pass-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds one scoring pass may run before it is abandoned and its worker replaced "
        "(default: half of --timeout)",
    )
    limits.add_argument(
        "--max-stuck-passes",
        type=int,
        default=2,
        help="abandoned passes still running before /ready says 503 and requests get 503 (2)",
    )
    limits.add_argument(
        "--max-pending", type=int, default=1024, help="requests admitted at once; more get 503 (1024)"
    )
    limits.add_argument(
        "--max-document-chars",
        type=int,
        default=1_000_000,
        help="longest text of one document or query, in characters (1000000; 413 past it)",
    )
    limits.add_argument(
        "--max-request-pixels",
        type=int,
        default=100_000_000,
        help="decoded pixels of all the images of one request together (100000000; 413 past it)",
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a client may take to send its request headers, or stay idle without one (10)",
    )
    limits.add_argument(
        "--body-timeout", type=float, default=30.0, metavar="S", help="seconds to send a body (30; then 408)"
    )


def _search_args(serve: Any) -> None:
    search = serve.add_argument_group("search (POST /v1/search)")
    search.add_argument(
        "--db",
        default=None,
        metavar="DB",
        help="an embedded Chroma folder (mm-rerank ingest) to search: adds POST /v1/search, which retrieves "
        "and reranks in process and returns the rows of mm-rerank query --json",
    )
    search.add_argument("--text-collection", default="mm_text", help="text collection (default mm_text)")
    search.add_argument(
        "--image-collection", default="mm_images", help="image collection (default mm_images)"
    )
    search.add_argument(
        "--embedder",
        type=embedder_spec,
        default="starter",
        metavar="{starter,hashing,clip:PATH}",
        help="the database's embedding functions (default starter, as mm-rerank ingest)",
    )
    search.add_argument(
        "--images",
        choices=("preview", "original"),
        default="preview",
        help="what the reranker reads for a picture (default preview, as mm-rerank query)",
    )


def _ray_args(serve: Any) -> None:
    ray = serve.add_argument_group("Ray Serve")
    ray.add_argument("--ray", action="store_true", help="serve with Ray Serve (extra 'ray')")
    ray.add_argument("--replicas", type=int, default=1, help="replicas (default 1)")
    ray.add_argument(
        "--autoscale", default=None, metavar="MIN:MAX", help="autoscale between MIN and MAX replicas"
    )
    ray.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica (1)")
    ray.add_argument("--num-gpus", type=float, default=0.0, help="GPUs (or a fraction) per replica (0)")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~mm_rerank_components.serving.ServeConfig` the options describe."""
    from mm_rerank_components.serving.engine import ServeConfig

    kwargs: dict[str, Any] = {}
    if args.scorer_kwargs:
        try:
            kwargs = json.loads(args.scorer_kwargs)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"--scorer-kwargs is not JSON ({exc}); give e.g. '{{\"per_batch_s\": 0.02}}'"
            ) from None
        if not isinstance(kwargs, dict):
            raise ValueError(f"--scorer-kwargs must be a JSON object, got {args.scorer_kwargs!r}")
    return ServeConfig(
        # "starter" is the product default, as in mm-rerank query: the starter scorer fused with the
        # first stage's signals (default_reranker), not the bare scorer
        scorer="default" if args.scorer == "starter" else args.scorer,
        scorer_kwargs=kwargs,
        reranker_folder=args.reranker,
        read_captions=args.read_captions,
        device=args.device,
        threads=getattr(args, "threads", None),
        model=args.model_name,
        micro_batching=not args.no_micro_batching,
        max_batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        score_workers=args.score_workers,
        max_concurrency=args.max_concurrency,
        cpu_slots=args.cpu_slots,
        request_timeout_s=args.timeout,
        pass_timeout_s=args.pass_timeout,
        max_stuck_passes=args.max_stuck_passes,
        max_pending=args.max_pending,
        max_document_chars=args.max_document_chars,
        max_request_pixels=args.max_request_pixels,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_body_bytes=int(args.max_body_mb * _MB),
        max_documents=args.max_documents,
        max_image_bytes=int(args.max_image_mb * _MB),
        max_image_pixels=args.max_image_pixels,
        allow_urls=args.allow_urls,
        api_key=args.api_key or os.environ.get("MM_RERANK_API_KEY") or None,
    )


def _autoscale(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    low, sep, high = text.partition(":")
    if not sep or not low.isdigit() or not high.isdigit() or not 0 <= int(low) <= int(high) or int(high) < 1:
        raise ValueError(f"--autoscale must be MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return int(low), int(high)


def search_service(args: argparse.Namespace) -> Any:
    """The :class:`~mm_rerank_components.serving.search.SearchService` ``--db`` names (database opened and
    embedders loaded now), or None without ``--db``."""
    if args.db is None:
        return None
    from pathlib import Path

    from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever
    from mm_rerank_components.serving.search import SearchService

    if not Path(args.db).is_dir():
        raise ValueError(f"--db {args.db!r} is not a folder; give the database mm-rerank ingest wrote")
    retriever = ChromaMultiCollectionRetriever(
        path=args.db,
        text_collection=args.text_collection,
        image_collection=args.image_collection,
        embedder=args.embedder,
        candidate_image=args.images,
    )
    retriever.warm_up()
    return SearchService(retriever)


def run(args: argparse.Namespace) -> int:
    usage = read_captions_error(args)  # a usage error, exit 2 before anything loads (as mm-rerank query)
    if usage is not None:
        print(f"mm-rerank serve: error: {usage}", file=sys.stderr)
        return 2
    config = config_from_args(args)
    if args.ray and args.db is not None:
        raise ValueError("--db (POST /v1/search) is served without --ray; drop one of the two")
    if args.ray:
        from mm_rerank_components.serving.ray import run_ray

        run_ray(
            config,
            host=args.host,
            port=args.port,
            replicas=args.replicas,
            autoscale=_autoscale(args.autoscale),
            ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
        )
        return 0
    from mm_rerank_components._deps import require

    uvicorn = require("uvicorn", "serve", "mm-rerank serve")
    from mm_rerank_components.serving.app import create_app, uvicorn_options
    from mm_rerank_components.serving.engine import RerankEngine

    # request threads decode while the event loop answers /health: a short GIL switch interval lets the
    # loop in quickly (the default 5 ms, times the threads queued for the GIL, is felt in /health's p99)
    sys.setswitchinterval(float(os.environ.get("MM_RERANK_SWITCH_INTERVAL", "0.001")))
    engine = RerankEngine(config)
    service = search_service(args)
    if os.environ.get("MM_RERANK_GC_FREEZE", "1") == "1":
        # the models and imports are long-lived: keep them out of the collector's full passes, whose
        # pauses stop every thread (the event loop too)
        gc.collect()
        gc.freeze()
    print(
        f"mm-rerank serve: {engine.model} on http://{args.host}:{args.port} "
        f"(POST /v1/rerank, /rerank, /v2/rerank{', /v1/search' if service else ''}; GET /health, /metrics, "
        "/docs)",
        file=sys.stderr,
    )
    app = create_app(engine)
    if service is not None:
        from mm_rerank_components.serving.search import add_search_routes

        add_search_routes(app, engine, service)
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            **uvicorn_options(config),  # idle and slow clients are cut off (issue 22)
        )
    finally:
        engine.close()
    return 0
