"""Builders for tiny random models, shared by the test suite and the benchmarks.

They prove plumbing (loading, prompts, padding, batching), never quality: the weights are random.

Example:
    >>> tok = build_qwen_word_tokenizer(["fox"])  # doctest: +SKIP
    >>> tok.convert_tokens_to_ids("fox") > 0  # doctest: +SKIP
    True
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
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


def build_bert_word_tokenizer(words: Sequence[str]) -> Any:
    """A word-level BERT-style fast tokenizer (``[CLS] a [SEP] b [SEP]`` pairs, token types), built offline.

    The vocabulary holds ``[PAD] [UNK] [CLS] [SEP] [MASK] [unused0] [unused1]`` then ``words``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"]
    vocab: dict[str, int] = {}
    for token in [*specials, *words]:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


#: all-MiniLM-L6-v2 / ms-marco-MiniLM-L-6-v2 shapes (vocabulary size aside: the word tokenizer's).
MINILM_L6_SHAPE: dict[str, int] = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
}
TINY_BERT_SHAPE: dict[str, int] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}


def build_bert_cross_encoder(
    folder: Any,
    words: Sequence[str],
    *,
    num_labels: int = 1,
    shape: dict[str, int] | None = None,
    seed: int = 1,
) -> Any:
    """A random-weight BERT sequence classifier plus word tokenizer, saved to ``folder`` (returned).

    Example:
        >>> build_bert_cross_encoder(tmp_path, ["fox"], shape=MINILM_L6_SHAPE)  # doctest: +SKIP
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = build_bert_word_tokenizer(words)
    settings: dict[str, Any] = {
        "vocab_size": len(tokenizer.get_vocab()),
        "num_labels": num_labels,
        "pad_token_id": 0,
        **(shape or TINY_BERT_SHAPE),
    }
    config = BertConfig(**settings)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)  # spread the random logits
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def scorer_module_at_revision(revision: str, module: str, repo: str | Path = ".") -> ModuleType:
    """Import ``mm_rerank_components.scorers.<module>`` as it was at git ``revision`` (for before/after
    benchmarks), together with the private helper modules (``scorers/_*.py``) of that revision.

    Example:
        >>> old = scorer_module_at_revision("HEAD~5", "cross_encoder")  # doctest: +SKIP
        >>> old.CrossEncoderScorer  # doctest: +SKIP
    """
    folder = "mm_rerank_components/scorers/"
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "--name-only", revision, folder],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    package = f"_scorers_at_{re.sub(r'[^0-9A-Za-z]', '_', revision)}"
    root = Path(tempfile.mkdtemp(prefix="scorers-at-rev-"))
    (root / package).mkdir()
    (root / package / "__init__.py").write_text("")
    for path in listing:
        name = Path(path).stem
        if not path.endswith(".py") or not (name.startswith("_") or name == module) or name == "__init__":
            continue
        source = subprocess.run(
            ["git", "-C", str(repo), "show", f"{revision}:{path}"], check=True, capture_output=True, text=True
        ).stdout
        source = source.replace("mm_rerank_components.scorers._", f"{package}._")
        (root / package / f"{name}.py").write_text(source)
    sys.path.insert(0, str(root))
    import importlib

    return importlib.import_module(f"{package}.{module}")
