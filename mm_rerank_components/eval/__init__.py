"""Evaluation: real datasets, labelled-data loading, pipelines, metrics and reports (``mm-rerank eval``).

Submodules are imported on use, so ``import mm_rerank_components.eval`` stays light:

* :mod:`~mm_rerank_components.eval.datasets`: Tux Paint stamps and GCompris explore items from Debian
  packages (``apt-get download``, cached), and an ingestable export of the explore items;
* :mod:`~mm_rerank_components.eval.rcc`: a reader for Qt ``.rcc`` resource archives;
* :mod:`~mm_rerank_components.eval.tasks`: labelled mixed-corpus tasks, the seeded held-out split, and
  :func:`~mm_rerank_components.eval.tasks.load_labelled_jsonl` for your own data;
* :mod:`~mm_rerank_components.eval.embeddings`: the first-stage embeddings (starter models), cached;
* :mod:`~mm_rerank_components.eval.pipelines`: single routes, raw merge, RRF, per-list normalisation,
  two-stage reranking, and the union's recall (the ceiling of any reranker over the pool);
* :mod:`~mm_rerank_components.eval.learned`: the learned rows (label-free default, adapted);
* :mod:`~mm_rerank_components.eval.metrics`: ranx metrics overall, per modality and per query;
* :mod:`~mm_rerank_components.eval.stats`: the paired bootstrap over queries and the verdicts;
* :mod:`~mm_rerank_components.eval.targets`: the target checks, each with its CI;
* :mod:`~mm_rerank_components.eval.report` and :mod:`~mm_rerank_components.eval.runner`: the report
  and :func:`~mm_rerank_components.eval.runner.run_evaluation` (the command line is
  :mod:`mm_rerank_components.cli.eval`).
"""
