"""Captioned pictures after adaptation, leave-one-task-out: labelled and label-free adapted rerankers.

``scripts/read_captions_check.py`` measures the default on corpora whose pictures carry captions (six
captioned variants of the built-in tasks); this script asks what a user with such a corpus gets from
the two adaptation routes, the rows issue 19 asks to report with captioned variants:

* ``default``: the default refitted without the task (it never saw the task, captioned or not);
* ``labelled``: ``fit_fusion`` on the captioned variant's **dev** queries, starting from that default
  (``prior=``, as ``mm-rerank adapt --data`` does);
* ``label_free``: ``adapt_from_corpus`` on the captioned variant's documents alone (no query, no label;
  a picture's caption is its pseudo-query, as ``mm-rerank adapt --db`` does), starting from that default.

All three are measured on the variant's **test** queries, with route signals: R@10, nDCG@10 and the
pictures' share of the top 10 against ``default`` (paired bootstrap 95% CI over queries), and
calibration among captioned pictures and passages predicted >= 0.1 (query-bootstrap CI) with ECE; then,
the six variants pooled, each row's same-score table (pictures' and passages' observed relevance per
score bin and their difference: :func:`~mm_rerank_components.eval.targets.same_score_table`). A
leak line counts test queries equal to a caption (a name caption *is* its item's query text, so the
label-free row's pseudo-queries include the test queries there, as they would for a user whose
captions are what people type).

Usage (reads the caches ``mm-rerank eval`` fills; a few minutes warm)::

    python scripts/captioned_adaptation_check.py [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_default as fd  # the sibling scripts: check_parser, check_setup
from read_captions_check import comparison_lines, held_out_variants, variants

from mm_rerank_components.adapt import fit_fusion
from mm_rerank_components.adapt.corpus import VectorCorpus
from mm_rerank_components.adapt.pipeline import adapt_from_corpus, label_free_options
from mm_rerank_components.defaults import DEFAULT_DEPTH
from mm_rerank_components.eval.embeddings import StarterEmbedder
from mm_rerank_components.eval.learned import PreparedTask, fusion_union, labelled_lists
from mm_rerank_components.eval.pipelines import ScoredUnion
from mm_rerank_components.eval.report import same_score_lines
from mm_rerank_components.eval.targets import PooledPairs
from mm_rerank_components.scorers.starter import StarterScorer

ROWS = ("default", "labelled", "label_free")


def adapted_models(
    variant: PreparedTask, default: Any, scorer: StarterScorer, embedder: Any
) -> dict[str, Any]:
    """The three rows' models for one captioned variant (``default`` never saw its task)."""
    task = variant.task
    dev = labelled_lists(variant, "starter", task.query_ids("dev"), *DEFAULT_DEPTH)
    labelled = fit_fusion(dev, scorer="starter", seed=0, prior=default)
    titles = {d: Path(str(c.image)).stem for d, c in task.docs.items() if isinstance(c.image, str)}
    corpus = VectorCorpus(
        list(task.docs.values()), variant.first.vectors(), embedder.embed_texts, titles=titles
    )
    options = label_free_options(k_text=DEFAULT_DEPTH[0], k_image=DEFAULT_DEPTH[1], prior=None)
    free = adapt_from_corpus(corpus, scorer, options, prior=default).model  # never the shipped file
    return {"default": default, "labelled": labelled, "label_free": free}


def report(name: str, variant: PreparedTask, scored: dict[str, ScoredUnion]) -> list[str]:
    """Ranking against ``default`` and calibration per row (captioned pictures read as pictures)."""
    task, test = variant.task, variant.task.query_ids("test")
    captions = {
        " ".join(c.text.lower().split()) for c in task.docs.values() if c.image is not None and c.text
    }
    leaks = sum(" ".join(task.queries[q].lower().split()) in captions for q in test)
    header = f"== {name}: {len(test)} test queries, {leaks} equal to a caption (each row minus default)"
    return [header, *comparison_lines(variant, scored, {row: "default" for row in ROWS[1:]}, 10)]


def main() -> int:
    cache, prepared = fd.check_setup(fd.check_parser(__doc__).parse_args())
    scorer, embedder = StarterScorer(), StarterEmbedder()
    found = variants(prepared, cache)
    pooled = {row: PooledPairs() for row in ROWS}
    for _, mine, default in held_out_variants(prepared, found):
        for name, variant in mine.items():
            models = adapted_models(variant, default, scorer, embedder)
            test = variant.task.query_ids("test")
            scored = {
                row: fusion_union(m, variant, "starter", test, *DEFAULT_DEPTH) for row, m in models.items()
            }
            for line in report(name, variant, scored):
                print(line, flush=True)
            for row, union in scored.items():
                pooled[row].add(*fd.labelled_pairs(variant.task, union.items, test), name)
    tables = {row: pool.table() for row, pool in pooled.items()}
    for line in same_score_lines(tables):  # pictures and passages at the same score, the six variants pooled
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
