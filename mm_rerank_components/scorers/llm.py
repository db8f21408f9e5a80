"""A yes/no relevance scorer for text LLM rerankers (Qwen3-Reranker, bge-reranker-v2-gemma style).

The causal LM reads the query and a text candidate in the model's own prompt and the score is the
probability of its "yes" label token against "no" at the answer position,
``P(yes) / (P(yes) + P(no))``: a probability by construction, so no calibrator is needed. The prompt,
label tokens, read-out and batching are shared with the VLM scorer (``scorers/_yesno.py``).

Needs the ``models`` extra: ``pip install "mm-rerank-components[models]"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mm_rerank_components.scorers._batching import split_by_calls
from mm_rerank_components.scorers._hf import (
    HFLoadOptions,
    ModelRef,
    check_positive,
    check_readable,
    default_token_budget,
    load_hf_model,
    pad_rows,
    settings_digest,
)
from mm_rerank_components.scorers._qwen_vision import prepare_tokenizer
from mm_rerank_components.scorers._yesno import (
    YesNoHead,
    YesNoPrompt,
    cut_text,
    plan_groups,
    score_in_batches,
)
from mm_rerank_components.scorers.base import BaseScorer
from mm_rerank_components.types import Candidate, Modality, Query

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from mm_rerank_components.scorers._hf import LoadKwargs

logger = logging.getLogger(__name__)

#: Prompt presets. ``"qwen3-reranker"``: Qwen3-Reranker's system prompt, ``<Instruct>/<Query>/<Document>``
#: layout (with its default web-search instruction) and empty thinking block, read at "yes"/"no".
#: ``"bge-gemma"``: bge-reranker-v2-gemma's plain ``A:``/``B:`` prompt after BOS, read at "Yes"/"No" (the
#: original reads the raw "Yes" logit; this scorer reads Yes against No, a probability).
#: ``"yes-no"``: a zero-shot prompt for any instruction-tuned chat LM.
LLM_PROMPT_PRESETS: dict[str, YesNoPrompt] = {
    "qwen3-reranker": YesNoPrompt(
        template=(
            "<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
            "<Query>: {query}\n<Document>: {document}"
        ),
        system_prompt=(
            "Judge whether the Document meets the requirements based on the Query and the Instruct "
            'provided. Note that the answer can only be "yes" or "no".'
        ),
        answer_prefix="<think>\n\n</think>\n\n",
    ),
    "bge-gemma": YesNoPrompt(
        template=(
            "A: {query}\nB: {document}\nGiven a query A and a passage B, determine whether the passage "
            "contains an answer to the query by providing a prediction of either 'Yes' or 'No'."
        ),
        positive_label="Yes",
        negative_label="No",
        chat=False,
    ),
    "yes-no": YesNoPrompt(
        template=(
            'Judge whether the document is relevant to the search query. Answer with only "yes" or "no".\n'
            "Query: {query}\nDocument: {document}\nIs the document relevant to the query?"
        ),
    ),
}


class LLMYesNoScorer(BaseScorer):
    """Relevance of text candidates as the likelihood of a "yes" label from a causal LM.

    Text candidates only (route images to a VLM or image scorer with
    :class:`~mm_rerank_components.scorers.ModalityRouter`). Each prompt is tokenised once; pairs are
    sorted by token count and cut into balanced left-padded batches, and scores come back in input
    order. Scores are probabilities: ``outputs_probabilities`` is True.

    Args:
        model_name_or_path: a Hugging Face id (``"Qwen/Qwen3-Reranker-0.6B"``) or a local folder.
        model, tokenizer: ready objects instead of loading them.
        prompt: a :class:`~mm_rerank_components.scorers._yesno.YesNoPrompt` or a preset name from
            :data:`LLM_PROMPT_PRESETS`.
        batch_size: at most this many pairs per forward pass (the scorer's batching knob).
        max_batch_tokens: padded tokens per forward pass; ``"auto"``: 1024 on CPU, none on an accelerator.
        max_text_tokens: candidate text is cut to this many tokens (None: no cut).
        name: overrides the scorer name.
        load: :class:`~mm_rerank_components.scorers._hf.HFLoadOptions` keywords (``device``, ``dtype``,
            ``local_files_only``, ``revision``, ``cache_dir``, ``trust_remote_code``,
            ``attn_implementation``: ``"sdpa"`` by default).

    Example:
        >>> scorer = LLMYesNoScorer("Qwen/Qwen3-Reranker-0.6B", prompt="qwen3-reranker")  # doctest: +SKIP
        >>> scorer.score(Query("red fox"), [Candidate("p", text="Foxes are red.")])  # doctest: +SKIP
        [0.97]
    """

    outputs_probabilities = True
    modalities: frozenset[Modality] = frozenset({"text"})

    def __init__(
        self,
        model_name_or_path: ModelRef | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        prompt: YesNoPrompt | str = "qwen3-reranker",
        batch_size: int = 8,
        max_batch_tokens: int | str | None = "auto",
        max_text_tokens: int | None = 1024,
        name: str | None = None,
        **load: Unpack[LoadKwargs],
    ) -> None:
        if isinstance(prompt, str):
            if prompt not in LLM_PROMPT_PRESETS:
                raise ValueError(f"unknown prompt preset {prompt!r}; use one of {sorted(LLM_PROMPT_PRESETS)}")
            prompt = LLM_PROMPT_PRESETS[prompt]
        check_positive("batch_size", batch_size)
        check_positive("max_text_tokens", max_text_tokens, optional=True)
        self.prompt, self.batch_size, self.max_text_tokens = prompt, batch_size, max_text_tokens
        options = HFLoadOptions(**{"attn_implementation": "sdpa", **load})  # type: ignore[arg-type]
        loaded = load_hf_model("causal LM", model_name_or_path, model, ("AutoModelForCausalLM",), options)
        self.model, self.device, self.dtype = loaded.model, loaded.device, loaded.dtype
        self.max_batch_tokens = default_token_budget(max_batch_tokens, self.device)
        self.tokenizer = loaded.companion("AutoTokenizer", tokenizer)
        prepare_tokenizer(self.tokenizer, "left")
        if prompt.chat and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                "this prompt renders with the model's chat template, but the tokenizer has none: pass a "
                "tokenizer with a chat template, or a YesNoPrompt(chat=False)"
            )
        self.head = YesNoHead(self.model, self.tokenizer, prompt)
        settings = {"prompt": prompt, "max_text_tokens": max_text_tokens, "dtype": str(self.dtype)}
        self.name = name or f"llm-yesno:{loaded.ident}:{settings_digest(settings)}"

    def build_prompt(self, query: Query, candidate: Candidate) -> str:
        """The exact model input text for one pair.

        Example:
            >>> scorer.build_prompt(Query("fox"), Candidate("p", text="a fox"))  # doctest: +SKIP
            '<|im_start|>system\\nJudge whether ...<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n'
        """
        document = cut_text(self.tokenizer, candidate.text or "", self.max_text_tokens)
        filled = "".join(
            text if kind == "text" else (query.text or "") if kind == "query" else document
            for kind, text in self.prompt.pieces()
        )
        if not self.prompt.chat:
            return (self.tokenizer.bos_token or "") + filled
        messages: list[dict[str, Any]] = []
        if self.prompt.system_prompt is not None:
            messages.append({"role": "system", "content": self.prompt.system_prompt})
        messages.append({"role": "user", "content": filled})
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(rendered) + self.prompt.answer_prefix

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        return self.score_many([(query, candidates)])[0]

    def score_many(self, calls: Sequence[tuple[Query, Sequence[Candidate]]]) -> list[list[float]]:
        """Scores of several ``(query, candidates)`` calls from shared forward passes: the prompts of all
        calls are tokenised together, sorted by length and cut into balanced left-padded batches."""
        for query, candidates in calls:
            if candidates:
                check_readable("LLMYesNoScorer", self.modalities, query, candidates)
        prompts = [self.build_prompt(query, c) for query, candidates in calls for c in candidates]
        if not prompts:
            return [[] for _ in calls]
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        plan = plan_groups(
            [len(row) for row in ids],
            [0] * len(ids),
            max_items=self.batch_size,
            max_cost=self.max_batch_tokens,
        )
        flat = score_in_batches(
            plan, lambda chunk: self.head.probabilities(self.encode(ids, chunk)), len(ids)
        )
        return split_by_calls(flat, calls)

    def logits(self, query: Query, candidates: Sequence[Candidate]) -> Any:
        """``logit(yes) - logit(no)`` per candidate as one differentiable tensor (for fine-tuning; one
        padded batch). ``sigmoid`` of it is :meth:`score`."""
        prompts = [self.build_prompt(query, c) for c in candidates]
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        return self.head.margin(self.encode(ids, range(len(ids))))

    def encode(self, ids: Sequence[Sequence[int]], chunk: Sequence[int]) -> dict[str, Any]:
        """Rows ``chunk`` of the token ids, left-padded, with real positions, on the device."""
        input_ids, mask = pad_rows([ids[i] for i in chunk], int(self.tokenizer.pad_token_id), "left")
        return self.head.finish({"input_ids": input_ids, "attention_mask": mask}, self.device, self.dtype)
