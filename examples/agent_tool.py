"""Retrieve-and-rerank as an agent tool, in LlamaIndex and in LangChain.

The tool ``search_passages_and_pictures(query)`` asks the Chroma multi-collection retriever for 16 passages
+ 16 pictures, reranks them on one calibrated scale (``default_reranker()``: the starter scorer fused with
the first stage's signals) and returns the top evidence as numbered lines with modality and score. It is
built twice:

* LlamaIndex: a ``FunctionTool``; with an LLM configured, a ``ReActAgent`` decides when to call it;
* LangChain: a ``@tool``; with an LLM configured, a ReAct agent decides when to call it. The agent
  loop is a dozen lines over langchain-core runnables (prompt | model | parser, the tool's output fed
  back as the Observation): LangChain 1.x keeps its prebuilt ``AgentExecutor`` in the separate
  ``langchain-classic`` package, and this example runs with what ``mm-rerank-components[all]`` installs.

With no LLM configured (MM_RERANK_LLM_MODEL unset) there is no model to make decisions, so a small
**rule-based router** stands in for the agent: it is not an LLM and says so. It calls the tool through
the framework's own tool interface for every question that is not a greeting, and composes an extractive
answer with citations from what the tool returned.

    python examples/agent_tool.py --question "What does a koala eat?"               # both frameworks
    python examples/agent_tool.py --framework langchain -q "Which animal gives milk?"
"""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

from mm_rerank_components.answer import Answer, Evidence, ExtractiveAnswerer, RAGPipeline, format_evidence

TOOL_NAME = "search_passages_and_pictures"
TOOL_DESCRIPTION = (
    "Search the user's passages and pictures. Input: a search query (text). Returns the most relevant "
    "passages and pictures, numbered, each with its modality and a relevance score between 0 and 1 that "
    "is comparable between passages and pictures."
)
GREETING = re.compile(r"^\s*(hi|hello|hey|thanks|thank you|bye)\b[\s!.]*$", re.IGNORECASE)


@dataclass(frozen=True)
class SearchResult:
    """What the tool returns: ``str()`` is the text an agent reads; ``evidence`` the structured list."""

    query: str
    evidence: list[Evidence]

    def __str__(self) -> str:
        if not self.evidence:
            return f"No passages or pictures found for {self.query!r}."
        return format_evidence(self.evidence, max_chars=400)


def make_search(pipeline: RAGPipeline) -> Any:
    """The retrieve-and-rerank function both tools wrap."""

    def search_passages_and_pictures(query: str) -> SearchResult:
        return SearchResult(query=query, evidence=pipeline.search(query))

    search_passages_and_pictures.__doc__ = TOOL_DESCRIPTION
    return search_passages_and_pictures


# -- LlamaIndex ---------------------------------------------------------------------------------------


def llama_index_tool(search: Any) -> Any:
    from llama_index.core.tools import FunctionTool

    return FunctionTool.from_defaults(fn=search, name=TOOL_NAME, description=TOOL_DESCRIPTION)


def run_llama_index(
    question: str, search: Any, llm_config: Any, answerer: ExtractiveAnswerer
) -> tuple[str, list[Evidence], str]:
    tool = llama_index_tool(search)
    if llm_config is None:
        return route(question, lambda q: tool.call(query=q).raw_output, "LlamaIndex FunctionTool", answerer)
    from _llm_llama_index import llama_index_llm
    from llama_index.core.agent.workflow import ReActAgent, ToolCallResult

    agent = ReActAgent(tools=[tool], llm=llama_index_llm(llm_config))
    found: list[Evidence] = []

    async def go() -> str:
        handler = agent.run(user_msg=question)
        async for event in handler.stream_events():
            if isinstance(event, ToolCallResult) and isinstance(event.tool_output.raw_output, SearchResult):
                found[:] = event.tool_output.raw_output.evidence  # the evidence of the last search
        output: Any = await handler  # an AgentOutput
        return str(output.response.content or "")

    return asyncio.run(go()), found, f"LlamaIndex ReActAgent with {llm_config.model}"


# -- LangChain ----------------------------------------------------------------------------------------


def langchain_tool(search: Any, seen: list[SearchResult]) -> Any:
    """A LangChain tool; every result is also appended to ``seen``, since an agent keeps only the text it
    reads."""
    from langchain_core.tools import tool

    @tool(TOOL_NAME, description=TOOL_DESCRIPTION)
    def search_tool(query: str) -> str:
        result = search(query)
        seen.append(result)
        return str(result)

    return search_tool


REACT_PROMPT = """Answer the question using the tools. Cite evidence numbers like [1].

You have access to the following tools:

{tools}

Use this format:

Question: the input question
Thought: what to do next
Action: one of [{tool_names}]
Action Input: the input to the action
Observation: the result of the action
... (Thought/Action/Action Input/Observation can repeat)
Thought: I now know the final answer
Final Answer: the answer, citing evidence as [1], [2]

Question: {input}
Thought:{agent_scratchpad}"""


_FINAL = re.compile(r"Final Answer\s*:\s*(.*)", re.DOTALL)
_ACTION = re.compile(r"Action\s*:\s*(.*?)\s*\nAction\s*Input\s*:\s*(.*)", re.DOTALL)


def react_loop(llm: Any, tool: Any, question: str, max_steps: int = 4) -> str:
    """A ReAct agent over langchain-core: the model writes Thought / Action / Action Input, the tool's
    output goes back as the Observation, until the model writes a Final Answer."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import PromptTemplate

    prompt = PromptTemplate.from_template(REACT_PROMPT).partial(
        tools=f"{TOOL_NAME}: {TOOL_DESCRIPTION}", tool_names=TOOL_NAME
    )
    step_chain = prompt | llm.bind(stop=["\nObservation:"]) | StrOutputParser()
    scratchpad = ""
    for _ in range(max_steps):
        step = step_chain.invoke({"input": question, "agent_scratchpad": scratchpad})
        final = _FINAL.search(step)
        if final:
            return final.group(1).strip()
        action = _ACTION.search(step)
        if action is None or action.group(1).strip() != TOOL_NAME:
            observation = (
                f"Invalid format: write 'Action: {TOOL_NAME}' and 'Action Input: ...', or a Final Answer."
            )
        else:
            query = action.group(2).strip().splitlines()[0].strip().strip('"')
            observation = str(tool.invoke({"query": query}))
        scratchpad += f"{step}\nObservation: {observation}\nThought:"
    return f"(the agent stopped after {max_steps} steps without a final answer)"


def run_langchain(
    question: str, search: Any, llm_config: Any, answerer: ExtractiveAnswerer
) -> tuple[str, list[Evidence], str]:
    seen: list[SearchResult] = []
    tool = langchain_tool(search, seen)

    def call(query: str) -> SearchResult:
        tool.invoke({"query": query})
        return seen[-1]

    if llm_config is None:
        return route(question, call, "LangChain @tool", answerer)
    from _llm_langchain import langchain_llm

    answer = react_loop(langchain_llm(llm_config), tool, question)
    found = seen[-1].evidence if seen else []  # the evidence of the agent's last search
    return answer, found, f"LangChain ReAct agent (langchain-core loop) with {llm_config.model}"


# -- the no-LLM stand-in ------------------------------------------------------------------------------


def route(
    question: str, call_tool: Any, tool_kind: str, answerer: ExtractiveAnswerer
) -> tuple[str, list[Evidence], str]:
    """A rule-based router, not an LLM: greetings get a fixed reply; every other question calls the tool
    once with the question as the query, and the answer is extractive."""
    who = f"rule-based router (no LLM configured; not an LLM) calling the {tool_kind}"
    if GREETING.match(question):
        return "Hello. Ask me about your passages and pictures.", [], who
    result: SearchResult = call_tool(question)
    answer: Answer = answerer.answer(question, result.evidence)
    return answer.text, result.evidence, who


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--framework", choices=("llama-index", "langchain", "both"), default="both")
    args = p.parse_args(argv)
    _common.quiet_libraries()
    reranker = _common.make_reranker(args.reranker, read_captions=args.read_captions)
    extractive = ExtractiveAnswerer(reranker=reranker)  # scores sentences with the same models
    pipeline = RAGPipeline(_common.open_retriever(args), reranker, answerer=extractive, top_n=args.top_n)
    search = make_search(pipeline)
    config = _common.llm_config(args)
    runners = {"llama-index": run_llama_index, "langchain": run_langchain}
    chosen = list(runners) if args.framework == "both" else [args.framework]

    def ask(question: str) -> None:
        for name in chosen:
            text, evidence, who = runners[name](question, search, config, extractive)
            print(f"=== {name}: {who}")
            _common.show(text, evidence)
            print()

    if args.question:
        ask(args.question)
        return 0
    _common.chat_loop(ask, f"Agent with a retrieve-and-rerank tool ({', '.join(chosen)}). Ctrl-D ends.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
