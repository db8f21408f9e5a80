"""A LangChain chatbot over your passages and pictures, with the evidence shown.

Pipeline: the Chroma multi-collection retriever (16 passages + 16 pictures per question) as a LangChain
retriever, then ``MultimodalRerankCompressor`` (``default_reranker()``: the starter scorer fused with the
first stage's signals, one calibrated scale for both modalities) as a document compressor, then an LCEL
chain that answers from the top documents with citations [1], [2]. Retrieve-then-compress is one
``RunnableLambda``: it is what LangChain's ``ContextualCompressionRetriever`` does, without needing the
``langchain-classic`` package, so ``pip install "mm-rerank-components[all]"`` runs this example.

The answer step is the LLM configured in the environment (any OpenAI-compatible endpoint:
MM_RERANK_LLM_MODEL, MM_RERANK_LLM_BASE_URL, MM_RERANK_LLM_API_KEY) behind a chat prompt; with none it is
a ``RunnableLambda`` running the offline extractive answerer, which scores the sentences of the top
documents with the same reranker, quotes the best ones and says that it is extractive.

    python examples/langchain_chatbot.py --question "Which farm animal gives us milk?"
    python examples/langchain_chatbot.py            # chat in the terminal
    python examples/langchain_chatbot.py --data my_folder --db my_db -q "..."
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from mm_rerank_components.answer import SYSTEM_PROMPT, Evidence, ExtractiveAnswerer, format_evidence
from mm_rerank_components.integrations.langchain import MultimodalRerankCompressor
from mm_rerank_components.retrievers.langchain import ChromaLangChainRetriever

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", SYSTEM_PROMPT),
        MessagesPlaceholder("history"),
        ("human", "Evidence:\n{evidence}\n\nQuestion: {question}"),
    ]
)


def build_chain(args: Any) -> Runnable[dict[str, Any], dict[str, Any]]:
    """``{"question", "history"} -> {"question", "history", "documents", "answer"}``."""
    base = ChromaLangChainRetriever(retriever=_common.open_retriever(args))
    reranker = _common.make_reranker(args.reranker, read_captions=args.read_captions)
    compressor = MultimodalRerankCompressor(reranker=reranker, top_n=args.top_n)

    def retrieve_and_rerank(question: str) -> list[Document]:
        return list(compressor.compress_documents(base.invoke(question), question))

    retriever = RunnableLambda(retrieve_and_rerank, name="retrieve_and_rerank")

    config = _common.llm_config(args)
    answer: Runnable[dict[str, Any], str]
    if config is None:
        extractive = ExtractiveAnswerer(reranker=reranker)
        answer = RunnableLambda(
            lambda x: extractive.compose(x["question"], Evidence.from_langchain(x["documents"])),
            name="extractive_answer",
        )
    else:
        from _llm_langchain import langchain_llm

        answer = (
            RunnablePassthrough.assign(
                evidence=lambda x: format_evidence(Evidence.from_langchain(x["documents"]))
            )
            | PROMPT
            | langchain_llm(config)
            | StrOutputParser()
        )
    return RunnablePassthrough.assign(documents=(lambda x: x["question"]) | retriever).assign(answer=answer)


def main(argv: list[str] | None = None) -> int:
    args = _common.parser(__doc__ or "").parse_args(argv)
    _common.quiet_libraries()
    chain = build_chain(args)
    history: list[BaseMessage] = []

    def ask(question: str) -> None:
        result = chain.invoke({"question": question, "history": history})
        documents: list[Document] = result["documents"]
        _common.show(result["answer"], Evidence.from_langchain(documents))
        history.extend([HumanMessage(question), AIMessage(result["answer"])])
        del history[:-8]  # the last four turns are enough context

    if args.question:
        ask(args.question)
        return 0
    _common.chat_loop(ask, "LangChain chat over your passages and pictures. Ctrl-D ends.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
