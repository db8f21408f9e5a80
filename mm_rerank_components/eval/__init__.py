"""Evaluation: real datasets, labelled-data loading, pipelines, metrics and reports.

Submodules are imported on use, so ``import mm_rerank_components.eval`` stays light:

* :mod:`~mm_rerank_components.eval.datasets` fetches Tux Paint stamps and GCompris explore items;
* :mod:`~mm_rerank_components.eval.rcc` reads Qt ``.rcc`` archives;
"""
