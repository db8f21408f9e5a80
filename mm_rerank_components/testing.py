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
from collections.abc import Callable, Sequence
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


def _label_rows(model: Any, tokenizer: Any, labels: tuple[str, str], scale: float, hidden: int) -> None:
    """Random init gives yes/no logits that barely move: make the label rows opposite and larger so the
    scores spread over (0, 1) and a mix-up between candidates shows."""
    import torch

    vocab = tokenizer.get_vocab()
    with torch.no_grad():
        yes, no = vocab[labels[0]], vocab[labels[1]]
        model.lm_head.weight[yes] = torch.randn(hidden) * scale
        model.lm_head.weight[no] = -model.lm_head.weight[yes]


def build_tiny_qwen_vl(
    folder: Any,
    words: Sequence[str],
    *,
    kind: str = "qwen2_vl",
    seed: int = 0,
    label_scale: float = 0.3,
    labels: tuple[str, str] = ("yes", "no"),
) -> Path:
    """A ~0.1M-parameter Qwen2-VL (``kind="qwen2_vl"``), Qwen2.5-VL (``"qwen2_5_vl"``), Qwen3-VL
    (``"qwen3_vl"``) or ColQwen2 (``"colqwen2"``, a Qwen2-VL inside ``ColQwen2ForRetrieval``) with a
    word-level tokenizer, its image
    processor (14 px patches for Qwen2-VL, 16 px for Qwen3-VL) and the Qwen chat
    special tokens, saved to ``folder``. Random weights: plumbing only.

    Example:
        >>> build_tiny_qwen_vl(tmp_path, ["fox"], kind="qwen3_vl")  # doctest: +SKIP
    """
    import torch
    import transformers

    tokenizer = build_qwen_word_tokenizer(list(words))
    config, model_class, patch = _qwen_vl_config(transformers, kind, tokenizer.get_vocab())
    image_processor = transformers.Qwen2VLImageProcessor(
        min_pixels=(2 * patch) ** 2, max_pixels=(8 * patch) ** 2, patch_size=patch, merge_size=2
    )
    torch.manual_seed(seed)
    model = model_class(config)
    if kind != "colqwen2":
        _label_rows(model, tokenizer, labels, label_scale, 32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    return Path(folder)


def _qwen_text_config(vocab: dict[str, int]) -> tuple[dict[str, int], dict[str, Any]]:
    """The special token ids and the text half of a tiny Qwen-VL config."""
    ids = {
        "image_token_id": vocab["<|image_pad|>"],
        "video_token_id": vocab["<|video_pad|>"],
        "vision_start_token_id": vocab["<|vision_start|>"],
        "vision_end_token_id": vocab["<|vision_end|>"],
    }
    text: dict[str, Any] = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "bos_token_id": vocab["<|endoftext|>"],
        "eos_token_id": vocab["<|im_end|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    return ids, text


def _qwen_vl_config(transformers: Any, kind: str, vocab: dict[str, int]) -> tuple[Any, Any, int]:
    """``(config, model class, patch size)`` of a tiny Qwen2-VL, Qwen2.5-VL, Qwen3-VL or ColQwen2."""
    ids, text = _qwen_text_config(vocab)
    if kind in ("qwen2_vl", "colqwen2", "qwen2_5_vl"):
        patch = 14
        text["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 1, 1]}
        vision = _qwen2_vision(kind) | _patching(patch)
        if kind == "qwen2_5_vl":
            config: Any = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
            return config, transformers.Qwen2_5_VLForConditionalGeneration, patch
        config = transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        model_class: Any = transformers.Qwen2VLForConditionalGeneration
        if kind == "colqwen2":
            config = transformers.ColQwen2Config(vlm_config=config, embedding_dim=16)
            model_class = transformers.ColQwen2ForRetrieval
    elif kind == "qwen3_vl":
        patch = 16
        text.update(
            head_dim=8,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 1, 1],
                "mrope_interleaved": True,
            },
        )
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": 32,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [1],
        }
        config = transformers.Qwen3VLConfig(text_config=text, vision_config=vision | _patching(patch), **ids)
        model_class = transformers.Qwen3VLForConditionalGeneration
    else:
        raise ValueError(f"unknown kind {kind!r}; use 'qwen2_vl', 'qwen2_5_vl', 'qwen3_vl' or 'colqwen2'")
    return config, model_class, patch


def _qwen2_vision(kind: str) -> dict[str, Any]:
    """The vision tower of a tiny Qwen2-VL / ColQwen2, or of a tiny Qwen2.5-VL (windowed attention in
    one block, full attention in the other, an output projection)."""
    if kind == "qwen2_5_vl":
        return {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": 32,
            "fullatt_block_indexes": [1],
            "window_size": 56,
        }
    return {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4, "mlp_ratio": 2}


def _patching(patch: int) -> dict[str, int]:
    return {"patch_size": patch, "spatial_merge_size": 2, "temporal_patch_size": 2}


def build_tiny_qwen3_lm(
    folder: Any,
    words: Sequence[str],
    *,
    seed: int = 0,
    label_scale: float = 0.3,
    labels: tuple[str, str] = ("yes", "no"),
) -> Path:
    """A tiny random Qwen3 causal LM (the Qwen3-Reranker architecture) with a word-level tokenizer and
    the Qwen chat template, saved to ``folder``. Random weights: plumbing only.

    Example:
        >>> build_tiny_qwen3_lm(tmp_path, ["fox"])  # doctest: +SKIP
    """
    import torch
    import transformers

    tokenizer = build_qwen_word_tokenizer(list(words))
    vocab = tokenizer.get_vocab()
    config = transformers.Qwen3Config(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=2048,
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = transformers.Qwen3ForCausalLM(config)
    _label_rows(model, tokenizer, labels, label_scale, 32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def build_tiny_dual_encoder(folder: Any, words: Sequence[str], *, kind: str = "clip", seed: int = 2) -> Path:
    """A tiny random CLIP, SigLIP or SigLIP2 (``kind``) with a word-level tokenizer and its image
    processor, saved to ``folder``. Random weights: plumbing only.

    Example:
        >>> build_tiny_dual_encoder(tmp_path, ["fox"], kind="siglip2")  # doctest: +SKIP
    """
    import torch
    import transformers

    tokenizer, vocab = _dual_encoder_tokenizer(transformers, words, kind)
    text: dict[str, Any] = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 64 if kind == "siglip2" else 16,
    }
    vision: dict[str, Any] = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 8,
    }
    torch.manual_seed(seed)
    model: Any
    image_processor: Any
    if kind == "clip":
        text.update(pad_token_id=0, bos_token_id=0, eos_token_id=1)
        config: Any = transformers.CLIPConfig(
            text_config=text, vision_config={**vision, "image_size": 32}, projection_dim=16
        )
        model = transformers.CLIPModel(config)
        image_processor = transformers.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
    elif kind == "siglip":
        config = transformers.SiglipConfig(text_config=text, vision_config={**vision, "image_size": 32})
        model = transformers.SiglipModel(config)
        image_processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    elif kind == "siglip2":
        config = transformers.Siglip2Config(text_config=text, vision_config={**vision, "num_patches": 16})
        model = transformers.Siglip2Model(config)
        image_processor = transformers.Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    else:
        raise ValueError(f"unknown kind {kind!r}; use 'clip', 'siglip' or 'siglip2'")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    return Path(folder)


def _dual_encoder_tokenizer(transformers: Any, words: Sequence[str], kind: str) -> tuple[Any, dict[str, int]]:
    """A word-level tokenizer (a character vocabulary for SigLIP2) and its vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if kind == "siglip2":
        # AutoTokenizer picks SigLIP2's own (Gemma BPE) tokenizer for this model type whatever was saved,
        # so give it a character vocabulary: no merges, one token per character.
        specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
        chars = sorted({ch for word in words for ch in word.lower()} | {"▁"})
        vocab = {t: i for i, t in enumerate([*specials, *chars])}
        return transformers.Siglip2Tokenizer(vocab=vocab, merges=[]), vocab
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    return tokenizer, vocab


def build_tiny_colbert(folder: Any, words: Sequence[str], *, dim: int = 8, seed: int = 3) -> Path:
    """A tiny random ColBERT checkpoint: a BERT encoder plus a ``linear.weight`` projection (hidden -> dim)
    in the same ``model.safetensors``, as ``colbert-ir/colbertv2.0`` stores it. Random weights: plumbing only.

    Example:
        >>> build_tiny_colbert(tmp_path, ["fox"])  # doctest: +SKIP
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertModel

    tokenizer = build_bert_word_tokenizer(words)
    settings: dict[str, Any] = {
        "vocab_size": len(tokenizer.get_vocab()),
        "pad_token_id": 0,
        **TINY_BERT_SHAPE,
    }
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**settings), add_pooling_layer=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    weights_path = Path(folder) / "model.safetensors"
    weights = load_file(str(weights_path))
    weights["linear.weight"] = torch.randn(dim, settings["hidden_size"])
    save_file(weights, str(weights_path), metadata={"format": "pt"})
    return Path(folder)


def build_tiny_colpali(folder: Any, words: Sequence[str], *, seed: int = 0) -> Path:
    """A tiny random ColPali (``ColPaliForRetrieval`` on a PaliGemma of a tiny Gemma and SigLIP) with its
    ``ColPaliProcessor`` (a character-level Gemma tokenizer, 32x32 pictures, 16 image tokens), saved to
    ``folder``. Random weights: plumbing only.

    Example:
        >>> build_tiny_colpali(tmp_path, ["fox"])  # doctest: +SKIP
    """
    import torch
    import transformers

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<image>"]
    text_chars = " ".join([*words, "Question: Describe the image."])
    chars = sorted({ch for ch in text_chars + text_chars.lower() if ch != " "} | {"▁", "\n"})
    vocab = {t: i for i, t in enumerate([*specials, *chars])}
    tokenizer = transformers.GemmaTokenizer(vocab=vocab, merges=[])
    image_processor: Any = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    image_processor.image_seq_length = 16  # (32 / 8) ** 2 patches, which ColPaliProcessor reads
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 1,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
        "projection_dim": 32,
    }
    paligemma = transformers.PaliGemmaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=vocab["<image>"],
        projection_dim=32,
        hidden_size=32,
    )
    torch.manual_seed(seed)
    model = transformers.ColPaliForRetrieval(
        transformers.ColPaliConfig(vlm_config=paligemma, embedding_dim=16)
    )
    model.save_pretrained(folder)
    transformers.ColPaliProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        folder
    )
    return Path(folder)


def save_to_hub_cache(
    hf_home: str | Path, repo_id: str, build: Callable[[Path], object], revision: str = "0" * 40
) -> Path:
    """Build a model with ``build(folder)`` into the Hugging Face cache layout under ``hf_home``
    (``hub/models--org--name/snapshots/<revision>/`` and ``refs/main``), so that with ``HF_HOME=hf_home``
    and ``HF_HUB_OFFLINE=1`` code calling ``from_pretrained(repo_id)`` loads it unchanged, offline.

    Example:
        >>> build = lambda folder: build_tiny_colbert(folder, ["fox"])  # doctest: +SKIP
        >>> save_to_hub_cache(tmp_path, "org/tiny", build)  # doctest: +SKIP
    """
    repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    build(snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    return snapshot


#: Words the docs' examples use (docs/scorers.md), so their tiny stand-ins tokenise them as words.
DOCS_WORDS = tuple(
    re.findall(
        r"\S+",
        "how do red foxes hunt in snow ? Red Foxes pounce on rodents they hear under the . Snowy owls "
        "lemmings tundra A snowy owl a post fox True False Yes No "
        "Query Candidate Does candidate answer query",
    )
)


def build_random_lora_adapter(folder: Any, base: Any, base_id: str, *, seed: int = 0) -> Path:
    """A random LoRA adapter (``q_proj``/``v_proj``, rank 4) on the model folder ``base``, saved to
    ``folder`` with ``base_id`` recorded as its base model, the way adapters are published."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    model = transformers.AutoModelForImageTextToText.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = base_id
    peft_model.save_pretrained(folder)
    return Path(folder)


def build_docs_models(hf_home: str | Path, folder: str | Path) -> list[str]:
    """Tiny random stand-ins for every checkpoint docs/scorers.md loads: the hub ids in an offline cache
    under ``hf_home`` (:func:`save_to_hub_cache`), the local folders under ``folder``. Returns the hub ids.
    Not jina-reranker-m0: it runs its own code from its repository, which no config here can build.
    Random weights: the scores show the plumbing, never quality.
    """
    words = list(DOCS_WORDS)
    qwen2 = "Qwen/Qwen2-VL-2B-Instruct"
    builders: dict[str, Callable[[Path], object]] = {
        qwen2: lambda f: build_tiny_qwen_vl(f, words),
        "Qwen/Qwen2.5-VL-3B-Instruct": lambda f: build_tiny_qwen_vl(f, words, kind="qwen2_5_vl"),
        "Qwen/Qwen3-VL-Reranker-2B": lambda f: build_tiny_qwen_vl(f, words, kind="qwen3_vl"),
        "Qwen/Qwen3-Reranker-0.6B": lambda f: build_tiny_qwen3_lm(f, words),
        "vidore/colqwen2-v1.0-hf": lambda f: build_tiny_qwen_vl(f, words, kind="colqwen2"),
        "colbert-ir/colbertv2.0": lambda f: build_tiny_colbert(f, words),
        "openai/clip-vit-base-patch32": lambda f: build_tiny_dual_encoder(f, words, kind="clip"),
        "cross-encoder/ms-marco-MiniLM-L-6-v2": lambda f: build_bert_cross_encoder(f, words),
    }
    snapshots = {repo_id: save_to_hub_cache(hf_home, repo_id, build) for repo_id, build in builders.items()}
    adapter = "lightonai/MonoQwen2-VL-v0.1"
    save_to_hub_cache(hf_home, adapter, lambda f: build_random_lora_adapter(f, snapshots[qwen2], qwen2))
    build_tiny_dual_encoder(Path(folder) / "models" / "siglip2-base", words, kind="siglip2")
    return [*builders, adapter]
