"""Shared bits of the backend examples: a tiny model folder, mixed candidates, and a printout.

Every example builds a model with **random weights** from a config (no download), saves it to a temporary
folder and loads it back by path with ``local_files_only=True``, exactly as a real checkpoint folder
would be loaded. The scores prove the plumbing only: the order means nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from mm_rerank_components import Candidate, RankedCandidate

WORDS = ["red", "fox", "snow", "owl", "den", "river", "a", "the", "in", "lives", "photo", "of", "Yes", "No"]


def tiny_folder(name: str) -> Path:
    """A fresh temporary folder for a tiny model."""
    return Path(tempfile.mkdtemp(prefix=f"tiny-{name}-"))


def candidates(with_images: bool = True) -> list[Candidate]:
    """Three passages and, unless told otherwise, two pictures and one captioned picture."""
    out = [
        Candidate("fox-text", text="the red fox lives in a den"),
        Candidate("owl-text", text="the owl in the snow"),
        Candidate("river-text", text="a river"),
    ]
    if with_images:
        out += [
            Candidate("red-picture", image=Image.new("RGB", (64, 48), (200, 60, 20))),
            Candidate("blue-picture", image=Image.new("RGB", (48, 64), (20, 60, 200))),
            Candidate("captioned", text="a photo of a fox", image=Image.new("RGB", (56, 56), (180, 90, 30))),
        ]
    return out


def show(title: str, ranked: Sequence[RankedCandidate]) -> None:
    """Print a ranking (random weights: the order means nothing)."""
    print(f"{title} (random weights: the order means nothing)")
    for r in ranked:
        print(f"  {r.score:.3f}  raw {r.raw_score:+.3f}  {r.modality:<10}  {r.id}")
