"""Evaluation: real datasets, labelled-data loading, pipelines, metrics and reports (``mm-rerank eval``).

Submodules are imported on use, so ``import mm_rerank_components.eval`` stays light:

* :mod:`~mm_rerank_components.eval.datasets`: Tux Paint stamps and GCompris explore items from Debian
  packages (``apt-get download``, cached), and an ingestable export of the explore items;
* :mod:`~mm_rerank_components.eval.rcc`: a reader for Qt ``.rcc`` resource archives;
* :mod:`~mm_rerank_components.eval.tasks`: labelled mixed-corpus tasks, the seeded held-out split, and
  :func:`~mm_rerank_components.eval.tasks.load_labelled_jsonl` for your own data;
* :mod:`~mm_rerank_components.eval.embeddings`: the first-stage embeddings (starter models), cached;
* :mod:`~mm_rerank_components.eval.pipelines`: single routes, raw merge, RRF, per-list normalisation,
  two-stage reranking and the oracle upper bound;
* :mod:`~mm_rerank_components.eval.metrics`: ranx metrics overall and per modality;
* :mod:`~mm_rerank_components.eval.report` and :mod:`~mm_rerank_components.eval.runner`: the report
  and the ``mm-rerank eval`` command (``runner.main``).
"""
