"""The OpenAI-compatible LLM path: configuration from the environment, a standard-library client, the
prompt, and :class:`LLMAnswerer`.

Environment variables (the ``MM_RERANK_LLM_*`` names win over the ``OPENAI_*`` ones):

========================  =====================  ==========================================================
``MM_RERANK_LLM_MODEL``   ``OPENAI_MODEL``       model name; an LLM is configured only when this is set
``MM_RERANK_LLM_BASE_URL`` ``OPENAI_BASE_URL``   endpoint root (default ``https://api.openai.com/v1``)
``MM_RERANK_LLM_API_KEY`` ``OPENAI_API_KEY``     bearer token (optional for local servers)
``MM_RERANK_LLM_VISION``                         ``1`` sends the top pictures to the model as images
``MM_RERANK_LLM_TIMEOUT``                        seconds per request (default 60)
========================  =====================  ==========================================================

Example:
    >>> LLMConfig.from_env({"MM_RERANK_LLM_MODEL": "qwen2.5:7b"}).chat_url
    'https://api.openai.com/v1/chat/completions'
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mm_rerank_components.answer.evidence import Answer, Evidence, format_evidence

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = environ.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True)
class LLMConfig:
    """Where an OpenAI-compatible chat-completions endpoint is and which model to ask.

    Works with OpenAI, Azure-style gateways, vLLM, llama.cpp's server, Ollama (``/v1``), LM Studio and
    anything else that speaks ``POST {base_url}/chat/completions``.

    Example:
        >>> cfg = LLMConfig.from_env({"MM_RERANK_LLM_MODEL": "qwen2.5:7b",
        ...                           "MM_RERANK_LLM_BASE_URL": "http://127.0.0.1:11434/v1"})
        >>> cfg.model, cfg.chat_url
        ('qwen2.5:7b', 'http://127.0.0.1:11434/v1/chat/completions')
        >>> LLMConfig.from_env({}) is None
        True
    """

    model: str
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    vision: bool = False
    temperature: float = 0.0
    max_tokens: int = 512

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError("LLMConfig.model is empty: set MM_RERANK_LLM_MODEL (or pass model=...)")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"LLM base URL {self.base_url!r} must start with http:// or https:// "
                "(e.g. MM_RERANK_LLM_BASE_URL=http://127.0.0.1:8000/v1)"
            )
        if self.timeout <= 0:
            raise ValueError(f"LLM timeout must be > 0 seconds, got {self.timeout!r}")

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LLMConfig | None:
        """The configuration in the environment, or ``None`` when no model is named (extractive mode).

        ``MM_RERANK_LLM=off`` forces ``None`` even when a model is named.
        """
        env = os.environ if environ is None else environ
        if (env.get("MM_RERANK_LLM") or "").strip().lower() in ("off", "0", "false", "none", "extractive"):
            return None
        model = _env(env, "MM_RERANK_LLM_MODEL", "OPENAI_MODEL")
        if model is None:
            base = _env(env, "MM_RERANK_LLM_BASE_URL")
            if base is not None:
                raise ValueError(
                    f"MM_RERANK_LLM_BASE_URL is set ({base!r}) but no model is: set MM_RERANK_LLM_MODEL too"
                )
            return None
        timeout_text = _env(env, "MM_RERANK_LLM_TIMEOUT") or "60"
        try:
            timeout = float(timeout_text)
        except ValueError:
            raise ValueError(
                f"MM_RERANK_LLM_TIMEOUT must be a number of seconds, got {timeout_text!r}"
            ) from None
        vision_text = (_env(env, "MM_RERANK_LLM_VISION") or "0").lower()
        if vision_text not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"MM_RERANK_LLM_VISION must be 0 or 1, got {vision_text!r}")
        return cls(
            model=model,
            base_url=_env(env, "MM_RERANK_LLM_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_BASE")
            or DEFAULT_BASE_URL,
            api_key=_env(env, "MM_RERANK_LLM_API_KEY", "OPENAI_API_KEY"),
            timeout=timeout,
            vision=vision_text in ("1", "true", "yes", "on"),
        )


class LLMError(RuntimeError):
    """The LLM endpoint could not be reached or answered with an error."""


class OpenAICompatibleClient:
    """A minimal client for ``POST /chat/completions`` using only the standard library.

    Example:
        >>> client = OpenAICompatibleClient(LLMConfig(model="m", base_url="http://127.0.0.1:9/v1"))
        >>> client.config.chat_url
        'http://127.0.0.1:9/v1/chat/completions'
    """

    def __init__(self, config: LLMConfig) -> None:
        self.config = config

    def chat(self, messages: Sequence[Mapping[str, Any]], *, stop: Sequence[str] | None = None) -> str:
        """Send ``messages`` and return the first choice's text."""
        payload: dict[str, Any] = {
            "model": self.config.model,
            "messages": list(messages),
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if stop:
            payload["stop"] = list(stop)
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        request = urllib.request.Request(
            self.config.chat_url, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                body = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise LLMError(
                f"LLM endpoint {self.config.chat_url} answered HTTP {exc.code}: {detail}; check "
                "MM_RERANK_LLM_MODEL, MM_RERANK_LLM_API_KEY and MM_RERANK_LLM_BASE_URL"
            ) from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise LLMError(
                f"cannot reach the LLM endpoint {self.config.chat_url}: {exc}; start the server, fix "
                "MM_RERANK_LLM_BASE_URL, or unset MM_RERANK_LLM_MODEL for the offline extractive answer"
            ) from exc
        except json.JSONDecodeError as exc:
            raise LLMError(f"LLM endpoint {self.config.chat_url} returned invalid JSON: {exc}") from exc
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMError(
                f"LLM endpoint {self.config.chat_url} returned no choices[0].message.content: "
                f"{json.dumps(body)[:300]}"
            ) from None
        return str(content or "")


SYSTEM_PROMPT = (
    "You answer questions using only the numbered evidence given: passages and pictures, ranked by a "
    "multimodal reranker with relevance scores between 0 and 1. Cite the evidence you use as [1], [2]. "
    "If the evidence does not answer the question, say so. Be concise."
)


def build_messages(
    question: str, evidence: Sequence[Evidence], *, vision: bool = False, max_images: int = 3
) -> list[dict[str, Any]]:
    """Chat messages asking ``question`` over ``evidence``; with ``vision`` the top pictures are attached.

    Example:
        >>> msgs = build_messages("q?", [Evidence(rank=1, id="p", modality="text", score=0.5, text="t")])
        >>> [m["role"] for m in msgs]
        ['system', 'user']
    """
    prompt = f"Evidence:\n{format_evidence(evidence)}\n\nQuestion: {question}"
    if not vision:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
    parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    for e in [e for e in evidence if e.image][:max_images]:
        parts.append({"type": "text", "text": f"Picture [{e.rank}]:"})
        parts.append({"type": "image_url", "image_url": {"url": thumbnail_data_uri(e.image or "")}})
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": parts}]


def thumbnail_data_uri(image: str, max_side: int = 512) -> str:
    """A JPEG ``data:`` URI of the picture at ``image``, shrunk to at most ``max_side`` pixels."""
    from mm_rerank_components.media import load_image

    picture = load_image(image).copy()
    picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class LLMAnswerer:
    """Ask an OpenAI-compatible LLM to answer from the evidence, citing it as ``[1]``, ``[2]``.

    Example:
        >>> answerer = LLMAnswerer(LLMConfig(model="gpt-4o-mini"))
        >>> answerer.name
        'llm:gpt-4o-mini'
    """

    def __init__(self, config: LLMConfig, client: OpenAICompatibleClient | None = None) -> None:
        self.config = config
        self.client = client or OpenAICompatibleClient(config)
        self.name = f"llm:{config.model}"

    def answer(self, question: str, evidence: Sequence[Evidence]) -> Answer:
        messages = build_messages(question, evidence, vision=self.config.vision)
        text = self.client.chat(messages)
        return Answer(question=question, text=text.strip(), evidence=list(evidence), answerer=self.name)
