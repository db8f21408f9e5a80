"""The core's own cost per candidate, beyond scoring and decoding, with FakeScorer; and photo loading.

Three tables:

1. **overhead, small images**: ``MultimodalReranker.rerank`` end to end minus the time inside the scorer's
   ``score``, for text and mixed lists of 100 to 10,000 candidates (32x32 in-memory pictures);
2. **overhead, photos**: photo-sized pictures (640x480 PNG, at least 512 px as issue 15 asks) given as a
   path, raw bytes, base64 and a data URI, cache off and on. "pre-decoded" rows measure the core's own
   cost directly: its ``load_image`` answers from pictures decoded beforehand. In the other rows without
   the cache, the time a plain loop
   takes to decode the same references into one batch (``load_image``, then freeing the pixels) is
   subtracted too, so
   what remains is the core's own cost: validation, cache keys, grouping, calibration, sorting, results. "fresh" rows hand the cache new string/bytes objects each call (as a
   server parsing JSON does), so the one hash of each reference is counted;
3. **loading**: ``load_image`` of the same photo from each form, in interleaved rounds, as a ratio to raw
   bytes.

    python benchmarks/core_overhead.py [--repeats 5] [--quick] [--out benchmarks/results/core_overhead.json]

Targets: core overhead under 20 us per candidate (issue 2, and with photos, cache on or off, issue 15);
a base64 or data-URI photo loads within 1.2x the time of the same photo as raw bytes (issue 15).
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import mm_rerank_components.media.refs as media_refs
import mm_rerank_components.reranker as reranker_module
from mm_rerank_components import Candidate, MultimodalReranker, Query
from mm_rerank_components.media import load_image
from mm_rerank_components.scorers import FakeScorer

TARGET_US = 20.0
#: CPU time of this thread, not wall time: on a shared machine, time other processes take while this one
#: waits is not the core's cost (the table and JSON say which clock was used)
CLOCK = "thread_time"


def _clock() -> float:
    return time.thread_time() if CLOCK == "thread_time" else time.perf_counter()


TARGET_LOAD_RATIO = 1.2
PHOTO_SIZE = (640, 480)


class TimedScorer:
    """Wraps a scorer and accumulates the seconds spent inside ``score``."""

    def __init__(self, inner: FakeScorer) -> None:
        self.inner = inner
        self.name = inner.name
        self.outputs_probabilities = inner.outputs_probabilities
        self.modalities = inner.modalities
        self.seconds = 0.0

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        start = _clock()
        try:
            return self.inner.score(query, candidates)
        finally:
            self.seconds += _clock() - start


# -- 1. small in-memory pictures ---------------------------------------------------------------------------


def make_candidates(n: int, mix: str) -> list[Candidate]:
    images = [Image.new("RGB", (32, 32), (i * 40 % 256, 90, 160)) for i in range(8)]
    out = []
    for i in range(n):
        text = f"passage {i} about foxes, owls and {i % 17} other animals"
        if mix == "text" or i % 2 == 0:
            out.append(Candidate(f"t{i}", text=text, source="text"))
        elif i % 4 == 1:
            out.append(Candidate(f"i{i}", image=images[i % 8], source="image"))
        else:
            out.append(Candidate(f"ti{i}", text="a caption", image=images[i % 8], source="image"))
    return out


def run_once(
    candidates: list[Candidate], cache: bool, top_n: int, fresh: Callable[[], list[Candidate]] | None = None
) -> tuple[float, float]:
    """(total seconds, core seconds) of one timed rerank; with ``cache`` a first call warms the cache.

    The core's seconds are the rerank's minus the scorer's, minus (when images were decoded) the time a
    plain loop takes to decode the same references and free the pixels, measured right after.
    """
    scorer = TimedScorer(FakeScorer())
    reranker = MultimodalReranker(scorer, cache=cache)
    if cache:
        reranker.rerank(Query("foxes and owls"), candidates)  # the timed run hits the cache
        scorer.seconds = 0.0
    if fresh is not None:
        candidates = fresh()
    start = _clock()
    ranked = reranker.rerank(Query("foxes and owls"), candidates, top_n=top_n)
    del ranked[top_n:]
    total = _clock() - start
    assert len(ranked) == min(top_n, len(candidates)) and all(r.error is None for r in ranked)
    decoding = 0.0 if cache else decode_loop([c.image for c in candidates if c.image is not None])
    return total, total - scorer.seconds - decoding


def run_predecoded(candidates: list[Candidate], top_n: int) -> tuple[float, float]:
    """Like :func:`run_once` without the cache, with the core's ``load_image`` answering from pictures
    decoded beforehand: the core's own cost, measured directly rather than as a difference."""
    decoded = {id(c.image): load_image(c.image) for c in candidates}
    original = reranker_module.load_image

    def lookup(ref: object, options: Any = None, *, longest_side: int | None = None) -> Image.Image:
        return decoded[id(ref)]

    reranker_module.load_image = lookup
    try:
        scorer = TimedScorer(FakeScorer())
        reranker = MultimodalReranker(scorer)
        start = _clock()
        ranked = reranker.rerank(Query("foxes and owls"), candidates, top_n=top_n)
        total = _clock() - start
    finally:
        reranker_module.load_image = original
    assert len(ranked) == min(top_n, len(candidates))
    return total, total - scorer.seconds


def decode_loop(refs: list[Any]) -> float:
    """Seconds to decode ``refs`` into one batch of pictures and free them: decoding without the core.

    The pictures stay alive together as in a rerank (a scorer reads its whole batch), so fresh memory
    (page faults) is paid here as there.
    """
    start = _clock()
    images = [load_image(ref) for ref in refs]
    images.clear()
    return _clock() - start


def row(label: dict[str, Any], n: int, runs: list[tuple[float, float]]) -> dict[str, Any]:
    total = statistics.median(t for t, _ in runs)
    cores = sorted(c for _, c in runs)
    core = statistics.median(cores)
    # half the interquartile range: how far apart repeated measurements of the same row land
    quartiles = statistics.quantiles(cores, n=4) if len(cores) >= 2 else [core, core, core]
    spread = (quartiles[2] - quartiles[0]) / 2
    return {
        **label,
        "candidates": n,
        "total_ms": round(total * 1e3, 3),
        "core_ms": round(core * 1e3, 3),
        "core_us_per_candidate": round(core / n * 1e6, 3),
        "spread_us_per_candidate": round(spread / n * 1e6, 3),
        "meets_target": core / n * 1e6 < TARGET_US,
    }


def small_rows(sizes: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for mix in ("text", "mixed"):
        for cache in (False, True):
            for n in sizes:
                candidates = make_candidates(n, mix)
                runs = [run_once(candidates, cache, 10) for _ in range(repeats)]
                rows.append(row({"mix": mix, "cache": cache}, n, runs))
    return rows


# -- 2. and 3. photo-sized pictures --------------------------------------------------------------------------


def photo(seed: int) -> bytes:
    """A photo-like 640x480 PNG: smooth gradients, shapes and sensor-like noise (not a flat test card)."""
    rng = np.random.default_rng(seed)
    h, w = PHOTO_SIZE[1], PHOTO_SIZE[0]
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack(
        [
            128 + 90 * np.sin(x / (40 + seed) + y / 70),
            128 + 80 * np.cos(y / (35 + seed)),
            110 + 60 * np.sin((x + y) / 90),
        ],
        axis=-1,
    )
    noisy = base + rng.normal(0, 6, base.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def photo_refs(folder: Path, count: int) -> dict[str, list[Any]]:
    encoded = [photo(i) for i in range(count)]
    paths = []
    for i, data in enumerate(encoded):
        path = folder / f"photo{i}.png"
        path.write_bytes(data)
        paths.append(str(path))
    b64 = [base64.b64encode(d).decode() for d in encoded]
    return {
        "path": paths,
        "bytes": encoded,
        "base64": b64,
        "data URI": ["data:image/png;base64," + s for s in b64],
    }


def copy_ref(ref: Any) -> Any:
    """The same reference as a new object, with no cached hash (what a server gets from each request)."""
    if isinstance(ref, bytes):
        return bytes(bytearray(ref))
    return "".join([ref[:1], ref[1:]]) if isinstance(ref, str) else ref


def photo_rows(refs: dict[str, list[Any]], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for form, items in refs.items():

        def build(items: list[Any] = items, copy: bool = False) -> list[Candidate]:
            return [
                Candidate(f"p{i}", image=copy_ref(ref) if copy else ref, text=f"photo {i}")
                for i, ref in enumerate(items)
            ]

        candidates = build()
        n = len(candidates)
        variants: list[tuple[str, bool, Callable[[], list[Candidate]] | None]] = [
            ("off", False, None),
            ("on", True, None),
        ]
        if form != "path":
            variants.append(("on, fresh refs", True, functools.partial(build, copy=True)))
        for label, cache, fresh in variants:
            # without the cache the core's cost is a small difference of two large times: more rounds
            runs = [run_once(candidates, cache, n, fresh) for _ in range(repeats if cache else 3 * repeats)]
            rows.append(row({"form": form, "cache": label}, n, runs))
        runs = [run_predecoded(candidates, n) for _ in range(repeats)]
        rows.append(row({"form": form, "cache": "off, pre-decoded"}, n, runs))
    return rows


def load_rows(refs: dict[str, list[Any]], rounds: int) -> list[dict[str, Any]]:
    """Median seconds of ``load_image`` per photo for each form, in interleaved rounds."""
    times: dict[str, list[float]] = {form: [] for form in refs}
    for _ in range(rounds):
        for form, items in refs.items():
            start = _clock()
            for ref in items:
                load_image(ref)
            times[form].append((_clock() - start) / len(items))
    baseline = statistics.median(times["bytes"])
    out = []
    for form, values in times.items():
        median = statistics.median(values)
        ratio = median / baseline
        out.append(
            {
                "form": form,
                "ms_per_photo": round(median * 1e3, 3),
                "ratio_to_bytes": round(ratio, 3),
                "meets_target": form in ("path", "bytes") or ratio <= TARGET_LOAD_RATIO,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--photos", type=int, default=16, help="photos per rerank call")
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 candidates only")
    parser.add_argument(
        "--wall", action="store_true", help="time with the wall clock instead of this thread's CPU time"
    )
    parser.add_argument(
        "--stdlib-base64", action="store_true", help="decode base64 with the standard library, not pybase64"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/core_overhead.json"))
    args = parser.parse_args()
    global CLOCK
    CLOCK = "perf_counter" if args.wall else "thread_time"
    if args.stdlib_base64:
        media_refs._PYBASE64 = None
    decoder = "pybase64" if media_refs._fast_base64() is not None else "standard library (binascii)"
    sizes = (100, 1_000) if args.quick else (100, 1_000, 10_000)
    small = small_rows(sizes, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        refs = photo_refs(Path(tmp), args.photos)
        photo_size = len(refs["bytes"][0])
        loads = load_rows(refs, max(3, args.repeats))
        photos = photo_rows(refs, args.repeats)

    print(f"1. core overhead, 32x32 in-memory pictures (target < {TARGET_US:g} us per candidate)")
    print(
        f"{'candidates':>10} {'mix':>6} {'cache':>6} {'total ms':>10} {'core ms':>10} {'core us/cand':>13} {'ok':>4}"
    )
    for r in small:
        print(
            f"{r['candidates']:>10} {r['mix']:>6} {r['cache']!s:>6} {r['total_ms']:>10} {r['core_ms']:>10} "
            f"{r['core_us_per_candidate']:>13} {'yes' if r['meets_target'] else 'NO':>4}"
        )
    print(
        f"\n2. core overhead beyond decoding, {args.photos} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} "
        f"(PNG, {photo_size / 1024:.0f} KB) per call"
    )
    print(
        f"{'form':>10} {'cache':>17} {'total ms':>10} {'core ms':>10} {'core us/cand':>13} {'+-':>8} {'ok':>4}"
    )
    for r in photos:
        print(
            f"{r['form']:>10} {r['cache']:>17} {r['total_ms']:>10} {r['core_ms']:>10} "
            f"{r['core_us_per_candidate']:>13} {r['spread_us_per_candidate']:>8} "
            f"{'yes' if r['meets_target'] else 'NO':>4}"
        )
    print(
        "   (+-: half the interquartile range of repeated runs; rows 'off' are a small difference of two\n"
        "    large times, so 'off, pre-decoded' measures the same cost directly)"
    )
    print(
        f"\n3. load_image per photo, base64 by {decoder}, interleaved rounds "
        f"(target: base64 and data URI <= {TARGET_LOAD_RATIO}x bytes)"
    )
    print(f"{'form':>10} {'ms/photo':>10} {'x bytes':>8} {'ok':>4}")
    for r in loads:
        print(
            f"{r['form']:>10} {r['ms_per_photo']:>10} {r['ratio_to_bytes']:>8} {'yes' if r['meets_target'] else 'NO':>4}"
        )
    load_average = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"\nclock: {CLOCK}; load average: {load_average}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "target_us": TARGET_US,
                "target_load_ratio": TARGET_LOAD_RATIO,
                "python": platform.python_version(),
                "clock": CLOCK,
                "base64_decoder": decoder,
                "load_average": load_average,
                "photo": {"size": PHOTO_SIZE, "png_bytes": photo_size},
                "small": small,
                "photos": photos,
                "loading": loads,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
