"""What the LLM and VLM yes/no scorers share: the prompt, label tokens, the answer read-out, batching.

A yes/no reranker scores a pair by the probability of its positive label token against the negative one
at the answer position, ``P(yes) / (P(yes) + P(no)) = sigmoid(logit_yes - logit_no)``: a probability by
construction. Label variants (``("yes", "Yes")``) add up with ``logsumexp``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mm_rerank_components.scorers._batching import plan_batches
from mm_rerank_components.scorers._hf import to_device

if TYPE_CHECKING:
    import torch

QUERY = "{query}"
DOCUMENT = "{document}"


@dataclass(frozen=True)
class YesNoPrompt:
    """How a (query, candidate) pair is put to the model, and which answer tokens are read.

    ``template`` holds ``{query}`` and ``{document}`` once each; everything else is literal text (other
    braces are kept as they are). For a VLM, ``{query}`` becomes the query's image (if any) then its text,
    and ``{document}`` the candidate's image (if any) then its text. With ``chat=True`` the filled template
    is the user turn of a chat rendered with the model's own chat template (after ``system_prompt``), and
    the answer is read right after the generation prompt plus ``answer_prefix``; with ``chat=False`` the
    filled template follows the tokenizer's BOS token as plain text (bge-reranker-v2-gemma style).

    A label is one token or a tuple of single-token variants (``("yes", "Yes")``), whose probabilities
    are added up.

    Example:
        >>> p = YesNoPrompt(template="Query: {query}\\nDocument: {document}\\nRelevant?",
        ...                 positive_label="Yes", negative_label="No")
        >>> p.positive_labels
        ('Yes',)
    """

    template: str
    positive_label: str | tuple[str, ...] = "yes"
    negative_label: str | tuple[str, ...] = "no"
    system_prompt: str | None = None
    answer_prefix: str = ""
    chat: bool = True

    def __post_init__(self) -> None:
        for marker in (QUERY, DOCUMENT):
            count = self.template.count(marker)
            if count != 1:
                raise ValueError(
                    f"{type(self).__name__}.template must contain {marker} exactly once, found {count} in "
                    f"{self.template!r}"
                )
        for field_name in ("positive_label", "negative_label"):
            labels = _as_labels(getattr(self, field_name))
            if not labels or any(not isinstance(x, str) or x == "" for x in labels):
                raise ValueError(
                    f"{type(self).__name__}.{field_name} must be a non-empty str or tuple of them"
                )
        if set(self.positive_labels) & set(self.negative_labels):
            raise ValueError(
                "a label cannot be both positive and negative: "
                f"{self.positive_labels} / {self.negative_labels}"
            )

    @property
    def positive_labels(self) -> tuple[str, ...]:
        return _as_labels(self.positive_label)

    @property
    def negative_labels(self) -> tuple[str, ...]:
        return _as_labels(self.negative_label)

    def pieces(self) -> list[tuple[str, str]]:
        """The template as ``(kind, text)`` pieces in order; kind: ``"text"``, ``"query"``, ``"document"``.

        Example:
            >>> YesNoPrompt(template="Q: {query} D: {document}?").pieces()
            [('text', 'Q: '), ('query', ''), ('text', ' D: '), ('document', ''), ('text', '?')]
        """
        out: list[tuple[str, str]] = []
        cursor = 0
        for at, marker in sorted((self.template.index(m), m) for m in (QUERY, DOCUMENT)):
            if at > cursor:
                out.append(("text", self.template[cursor:at]))
            out.append(("query" if marker == QUERY else "document", ""))
            cursor = at + len(marker)
        if cursor < len(self.template):
            out.append(("text", self.template[cursor:]))
        return out


def _as_labels(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def label_token_id(tokenizer: Any, label: str) -> int:
    """The one token id ``label`` encodes to, or a ValueError saying how it splits.

    Example:
        >>> label_token_id(tokenizer, "yes")  # doctest: +SKIP
        9693
    """
    ids = list(tokenizer(label, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids) if ids else []
        raise ValueError(
            f"label {label!r} is {len(ids)} tokens {pieces!r} for this tokenizer, but the score reads the "
            f"probability of one token: pick a label that is a single token (e.g. 'yes'/'no' or "
            f"'True'/'False'), see YesNoPrompt"
        )
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and ids[0] == unk:
        raise ValueError(
            f"label {label!r} is not in this tokenizer's vocabulary (it encodes to the unknown token)"
        )
    return int(ids[0])


def cut_text(tokenizer: Any, text: str, max_tokens: int | None) -> str:
    """``text`` cut to ``max_tokens`` tokens; a text shorter in UTF-8 bytes than that is never tokenised.

    A byte-level or byte-fallback tokenizer never makes more tokens than bytes (plus a leading marker),
    so the common short passage skips the extra tokenisation and is tokenised once, inside its prompt.
    """
    if max_tokens is None or len(text.encode("utf-8")) < max_tokens:
        return text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return str(tokenizer.decode(ids[:max_tokens], skip_special_tokens=False))


class YesNoHead:
    """Reads ``logit(positive) - logit(negative)`` at the last position of a left-padded batch.

    Example:
        >>> head = YesNoHead(model, tokenizer, prompt)  # doctest: +SKIP
        >>> head.probabilities(batch)  # doctest: +SKIP
        tensor([0.91, 0.12])
    """

    def __init__(self, model: Any, tokenizer: Any, prompt: YesNoPrompt) -> None:
        self.model = model
        self.positive_ids = [label_token_id(tokenizer, label) for label in prompt.positive_labels]
        self.negative_ids = [label_token_id(tokenizer, label) for label in prompt.negative_labels]
        forward_args = inspect.signature(model.forward).parameters
        self.keep_arg = next((a for a in ("logits_to_keep", "num_logits_to_keep") if a in forward_args), None)
        inner = getattr(model, "model", None)
        # Multimodal-RoPE models (Qwen-VL) build their own positions from the mask when images are present.
        self.uses_mrope = hasattr(model, "get_rope_index") or (
            inner is not None and hasattr(inner, "get_rope_index")
        )

    def finish(self, encoded: dict[str, Any], device: Any, dtype: Any) -> dict[str, Any]:
        """Move an encoded left-padded batch to the device and give padded rows their real positions."""
        if bool(encoded["attention_mask"].all()):
            # No padding: without a mask, attention can take its fastest (causal) kernel.
            del encoded["attention_mask"]
            return to_device(encoded, device, dtype)
        batch = to_device(encoded, device, dtype)
        if not ("pixel_values" in batch and self.uses_mrope):
            # With left padding the default positions (0..L-1) would shift every padded row; count real
            # tokens instead.
            batch["position_ids"] = (batch["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        return batch

    def margin(self, batch: dict[str, Any]) -> torch.Tensor:
        """``logsumexp(positive logits) - logsumexp(negative logits)`` per row, with gradients if enabled."""
        import torch

        kwargs: dict[str, Any] = {**batch, "use_cache": False}
        if self.keep_arg is not None:
            kwargs[self.keep_arg] = 1
        logits = self.model(**kwargs).logits[:, -1, :].float()
        pos = torch.logsumexp(logits[:, self.positive_ids], dim=-1)
        neg = torch.logsumexp(logits[:, self.negative_ids], dim=-1)
        return pos - neg

    def probabilities(self, batch: dict[str, Any]) -> torch.Tensor:
        """P(positive label) per row, as a tensor on the device (no gradients)."""
        import torch

        with torch.inference_mode():
            return torch.sigmoid(self.margin(batch))


def plan_groups(
    costs: Sequence[float], groups: Sequence[int], *, max_items: int | None, max_cost: float | None
) -> list[list[int]]:
    """Cost-sorted balanced batches (:func:`~mm_rerank_components.scorers._batching.plan_batches`) within
    each group; groups (e.g. the number of images in a pair) never share a batch.

    Example:
        >>> plan_groups([3, 1, 2, 5], [0, 0, 1, 1], max_items=1, max_cost=None)
        [[1], [0], [2], [3]]
    """
    members: dict[int, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    plan: list[list[int]] = []
    for group in sorted(members):
        positions = members[group]
        for batch in plan_batches([costs[i] for i in positions], max_items=max_items, max_cost=max_cost):
            plan.append([positions[j] for j in batch])
    return plan


def score_in_batches(
    plan: Sequence[Sequence[int]], run: Callable[[list[int]], Any], total: int
) -> list[float]:
    """Run every batch of ``plan``, then read the results back into input order.

    ``run(positions)`` returns a 1-d tensor (or list) of scores for those positions. Results stay on the
    device until every batch is queued, so on a GPU the next batch's preparation overlaps the current
    forward pass.
    """
    pending = [(list(chunk), run(list(chunk))) for chunk in plan]
    scores = [math.nan] * total
    for chunk, values in pending:
        values = values.float().cpu().tolist() if hasattr(values, "cpu") else list(values)
        for i, value in zip(chunk, values, strict=True):
            scores[i] = float(value)
    return scores
