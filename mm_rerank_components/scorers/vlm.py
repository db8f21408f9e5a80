"""A yes/no relevance scorer for Hugging Face vision-language causal LMs (Qwen2-VL, Qwen2.5-VL, Qwen3-VL).

The model reads the query and the candidate *as they are*: a text candidate as text, an image candidate
as an image, a captioned image as both (the UniRank approach; nothing is rendered into a picture). The
score is the probability of the positive label token against the negative one at the answer position,
``P(yes) / (P(yes) + P(no))``, so it is a probability by construction and needs no calibrator. The
prompt, label tokens and read-out are shared with the text-only
:class:`~mm_rerank_components.scorers.LLMYesNoScorer` (``scorers/_yesno.py``); the Qwen pixel pipeline
lives in ``scorers/_qwen_vision.py``.

Needs the ``models`` extra: ``pip install "mm-rerank-components[models]"``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mm_rerank_components.scorers._batching import split_by_calls
from mm_rerank_components.scorers._hf import (
    HFLoadOptions,
    ModelRef,
    check_positive,
    default_token_budget,
    load_hf_model,
    settings_digest,
)
from mm_rerank_components.scorers._qwen_vision import QwenPixels, QwenVLInputs, build_inputs
from mm_rerank_components.scorers._yesno import (
    YesNoHead,
    YesNoPrompt,
    cut_text,
    label_token_id,
    plan_groups,
    score_in_batches,
)
from mm_rerank_components.scorers.base import ALL_MODALITIES, BaseScorer
from mm_rerank_components.types import Candidate, Modality, Query

if TYPE_CHECKING:
    from PIL import Image as PILImage
    from typing_extensions import Unpack

    from mm_rerank_components.scorers._hf import LoadKwargs

__all__ = ["PROMPT_PRESETS", "QwenPixels", "VLMPrompt", "VLMYesNoScorer", "label_token_id"]

logger = logging.getLogger(__name__)


class VLMPrompt(YesNoPrompt):
    """A :class:`~mm_rerank_components.scorers._yesno.YesNoPrompt` for a vision-language model.

    ``{query}`` becomes the query's image (if any) then its text; ``{document}`` becomes the candidate's
    image (if any) then its text.

    Example:
        >>> p = VLMPrompt(template="Query: {query}\\nDocument: {document}\\nRelevant?", positive_label="Yes",
        ...               negative_label="No")
        >>> p.positive_labels
        ('Yes',)
    """


#: Prompt presets. ``"yes-no"`` suits instruction-tuned VLMs zero-shot (Qwen2-VL-Instruct,
#: Qwen2.5-VL-Instruct); ``"monoqwen"`` is the prompt MonoQwen2-VL-style rerankers were fine-tuned on;
#: ``"qwen3-vl-reranker"`` is Qwen3-VL-Reranker's (and Qwen3-Reranker's) system prompt, instruction
#: layout and empty thinking block, read at the "yes"/"no" tokens.
PROMPT_PRESETS: dict[str, VLMPrompt] = {
    "yes-no": VLMPrompt(
        template=(
            "Judge whether the document is relevant to the search query. "
            'Answer with only "yes" or "no".\n'
            "Query: {query}\n"
            "Document: {document}\n"
            "Is the document relevant to the query?"
        ),
        positive_label="yes",
        negative_label="no",
    ),
    "monoqwen": VLMPrompt(
        template=(
            "{document}Assert the relevance of the previous image document to the following query, "
            "answer True or False. The query is: {query}"
        ),
        positive_label="True",
        negative_label="False",
    ),
    "qwen3-vl-reranker": VLMPrompt(
        template=(
            "<Instruct>: Given a search query, retrieve relevant candidates that answer the query.\n"
            "<Query>: {query}\n<Document>: {document}"
        ),
        system_prompt=(
            "Judge whether the Document meets the requirements based on the Query and the Instruct "
            'provided. Note that the answer can only be "yes" or "no".'
        ),
        answer_prefix="<think>\n\n</think>\n\n",
    ),
}


class VLMYesNoScorer(BaseScorer):
    """Relevance as the likelihood of a "yes" label from a vision-language causal LM.

    Text, image and text+image candidates (and text and/or image queries) are scored in one call:
    candidates are grouped by image count, sorted by their real token count (each prompt is tokenised
    once), run in balanced padded micro-batches (left padding with matching attention masks and position
    ids, so a score does not depend on its batch-mates), and put back in input order. Scores are
    probabilities: ``outputs_probabilities`` is True.

    Args:
        model_name_or_path: a Hugging Face id (``"Qwen/Qwen2-VL-2B-Instruct"``) or a local folder written by
            ``save_pretrained``. Omit it when passing ``model=`` and ``processor=``/``tokenizer=``.
        model: a ready model (e.g. a PEFT-merged MonoQwen2-VL) instead of loading one.
        processor: a ready processor (``AutoProcessor``-like: ``__call__(text=, images=)`` and a
            ``tokenizer``) for model families other than Qwen-VL.
        tokenizer, image_processor: ready Qwen-VL tokenizer and image processor.
        prompt: a :class:`VLMPrompt` or a preset name from :data:`PROMPT_PRESETS`.
        batch_size: at most this many pairs per forward pass (the scorer's batching knob; the reranker's
            own ``batch_size`` is only a memory cap on what it hands over).
        max_batch_tokens: padded tokens (text plus visual) per forward pass, or None for ``batch_size``
            alone. Pairs are sorted by their real token count and cut into balanced batches.
        max_pixels: pixel budget per image; larger images are downscaled (aspect kept). 448*448 gives
            256 visual tokens on Qwen2-VL. Qwen-VL models resize each picture once: the budget joins the
            image processor's own (its ``smart_resize`` to the patch grid), and the pixels equal that
            processor's with ``max_pixels`` set to the budget; other families' processors get a picture
            already downscaled to the budget, then resize it their own way.
        max_text_tokens: candidate text is cut to this many tokens (None: no cut).
        load: :class:`~mm_rerank_components.scorers._hf.HFLoadOptions` keywords: ``device``, ``dtype``
            (``"auto"``: bf16 on CUDA, fp32 on MPS and CPU; a ready ``model=`` keeps its dtype),
            ``local_files_only``, ``revision``, ``cache_dir``, ``trust_remote_code`` (off unless you pass
            True) and ``attn_implementation`` (``"sdpa"`` by default, so flash-attention is never required).
        name: overrides the scorer name used in cache keys and reports. Set it when passing a ready
            ``model=`` (a merged fine-tune keeps its base model's name in its config), so cached scores
            of the fine-tune and its base are told apart.

    Example:
        >>> scorer = VLMYesNoScorer("Qwen/Qwen2-VL-2B-Instruct", dtype="bfloat16")  # doctest: +SKIP
        >>> scorer.score(Query("a red fox"), [Candidate("t", text="Foxes are red."),
        ...                                   Candidate("i", image=pil_image)])  # doctest: +SKIP
        [0.93, 0.41]
    """

    outputs_probabilities = True
    modalities: frozenset[Modality] = ALL_MODALITIES

    def __init__(
        self,
        model_name_or_path: ModelRef | None = None,
        *,
        model: Any = None,
        processor: Any = None,
        tokenizer: Any = None,
        image_processor: Any = None,
        prompt: VLMPrompt | YesNoPrompt | str = "yes-no",
        batch_size: int = 8,
        max_batch_tokens: int | str | None = None,
        max_pixels: int | None = 448 * 448,
        max_text_tokens: int | None = 1024,
        name: str | None = None,
        **load: Unpack[LoadKwargs],
    ) -> None:
        if isinstance(prompt, str):
            if prompt not in PROMPT_PRESETS:
                raise ValueError(f"unknown prompt preset {prompt!r}; use one of {sorted(PROMPT_PRESETS)}")
            prompt = PROMPT_PRESETS[prompt]
        check_positive("batch_size", batch_size)
        check_positive("max_text_tokens", max_text_tokens, optional=True)
        if max_pixels is not None and max_pixels < 28 * 28:
            raise ValueError(f"max_pixels must be at least 784 (28*28) or None, got {max_pixels!r}")
        self.prompt = prompt
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.max_text_tokens = max_text_tokens
        # Qwen-family LMs are known to overflow in fp16, which "auto" picks on MPS; stay in fp32 there.
        options = HFLoadOptions(**{"attn_implementation": "sdpa", **load})  # type: ignore[arg-type]
        loaded = load_hf_model(
            "vision-language model",
            model_name_or_path,
            model,
            ("AutoModelForImageTextToText", "AutoModelForVision2Seq"),
            options,
            fp32_on_mps=True,
        )
        self.model, self.device, self.dtype = loaded.model, loaded.device, loaded.dtype
        self.max_batch_tokens = default_token_budget(max_batch_tokens, self.device)
        self._inputs = build_inputs(loaded, processor, tokenizer, image_processor)
        # one resize per picture: with the Qwen preprocessing, the budget goes into its smart_resize
        self._resize_in_processor = (
            max_pixels is not None
            and isinstance(self._inputs, QwenVLInputs)
            and self._inputs.cap_pixels(max_pixels)
        )
        self.head = YesNoHead(self.model, self._inputs.tokenizer, prompt)
        self.positive_ids, self.negative_ids = self.head.positive_ids, self.head.negative_ids
        settings = {
            "prompt": prompt,
            "max_pixels": max_pixels,
            "max_text_tokens": max_text_tokens,
            "dtype": str(self.dtype),
        }
        if self._resize_in_processor:  # one resize gives (slightly) different pixels than two did
            settings["resize"] = "processor"
        self.name = name or f"vlm-yesno:{loaded.ident}:{settings_digest(settings)}"

    # -- prompt construction -------------------------------------------------------------------------------

    def build_messages(self, query: Query, candidate: Candidate) -> tuple[list[dict[str, Any]], list[Any]]:
        """The chat messages for one pair and the images they refer to, in order of appearance.

        Example:
            >>> pair = (Query("fox"), Candidate("t", text="a fox"))
            >>> messages, images = scorer.build_messages(*pair)  # doctest: +SKIP
        """
        parts: list[dict[str, Any]] = []
        images: list[Any] = []

        def add_text(text: str) -> None:
            if text:
                if parts and parts[-1]["type"] == "text":
                    parts[-1] = {"type": "text", "text": parts[-1]["text"] + text}
                else:
                    parts.append({"type": "text", "text": text})

        def add_image(image: Any) -> None:
            parts.append({"type": "image"})
            images.append(self._fit_image(image))

        for kind, text in self.prompt.pieces():
            if kind == "text":
                add_text(text)
            elif kind == "query":
                if query.image is not None:
                    add_image(query.image)
                add_text(query.text or "")
            else:
                if candidate.image is not None:
                    add_image(candidate.image)
                if candidate.text and candidate.text.strip():
                    cut = cut_text(self._inputs.tokenizer, candidate.text, self.max_text_tokens)
                    add_text(("\n" if candidate.image is not None else "") + cut)
        messages: list[dict[str, Any]] = []
        if self.prompt.system_prompt is not None:
            messages.append(
                {"role": "system", "content": [{"type": "text", "text": self.prompt.system_prompt}]}
            )
        messages.append({"role": "user", "content": parts})
        return messages, images

    def build_prompt(self, query: Query, candidate: Candidate) -> tuple[str, list[Any]]:
        """The exact model input text for one pair (chat template applied) and its images."""
        messages, images = self.build_messages(query, candidate)
        text = self._inputs.render(messages) + self.prompt.answer_prefix
        return text, images

    def _fit_image(self, image: Any) -> PILImage.Image:
        if not hasattr(image, "size") or not hasattr(image, "convert"):
            raise TypeError(
                f"VLMYesNoScorer expects decoded PIL images (the reranker decodes them), got "
                f"{type(image).__name__}; use MultimodalReranker or load the image with PIL first"
            )
        image = image.convert("RGB") if image.mode != "RGB" else image
        width, height = image.size
        if self._resize_in_processor:
            return image  # resized once, to the budget and the patch grid together, by the preprocessing
        if self.max_pixels is not None and width * height > self.max_pixels:
            scale = math.sqrt(self.max_pixels / (width * height))
            size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
            image = image.resize(size, resample=3)  # 3 = BICUBIC, spelled out for old and new Pillow
        return image

    # -- scoring -------------------------------------------------------------------------------------------

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        return self.score_many([(query, candidates)])[0]

    def score_many(self, calls: Sequence[tuple[Query, Sequence[Candidate]]]) -> list[list[float]]:
        """Scores of several ``(query, candidates)`` calls from shared forward passes: the pairs of all
        calls are grouped by image count, sorted by token cost and cut into balanced batches together."""
        prepared = [p for query, candidates in calls if candidates for p in self.prepare(query, candidates)]
        if not prepared:
            return [[] for _ in calls]
        flat = score_in_batches(
            self._plan(prepared),
            lambda chunk: self.head.probabilities(self._encode(prepared, chunk)),
            len(prepared),
        )
        return split_by_calls(flat, calls)

    def logits(self, query: Query, candidates: Sequence[Candidate]) -> Any:
        """``logit(yes) - logit(no)`` per candidate as one differentiable tensor (for fine-tuning; one
        padded batch, no planning). ``sigmoid`` of it is :meth:`score`."""
        prepared = self.prepare(query, candidates)
        return self.head.margin(self._encode(prepared, range(len(prepared))))

    def prepare(self, query: Query, candidates: Sequence[Candidate]) -> list[_Prepared]:
        """Every pair's prompt, images and token ids (one tokenisation per prompt) and its token cost."""
        prompts = [self.build_prompt(query, c) for c in candidates]
        if isinstance(self._inputs, QwenVLInputs):
            ids: list[list[int] | None] = list(self._inputs.token_ids([text for text, _ in prompts]))
            text_costs = [len(row) for row in ids if row is not None]
        else:
            ids = [None] * len(prompts)
            text_costs = [len(text) // 4 + 1 for text, _ in prompts]  # the processor tokenises later
        return [
            _Prepared(text, images, row, cost + sum(self._inputs.visual_tokens(im) for im in images))
            for (text, images), row, cost in zip(prompts, ids, text_costs, strict=True)
        ]

    def _plan(self, prepared: Sequence[_Prepared]) -> list[list[int]]:
        """Micro-batches of pair positions: pairs with different image counts never share one; within a
        count they are sorted by token cost and cut into balanced batches of at most ``batch_size`` pairs
        and ``max_batch_tokens`` padded tokens (50 pairs at batch size 16: 13, 13, 12, 12)."""
        return plan_groups(
            [p.cost for p in prepared],
            [len(p.images) for p in prepared],
            max_items=self.batch_size,
            max_cost=self.max_batch_tokens,
        )

    def _encode(self, prepared: Sequence[_Prepared], chunk: Sequence[int]) -> dict[str, Any]:
        """Encode one micro-batch (left-padded) and move it to the device."""
        images = [image for i in chunk for image in prepared[i].images]
        if isinstance(self._inputs, QwenVLInputs):
            encoded = self._inputs.encode_ids([prepared[i].ids or [] for i in chunk], images)
        else:
            encoded = self._inputs.encode([prepared[i].text for i in chunk], images)
        return self.head.finish(encoded, self.device, self.dtype)


class _Prepared:
    """One pair ready for batching: prompt text, its images, token ids (Qwen-VL path) and token cost."""

    __slots__ = ("cost", "ids", "images", "text")

    def __init__(self, text: str, images: list[Any], ids: list[int] | None, cost: int) -> None:
        self.text, self.images, self.ids, self.cost = text, images, ids, cost
