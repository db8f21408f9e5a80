"""A late-interaction (multi-vector, MaxSim) scorer: ColBERT for text, ColQwen2 / ColPali for pages.

The query and each candidate become one unit vector per token (or image patch); the score is ColBERT's
MaxSim: for every query vector its best match among the candidate's vectors, summed. Text candidates are
read as text and image candidates as images; a captioned image contributes both sets of vectors.

Three backends, picked from the checkpoint's ``model_type``:

* ``colqwen2`` (ColQwen2, ColQwen2.5): transformers' ``ColQwen2ForRetrieval``, inputs built like
  ``ColQwen2Processor`` (query ``"Query: <text>"`` plus ten pad tokens of query augmentation, page images
  behind ``"Describe the image."``) without needing torchvision. Text candidates are read as plain text.
* ``colpali``: transformers' ``ColPaliForRetrieval`` through its ``ColPaliProcessor`` (``process_queries``
  and ``process_images``); pass ``processor=`` or load it with the model.
* anything else (``bert``, ``xlm-roberta``, ...): a ColBERT checkpoint, read as a BERT-style encoder plus
  the checkpoint's ``linear.weight`` projection (as ``colbert-ir/colbertv2.0`` stores it), with the
  ``[unused0]``/``[unused1]`` query/document markers and ``[MASK]`` query augmentation. Text only.

MaxSim scores are unbounded sums (about the number of query tokens at most), so they are not
probabilities and not comparable across modalities: give a per-modality ``calibrator=``; without one the
scorer warns.

Needs the ``models`` extra: ``pip install "mm-rerank-components[models]"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mm_rerank_components.calibration import Calibrator
from mm_rerank_components.scorers._batching import plan_batches
from mm_rerank_components.scorers._hf import (
    HFLoadOptions,
    HFModel,
    ModelRef,
    as_calibrator,
    check_positive,
    check_readable,
    default_token_budget,
    load_hf_model,
    pad_rows,
    settings_digest,
    to_device,
)
from mm_rerank_components.scorers._qwen_vision import QwenVLInputs, build_inputs
from mm_rerank_components.scorers.base import ALL_MODALITIES, BaseScorer
from mm_rerank_components.types import Candidate, Modality, Query

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack

    from mm_rerank_components.scorers._hf import LoadKwargs

logger = logging.getLogger(__name__)

COLQWEN_IMAGE_PROMPT = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe the image.<|im_end|><|endoftext|>"
)


class LateInteractionScorer(BaseScorer):
    """MaxSim relevance from a ColBERT, ColQwen2 or ColPali checkpoint; needs per-modality calibration.

    Args:
        model_name_or_path: a Hugging Face id (``"vidore/colqwen2-v1.0-hf"``, ``"colbert-ir/colbertv2.0"``)
            or a local folder.
        model, tokenizer, image_processor, processor: ready objects instead of loading them (``processor``:
            a ``ColPaliProcessor``-like object with ``process_queries`` and ``process_images``).
        calibrator: a per-modality calibrator fitted on this scorer's raw MaxSim scores, or its JSON path.
        batch_size: at most this many candidates per forward pass (the scorer's batching knob).
        max_batch_tokens: padded tokens (text plus visual) per forward pass; ``"auto"``: 1024 on CPU.
        query_max_length: ColBERT query length (padded with ``[MASK]``); doc_max_length: tokens per text.
        max_pixels: pixel budget per image for ColQwen2 (larger pictures are downscaled, aspect kept).
        name: overrides the scorer name.
        load: :class:`~mm_rerank_components.scorers._hf.HFLoadOptions` keywords.

    Example:
        >>> scorer = LateInteractionScorer("vidore/colqwen2-v1.0-hf",
        ...                                calibrator="colqwen_cal.json")  # doctest: +SKIP
        >>> scorer.score(Query("revenue in 2023"), [Candidate("page", image=page_image)])  # doctest: +SKIP
        [14.2]
    """

    outputs_probabilities = False

    def __init__(
        self,
        model_name_or_path: ModelRef | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        image_processor: Any = None,
        processor: Any = None,
        calibrator: Calibrator | str | os.PathLike[str] | None = None,
        batch_size: int = 8,
        max_batch_tokens: int | str | None = "auto",
        query_max_length: int = 32,
        doc_max_length: int = 512,
        max_pixels: int | None = 448 * 448,
        name: str | None = None,
        **load: Unpack[LoadKwargs],
    ) -> None:
        check_positive("batch_size", batch_size)
        check_positive("query_max_length", query_max_length)
        check_positive("doc_max_length", doc_max_length)
        self.batch_size = batch_size
        self.calibrator = as_calibrator(calibrator)
        options = HFLoadOptions(**load)
        loaded = load_hf_model(
            "late-interaction model",
            model_name_or_path,
            model,
            (_model_class(model_name_or_path, model, options),),
            options,
        )
        import torch  # importable now: load_hf_model checked the extra

        self.torch = torch
        self.model, self.device, self.dtype = loaded.model, loaded.device, loaded.dtype
        self.max_batch_tokens = default_token_budget(max_batch_tokens, self.device)
        self.kind = _kind(self.model)
        self.encoder: _Encoder
        if self.kind == "colbert":
            tok = loaded.companion("AutoTokenizer", tokenizer)
            self.encoder = _ColBERT(loaded, tok, query_max_length, doc_max_length)
        else:
            inputs = build_inputs(
                loaded, processor, tokenizer, image_processor, padding_side="right", needs_chat_template=False
            )
            self.encoder = _ColVision(loaded, inputs, doc_max_length, max_pixels)
        self.modalities: frozenset[Modality] = (
            frozenset({"text"}) if self.kind == "colbert" else ALL_MODALITIES
        )
        lengths = {"query_max_length": query_max_length, "doc_max_length": doc_max_length}
        settings = {"kind": self.kind, **lengths, "max_pixels": max_pixels, "dtype": str(self.dtype)}
        self.name = name or f"late-interaction:{loaded.ident}:{settings_digest(settings)}"
        if self.calibrator is None:
            _warn_uncalibrated(self.name)

    def default_calibrator(self) -> Calibrator | None:
        """The per-modality calibrator given at construction, or None."""
        return self.calibrator

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        return self.score_many([(query, candidates)])[0]

    def score_many(self, calls: Sequence[tuple[Query, Sequence[Candidate]]]) -> list[list[float]]:
        """Scores of several ``(query, candidates)`` calls: the queries of all calls are encoded in one
        pass, and the texts and images of all candidates in shared cost-sorted batches; MaxSim per pair."""
        calls = [(query, candidates) for query, candidates in calls]
        busy = [i for i, (_, candidates) in enumerate(calls) if candidates]
        for i in busy:
            check_readable("LateInteractionScorer", self.modalities, *calls[i])
        out: list[list[float]] = [[] for _ in calls]
        if not busy:
            return out
        queries = self.encoder.embed(
            [("query", calls[i][0].text) for i in busy], max_items=self.batch_size, max_cost=None
        )
        items: list[tuple[str, Any]] = []
        owners: list[tuple[int, int]] = []
        for i in busy:
            for j, candidate in enumerate(calls[i][1]):
                if candidate.image is not None:
                    items.append(("image", candidate.image))
                    owners.append((i, j))
                if candidate.text and candidate.text.strip():
                    items.append(("text", candidate.text))
                    owners.append((i, j))
        docs = self.encoder.embed(items, max_items=self.batch_size, max_cost=self.max_batch_tokens)
        parts: dict[tuple[int, int], list[Any]] = {}
        for owner, doc in zip(owners, docs, strict=True):
            parts.setdefault(owner, []).append(doc)
        torch = self.torch
        for i, q in zip(busy, queries, strict=True):
            for j in range(len(calls[i][1])):
                pieces = parts.get((i, j))
                if not pieces:
                    raise ValueError("a candidate has neither text nor an image; nothing to score")
                doc = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
                out[i].append(float((q @ doc.T).max(dim=1).values.sum()))
        return out


class _Encoder:
    """Turns ``(kind, value)`` items (kind: query, text, image) into per-item token-vector matrices."""

    def costs(self, items: Sequence[tuple[str, Any]]) -> list[int]:
        raise NotImplementedError

    def encode(self, items: Sequence[tuple[str, Any]]) -> list[Any]:
        raise NotImplementedError

    def embed(
        self, items: Sequence[tuple[str, Any]], *, max_items: int | None, max_cost: int | None
    ) -> list[Any]:
        """Unit token vectors (padding removed) per item, in input order; batches never mix kinds."""
        out: list[Any] = [None] * len(items)
        costs = self.costs(items)
        for kind in ("query", "text", "image"):
            positions = [i for i, (k, _) in enumerate(items) if k == kind]
            for batch in plan_batches([costs[i] for i in positions], max_items=max_items, max_cost=max_cost):
                chunk = [positions[j] for j in batch]
                for i, matrix in zip(chunk, self.encode([items[i] for i in chunk]), strict=True):
                    out[i] = matrix
        return out


class _ColBERT(_Encoder):
    """A BERT-style encoder plus the checkpoint's linear projection, ColBERTv2's markers and augmentation."""

    def __init__(self, loaded: HFModel, tokenizer: Any, query_max_length: int, doc_max_length: int) -> None:
        import torch

        self.torch, self.model, self.device, self.dtype = torch, loaded.model, loaded.device, loaded.dtype
        self.tokenizer = tokenizer
        self.query_max_length, self.doc_max_length = query_max_length, doc_max_length
        vocab = tokenizer.get_vocab()
        missing = [t for t in ("[unused0]", "[unused1]") if t not in vocab]
        if missing or tokenizer.mask_token_id is None:
            raise ValueError(
                f"a ColBERT tokenizer needs the [unused0]/[unused1] markers and a [MASK] token; missing "
                f"{missing or ['[MASK]']}"
            )
        self.markers = {"query": vocab["[unused0]"], "text": vocab["[unused1]"]}
        weight = _linear_weight(loaded)
        self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
        self.linear = self.linear.to(device=self.device, dtype=self.dtype).eval()

    def _ids(self, kind: str, text: str) -> list[int]:
        limit = self.query_max_length if kind == "query" else self.doc_max_length
        body = self.tokenizer(text, add_special_tokens=False)["input_ids"][: limit - 3]
        ids = [self.tokenizer.cls_token_id, self.markers[kind], *body, self.tokenizer.sep_token_id]
        if kind == "query":  # query augmentation: [MASK] up to the full query length, all attended
            ids += [self.tokenizer.mask_token_id] * (limit - len(ids))
        return [int(x) for x in ids]

    def costs(self, items: Sequence[tuple[str, Any]]) -> list[int]:
        return [len(self._ids(kind, value)) for kind, value in items]

    def encode(self, items: Sequence[tuple[str, Any]]) -> list[Any]:
        torch = self.torch
        rows = [self._ids(kind, value) for kind, value in items]
        ids, mask = pad_rows(rows, int(self.tokenizer.pad_token_id or 0))
        batch = to_device({"input_ids": ids, "attention_mask": mask}, self.device, self.dtype)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            vectors = torch.nn.functional.normalize(self.linear(hidden).float(), dim=-1)
        return [vectors[r, : len(row)] for r, row in enumerate(rows)]


class _ColVision(_Encoder):
    """ColQwen2 (inputs built here) or ColPali (its processor): token and patch vectors from one model."""

    def __init__(self, loaded: HFModel, inputs: Any, doc_max_length: int, max_pixels: int | None) -> None:
        import torch

        self.torch, self.model, self.device, self.dtype = torch, loaded.model, loaded.device, loaded.dtype
        self.inputs, self.doc_max_length, self.max_pixels = inputs, doc_max_length, max_pixels
        self.own_inputs = isinstance(inputs, QwenVLInputs)
        processor = getattr(inputs, "processor", None)
        if not self.own_inputs and not callable(getattr(processor, "process_queries", None)):
            raise ValueError(
                f"{loaded.ident}: pass a ColPali/ColQwen2 processor (with process_queries and process_images)"
            )

    def _text(self, kind: str, value: str) -> str:
        if kind == "query":
            pad = self.inputs.tokenizer.pad_token
            return f"Query: {value}{pad * 10}\n"
        return value

    def costs(self, items: Sequence[tuple[str, Any]]) -> list[int]:
        return [
            self.inputs.visual_tokens(_fit(value, self.max_pixels))
            if kind == "image"
            else len(value) // 4 + 1
            for kind, value in items
        ]

    def encode(self, items: Sequence[tuple[str, Any]]) -> list[Any]:
        torch = self.torch
        kind = items[0][0]
        if self.own_inputs:
            batch = self._own_batch(kind, [value for _, value in items])
        elif kind == "image":
            batch = dict(self.inputs.processor.process_images(images=[value for _, value in items]))
        else:  # with a processor, text candidates are encoded as its queries are
            batch = dict(self.inputs.processor.process_queries(text=[value for _, value in items]))
        batch = to_device(batch, self.device, self.dtype)
        with torch.inference_mode():
            vectors = self.model(**batch).embeddings.float()
        mask = batch["attention_mask"].bool()
        return [vectors[r][mask[r]] for r in range(len(items))]

    def _own_batch(self, kind: str, values: list[Any]) -> dict[str, Any]:
        if kind == "image":
            images = [_fit(value, self.max_pixels) for value in values]
            batch = self.inputs.encode([COLQWEN_IMAGE_PROMPT] * len(images), images)
            # ColQwen2ForRetrieval takes pixel rows padded per image: (images, max patches, features)
            counts = [int(g.prod()) for g in batch["image_grid_thw"]]
            pieces = list(self.torch.split(batch["pixel_values"], counts))
            width = max(counts)
            batch["pixel_values"] = self.torch.stack(
                [self.torch.nn.functional.pad(p, (0, 0, 0, width - p.shape[0])) for p in pieces]
            )
            return batch
        ids = self.inputs.token_ids([self._text(kind, value) for value in values])
        if kind == "text":
            ids = [row[: self.doc_max_length] for row in ids]
        return self.inputs.encode_ids(ids, [])


def _fit(image: Any, max_pixels: int | None) -> Any:
    if not hasattr(image, "size") or not hasattr(image, "convert"):
        raise TypeError(
            "LateInteractionScorer expects decoded PIL images (the reranker decodes them), got "
            f"{type(image).__name__}"
        )
    image = image.convert("RGB") if image.mode != "RGB" else image
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        scale = (max_pixels / (width * height)) ** 0.5
        image = image.resize((max(1, int(width * scale)), max(1, int(height * scale))), resample=3)
    return image


def _model_class(ref: ModelRef | None, model: Any, options: HFLoadOptions) -> str:
    """The transformers class for the checkpoint: its own retrieval class, else ``AutoModel`` (ColBERT)."""
    if model is not None or ref is None:
        return "AutoModel"
    from mm_rerank_components.scorers._hf import load_error, model_ref_str, require_models

    _, transformers = require_models()
    text = model_ref_str(ref)
    try:
        config = transformers.AutoConfig.from_pretrained(text, **options.pretrained())
    except (OSError, ValueError) as exc:
        raise load_error("late-interaction model", text, exc, options.local_files_only) from exc
    classes = {"colqwen2": "ColQwen2ForRetrieval", "colpali": "ColPaliForRetrieval"}
    return classes.get(str(getattr(config, "model_type", "")), "AutoModel")


def _kind(model: Any) -> str:
    model_type = str(getattr(model.config, "model_type", ""))
    if model_type in ("colqwen2", "colpali"):
        return model_type
    if not hasattr(model, "get_input_embeddings") or hasattr(model, "lm_head"):
        raise ValueError(
            f"{type(model).__name__} ({model_type}) is neither ColQwen2, ColPali nor a BERT-style ColBERT "
            "encoder"
        )
    return "colbert"


def _linear_weight(loaded: HFModel) -> torch.Tensor:
    """ColBERT's projection (``linear.weight``, dim x hidden) from the checkpoint's safetensors files."""
    from safetensors import safe_open

    given = getattr(loaded.model, "colbert_linear", None)
    if given is not None:
        return given.detach().float().cpu()
    if loaded.ref is None:
        raise ValueError(
            "a ready ColBERT model=... needs its projection as model.colbert_linear (dim x hidden tensor), "
            "or pass the checkpoint folder"
        )
    lookup = {
        k: v
        for k, v in loaded.options.pretrained().items()
        if k in ("local_files_only", "revision", "cache_dir")
    }
    for filename in ("model.safetensors",):
        path = loaded.transformers.utils.cached_file(
            loaded.ref, filename, _raise_exceptions_for_missing_entries=False, **lookup
        )
        if not path:
            continue
        with safe_open(path, framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open has keys(), no __iter__
                if key == "linear.weight" or key.endswith(".linear.weight"):
                    return fh.get_tensor(key).float()
    raise ValueError(
        f"{loaded.ref!r} has no ColBERT projection (a 'linear.weight' tensor in model.safetensors); it "
        "is not a ColBERT checkpoint"
    )


def _warn_uncalibrated(name: str) -> None:
    logger.warning(
        "LateInteractionScorer %s has no calibrator: MaxSim scores are unbounded sums, not "
        "probabilities, and text and image candidates score on different scales. Fit one per "
        "modality (fit_calibrator(..., method='platt')) and pass calibrator=...",
        name,
    )
