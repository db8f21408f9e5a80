"""Generate mm_rerank_components/starter/data/imagenet_classes.json from the timm wheel's synset lists.

The 1,000 ImageNet-1k classes, in the classifier's output order, each with its WordNet id and its
synonyms (lemmas) and WordNet gloss. Source: ``timm/data/_info/imagenet_synsets.txt`` (the order),
``imagenet_synset_to_lemma.txt`` (the names) and ``imagenet_synset_to_definition.txt`` (the glosses),
read straight from a timm wheel, so timm is never a dependency of this package:

    pip download --no-deps timm -d /tmp/timm
    python scripts/make_imagenet_classes.py /tmp/timm/timm-*.whl
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

OUT = (
    Path(__file__).resolve().parents[1]
    / "mm_rerank_components"
    / "starter"
    / "data"
    / "imagenet_classes.json"
)
SYNSETS = "timm/data/_info/imagenet_synsets.txt"
LEMMAS = "timm/data/_info/imagenet_synset_to_lemma.txt"
DEFINITIONS = "timm/data/_info/imagenet_synset_to_definition.txt"


def _table(text: str) -> dict[str, str]:
    rows = (line.split("\t", 1) for line in text.splitlines() if line.strip())
    return {wnid.strip(): value.strip() for wnid, value in rows}


def build(synsets_text: str, lemmas_text: str, definitions_text: str) -> list[dict[str, object]]:
    lemmas = {w: [n.strip() for n in v.split(",") if n.strip()] for w, v in _table(lemmas_text).items()}
    definitions = _table(definitions_text)
    order = [s.strip() for s in synsets_text.splitlines() if s.strip()]
    if len(order) != 1000 or len(set(order)) != 1000:
        raise SystemExit(f"expected 1000 distinct synsets, got {len(order)}")
    missing = [w for w in order if w not in lemmas]
    if missing:
        raise SystemExit(f"no lemmas for {missing[:5]}...")
    return [{"wnid": w, "names": lemmas[w], "definition": definitions.get(w, "")} for w in order]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("timm_wheel", type=Path, help="a timm-*.whl file")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with zipfile.ZipFile(args.timm_wheel) as wheel:
        classes = build(*(wheel.read(name).decode("utf-8") for name in (SYNSETS, LEMMAS, DEFINITIONS)))
    source = f"{args.timm_wheel.name}: {SYNSETS}, {LEMMAS}, {DEFINITIONS} (WordNet data, ImageNet-1k order)"
    # One class per line: small, diffable, still plain JSON.
    lines = ",\n".join(json.dumps(c, ensure_ascii=False) for c in classes)
    text = f'{{"source": {json.dumps(source)},\n"classes": [\n{lines}\n]}}\n'
    json.loads(text)  # refuse to write anything that does not parse
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(classes)} classes to {args.out}")


if __name__ == "__main__":
    main()
