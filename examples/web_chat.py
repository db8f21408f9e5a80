"""A web chat over your passages and pictures: each answer with its ranked evidence (thumbnails,
passages, modality and unified score).

    python examples/web_chat.py                 # then open http://127.0.0.1:8000/
    python examples/web_chat.py --question "Which farm animal gives us milk?"   # one answer, as JSON
    python examples/web_chat.py --reranker my-reranker   # a reranker folder written by mm-rerank adapt

Ask with words, a picture (the page's Picture button), or both; answers written by an LLM are shown as
Markdown, rendered safely (text only, http(s) links only).

The page and API come from ``mm_rerank_components.web.create_app``; the pipeline is the Chroma
multi-collection retriever + the label-free default reranker (``default_reranker(StarterScorer(),
on_error="keep")``: learned fusion of the starter scorer with the first stage's signals) + the configured LLM
(MM_RERANK_LLM_MODEL, MM_RERANK_LLM_BASE_URL, MM_RERANK_LLM_API_KEY), or the offline extractive answerer
(which quotes the sentences the same reranker scores best). A picture deleted since ingest is shown as
unreadable and the answer comes from the rest; the page never sees a server path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

from mm_rerank_components.answer import RAGPipeline, make_answerer


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    args = p.parse_args(argv)
    _common.quiet_libraries()
    config = _common.llm_config(args)
    reranker = _common.make_reranker(args.reranker, read_captions=args.read_captions)
    pipeline = RAGPipeline(
        _common.open_retriever(args),
        reranker,
        # the LLM if configured, else extractive answers whose sentences the same reranker scores
        answerer=make_answerer(config, from_env=False, reranker=reranker),
        top_n=args.top_n,
    )
    if args.question:
        print(json.dumps(pipeline.ask(args.question).to_dict(), indent=2, ensure_ascii=False))
        return 0

    import uvicorn

    from mm_rerank_components.web import create_app

    _common.log(f"open http://{args.host}:{args.port}/ (Ctrl-C stops)")
    uvicorn.run(create_app(pipeline), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
