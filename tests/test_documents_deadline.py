"""A time cap per document: a reader that runs too long (a hostile PDF) is stopped, the file fails alone with
an error naming it and the cap, and everything else in the folder is ingested."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pypdf")

from mm_rerank_components.ingest import scan_folder
from mm_rerank_components.ingest.documents import DocumentError, DocumentOptions, read_document
from mm_rerank_components.ingest.documents import pdf as pdf_module
from mm_rerank_components.ingest.documents.deadline import run_capped
from mm_rerank_components.ingest.documents.synthetic import SyntheticPage, make_pdf


def _spin(seconds: float) -> int:
    """Pure-Python work for ``seconds`` that swallows every Exception, like a reader keeping its pages."""
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        try:
            n += 1
        except Exception:  # noqa: BLE001 - the point: a broad handler must not stop the cap
            continue
    return n


def _hostile_reader(original: Any) -> Any:
    def read(data: bytes, options: DocumentOptions) -> Any:
        if b"HOSTILE" in data:
            _spin(30)
            raise AssertionError("the cap did not stop the reader")
        return original(data, options)

    return read


def test_a_pdf_over_the_time_cap_fails_alone_naming_the_file_and_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pdf_module, "read_pdf", _hostile_reader(pdf_module.read_pdf))
    root = tmp_path / "docs"
    root.mkdir()
    (root / "hostile.pdf").write_bytes(make_pdf([SyntheticPage(["HOSTILE"])]) + b"%HOSTILE")
    (root / "good.pdf").write_bytes(make_pdf([SyntheticPage(["Foxes live in dens."])]))
    (root / "notes.txt").write_text("Owls hunt at night.")
    options = DocumentOptions(figures_dir=tmp_path / "figures", max_seconds=0.5)
    start = time.monotonic()
    scan = scan_folder(root, documents=options)
    assert time.monotonic() - start < 10
    assert [(Path(f.path).name, f.reason) for f in scan.failed] == [
        (
            "hostile.pdf",
            "reading hostile.pdf took longer than max_seconds=0.5 and was stopped (a hostile or pathological "
            "file); raise DocumentOptions(max_seconds=...) (mm-rerank ingest --document-timeout) "
            "for a large genuine document",
        )
    ]
    assert sorted(t.text for t in scan.texts) == ["Foxes live in dens.", "Owls hunt at night."]


def test_the_cap_works_in_any_thread_and_never_fires_after_the_reader_returned() -> None:
    def capped() -> str:
        with pytest.raises(DocumentError, match=r"reading slow\.pdf took longer than max_seconds=0\.3"):
            run_capped(lambda: _spin(30), 0.3, "slow.pdf")
        assert run_capped(lambda: "done", 0.3, "quick.pdf") == "done"
        _spin(1.0)  # past the quick file's cap: nothing is raised here
        return threading.current_thread().name

    with ThreadPoolExecutor(1, thread_name_prefix="ingest-worker") as pool:
        assert pool.submit(capped).result(timeout=20).startswith("ingest-worker")
    assert capped() == "MainThread"


def test_a_reader_that_swallows_the_first_stop_is_stopped_again() -> None:
    def stubborn() -> None:
        for _ in range(3):
            try:
                _spin(30)
            except BaseException:  # noqa: BLE001 - a bare except in a third-party reader
                continue

    start = time.monotonic()
    with pytest.raises(DocumentError, match="max_seconds=0.2"):
        run_capped(stubborn, 0.2, "stubborn.pdf")
    assert time.monotonic() - start < 10


def test_max_seconds_is_checked_and_none_means_no_cap(tmp_path: Path) -> None:
    for bad in (0, -1.0, float("nan"), "10", True):
        with pytest.raises(ValueError, match=r"DocumentOptions.max_seconds must be a number > 0 or None"):
            DocumentOptions(max_seconds=bad)  # type: ignore[arg-type]
    options = DocumentOptions(figures_dir=tmp_path / "figures", max_seconds=None)
    out = read_document("a.pdf", make_pdf([SyntheticPage(["Hello"])]), options)
    assert out.passages[0].text == "Hello"
    assert DocumentOptions().max_seconds == 300.0
