"""Folder ingest: file types, captions, content ids and idempotency, and errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest

pytest.importorskip("chromadb")

from PIL import Image

from mm_rerank_components.ingest import IngestError, ingest_folder, scan_folder
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction


def _retriever(db: Path, ef: Any = None) -> ChromaMultiCollectionRetriever:
    ef = ef or HashingEmbeddingFunction()
    return ChromaMultiCollectionRetriever(path=db, text_embedding_function=ef, image_embedding_function=ef)


def _all(r: ChromaMultiCollectionRetriever, kind: Literal["text", "image"]) -> dict[str, Any]:
    got = r.store.collection(kind, create=False).get(include=["documents", "metadatas", "uris"])
    return {
        m["rel_path"]: {"id": i, "document": d, "metadata": m, "uri": (got["uris"] or [None] * 99)[n]}
        for n, (i, d, m) in enumerate(zip(got["ids"], got["documents"], got["metadatas"], strict=True))
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "animals").mkdir(parents=True)
    (root / "fox.txt").write_text("Red fox\n\nThe red fox lives in dens at the edge of forests.\n")
    (root / "animals" / "owl.md").write_text("# Owls\n\nOwls hunt at night.\n")
    (root / "plain.txt").write_text("No title line here, just a sentence about whales.")
    colours = {"red.png": (220, 20, 20), "blue.jpg": (20, 20, 220), "green.webp": (20, 200, 20)}
    colours.update(
        {"white.gif": (245, 245, 245), "animals/black.bmp": (5, 5, 5), "grey.JPEG": (128, 128, 128)}
    )
    for name, colour in colours.items():
        Image.new("RGB", (32, 24), colour).save(root / name)
    (root / "metadata.jsonl").write_text(
        json.dumps({"file_name": "red.png", "caption": "A red square", "title": "Red", "artist": "Ana"})
        + "\n"
        + json.dumps({"file_name": "blue.jpg", "caption": "ignored: the sidecar wins", "tags": ["a", "b"]})
        + "\n"
    )
    (root / "blue.caption.txt").write_text("A blue rectangle\n")
    (root / "animals" / "metadata.jsonl").write_text(json.dumps({"file_name": "black.bmp", "text": "Night"}))
    return root


def test_ingest_reads_every_supported_type_with_captions_and_metadata(folder: Path, tmp_path: Path) -> None:
    r = _retriever(tmp_path / "db")
    report = ingest_folder(folder, r)
    assert report.ok and report.skipped == []
    assert (report.texts, report.images, report.added, report.unchanged) == (3, 6, 9, 0)
    texts, images = _all(r, "text"), _all(r, "image")
    assert set(texts) == {"fox.txt", "animals/owl.md", "plain.txt"}
    assert set(images) == {"red.png", "blue.jpg", "green.webp", "white.gif", "animals/black.bmp", "grey.JPEG"}
    assert texts["fox.txt"]["metadata"]["title"] == "Red fox"
    assert texts["fox.txt"]["document"].startswith("Red fox\n\nThe red fox")
    assert texts["animals/owl.md"]["metadata"]["title"] == "Owls"
    assert texts["plain.txt"]["metadata"]["title"] == "plain"
    red = images["red.png"]
    assert red["document"] == "A red square" and red["uri"] == str((folder / "red.png").resolve())
    assert red["metadata"]["title"] == "Red" and red["metadata"]["artist"] == "Ana"
    assert red["metadata"]["caption"] == "A red square" and red["metadata"]["width"] == 32
    assert images["blue.jpg"]["document"] == "A blue rectangle"  # sidecar beats metadata.jsonl
    assert json.loads(images["blue.jpg"]["metadata"]["tags"]) == ["a", "b"]  # lists stored as JSON
    assert images["animals/black.bmp"]["document"] == "Night"  # nested metadata.jsonl, "text" column
    assert images["green.webp"]["document"] == "" and "caption" not in images["green.webp"]["metadata"]
    assert all(i["id"].startswith("image-") for i in images.values())
    assert all(i["metadata"]["preview"].startswith("data:image/jpeg;base64,") for i in images.values())
    assert "preview" not in texts["fox.txt"]["metadata"]
    # and the records are searchable, routed to the right collection
    hits = r.retrieve("red fox", k_text=1, k_image=1)
    assert [(c.id, c.source) for c in hits] == [(texts["fox.txt"]["id"], "mm_text"), (red["id"], "mm_images")]


def test_reingest_is_idempotent(folder: Path, tmp_path: Path) -> None:
    ef = HashingEmbeddingFunction()
    r = _retriever(tmp_path / "db", ef)
    ingest_folder(folder, r)
    calls = ef.calls
    again = ingest_folder(folder, _retriever(tmp_path / "db", ef))
    assert (again.added, again.updated, again.unchanged) == (0, 0, 9)
    assert ef.calls == calls  # nothing was embedded again
    assert r.count() == {"mm_text": 3, "mm_images": 6}


def test_changed_files_replace_their_old_records(folder: Path, tmp_path: Path) -> None:
    r = _retriever(tmp_path / "db")
    ingest_folder(folder, r)
    old_id = _all(r, "text")["fox.txt"]["id"]
    (folder / "fox.txt").write_text("Arctic fox\n\nThe arctic fox is white in winter.\n")
    (folder / "blue.caption.txt").write_text("A navy rectangle")
    report = ingest_folder(folder, r)
    assert (report.added, report.updated, report.unchanged) == (0, 2, 7)
    texts, images = _all(r, "text"), _all(r, "image")
    assert r.count() == {"mm_text": 3, "mm_images": 6}
    assert texts["fox.txt"]["id"] != old_id and texts["fox.txt"]["metadata"]["title"] == "Arctic fox"
    assert images["blue.jpg"]["document"] == "A navy rectangle"


def test_identical_files_at_two_paths_are_both_kept(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for sub in ("a", "b"):
        (root / sub / "same.txt").write_text("the very same words")
        Image.new("RGB", (8, 8), (1, 2, 3)).save(root / sub / "same.png")
    r = _retriever(tmp_path / "db")
    report = ingest_folder(root, r)
    assert report.added == 4 and r.count() == {"mm_text": 2, "mm_images": 2}


def test_errors_name_each_file_and_the_rest_is_ingested(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "good.txt").write_text("fine words")
    Image.new("RGB", (8, 8)).save(root / "good.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "empty.md").write_text("   \n")
    (root / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (root / "orphan.caption.txt").write_text("a caption for nothing")
    (root / "metadata.jsonl").write_text(
        '{"file_name": "good.png", "caption": "ok"}\nnot json\n{"file_name": "gone.png"}\n'
    )
    (root / "report.pdf").write_bytes(b"%PDF-1.4")
    (root / ".DS_Store").write_bytes(b"\0")
    r = _retriever(tmp_path / "db")
    report = ingest_folder(root, r)
    failed = {Path(f.path.split(":")[0]).name: f.reason for f in report.failed}
    assert set(failed) == {
        "corrupt.png",
        "latin1.txt",
        "empty.md",
        "dangling.jpg",
        "orphan.caption.txt",
        "metadata.jsonl",
        "report.pdf",
    }
    assert "not UTF-8" in failed["latin1.txt"] and "empty" in failed["empty.md"]
    assert "cannot read" in failed["dangling.jpg"] and "no picture" in failed["orphan.caption.txt"]
    assert "corrupt" in failed["corrupt.png"] or "cannot decode" in failed["corrupt.png"]
    meta_errors = sorted(
        f.path.rsplit(":", 1)[1] + " " + f.reason for f in report.failed if "metadata" in f.path
    )
    assert meta_errors[0].startswith("2 invalid JSON") and "'gone.png' names no file" in meta_errors[1]
    assert failed["report.pdf"].startswith("malformed PDF")  # a PDF is read now (tests/test_documents_pdf.py)
    assert {Path(s.path).name: s.reason for s in report.skipped} == {".DS_Store": "hidden file"}
    assert not report.ok and (report.added, r.count()) == (2, {"mm_text": 1, "mm_images": 1})
    assert "8 failed, 1 skipped" in report.summary()


def test_on_error_raise_stops_at_the_first_bad_file(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "bad.png").write_bytes(b"nope")
    with pytest.raises(IngestError, match=r"bad\.png.*cannot decode"):
        ingest_folder(root, _retriever(tmp_path / "db"), on_error="raise")
    (root / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(IngestError, match=r"bad\.txt: not UTF-8"):
        ingest_folder(root, _retriever(tmp_path / "db"), on_error="raise")


def test_an_embedding_failure_is_pinned_to_its_file(tmp_path: Path) -> None:
    class Picky(HashingEmbeddingFunction):
        def __call__(self, input: Any) -> list[list[float]]:
            if any(getattr(x, "shape", (0,))[0] == 13 for x in input):
                raise RuntimeError("cannot embed a 13-pixel-high picture")
            return super().__call__(input)

    root = tmp_path / "d"
    root.mkdir()
    Image.new("RGB", (8, 13)).save(root / "odd.png")
    Image.new("RGB", (8, 8)).save(root / "fine.png")
    report = ingest_folder(root, _retriever(tmp_path / "db", Picky()))
    assert [(Path(f.path).name, f.reason) for f in report.failed] == [
        ("odd.png", "embedding failed: cannot embed a 13-pixel-high picture")
    ]
    assert report.added == 1


def test_long_passages_are_chunked_at_blank_lines(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    paragraphs = [f"Paragraph {i}. " + "word " * 60 for i in range(6)]
    (root / "long.txt").write_text("Long text\n\n" + "\n\n".join(paragraphs))
    scan = scan_folder(root, max_chars=800)
    assert len(scan.texts) > 1 and all(len(t.text) <= 800 for t in scan.texts)
    assert [t.metadata["chunk"] for t in scan.texts] == list(range(len(scan.texts)))
    assert all(t.metadata["title"] == "Long text" for t in scan.texts)
    assert "Paragraph 5." in scan.texts[-1].text and len({t.id for t in scan.texts}) == len(scan.texts)


def test_progress_counts_every_record(folder: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    ingest_folder(folder, _retriever(tmp_path / "db"), batch_size=2, progress=seen.append)
    assert sum(seen) == 9 and max(seen) <= 2
    seen.clear()
    ingest_folder(folder, _retriever(tmp_path / "db"), progress=seen.append)
    assert sum(seen) == 9


def test_bad_folder_arguments(tmp_path: Path) -> None:
    r = _retriever(tmp_path / "db")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        ingest_folder(tmp_path / "nope", r)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        ingest_folder(tmp_path / "f.txt", r)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ingest_folder(tmp_path, r, batch_size=0)


def test_non_recursive_scan_reports_subfolders(folder: Path) -> None:
    scan = scan_folder(folder, recursive=False)
    assert {Path(str(t.path)).name for t in scan.texts} == {"fox.txt", "plain.txt"}
    assert [(Path(s.path).name, s.reason) for s in scan.skipped] == [
        ("animals", "sub-folder (recursive=False)")
    ]


def test_previews_can_be_switched_off(folder: Path, tmp_path: Path) -> None:
    r = _retriever(tmp_path / "db")
    ingest_folder(folder, r, preview_size=None)
    assert all("preview" not in i["metadata"] for i in _all(r, "image").values())
    with pytest.raises(ValueError, match="preview_size must be an int >= 32 or None"):
        ingest_folder(folder, r, preview_size=0)


def test_sidecar_caption_matches_any_extension_case(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(root / "Photo.Jpg", format="JPEG")
    (root / "Photo.caption.txt").write_text("a mixed-case file name")
    scan = scan_folder(root)
    assert scan.failed == [] and [i.caption for i in scan.images] == ["a mixed-case file name"]


# -- hostile files: nothing hangs, nothing fills memory, the rest is ingested ------------------------------


def _bounded(fn: Any, seconds: float = 20.0) -> Any:
    """Run ``fn`` in a thread and fail (instead of hanging the suite) if it does not finish in time."""
    import threading

    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread below
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (a FIFO or device was read?)"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_fifos_and_devices_fail_alone_and_never_hang(tmp_path: Path) -> None:
    import os

    root = tmp_path / "d"
    root.mkdir()
    (root / "good.txt").write_text("fine words")
    Image.new("RGB", (8, 8), (200, 0, 0)).save(root / "good.png")
    os.mkfifo(root / "pipe.txt")
    os.mkfifo(root / "pipe.jpg")
    (root / "zero.txt").symlink_to("/dev/zero")
    (root / "zero.jpg").symlink_to("/dev/zero")
    r = _retriever(tmp_path / "db")
    report = _bounded(lambda: ingest_folder(root, r, follow_symlinks=True, max_bytes=1000))
    failed = {Path(f.path).name: f.reason for f in report.failed}
    assert set(failed) == {"pipe.txt", "pipe.jpg", "zero.txt", "zero.jpg"}
    assert "FIFO" in failed["pipe.txt"] and "not a regular file" in failed["pipe.jpg"]
    assert "character device" in failed["zero.txt"] and "character device" in failed["zero.jpg"]
    assert report.added == 2 and r.count() == {"mm_text": 1, "mm_images": 1}
    # add_images refuses them too, and still adds the good picture
    added = _bounded(
        lambda: r.add_images(
            [root / "pipe.jpg", "/dev/zero", "nul\x00.png", root / "good.png"], ids=["a", "b", "n", "c"]
        )
    )
    assert sorted(Path(f.path).name for f in added.failed) == ["nul\x00.png", "pipe.jpg", "zero"]
    assert added.written == 1  # written as "c" (replacing the folder's record of that file)


def test_files_over_max_bytes_are_refused_before_reading(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "big.txt").write_text("word " * 400)
    (root / "small.txt").write_text("word")
    report = ingest_folder(root, _retriever(tmp_path / "db"), max_bytes=100)
    assert [(Path(f.path).name, "over the limit of 100" in f.reason) for f in report.failed] == [
        ("big.txt", True)
    ]
    assert report.added == 1


def test_links_leaving_the_folder_are_skipped_unless_followed(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash")
    root = tmp_path / "d"
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("my notes")
    (root / "passwd.txt").symlink_to(secret)
    (root / "sub" / "again.txt").symlink_to(root / "notes.txt")  # inside: read at its target
    (root / "outside_dir").symlink_to(secret.parent, target_is_directory=True)
    (root / "loop.txt").symlink_to(root / "loop.txt")
    r = _retriever(tmp_path / "db")
    report = ingest_folder(root, r)
    skipped = {Path(s.path).name: s.reason for s in report.skipped}
    assert "outside the folder" in skipped["passwd.txt"] and "follow_symlinks=True" in skipped["passwd.txt"]
    assert "outside the folder" in skipped["outside_dir"] and "inside the folder" in skipped["again.txt"]
    assert [(Path(f.path).name, f.reason) for f in report.failed] == [
        ("loop.txt", "cannot read: symbolic link loop")
    ]
    assert report.added == 1 and "root:x" not in str([c.text for c in r.retrieve("root", k_image=0)])
    followed = ingest_folder(root, _retriever(tmp_path / "db2"), follow_symlinks=True)
    assert followed.added == 2  # notes.txt and passwd.txt
    assert {Path(s.path).name: s.reason for s in followed.skipped}[
        "passwd"
    ] == "unsupported file type '(none)'"


def test_a_bad_metadata_row_fails_alone(tmp_path: Path) -> None:
    import json

    root = tmp_path / "d"
    root.mkdir()
    Image.new("RGB", (8, 8), (0, 0, 200)).save(root / "blue.png")
    (root / "loop.png").symlink_to(root / "loop.png")
    rows = [
        {"file_name": "bad\u0000name.png", "caption": "nul"},
        {"file_name": "loop.png", "caption": "a loop"},
        {"file_name": "blue.png", "caption": "a blue square"},
    ]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    r = _retriever(tmp_path / "db")
    report = ingest_folder(root, r)
    failed = sorted(f"{Path(f.path).name} {f.reason}" for f in report.failed)
    assert failed[0].startswith("loop.png cannot read: symbolic link loop")
    assert "metadata.jsonl:1 file_name 'bad\\x00name.png' holds a NUL byte" in failed[1]
    assert "metadata.jsonl:2 file_name 'loop.png' names no file" in failed[2]
    assert report.added == 1 and [c.text for c in r.retrieve("blue", k_text=0)] == ["a blue square"]


def test_big_jpegs_are_decoded_at_a_reduced_scale_with_the_same_result_size(tmp_path: Path) -> None:
    from mm_rerank_components.ingest.pictures import decode_picture
    from mm_rerank_components.ingest.records import ImageRecord
    from mm_rerank_components.media import ImageOptions

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (3000, 2000), (30, 160, 40)).save(path, quality=90)
    record = ImageRecord(id="p", path=str(path), caption=None, metadata={})
    from mm_rerank_components.ingest.pictures import DecodedPicture

    decoded = decode_picture(record, ImageOptions(), 384)
    assert isinstance(decoded, DecodedPicture)
    assert decoded.size == (3000, 2000) and decoded.image.size == (1024, 683)
    assert decoded.image.getpixel((500, 300)) == pytest.approx((30, 160, 40), abs=3)
    (tmp_path / "cut.jpg").write_bytes(path.read_bytes()[:5000])  # truncated: the usual error, named
    cut = decode_picture(ImageRecord("c", str(tmp_path / "cut.jpg"), None, {}), ImageOptions(), None)
    assert "truncated or corrupt" in getattr(cut, "reason", "")


def test_one_size_limit_for_scanning_and_decoding(tmp_path: Path) -> None:
    from mm_rerank_components.media import ImageOptions

    root = tmp_path / "d"
    root.mkdir()
    Image.effect_noise((64, 64), 60).convert("RGB").save(root / "noisy.png")
    size = (root / "noisy.png").stat().st_size
    ef = HashingEmbeddingFunction()
    r = ChromaMultiCollectionRetriever(
        path=tmp_path / "db",
        text_embedding_function=ef,
        image_embedding_function=ef,
        image_options=ImageOptions(max_bytes=size // 2),
    )
    assert ingest_folder(root, r, max_bytes=size * 2).added == 1  # the caller's limit, not the retriever's
    refused = ingest_folder(root, _retriever(tmp_path / "db2"), max_bytes=size - 1)
    assert [f"over the limit of {size - 1}" in f.reason for f in refused.failed] == [True]


def test_a_stale_record_left_by_an_interrupted_run_is_removed_next_time(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "fox.txt").write_text("Foxes live in dens.")
    r = _retriever(tmp_path / "db")
    ingest_folder(root, r)
    # as if a run was killed after writing a new version and before deleting the old one
    path = str((root / "fox.txt").resolve())
    r.store.upsert(
        "text",
        ids=["text-old"],
        embeddings=[[1.0] + [0.0] * 63],
        documents=["old"],
        metadatas=[{"path": path}],
    )
    assert r.count()["mm_text"] == 2
    again = ingest_folder(root, r)
    assert (again.added, again.unchanged) == (0, 1) and r.count()["mm_text"] == 1
    assert [c.text for c in r.retrieve("foxes", k_image=0)] == ["Foxes live in dens."]
