"""Same candidates, same answer on every face: the core, ``mm-rerank query --json``, the retriever's
LlamaIndex and LangChain faces with both adapters, and ``mm-rerank serve`` (rerank with signals, search).

The fast tests pin the HTTP signals and the search route with model-free scorers; the slow ones run the
real starter models on a small real corpus (photos that ship in matplotlib and scikit-learn) with the
product default, ``default_reranker()``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("chromadb")

from _live_server import LiveServer
from fastapi.testclient import TestClient
from PIL import Image

from mm_rerank_components import Candidate, MultimodalReranker, Query
from mm_rerank_components.media import image_key, text_key
from mm_rerank_components.reranker import reusable_signals
from mm_rerank_components.scorers import FakeScorer
from mm_rerank_components.scorers.base import BaseScorer
from mm_rerank_components.serving import RerankEngine, ServeConfig, create_app
from mm_rerank_components.serving.protocol import (
    Limits,
    RequestError,
    decode_images,
    parse_request,
)
from mm_rerank_components.serving.search import SearchService, add_search_routes, search

logger = logging.getLogger(__name__)


def _png(color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


RED = _png((220, 20, 20))


class _ReusingScorer(BaseScorer):
    """Scores from a stored signal when it gets one (as the starter scorer does), else 0.5."""

    name = "reusing"
    outputs_probabilities = True
    reuses = frozenset({"text_embedding", "image_classes"})

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        out = []
        for c in candidates:
            text, image = c.precomputed.get("text_embedding"), c.precomputed.get("image_classes")
            if text is not None:
                out.append(float(text.value[0]))
            elif image is not None:
                out.append(float(str(image.value).split(",")[0].split(":")[1]))
            else:
                out.append(0.5)
        return out


def _signals_body() -> dict[str, Any]:
    text = "the red fox in the snow"
    return {
        "query": "red fox",
        "documents": [
            {
                "text": text,
                "signals": {
                    "source": "mm_text",
                    "retrieval_score": 0.61,
                    "retrieval_rank": 0,
                    "metadata": {"title": "Fox"},
                    "precomputed": {
                        "text_embedding": {
                            "kind": "text_embedding",
                            "producer": "p",
                            "content": text_key(text),
                            "value": [0.123456789012345678, 0.2],
                        }
                    },
                },
            },
            {
                "image": RED,
                "signals": {
                    "source": "mm_images",
                    "retrieval_score": 0.3,
                    "precomputed": {
                        "image_classes": {
                            "kind": "image_classes",
                            "producer": "p",
                            "content": image_key(RED),
                            "value": "207:0.25,3:0.1",
                        }
                    },
                },
            },
            "owls at night",  # the Jina/Cohere shapes stay valid beside ours
        ],
    }


# -- the signals shape -----------------------------------------------------------------------------------------


def test_documents_carry_their_signals_into_the_candidates() -> None:
    request = parse_request(_signals_body(), Limits())
    text, picture, plain = request.candidates
    assert (text.source, text.retrieval_score, dict(text.metadata)) == (
        "mm_text",
        0.61,
        {"title": "Fox", "retrieval_rank": 0},
    )
    assert text.precomputed["text_embedding"].value == (0.123456789012345678, 0.2)
    assert picture.source == "mm_images" and picture.retrieval_score == 0.3
    assert plain == Candidate("2", text="owls at night") and not plain.precomputed
    # once the picture is decoded, its signal is keyed to the decoded picture, which the core checks
    decoded = decode_images(request, Limits().image_options).candidates[1]
    assert isinstance(decoded.image, Image.Image)
    assert decoded.precomputed["image_classes"].content == image_key(decoded.image)
    assert set(reusable_signals(decoded, frozenset({"image_classes"}))) == {"image_classes"}


@pytest.mark.parametrize(
    ("signals", "message"),
    [
        ([1], r"documents\[0\]\.signals must be an object"),
        ({"route": "text"}, r"unknown field\(s\) \['route'\].*'source', 'retrieval_score'"),
        ({"retrieval_score": "high"}, r"retrieval_score must be a finite number.*'high'"),
        ({"retrieval_score": True}, r"retrieval_score must be a finite number"),
        ({"retrieval_rank": -1}, r"retrieval_rank must be the 0-based rank.*-1"),
        ({"source": ""}, r"source must be a route name"),
        ({"metadata": {"tags": ["a"]}}, r"metadata\['tags'\] must be a finite number"),
        ({"precomputed": {"x": {"kind": "text_embedding"}}}, r"signals\.precomputed\['x'\].*producer"),
        (
            {
                "precomputed": {
                    "t": {"kind": "text_embedding", "producer": "p", "content": "text:00", "value": [1]}
                }
            },
            r"computed from other content \('text:00'\).*key of the document's text \('text:",
        ),
        (
            {
                "precomputed": {
                    "t": {"kind": "text_embedding", "producer": "p", "content": "x", "value": {"a": 1}}
                }
            },
            r"value must be a list of at most 8192 numbers",
        ),
    ],
)
def test_bad_signals_are_named_with_the_fix(signals: Any, message: str) -> None:
    body = {"query": "fox", "documents": [{"text": "a fox", "signals": signals}]}
    with pytest.raises(RequestError, match=message) as caught:
        parse_request(body, Limits())
    assert caught.value.index == 0 and caught.value.kind == "invalid_signals" and caught.value.status == 400


def test_an_image_signal_must_match_the_image_string_sent() -> None:
    body = _signals_body()
    body["documents"][1]["image"] = _png((20, 20, 220))  # another picture than the one the signal names
    with pytest.raises(RequestError, match=r"documents\[1\].*image string exactly as sent") as caught:
        parse_request(body, Limits())
    assert caught.value.index == 1


def test_serve_scores_with_the_signals_like_the_core() -> None:
    engine = RerankEngine(ServeConfig(scorer="fake"), scorer=_ReusingScorer())
    try:
        client = TestClient(create_app(engine))
        response = client.post("/v1/rerank", json=_signals_body())
        assert response.status_code == 200, response.text
        served = [(r["index"], r["relevance_score"]) for r in response.json()["results"]]
        request = decode_images(parse_request(_signals_body(), Limits()), Limits().image_options)
        core = MultimodalReranker(_ReusingScorer()).rerank(request.query, request.candidates)
        assert (
            served == [(r.index, r.score) for r in core] == [(2, 0.5), (1, 0.25), (0, 0.123456789012345678)]
        )
        # the Cohere route reads the same shape; a bad signal is a 400 naming the document
        cohere = client.post("/v2/rerank", json=_signals_body()).json()["results"]
        assert [(r["index"], r["relevance_score"]) for r in cohere] == served
        bad = client.post("/v1/rerank", json={"query": "q", "documents": ["a", {"text": "b", "signals": 3}]})
        assert bad.status_code == 400 and bad.json()["error"]["index"] == 1
    finally:
        engine.close()


# -- the search route ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hashing_retriever(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever

    tmp = tmp_path_factory.mktemp("search")
    retriever = ChromaMultiCollectionRetriever(path=tmp / "db", embedder="hashing", candidate_image="preview")
    retriever.add_texts(
        ["The red fox lives in dens.", "Owls hunt at night.", "Whales sing."],
        ids=["fox", "owl", "whale"],
        metadatas=[{"title": "Fox"}, {"title": "Owl"}, {"title": "Whale"}],
    )
    Image.new("RGB", (16, 16), (220, 20, 20)).save(tmp / "red.png")
    retriever.add_images([tmp / "red.png"], ids=["img-red"], captions=["a red fox"])
    return retriever


def test_search_route_returns_the_rows_of_query_json(hashing_retriever: Any) -> None:
    engine = RerankEngine(ServeConfig(scorer="fake", api_key="k"))
    try:
        app = create_app(engine)
        add_search_routes(app, engine, SearchService(hashing_retriever))
        client = TestClient(app)
        auth = {"Authorization": "Bearer k"}
        response = client.post("/v1/search", json={"query": "red fox", "top_n": 3}, headers=auth)
        assert response.status_code == 200, response.text
        rows = response.json()["results"]
        reranker = MultimodalReranker(FakeScorer())
        assert rows == search(hashing_retriever, reranker, Query("red fox"), top_n=3)
        assert [r["rank"] for r in rows] == [1, 2, 3] and rows[0]["title"] in ("Fox", None)
        everything = client.post("/v1/search", json={"query": {"text": "owl"}, "top_n": 0}, headers=auth)
        assert len(everything.json()["results"]) == 4
        # a captioned picture in the answer that the reranker was not calibrated on: not one scale
        assert "text+image" in [r["modality"] for r in rows]
        assert response.json()["scores_calibrated"] is False
        top = client.post("/v1/search", json={"query": "red fox", "top_n": 1}, headers=auth).json()
        assert top["results"][0]["modality"] == "text" and top["scores_calibrated"] is True
        # a picture query's scores are an order (every shipped calibration was fitted on text queries)
        by_picture = client.post("/v1/search", json={"query": {"image": RED}, "top_n": 2}, headers=auth)
        assert by_picture.status_code == 200 and by_picture.json()["scores_calibrated"] is False
        for route in ("/v1/rerank", "/v2/rerank"):
            for query, calibrated in (("red fox", True), ({"image": RED}, False)):
                body = {"query": query, "documents": ["a red fox", {"image": RED}]}
                reply = client.post(route, json=body, headers=auth).json()
                # the Jina/vLLM shape says so; the Cohere shape stays Cohere's
                assert reply.get("scores_calibrated") == (calibrated if route == "/v1/rerank" else None)
        captioned = {"query": "red fox", "documents": ["a red fox", {"text": "a red fox", "image": RED}]}
        reply = client.post("/v1/rerank", json=captioned, headers=auth)
        assert reply.status_code == 200 and reply.json()["scores_calibrated"] is False, reply.text
        alone = client.post("/v1/rerank", json={**captioned, "top_n": 1}, headers=auth).json()
        assert alone["results"][0]["index"] == 0 and alone["scores_calibrated"] is True  # only the passage
        assert client.post("/v1/search", json={"query": "fox"}).status_code == 401
        for body, status, match in [
            ({"query": "fox", "k_text": -1}, 400, '"k_text" must be an integer from 0 to 1000'),
            ({"query": "fox", "limit": 3}, 400, r"unknown field\(s\) \['limit'\]"),
            ({"top_n": 3}, 400, 'has no "query"'),
            ({"query": {"image": "/srv/photos/secret.jpg"}}, 400, "file paths are not accepted"),
            ({"query": {"image": "/etc/passwd"}}, 400, "unreadable image"),  # read as base64, never opened
        ]:
            refused = client.post("/v1/search", json=body, headers=auth)
            assert refused.status_code == status and re.search(match, refused.json()["detail"]), refused.text
    finally:
        engine.close()


def test_route_signals_survive_the_http_translation(hashing_retriever: Any) -> None:
    """A retrieved candidate sent with document_with_signals comes back from the request parser with its
    route, retrieval score, rank, metadata and stored signals (still valid for its decoded picture)."""
    from mm_rerank_components.serving.protocol import document_with_signals

    candidates = hashing_retriever.retrieve(Query("red fox"))
    assert any(c.image is not None for c in candidates) and any(c.image is None for c in candidates)
    assert any(c.precomputed for c in candidates) and all("retrieval_rank" in c.metadata for c in candidates)
    request = decode_images(
        parse_request(
            {"query": "red fox", "documents": [document_with_signals(c) for c in candidates]}, Limits()
        ),
        Limits().image_options,
    )
    for sent, parsed in zip(candidates, request.candidates, strict=True):
        assert (parsed.source, parsed.retrieval_score) == (sent.source, sent.retrieval_score)
        assert parsed.metadata == {
            k: v for k, v in sent.metadata.items() if v is None or isinstance(v, (str, int, float))
        }
        assert parsed.text == sent.text and (parsed.image is None) == (sent.image is None)
        assert {k: (p.kind, p.producer, p.value) for k, p in parsed.precomputed.items()} == {
            k: (p.kind, p.producer, p.value) for k, p in sent.precomputed.items()
        }
        assert set(reusable_signals(parsed, frozenset(parsed.precomputed))) == set(parsed.precomputed)


def test_serve_cli_defaults_to_the_product_default_and_searches_its_db(
    hashing_retriever: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from mm_rerank_components.cli import _parser, main
    from mm_rerank_components.cli.serve import config_from_args, run, search_service

    assert config_from_args(_parser().parse_args(["serve"])).scorer == "default"
    assert config_from_args(_parser().parse_args(["serve", "--scorer", "fake"])).scorer == "fake"
    with pytest.raises(ValueError, match="is not a folder"):
        search_service(_parser().parse_args(["serve", "--db", "/nonexistent/db"]))
    with pytest.raises(ValueError, match="served without --ray"):
        run(_parser().parse_args(["serve", "--ray", "--db", "x"]))

    db = str(hashing_retriever.path)
    args = _parser().parse_args(["serve", "--scorer", "fake", "--db", db, "--embedder", "hashing"])
    engine = RerankEngine(config_from_args(args))
    try:
        app = create_app(engine)
        add_search_routes(app, engine, search_service(args))
        rows = TestClient(app).post("/v1/search", json={"query": "red fox", "top_n": 0}).json()["results"]
    finally:
        engine.close()
    argv = ["query", "red fox", "--db", db, "--embedder", "hashing", "--scorer", "fake", "--top-n", "0"]
    assert main([*argv, "--repeat", "0", "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert rows == printed and len(rows) == 4


# -- every face, real starter models, the product default --------------------------------------------------------

PASSAGES = {
    "cow.txt": "Cow\n\nThe cow goes 'moo'. Dairy cows give us milk, which is made into butter and cheese.",
    "eiffel.txt": "Eiffel Tower\n\nThe wrought-iron lattice tower on the Champ de Mars in Paris, France.",
    "volcano.txt": "Volcanoes\n\nA volcano erupts when molten rock, ash and gases escape from the Earth's crust.",
    "hopper.txt": "Grace Hopper\n\nA computer scientist and United States Navy rear admiral who wrote compilers.",
    "temple.txt": "Temples\n\nA Chinese temple with curved roofs, surrounded by trees.",
    "flowers.txt": "Flowers\n\nPetals attract bees, which carry pollen from one flower to the next.",
}
QUERIES = ("a flower with petals", "an admiral who wrote compilers", "a temple in China", "milk and cheese")


def _photos() -> list[Path]:
    matplotlib = pytest.importorskip("matplotlib")
    sklearn = pytest.importorskip("sklearn")
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    images = Path(sklearn.__file__).parent / "datasets" / "images"
    photos = [sample / "grace_hopper.jpg", sample / "Minduka_Present_Blue_Pack.png", sample / "logo2.png"]
    photos += [images / "china.jpg", images / "flower.jpg"]
    found = [p for p in photos if p.is_file()]
    if len(found) < 3:
        pytest.skip("the sample photos of matplotlib and scikit-learn are not installed")
    return found


@pytest.fixture(scope="module")
def starter_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Any]:
    """A real database (starter embedders, previews, stored signals) and the default reranker."""
    pytest.importorskip("mm_rerank_components.scorers.starter")
    from mm_rerank_components.defaults import default_reranker
    from mm_rerank_components.ingest import ingest_folder
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever
    from mm_rerank_components.scorers.starter import StarterScorer

    root = tmp_path_factory.mktemp("faces")
    folder = root / "data"
    folder.mkdir()
    for name, text in PASSAGES.items():
        (folder / name).write_text(text + "\n")
    for photo in _photos():
        shutil.copyfile(photo, folder / photo.name)
    retriever = ChromaMultiCollectionRetriever(path=root / "db", candidate_image="preview")
    assert ingest_folder(folder, retriever).ok
    return retriever, root / "db", default_reranker(StarterScorer())


def _assert_same(face: str, got: list[tuple[str, float]], core: list[tuple[str, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in core], f"{face}: another order than the core's"
    worst = max(abs(a - b) for (_, a), (_, b) in zip(got, core, strict=True))
    assert worst <= 1e-6, f"{face}: scores up to {worst:.2e} away from the core's"
    # the largest gap per face, for the report (pytest --log-cli-level=INFO shows it)
    logger.info("face %s: same ids and order, largest score difference %.3g", face, worst)


@pytest.mark.slow
def test_every_face_gives_the_core_answer(
    starter_corpus: tuple[Any, Path, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from mm_rerank_components.cli import main
    from mm_rerank_components.integrations.langchain import (
        MultimodalRerankCompressor,
        from_document,
        to_document,
    )
    from mm_rerank_components.integrations.langchain_retriever import ChromaLangChainRetriever
    from mm_rerank_components.integrations.llama_index import (
        MultimodalRerankPostprocessor,
        from_node,
        to_node,
    )
    from mm_rerank_components.integrations.llama_index_retriever import ChromaLlamaIndexRetriever

    retriever, db, reranker = starter_corpus
    postprocessor = MultimodalRerankPostprocessor(reranker=reranker)
    compressor = MultimodalRerankCompressor(reranker=reranker)
    pictures_seen = 0
    for text in QUERIES:
        candidates = retriever.retrieve(Query(text))
        ranked = reranker.rerank(Query(text), candidates)
        core = [(r.id, r.score) for r in ranked]
        assert len(core) == len(PASSAGES) + len(_photos())
        pictures_seen += sum(1 for r in ranked if r.candidate.image is not None and r.candidate.precomputed)

        nodes = ChromaLlamaIndexRetriever(retriever).retrieve(text)
        documents = ChromaLangChainRetriever(retriever=retriever).invoke(text)
        faces = {
            "LlamaIndex retriever + postprocessor": [
                (n.node.node_id, n.score) for n in postprocessor.postprocess_nodes(nodes, query_str=text)
            ],
            "LlamaIndex retriever + compressor": [
                (d.id, d.metadata["relevance_score"])
                for d in compressor.compress_documents([to_document(from_node(n)) for n in nodes], text)
            ],
            "LangChain retriever + compressor": [
                (d.id, d.metadata["relevance_score"]) for d in compressor.compress_documents(documents, text)
            ],
            "LangChain retriever + postprocessor": [
                (n.node.node_id, n.score)
                for n in postprocessor.postprocess_nodes(
                    [to_node(from_document(d, i)) for i, d in enumerate(documents)], query_str=text
                )
            ],
        }
        assert main(["query", text, "--db", str(db), "--top-n", "0", "--repeat", "0", "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
        faces["mm-rerank query --json"] = [(row["id"], row["score"]) for row in rows]
        for face, got in faces.items():
            _assert_same(f"{face} ({text!r})", got, core)
    assert pictures_seen > 0  # the pictures' stored classes were part of the comparison


def _served(url: str, text: str, candidates: Sequence[Candidate], route: str) -> list[tuple[str, float]]:
    """What a live server at ``url`` answers for ``candidates`` sent with their signals, by candidate id."""
    import httpx

    from mm_rerank_components.serving.protocol import document_with_signals

    documents = [document_with_signals(c) for c in candidates]
    response = httpx.post(url + route, json={"query": text, "documents": documents}, timeout=120)
    assert response.status_code == 200, response.text
    return [(candidates[r["index"]].id, r["relevance_score"]) for r in response.json()["results"]]


@pytest.mark.slow
def test_serve_gives_the_core_answer_with_signals_and_search(starter_corpus: tuple[Any, Path, Any]) -> None:
    import httpx

    retriever, _, reranker = starter_corpus
    engine = RerankEngine(ServeConfig())  # the product default, what mm-rerank serve runs with no flags
    app = create_app(engine)
    add_search_routes(app, engine, SearchService(retriever))
    try:
        with LiveServer(app) as live:  # a real server on 127.0.0.1: JSON both ways, as a client sees it
            for text in QUERIES:
                candidates = retriever.retrieve(Query(text))
                core = [(r.id, r.score) for r in reranker.rerank(Query(text), candidates)]
                for route in ("/v1/rerank", "/v2/rerank"):
                    served = _served(live.url, text, candidates, route)
                    _assert_same(f"serve {route} with signals ({text!r})", served, core)
                response = httpx.post(live.url + "/v1/search", json={"query": text, "top_n": 0}, timeout=120)
                assert response.status_code == 200, response.text
                rows = response.json()["results"]
                _assert_same(
                    f"serve /v1/search ({text!r})", [(row["id"], row["score"]) for row in rows], core
                )
    finally:
        engine.close()


@pytest.mark.slow
def test_serve_reranker_folder_gives_query_reranker_folder_scores(
    starter_corpus: tuple[Any, Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 19: ``serve --reranker FOLDER`` gave a perfect passage 0.025 where ``query --reranker FOLDER``
    gave 0.499 (no route signals over HTTP). With the signals sent, both give the folder's own answer."""
    from mm_rerank_components.adapt.folder import load_reranker, save_reranker
    from mm_rerank_components.cli import main

    retriever, db, default = starter_corpus
    folder = save_reranker(tmp_path / "folder", default.model, scorer=default.base.scorer)
    in_process = load_reranker(folder)
    engine = RerankEngine(ServeConfig(reranker_folder=str(folder)))
    try:
        with LiveServer(create_app(engine)) as live:
            for text in QUERIES:
                candidates = retriever.retrieve(Query(text))
                core = [(r.id, r.score) for r in in_process.rerank(Query(text), candidates)]
                argv = ["query", text, "--db", str(db), "--reranker", str(folder), "--top-n", "0"]
                assert main([*argv, "--repeat", "0", "--json"]) == 0
                rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
                _assert_same(f"query --reranker ({text!r})", [(r["id"], r["score"]) for r in rows], core)
                served = _served(live.url, text, candidates, "/v1/rerank")
                _assert_same(f"serve --reranker with signals ({text!r})", served, core)
    finally:
        engine.close()


# -- the guides' code, as written ----------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs"
GUIDE_QUESTION = "Which farm animal gives us milk?"


def _doc_block(doc: str, marker: str) -> str:
    """The Python block of ``docs/<doc>`` that contains ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / doc).read_text(encoding="utf-8"), flags=re.DOTALL)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"docs/{doc}: {len(found)} Python blocks contain {marker!r}"
    return found[0]


def _run_block(
    code: str, where: str, db: Path, url: str = "", namespace: dict[str, Any] | None = None, **paths: str
) -> None:
    """Run a doc block with only its database path, server URL and the named files changed."""
    code = code.replace('".cache/quickstart_db"', repr(str(db))).replace("http://127.0.0.1:8080", url)
    for name, path in paths.items():
        code = code.replace(repr(name).replace("'", '"'), repr(path))
    exec(compile(code, where, "exec"), namespace if namespace is not None else {"__name__": "__doc_block__"})


def _printed(capsys: pytest.CaptureFixture[str]) -> list[list[str]]:
    return [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_guides_first_blocks_run_as_written_and_give_the_core_answer(
    starter_corpus: tuple[Any, Path, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/llamaindex.md and docs/langchain.md: their reranking block, run on a real database with only
    its path changed, prints the core's top 5 with default_reranker() (scores to 3 decimals)."""
    pytest.importorskip("langchain_classic")
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever

    _, db, reranker = starter_corpus
    as_written = ChromaMultiCollectionRetriever(path=db)  # opened as the guides open it
    core = reranker.rerank(Query(GUIDE_QUESTION), as_written.retrieve(Query(GUIDE_QUESTION)), top_n=5)
    expected = [[f"{round(r.score, 3)}", r.candidate.modality] for r in core]
    namespace: dict[str, Any] = {"__name__": "__doc_block__"}
    for doc, marker in [
        ("llamaindex.md", "MultimodalRerankPostprocessor(reranker=default_reranker()"),
        ("langchain.md", "MultimodalRerankCompressor(reranker=default_reranker()"),
    ]:
        _run_block(_doc_block(doc, marker), f"docs/{doc}", db, namespace=namespace)
        assert [row[:2] for row in _printed(capsys)] == expected, doc
    # then langchain.md's picture question, in the same session (its retriever), with a real photo
    photo = str(_photos()[-1])
    question = Query("What does this animal eat?", image=photo)
    core = reranker.rerank(question, as_written.retrieve(question), top_n=5)
    block = _doc_block("langchain.md", 'Query("What does this animal eat?", image="photo.jpg")')
    _run_block(block, "docs/langchain.md", db, namespace=namespace, **{"photo.jpg": photo})
    assert [row[:2] for row in _printed(capsys)] == [
        [f"{round(r.score, 3)}", r.candidate.modality] for r in core
    ]


@pytest.mark.slow
def test_the_serving_guide_signals_block_gives_the_core_answer(
    starter_corpus: tuple[Any, Path, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/serving.md's client with signals, against a live default server: the core's top 3."""
    retriever, db, reranker = starter_corpus
    core = reranker.rerank(Query(GUIDE_QUESTION), retriever.retrieve(Query(GUIDE_QUESTION)), top_n=3)
    engine = RerankEngine(ServeConfig())
    try:
        with LiveServer(create_app(engine)) as live:
            _run_block(_doc_block("serving.md", "document_with_signals(c)"), "docs/serving.md", db, live.url)
    finally:
        engine.close()
    assert _printed(capsys) == [[r.id, f"{round(r.score, 3)}"] for r in core]


class _LogitScorer(BaseScorer):
    """Raw logits, no calibration shipped: served with the plain sigmoid."""

    name = "logits"

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        return [2.0 if "fox" in (c.text or "") else -2.0 for c in candidates]


def test_scores_calibrated_is_false_for_an_uncalibrated_scorer(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        engine = RerankEngine(ServeConfig(), scorer=_LogitScorer())
    try:
        assert "NOT on one scale" in caplog.text and engine.calibrated is False
        reply = TestClient(create_app(engine)).post(
            "/v1/rerank", json={"query": "red fox", "documents": ["a red fox", "owls"]}
        )
        assert reply.status_code == 200 and reply.json()["scores_calibrated"] is False
    finally:
        engine.close()
