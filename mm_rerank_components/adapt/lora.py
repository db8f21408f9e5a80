"""LoRA fine-tuning of the model scorers (VLM / LLM yes/no, cross-encoder) with ``peft``.

Two stages, as UniRank adapts a reranker to a domain:

1. **Calibrated scoring (BCE):** binary cross-entropy of the scorer's own logit (``logit(yes) -
   logit(no)`` for yes/no scorers, the relevance logit for a cross-encoder) against the labels, so the
   score stays a probability of relevance in the user's domain.
2. **Preference alignment (pairwise):** ``-log sigmoid(s(positive) - s(hard negative))`` over every
   (positive, mined hard negative) pair of a query (RankNet / DPO-style), so the order among the
   confusable candidates improves.

Only the LoRA matrices train (the base weights are frozen); training is seeded, runs on the scorer's
device (CUDA when the scorer was created there or with ``device=None`` on a CUDA machine), and the
adapter is saved as ``adapter_model.safetensors`` + ``adapter_config.json`` (peft's format, nothing
pickled) plus ``lora_training.json``. :func:`load_lora` puts a saved adapter back on a fresh scorer.

Needs the ``lora`` extra (``peft``) and the ``models`` extra.

Example:
    >>> from mm_rerank_components.adapt.lora import LoraExample, lora_finetune, load_lora
    >>> examples = [LoraExample(Query("red fox"), positives=[fox_passage], negatives=[wolf_passage])]
    >>> result = lora_finetune(scorer, examples, out="adapters/fox", seed=0)  # doctest: +SKIP
    >>> result.losses["bce"][-1] < result.losses["bce"][0]  # doctest: +SKIP
    True
    >>> load_lora(fresh_scorer, "adapters/fox")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rerank_components._checks import check_int
from mm_rerank_components._deps import require
from mm_rerank_components.adapt.fusion import LabelledList
from mm_rerank_components.scorers.base import Scorer, TrainableScorer
from mm_rerank_components.types import Candidate, Query

logger = logging.getLogger(__name__)

#: Linear layers LoRA adapts by default: attention projections of the language model (Qwen, Llama,
#: Gemma: ``q_proj``...; BERT: ``query``...), never the vision tower.
DEFAULT_TARGETS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value"})
_VISION_PARTS = ("visual", "vision")
INFO_FILE = "lora_training.json"


@dataclass(frozen=True)
class LoraExample:
    """One labelled query: relevant candidates and (mined, hard) non-relevant ones.

    Example:
        >>> ex = LoraExample(Query("fox"), positives=[Candidate("p", text="a fox")],
        ...                  negatives=[Candidate("n", text="a wolf")])
        >>> len(ex.negatives)
        1
    """

    query: Query
    positives: Sequence[Candidate]
    negatives: Sequence[Candidate] = ()


@dataclass
class LoraResult:
    """What :func:`lora_finetune` did: per-epoch mean losses per stage, counts, and where it saved."""

    losses: dict[str, list[float]]
    pairs: dict[str, int]
    seed: int
    device: str
    path: Path | None = None
    targets: list[str] = field(default_factory=list)


def as_examples(items: Iterable[Any]) -> list[LoraExample]:
    """:class:`LoraExample` objects from themselves, ``(query, positives, negatives)`` tuples, or labelled
    lists with ``query``, ``candidates`` and ``labels`` (grade >= 1 is relevant), such as
    :class:`~mm_rerank_components.adapt.LabelledList`.

    Example:
        >>> as_examples([(Query("fox"), [Candidate("p", text="fox")], [])])[0].query.text
        'fox'
    """
    out: list[LoraExample] = []
    for position, item in enumerate(items):
        if isinstance(item, LoraExample):
            example = item
        elif isinstance(item, tuple) and len(item) == 3:
            example = LoraExample(_query(item[0]), list(item[1]), list(item[2]))
        elif isinstance(item, LabelledList):
            pos = [c for c, y in zip(item.candidates, item.labels, strict=True) if y >= 1]
            neg = [c for c, y in zip(item.candidates, item.labels, strict=True) if y < 1]
            example = LoraExample(_query(item.query), pos, neg)
        else:
            raise TypeError(
                f"example {position} is a {type(item).__name__}; give LoraExample, (query, positives, "
                "negatives) tuples or labelled lists with query/candidates/labels"
            )
        if example.positives or example.negatives:
            out.append(example)
    if not out:
        raise ValueError("no training examples: every example has neither positives nor negatives")
    return out


def _query(value: Any) -> Query:
    return value if isinstance(value, Query) else Query(str(value))


def lora_finetune(
    scorer: Any,
    examples: Iterable[Any],
    *,
    out: str | os.PathLike[str] | None = None,
    rank: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
    bce_epochs: int = 2,
    pairwise_epochs: int = 2,
    learning_rate: float = 1e-3,
    max_candidates: int = 8,
    seed: int = 0,
) -> LoraResult:
    """Fine-tune ``scorer`` in place with LoRA: BCE on its logit, then a pairwise loss on hard negatives.

    ``scorer`` is a :class:`~mm_rerank_components.scorers.VLMYesNoScorer`,
    :class:`~mm_rerank_components.scorers.LLMYesNoScorer` or
    :class:`~mm_rerank_components.scorers.CrossEncoderScorer` (anything with a differentiable
    ``logits(query, candidates)`` and a ``model``). Its name gains ``+lora:<hash>`` so cached scores of
    the base model are never reused. ``max_candidates`` caps the candidates per forward pass.

    Example:
        >>> result = lora_finetune(scorer, examples, out="adapters/fox", seed=0)  # doctest: +SKIP
    """
    torch = require("torch", "models", "LoRA fine-tuning")
    peft = require("peft", "lora", "LoRA fine-tuning")
    data = as_examples(examples)
    if not isinstance(scorer, TrainableScorer) or scorer.model is None:
        raise TypeError(
            f"{type(scorer).__name__} cannot be fine-tuned with LoRA: it needs a model and a differentiable "
            "logits(query, candidates) (VLMYesNoScorer, LLMYesNoScorer or CrossEncoderScorer)"
        )
    check_int("rank", rank)
    check_int("bce_epochs", bce_epochs, minimum=0)
    check_int("pairwise_epochs", pairwise_epochs, minimum=0)
    _seed_everything(torch, seed)
    targets = list(target_modules) if target_modules is not None else default_targets(scorer.model)
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none"
    )
    peft.inject_adapter_in_model(config, scorer.model)  # LoRA layers go into scorer.model in place
    optimiser = torch.optim.AdamW(_trainable_adapters(scorer.model), lr=learning_rate, weight_decay=0.0)
    losses = _train(
        torch, scorer, optimiser, data, (bce_epochs, pairwise_epochs), random.Random(seed), max_candidates
    )
    pairs = {
        "bce": sum(len(e.positives) + len(e.negatives) for e in data),
        "pairwise": sum(len(e.positives) * len(e.negatives) for e in data),
    }
    scorer.model.eval()
    result = LoraResult(losses, pairs, seed, str(scorer.device), None, targets)
    _rename(scorer, _adapter_digest(torch, scorer.model))
    if out is not None:
        result.path = save_lora(scorer, out, result)
    return result


def _train(
    torch: Any,
    scorer: Any,
    optimiser: Any,
    data: list[LoraExample],
    epochs: tuple[int, int],
    rng: random.Random,
    max_candidates: int,
) -> dict[str, list[float]]:
    """The BCE epochs, then the pairwise ones (on queries with a positive and a negative): mean losses."""
    losses: dict[str, list[float]] = {}
    for stage, n_epochs, loss_fn in (("bce", epochs[0], _bce_loss), ("pairwise", epochs[1], _pairwise_loss)):
        usable = [e for e in data if stage == "bce" or (e.positives and e.negatives)]
        if n_epochs and not usable:
            logger.warning("LoRA %s stage skipped: no query has both a positive and a negative", stage)
        losses[stage] = [
            _epoch(torch, scorer, optimiser, loss_fn, usable, rng, max_candidates)
            for _ in range(n_epochs if usable else 0)
        ]
        for epoch, mean in enumerate(losses[stage], start=1):
            logger.info("LoRA %s epoch %d: mean loss %.4f", stage, epoch, mean)
    return losses


def _trainable_adapters(model: Any) -> list[Any]:
    """Freeze the base, unfreeze the LoRA layers (in float32 even on a bf16 base) and return them."""
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
        if "lora_" in name:
            p.data = p.data.float()
            params.append(p)
    return params


def _epoch(
    torch: Any,
    scorer: Any,
    optimiser: Any,
    loss_fn: Any,
    examples: list[LoraExample],
    rng: random.Random,
    cap: int,
) -> float:
    """One pass over ``examples`` in a seeded order, one optimiser step per query; the mean loss."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    total = 0.0
    for i in order:
        optimiser.zero_grad()
        loss = loss_fn(torch, scorer, examples[i], cap)
        loss.backward()
        optimiser.step()
        total += float(loss.detach())
    return total / len(examples)


def default_targets(model: Any) -> list[str]:
    """Full names of the language model's attention projections (see :data:`DEFAULT_TARGETS`)."""
    import torch

    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and name.rsplit(".", 1)[-1] in DEFAULT_TARGETS
        and not any(part in name for part in _VISION_PARTS)
    ]
    if not names:
        raise ValueError(
            f"no attention projections ({sorted(DEFAULT_TARGETS)}) found in {type(model).__name__}; pass "
            "target_modules=[...] with the names of the linear layers to adapt"
        )
    return names


def _bce_loss(torch: Any, scorer: Any, example: LoraExample, cap: int) -> Any:
    candidates = [*example.positives, *example.negatives][:cap]
    labels = torch.tensor([1.0] * len(example.positives) + [0.0] * len(example.negatives))[:cap]
    logits = scorer.logits(example.query, candidates).float()
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.device))


def _pairwise_loss(torch: Any, scorer: Any, example: LoraExample, cap: int) -> Any:
    n_pos = min(len(example.positives), max(1, cap // 2))
    positives = list(example.positives)[:n_pos]
    negatives = list(example.negatives)[: max(1, cap - n_pos)]
    logits = scorer.logits(example.query, [*positives, *negatives]).float()
    diff = logits[: len(positives)].unsqueeze(1) - logits[len(positives) :].unsqueeze(0)
    return -torch.nn.functional.logsigmoid(diff).mean()


def _seed_everything(torch: Any, seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _adapter_digest(torch: Any, model: Any) -> str:
    digest = hashlib.blake2b(digest_size=4)
    for name, p in sorted(model.named_parameters()):
        if "lora_" in name:
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _rename(scorer: TrainableScorer, digest: str) -> None:
    base = str(scorer.name).split("+lora:")[0]
    scorer.name = f"{base}+lora:{digest}"


def save_lora(
    scorer: TrainableScorer, folder: str | os.PathLike[str], result: LoraResult | None = None
) -> Path:
    """Write the scorer's LoRA adapter (safetensors + config) and what it was trained on to ``folder``.

    Example:
        >>> save_lora(scorer, "adapters/fox")  # doctest: +SKIP
    """
    peft = require("peft", "lora", "LoRA adapters")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    state = peft.get_peft_model_state_dict(scorer.model)
    if not state:
        raise ValueError(f"{scorer.name!r} has no LoRA adapter to save; run lora_finetune first")
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path / "adapter_model.safetensors")
    )
    config = scorer.model.peft_config["default"]
    config.save_pretrained(str(path))
    info: dict[str, Any] = {"scorer": scorer.name, "format": "peft-lora"}
    if result is not None:
        info |= {"losses": result.losses, "pairs": result.pairs, "seed": result.seed, "device": result.device}
    (path / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return path


def load_lora(scorer: Scorer, folder: str | os.PathLike[str]) -> Scorer:
    """Put the LoRA adapter saved in ``folder`` on ``scorer`` (in place) and return the scorer.

    The scorer must wrap the same base model the adapter was trained on; its name gains the adapter's
    ``+lora:<hash>``, equal to the trained scorer's.

    Example:
        >>> base = VLMYesNoScorer("models/base", local_files_only=True)  # doctest: +SKIP
        >>> scorer = load_lora(base, "adapters/fox")  # doctest: +SKIP
    """
    if not isinstance(scorer, TrainableScorer):
        raise TypeError(
            f"{scorer.name!r} ({type(scorer).__name__}) takes no LoRA adapter: it needs a model and a "
            "differentiable logits(query, candidates) (VLMYesNoScorer, LLMYesNoScorer or CrossEncoderScorer)"
        )
    torch = require("torch", "models", "LoRA adapters")
    peft = require("peft", "lora", "LoRA adapters")
    path = Path(folder)
    if not (path / "adapter_config.json").is_file() or not (path / "adapter_model.safetensors").is_file():
        raise ValueError(
            f"{os.fspath(folder)!r} holds no LoRA adapter (adapter_config.json + adapter_model.safetensors); "
            "pass the folder lora_finetune(out=...) wrote"
        )
    from safetensors.torch import load_file

    config = peft.LoraConfig.from_pretrained(str(path))
    config.inference_mode = True
    peft.inject_adapter_in_model(config, scorer.model)
    state = load_file(str(path / "adapter_model.safetensors"))
    outcome = peft.set_peft_model_state_dict(scorer.model, state)
    # peft's load result (a third-party object, not a scorer hook): older peft versions return None
    missing = [k for k in getattr(outcome, "unexpected_keys", []) if "lora_" in k]
    if missing:
        raise ValueError(f"the adapter in {os.fspath(folder)!r} does not fit this model: {missing[:3]} ...")
    for name, p in scorer.model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    scorer.model.to(scorer.device).eval()
    _rename(scorer, _adapter_digest(torch, scorer.model))
    return scorer
