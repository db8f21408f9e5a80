"""CLIP family: CLIPEmbeddingFunction for both Chroma collections, then CLIPScorer as a second stage.

    python examples/backends/clip.py [--kind clip|siglip|siglip2]

Passages and pictures are embedded into one space, so a text query searches the picture collection.
The collections record the function's name and config (model folder and a fingerprint of its files), so
reopening them with other weights is refused. With real weights, pass a local CLIP/SigLIP folder
(``mm-rerank ingest --embedder clip:PATH`` does the same from the command line).
"""

from __future__ import annotations

import argparse

import chromadb
import numpy as np
from _tiny import WORDS, candidates, show, tiny_folder

from mm_rerank_components import MultimodalReranker, Query
from mm_rerank_components.retrievers.clip import clip_embedding_functions
from mm_rerank_components.scorers import CLIPScorer
from mm_rerank_components.testing import build_tiny_dual_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=["clip", "siglip", "siglip2"], default="clip")
    args = parser.parse_args()
    folder = build_tiny_dual_encoder(tiny_folder(args.kind), WORDS, kind=args.kind)
    text_ef, image_ef = clip_embedding_functions(folder)
    client = chromadb.EphemeralClient()
    passages = client.create_collection("passages", embedding_function=text_ef)
    pictures = client.create_collection("pictures", embedding_function=image_ef)
    pool = candidates()
    passages.add(
        ids=[c.id for c in pool if c.image is None], documents=[c.text or "" for c in pool if c.image is None]
    )
    shown = [c for c in pool if c.image is not None]
    pictures.add(ids=[c.id for c in shown], embeddings=image_ef([np.asarray(c.image) for c in shown]))
    print("picture hits for a text query:", pictures.query(query_texts=["a red fox"], n_results=2)["ids"][0])
    print("recorded:", passages.configuration_json["embedding_function"]["name"])
    scorer = CLIPScorer(folder, local_files_only=True, device="cpu")  # warns: no calibrator given
    show(scorer.name, MultimodalReranker(scorer).rerank(Query("a red fox"), pool))


if __name__ == "__main__":
    main()
