"""A LlamaIndex chatbot over your passages and pictures, with the evidence shown.

Pipeline: the Chroma multi-collection retriever (16 passages + 16 pictures per question) as a LlamaIndex
retriever -> ``MultimodalRerankPostprocessor`` (``default_reranker()``: the starter scorer fused with the
first stage's signals, one calibrated scale for both modalities) -> a ``RetrieverQueryEngine`` whose
response synthesizer answers from the top evidence with citations [1], [2].

Answers come from the LLM configured in the environment (any OpenAI-compatible endpoint:
MM_RERANK_LLM_MODEL, MM_RERANK_LLM_BASE_URL, MM_RERANK_LLM_API_KEY). With none, the synthesizer is the
offline extractive answerer, which quotes the evidence and says that it is extractive; no mock LLM.

    python examples/llamaindex_chatbot.py --question "Which farm animal gives us milk?"
    python examples/llamaindex_chatbot.py            # chat in the terminal
    python examples/llamaindex_chatbot.py --data my_folder --db my_db -q "..."
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.base.response.schema import Response
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import LLM
from llama_index.core.prompts.mixin import PromptDictType, PromptMixinType
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers import BaseSynthesizer
from llama_index.core.schema import NodeWithScore, QueryBundle

from mm_rerank_components.answer import Evidence, ExtractiveAnswerer, build_messages
from mm_rerank_components.integrations.llama_index import MultimodalRerankPostprocessor
from mm_rerank_components.retrievers.llama_index import ChromaLlamaIndexRetriever


class EvidenceSynthesizer(BaseSynthesizer):
    """Answer from reranked nodes, citing them as [1], [2]: with ``llm`` by asking it, else extractively.

    LlamaIndex's stock synthesizers need an LLM; this one also works without, and then says so in every
    answer instead of pretending.
    """

    def __init__(
        self,
        llm: LLM | None = None,
        callback_manager: CallbackManager | None = None,
        reranker: Any = None,
    ) -> None:
        # BaseSynthesizer.__init__ would resolve Settings.llm (OpenAI by default): set its fields here
        self._llm = llm  # type: ignore[assignment]
        self._callback_manager = callback_manager or CallbackManager([])
        self._streaming = False
        self._output_cls = None
        self._empty_response = "No evidence was found for this question."
        self._multimodal = False
        # without an LLM: the sentences of the top nodes are scored by the same reranker
        self._extractive = ExtractiveAnswerer(reranker=reranker)
        self.name = f"llm:{llm.metadata.model_name}" if llm is not None else "extractive"

    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        pass

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}

    def _answer(self, question: str, nodes: Sequence[NodeWithScore]) -> str:
        evidence = Evidence.from_llama_index(nodes)
        if self._llm is None:
            return self._extractive.compose(question, evidence)
        messages = [
            ChatMessage(role=MessageRole(m["role"]), content=m["content"])
            for m in build_messages(question, evidence)
        ]
        return str(self._llm.chat(messages).message.content or "").strip()

    def synthesize(
        self,
        query: str | QueryBundle,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
        **response_kwargs: Any,
    ) -> Response:
        question = query.query_str if isinstance(query, QueryBundle) else query
        text = self._answer(question, nodes) if nodes else self._extractive.compose(question, [])
        source = list(nodes) + list(additional_source_nodes or [])
        return Response(text, source_nodes=source, metadata={"answerer": self.name})

    async def asynthesize(
        self,
        query: str | QueryBundle,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
        **response_kwargs: Any,
    ) -> Response:
        return self.synthesize(query, nodes, additional_source_nodes, **response_kwargs)

    def get_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any) -> str:
        raise NotImplementedError("EvidenceSynthesizer answers from nodes: call synthesize()")

    async def aget_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any) -> str:
        raise NotImplementedError("EvidenceSynthesizer answers from nodes: call synthesize()")


def build_query_engine(args: Any) -> tuple[RetrieverQueryEngine, LLM | None, Any, Any]:
    """The query engine, the LLM (or None), and the LlamaIndex retriever and postprocessor."""
    retriever = ChromaLlamaIndexRetriever(_common.open_retriever(args))
    reranker = _common.make_reranker(args.reranker, read_captions=args.read_captions)
    postprocessor = MultimodalRerankPostprocessor(reranker=reranker, top_n=args.top_n)
    config = _common.llm_config(args)
    llm = None
    if config is not None:
        from _llm_llama_index import llama_index_llm

        llm = llama_index_llm(config)
    engine = RetrieverQueryEngine(
        retriever=retriever,
        response_synthesizer=EvidenceSynthesizer(llm, reranker=reranker),
        node_postprocessors=[postprocessor],
    )
    return engine, llm, retriever, postprocessor


def main(argv: list[str] | None = None) -> int:
    args = _common.parser(__doc__ or "").parse_args(argv)
    _common.quiet_libraries()
    engine, llm, retriever, postprocessor = build_query_engine(args)

    def ask(question: str) -> None:
        response = engine.query(question)
        _common.show(str(response), Evidence.from_llama_index(response.source_nodes))

    if args.question:
        ask(args.question)
        return 0
    if llm is None:
        # without an LLM there is nothing to condense a conversation with: each turn is its own query
        _common.chat_loop(
            ask, "LlamaIndex chat (extractive: each question is answered on its own). Ctrl-D ends."
        )
        return 0
    from llama_index.core.chat_engine import CondensePlusContextChatEngine

    chat = CondensePlusContextChatEngine.from_defaults(
        retriever=retriever, llm=llm, node_postprocessors=[postprocessor]
    )

    def chat_turn(question: str) -> None:
        reply = chat.chat(question)
        _common.show(str(reply), Evidence.from_llama_index(reply.source_nodes))

    _common.chat_loop(chat_turn, f"LlamaIndex chat with {llm.metadata.model_name}. Ctrl-D ends.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
