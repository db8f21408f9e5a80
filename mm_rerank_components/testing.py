"""Builders for tiny random models, shared by the test suite and the benchmarks.

They prove plumbing (loading, prompts, padding, batching), never quality: the weights are random.

Example:
    >>> tok = build_qwen_word_tokenizer(["fox"])  # doctest: +SKIP
    >>> tok.convert_tokens_to_ids("fox") > 0  # doctest: +SKIP
    True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: The Qwen2-VL chat special tokens a tokenizer needs for the VLM scorer's prompts.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

#: A chat template in Qwen2-VL's shape: one image placeholder per image part, generation prompt last.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_qwen_word_tokenizer(words: Sequence[str]) -> Any:
    """A word-level fast tokenizer with the Qwen chat special tokens and template, built offline.

    The vocabulary holds the special tokens, ``[UNK]``, ``yes`` and ``no``, every word of the VLM scorer's
    prompt presets, then ``words``; each is one token.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mm_rerank_components.scorers.vlm import PROMPT_PRESETS

    preset_words: list[str] = []
    for preset in PROMPT_PRESETS.values():
        preset_words += re.findall(r"\w+|[^\w\s]+", preset.template)
    vocab: dict[str, int] = {}
    for token in [*QWEN_SPECIAL_TOKENS, "[UNK]", "yes", "no", *preset_words, *words]:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=QWEN_SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer
