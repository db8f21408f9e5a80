"""A LangChain chat model for the configured OpenAI-compatible endpoint.

Uses ``langchain-openai``'s ``ChatOpenAI`` when it is installed; otherwise a small ``BaseChatModel`` that
sends the messages to ``{base_url}/chat/completions`` with the standard library (no extra dependency).
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

from mm_rerank_components.answer import LLMConfig, OpenAICompatibleClient

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


class OpenAICompatibleChatModel(BaseChatModel):
    """LangChain chat model over :class:`~mm_rerank_components.answer.OpenAICompatibleClient`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    model: str
    _client: OpenAICompatibleClient = PrivateAttr()

    def __init__(self, config: LLMConfig, **kwargs: Any) -> None:
        super().__init__(model=config.model, **kwargs)
        self._client = OpenAICompatibleClient(config)

    @property
    def _llm_type(self) -> str:
        return "openai-compatible-urllib"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self._client.config.base_url}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        payload = [{"role": _ROLES.get(m.type, "user"), "content": m.content} for m in messages]
        text = self._client.chat(payload, stop=stop)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def langchain_llm(config: LLMConfig) -> BaseChatModel:
    """The LangChain chat model for ``config``: ``ChatOpenAI`` if installed, else ours."""
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        return OpenAICompatibleChatModel(config)
    return ChatOpenAI(
        model=config.model,
        base_url=config.base_url,
        api_key=config.api_key or "unused",
        timeout=config.timeout,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
    )
