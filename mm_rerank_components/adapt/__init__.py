"""Domain adaptation: learned fusion over first-stage and scorer signals, calibrated per modality.

The stable API (other modules and the eval build on these names):

Training data and model (:mod:`mm_rerank_components.adapt.fusion`)::

    from mm_rerank_components.adapt import LabelledList, fit_fusion, FusionModel, LearnedFusionReranker

    lists = [LabelledList(query, candidates, raw_scores, labels), ...]   # one per labelled query
    model = fit_fusion(lists, seed=0, l2=0.01, pointwise=0.2, metadata_fields=())
    probs = model.predict(query, candidates, raw_scores)     # calibrated P(relevant), input order
    fused = model.fused_scores(query, candidates, raw_scores)  # uncalibrated fused scores
    model.training                                           # pairs, loss, train metrics, seed, ...
    data = model.to_dict(); FusionModel.from_dict(data)      # plain JSON, nothing pickled

    reranker = LearnedFusionReranker(MultimodalReranker(scorer), model)   # a Reranker
    reranker.rerank(query, candidates, top_n=10, threshold=None)

* ``LabelledList(query, candidates, raw_scores, labels)``: ``query`` is a ``Query`` or ``str``;
  ``candidates`` are :class:`~mm_rerank_components.Candidate` with ``source`` (the route, e.g. the
  Chroma collection or ``"text"``/``"image"`` in the eval) and ``retrieval_score`` (the route's
  similarity) where known; ``raw_scores`` are the scorer's raw scores (finite); ``labels`` are grades
  (0 = not relevant, >= 1 relevant). No Chroma is needed: the eval's ``FirstStage`` unions work as is.
* Features (:class:`~mm_rerank_components.adapt.features.FeatureSpec`, names in
  ``model.feature_names``): raw score per modality and its per-query z-score, modality one-hot, per
  route one-hot / similarity / reciprocal rank ``1/(60+rank)`` / per-query min-max and z-score (a
  route unseen in training is read as the trained route of its kind, ``spec.route_by_kind``), an
  explicit ``retrieval_missing`` flag, BM25 of the query vs the passage or caption (``bm25s``, per-query
  pool statistics) with ``query_text_missing`` / ``doc_text_missing`` flags, and numeric metadata fields
  with ``meta_missing:<name>`` flags.
* Model: linear, standardised features, pairwise logistic (RankNet) loss over all (relevant,
  non-relevant) pairs of each query + a pointwise logistic term + L2; full-batch Newton in numpy
  (deterministic). Platt per modality on out-of-fold fused scores maps the fused score to P(relevant).
* ``LearnedFusionReranker`` keeps the ``Reranker`` protocol: ``score`` = calibrated fused probability,
  ``raw_score`` = the scorer's raw score, ``index`` into the input; candidates the base failed
  (``on_error="keep"``) come last with their error.

The saved folder (:mod:`mm_rerank_components.adapt.folder`)::

    from mm_rerank_components.adapt import save_reranker, load_reranker
    save_reranker(folder, model, scorer=scorer, trained_on={...})  # config, fusion and calibration JSON
    reranker = load_reranker(folder)  # a LearnedFusionReranker; also MultimodalReranker.load(folder)
    # and the adapters' from_folder(folder)

Labels, mining and the whole run (``mm-rerank adapt``)::

    from mm_rerank_components.adapt.labels import load_labels, write_eval_jsonl  # 3 label formats
    from mm_rerank_components.adapt.mining import match_documents, index_labels, mine
    from mm_rerank_components.adapt.pipeline import adapt, format_report, score_mined

    result = adapt("labels.jsonl", retriever=retriever, scorer="starter", out="my-reranker")
    print(format_report(result.report))

Without labels (label-free adaptation to the corpus, :mod:`mm_rerank_components.adapt.corpus`)::

    from mm_rerank_components.adapt.corpus import ChromaCorpus, VectorCorpus, LabelFreeOptions
    from mm_rerank_components.adapt.pipeline import AdaptOptions, adapt_from_corpus, label_free_options

    result = adapt(retriever=retriever, out="my-reranker")          # mm-rerank adapt --db DB --out F
    result = adapt_from_corpus(VectorCorpus(docs, vectors, embed_queries), scorer, label_free_options())
    result.model.predict(query, candidates, raw_scores)           # as any learned-fusion model

See ``docs/adaptation.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mm_rerank_components.adapt.features import FeatureSpec
from mm_rerank_components.adapt.fusion import FusionModel, LabelledList, LearnedFusionReranker, fit_fusion

if TYPE_CHECKING:
    from mm_rerank_components.adapt.folder import load_reranker, save_reranker

__all__ = [
    "FeatureSpec",
    "FusionModel",
    "LabelledList",
    "LearnedFusionReranker",
    "fit_fusion",
    "load_reranker",
    "save_reranker",
]

_LAZY = {
    "load_reranker": "mm_rerank_components.adapt.folder",
    "save_reranker": "mm_rerank_components.adapt.folder",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
