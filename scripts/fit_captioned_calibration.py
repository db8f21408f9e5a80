"""Add a ``text+image`` map to the starter scorer's calibration, fitted on captioned Tux Paint photos.

``mm-rerank eval --write-calibration`` fits the text and image maps from the evaluation's candidate
lists. Captioned images (a photo with its caption, scored by ``StarterScorer`` as a mix of caption and
image evidence) need their own map, since that mix lives on a third scale. Here each of the 430 Tux
Paint photo stamps becomes a text+image candidate (the photo plus its **French** caption); the queries
are the **dev** split's English captions (same seeded split as ``tuxpaint-mixed``); a query's candidate
list is the top ``--depth`` candidates by the scorer's own text+image score (what a reranker sees after
a first stage); relevant = same English caption. The held-out queries are used only to report ECE.

Usage (after ``mm-rerank eval --write-calibration PATH``, which also fills the embedding caches)::

    python scripts/fit_captioned_calibration.py PATH [--depth 32]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mm_rerank_components.calibration import PlattCalibrator, expected_calibration_error, load_calibrator
from mm_rerank_components.eval.datasets import default_cache_dir
from mm_rerank_components.eval.tasks import tuxpaint_mixed_task
from mm_rerank_components.media import load_image
from mm_rerank_components.scorers.starter import StarterScorer, split_windows
from mm_rerank_components.types import Candidate, Query


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calibration", type=Path, help="calibration JSON to extend (rewritten in place)")
    parser.add_argument("--depth", type=int, default=32, help="candidates per query (default 32)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    cache = args.cache_dir or default_cache_dir()
    task = tuxpaint_mixed_task(cache)
    scorer = StarterScorer()
    existing = load_calibrator(args.calibration)
    if getattr(existing, "scorer", None) != scorer.name:
        parser.error(
            f"{args.calibration} was fitted for {getattr(existing, 'scorer', None)!r}, not {scorer.name!r}"
        )
    stamps = sorted(d.removeprefix("img:") for d in task.docs if d.startswith("img:"))
    # decoded once; the scorer caches image features by pixels, so each photo is classified once
    images = [Candidate(f"img:{s}", image=load_image(task.docs[f"img:{s}"].image)) for s in stamps]
    captions = [task.docs[f"fr:{s}"].text or "" for s in stamps]
    if any(split_windows(c) for c in captions):
        parser.error("a caption has several sentences; this shortcut assumes single-window captions")
    caption_emb = scorer.models.embed_texts(captions)
    w = scorer.caption_weight

    def pairs(split: str) -> tuple[np.ndarray, np.ndarray]:
        raw, labels = [], []
        for qid in task.query_ids(split):
            query = Query(task.queries[qid])
            q = scorer.embed_query(query)
            # StarterScorer.score of a text+image candidate is w * text + (1 - w) * image, and the text
            # score of a caption without sentence windows is its plain cosine: computed here in one go
            image_scores = np.asarray(scorer.score(query, images))
            scores = w * (caption_emb @ q) + (1 - w) * image_scores
            top = np.argsort(-scores, kind="stable")[: args.depth]
            relevant = task.qrels[qid]
            raw += scores[top].tolist()
            labels += [1 if relevant.get(f"img:{stamps[i]}", 0) else 0 for i in top]
        return np.asarray(raw), np.asarray(labels, dtype=float)

    # the shortcut must equal the scorer's own text+image score
    probe = Query(task.queries[task.query_ids("dev")[0]])
    direct = scorer.score(probe, [Candidate("x", text=captions[i], image=images[i].image) for i in range(3)])
    q = scorer.embed_query(probe)
    shortcut = w * (caption_emb[:3] @ q) + (1 - w) * np.asarray(scorer.score(probe, images[:3]))
    if not np.allclose(direct, shortcut, atol=1e-5):
        raise SystemExit(f"shortcut {shortcut} differs from StarterScorer.score {direct}; update this script")

    dev_raw, dev_y = pairs("dev")
    test_raw, test_y = pairs("test")
    platt = PlattCalibrator().fit(dev_raw, dev_y)
    ece_dev = expected_calibration_error(platt.predict(dev_raw), dev_y)
    ece_test = expected_calibration_error(platt.predict(test_raw), test_y)
    data = json.loads(args.calibration.read_text(encoding="utf-8"))
    data["modalities"]["text+image"] = platt.to_dict()
    data["stats"]["text+image"] = {
        "pairs": int(dev_raw.size),
        "positives": int(dev_y.sum()),
        "ece_fit": ece_dev,
        "ece_heldout": ece_test,
        "heldout_pairs": int(test_raw.size),
        "fitted_on": "tuxpaint photo stamps with French captions as text+image candidates (dev queries)",
    }
    args.calibration.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    load_calibrator(args.calibration)  # still valid
    print(f"text+image: {platt!r}; ECE dev {ece_dev:.4f} ({dev_raw.size} pairs), ", end="")
    print(f"held-out {ece_test:.4f} ({test_raw.size} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
