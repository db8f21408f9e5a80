"""The retriever against a real Chroma server (`chroma run`) on loopback, through HttpClient."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("chromadb")

from PIL import Image

from mm_rerank_components import Query
from mm_rerank_components.ingest import ingest_folder
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

pytestmark = pytest.mark.slow


def _chroma_cli() -> str | None:
    beside = Path(sys.executable).parent / "chroma"
    return str(beside) if beside.exists() else shutil.which("chroma")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    cli = _chroma_cli()
    if cli is None:
        pytest.skip("the `chroma` command (shipped with chromadb) is not installed")
    data = tmp_path_factory.mktemp("chroma_server")
    port = _free_port()
    log = (data / "server.log").open("wb")
    proc = subprocess.Popen(
        [cli, "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"chroma run exited with {proc.returncode}: {(data / 'server.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("chroma run did not answer its heartbeat within 60 s")
            time.sleep(0.2)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


def test_ingest_and_retrieve_through_a_chroma_server(chroma_server: tuple[str, int], tmp_path: Path) -> None:
    host, port = chroma_server
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "fox.txt").write_text("Red fox\n\nThe red fox lives in dens.\n")
    (folder / "owl.txt").write_text("Owls hunt at night.")
    Image.new("RGB", (16, 16), (220, 20, 20)).save(folder / "red.png")
    Image.new("RGB", (16, 16), (20, 20, 220)).save(folder / "blue.png")
    (folder / "red.caption.txt").write_text("a red square")

    ef = HashingEmbeddingFunction()
    r = ChromaMultiCollectionRetriever(
        host=host, port=port, text_embedding_function=ef, image_embedding_function=ef
    )
    assert r.describe() == f"http://{host}:{port}"
    assert r.client._server._session.timeout.read == 60.0  # every request is bounded, not chromadb's None
    report = ingest_folder(folder, r)
    assert report.ok and report.added == 4
    again = ingest_folder(folder, r)
    assert (again.added, again.unchanged) == (0, 4)

    # a second retriever, as another process would connect
    other = ChromaMultiCollectionRetriever(
        host=host, port=port, text_embedding_function=ef, image_embedding_function=ef
    )
    assert other.count() == {"mm_text": 2, "mm_images": 2}
    candidates = other.retrieve("red fox", k_text=1, k_image=1)
    assert [(c.source, c.metadata["rel_path"]) for c in candidates] == [
        ("mm_text", "fox.txt"),
        ("mm_images", "red.png"),
    ]
    red = candidates[1]
    assert red.text == "a red square" and red.image == str((folder / "red.png").resolve())
    assert red.retrieval_score == pytest.approx(2**-0.5, abs=1e-5)  # "red fox" vs the word "red"
    image_hits = other.retrieve(Query(image=str(folder / "blue.png")), k_image=1)
    assert [c.metadata["rel_path"] for c in image_hits] == ["blue.png"]


def test_the_cli_talks_to_a_chroma_server(chroma_server: tuple[str, int], tmp_path: Path) -> None:
    from mm_rerank_components import cli

    host, port = chroma_server
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "whale.txt").write_text("Whales\n\nBlue whales are the largest animals.\n")
    args = ["--server", f"{host}:{port}", "--text-collection", "cli_text", "--image-collection", "cli_images"]
    assert cli.main(["ingest", str(folder), *args, "--embedder", "hashing", "--no-progress"]) == 0
    assert cli.main(["query", "whales", *args, "--embedder", "hashing", "--scorer", "fake"]) == 0
