"""A LlamaIndex LLM for the configured OpenAI-compatible endpoint.

Uses ``llama-index-llms-openai-like`` when it is installed; otherwise a small ``CustomLLM`` that sends
chat messages to ``{base_url}/chat/completions`` with the standard library (no extra dependency).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import LLM, CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

from mm_rerank_components.answer import LLMConfig, OpenAICompatibleClient


class OpenAICompatibleLlamaLLM(CustomLLM):
    """LlamaIndex ``CustomLLM`` over :class:`~mm_rerank_components.answer.OpenAICompatibleClient`."""

    model: str = "unset"
    context_window: int = 8192
    _client: OpenAICompatibleClient = PrivateAttr()

    def __init__(self, config: LLMConfig, **kwargs: Any) -> None:
        super().__init__(model=config.model, **kwargs)
        self._client = OpenAICompatibleClient(config)

    @classmethod
    def class_name(cls) -> str:
        return "OpenAICompatibleLlamaLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            model_name=self.model,
            context_window=self.context_window,
            num_output=self._client.config.max_tokens,
            is_chat_model=True,
        )

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        payload = [{"role": _role(m.role), "content": m.content or ""} for m in messages]
        text = self._client.chat(payload, stop=kwargs.get("stop"))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        response = self.chat(messages, **kwargs)

        def gen() -> ChatResponseGen:
            yield ChatResponse(message=response.message, delta=response.message.content)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        text = self._client.chat([{"role": "user", "content": prompt}], stop=kwargs.get("stop"))
        return CompletionResponse(text=text)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        response = self.complete(prompt, formatted=formatted, **kwargs)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text)

        return gen()


def _role(role: Any) -> str:
    value = getattr(role, "value", role)
    return {"model": "assistant", "chatbot": "assistant", "function": "tool"}.get(str(value), str(value))


def llama_index_llm(config: LLMConfig) -> LLM:
    """The LlamaIndex LLM for ``config``: ``OpenAILike`` if installed, else ``OpenAICompatibleLlamaLLM``."""
    try:
        from llama_index.llms.openai_like import OpenAILike
    except ImportError:
        return OpenAICompatibleLlamaLLM(config)
    return OpenAILike(
        model=config.model,
        api_base=config.base_url,
        api_key=config.api_key or "unused",
        is_chat_model=True,
        timeout=config.timeout,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
    )
