"""The service items of issues 23 and 22: offline API pages, ``return_documents`` without picture bytes,
a short model id (the long form in ``/info`` and ``/metrics``), and every ``ServeConfig`` limit as a
``mm-rerank serve`` flag.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import random
import re
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient
from PIL import Image

from mm_rerank_components.scorers import FakeScorer
from mm_rerank_components.serving import (
    RerankEngine,
    ServeConfig,
    create_app,
    docs_ui,
)
from mm_rerank_components.serving.model_id import DEFAULT_MODEL_ID, MAX_MODEL_ID, short_model_id


def _picture(seed: int, side: int = 96) -> str:
    """A PNG of noise (it does not compress): about 37 KB as base64 at 96 x 96."""
    pixels = random.Random(seed).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def engine() -> Any:
    engine = RerankEngine(ServeConfig(scorer="fake"))
    yield engine
    engine.close()


# -- /docs offline ---------------------------------------------------------------------------------------------


def _outside_urls(html: str) -> list[str]:
    return re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"'<>]*", html, flags=re.IGNORECASE)


def test_api_pages_load_their_assets_from_the_server(engine: Any) -> None:
    assert docs_ui.asset_folder() is not None, "the serve extra installs fastapi-offline"
    client = TestClient(create_app(engine))
    for page in ("/docs", "/redoc"):
        response = client.get(page)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert _outside_urls(response.text) == [], f"{page} links outside the server"
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
        assert assets and all(a.startswith(docs_ui.ASSETS_URL + "/") for a in assets), assets
        for asset in assets:
            served = client.get(asset)
            assert served.status_code == 200 and len(served.content) > 1000, asset
    assert (
        client.get(docs_ui.ASSETS_URL + "/swagger-ui-bundle.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert '"validatorUrl": null' in client.get("/docs").text  # no schema sent to an online validator
    # only the listed files: nothing from the URL reaches the disk
    for name in ("core.py", "..%2F__init__.py", "%2Fetc%2Fpasswd", "favicon.ico"):
        assert client.get(f"{docs_ui.ASSETS_URL}/{name}").status_code == 404


def test_without_the_assets_docs_is_a_plain_page_listing_the_routes(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docs_ui, "asset_folder", lambda: None)
    client = TestClient(create_app(engine))
    page = client.get("/docs").text
    assert "<script" not in page and _outside_urls(page) == []
    assert "POST /v1/rerank" in page and "GET /info" in page and "/openapi.json" in page
    assert "fastapi-offline" in page  # says how to get the interactive page
    assert client.get(docs_ui.ASSETS_URL + "/swagger-ui-bundle.js").status_code == 404


def test_openapi_documents_signals_and_return_images_without_dangling_refs(engine: Any) -> None:
    spec = TestClient(create_app(engine)).get("/openapi.json").json()
    for route in ("/v1/rerank", "/rerank", "/v2/rerank"):
        schema = spec["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert "$defs" not in json.dumps(schema)  # every nested model inlined: no reference to resolve
        document = next(s for s in schema["properties"]["documents"]["items"]["anyOf"] if "properties" in s)
        signals = next(s for s in document["properties"]["signals"]["anyOf"] if "properties" in s)
        assert set(signals["properties"]) == {
            "source",
            "retrieval_score",
            "retrieval_rank",
            "metadata",
            "precomputed",
        }
        assert signals["additionalProperties"] is False
        assert "return_images" in schema["properties"]
    assert "/info" in spec["paths"] and "/docs" not in spec["paths"]


@pytest.mark.slow
@pytest.mark.browser
def test_swagger_ui_renders_in_chromium_with_the_network_cut_off(engine: Any) -> None:
    """The issue's symptom: /docs blank offline. Chromium loads it with every request that leaves
    127.0.0.1 refused, and Swagger UI must still show the rerank operations."""
    from _live_server import LiveServer
    from test_web_browser import CHROMIUM, CHROMIUM_ARGS, _require_chromium

    _require_chromium()
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with LiveServer(create_app(engine)) as live, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.route("**/*", only_local)
            page.goto(live.url + "/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=20_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
        finally:
            browser.close()
    assert {"/v1/rerank", "/v2/rerank", "/info"} <= {p.strip().replace("\u200b", "") for p in paths}
    assert outside == []


# -- return_documents ------------------------------------------------------------------------------------------


def test_return_documents_echoes_text_but_not_picture_bytes_unless_asked(engine: Any) -> None:
    client = TestClient(create_app(engine))
    pictures = [_picture(seed) for seed in range(6)]
    documents: list[Any] = [{"text": f"a fox, photo {i}", "image": p} for i, p in enumerate(pictures)]
    documents += ["a red fox", {"image": pictures[0]}]
    body = {"query": "red fox", "documents": documents}
    lean = client.post("/v1/rerank", json=body)
    assert lean.status_code == 200, lean.text
    echoed = {r["index"]: r["document"] for r in lean.json()["results"]}
    assert echoed[6] == {"text": "a red fox"} and echoed[7] == {}
    assert all(echoed[i] == {"text": f"a fox, photo {i}"} for i in range(6))
    full = client.post("/v1/rerank", json={**body, "return_images": True})
    assert {r["index"]: r["document"] for r in full.json()["results"]}[7] == {"image": pictures[0]}
    assert len(lean.content) * 20 < len(full.content)  # 6 pictures of ~27 KB were echoed by default before
    cohere = client.post("/v2/rerank", json={**body, "return_documents": True}).json()["results"]
    assert all("image" not in r["document"] for r in cohere)
    assert "document" not in client.post("/v2/rerank", json=body).json()["results"][0]  # Cohere's default
    bad = client.post("/v1/rerank", json={**body, "return_images": "yes"})
    assert bad.status_code == 400 and '"return_images" must be true or false' in bad.json()["detail"]


def test_picture_urls_are_echoed_as_sent() -> None:
    from mm_rerank_components.serving.protocol import _echo

    url = {"text": "fox", "image": "https://example.org/fox.jpg"}
    assert _echo(url, False) == url
    assert _echo({"image": "iVBORw0KGgo="}, False) == {} and _echo({"image": "iVBO"}, True) == {
        "image": "iVBO"
    }


# -- model id --------------------------------------------------------------------------------------------------


LONG_NAME = "starter:" + "/very/long/model/files+image-model:v1:k5/3:plain+class:m0.5@0.1:c0.3:w0.2/512"


class _LongNamed(FakeScorer):
    def __init__(self) -> None:
        super().__init__()
        self.name = LONG_NAME


def test_responses_carry_a_short_model_id_and_info_the_full_name() -> None:
    engine = RerankEngine(ServeConfig(scorer="fake", api_key="k"), scorer=_LongNamed())
    auth = {"Authorization": "Bearer k"}
    try:
        client = TestClient(create_app(engine))
        response = client.post("/v1/rerank", json={"query": "fox", "documents": ["a fox"]}, headers=auth)
        model = response.json()["model"]
        assert len(model) <= MAX_MODEL_ID and model.startswith("starter-") and model == engine.model
        assert client.get("/health").json()["model"] == model
        info = client.get("/info", headers=auth).json()
        assert (info["model"], info["scorer"]) == (model, LONG_NAME)
        assert info["limits"]["max_documents"] == 1000 and info["auth"] is True
        assert client.get("/info").status_code == 401  # like /metrics, it needs the key
        metrics = client.get("/metrics", headers=auth).text
        assert f'model="{model}"' in metrics and f'scorer="{LONG_NAME}"' in metrics
    finally:
        engine.close()
    # two scorers with other settings never share an id; --model-name wins; the product default is named
    other = LONG_NAME.replace("k5", "k6")
    assert short_model_id(ServeConfig(scorer="fake"), other) != model
    assert short_model_id(ServeConfig(scorer="fake", model="my-model"), other) == "my-model"
    assert short_model_id(ServeConfig(), LONG_NAME) == DEFAULT_MODEL_ID
    assert short_model_id(ServeConfig(reranker_folder="/srv/x/tuned/"), other) == "reranker:tuned"


# -- every limit a flag (issue 22) -----------------------------------------------------------------------------


def test_serve_with_no_flags_is_serve_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from mm_rerank_components.cli import _parser
    from mm_rerank_components.cli.serve import config_from_args

    monkeypatch.delenv("MM_RERANK_API_KEY", raising=False)
    assert (
        config_from_args(_parser().parse_args(["serve"])) == ServeConfig()
    )  # the flags' defaults drift nowhere


def test_every_hardening_limit_is_a_serve_flag() -> None:
    from mm_rerank_components.cli import _parser
    from mm_rerank_components.cli.serve import config_from_args

    flags = {
        "--pass-timeout": ("pass_timeout_s", "3.5", 3.5),
        "--max-stuck-passes": ("max_stuck_passes", "4", 4),
        "--max-pending": ("max_pending", "10", 10),
        "--max-document-chars": ("max_document_chars", "5000", 5000),
        "--max-request-pixels": ("max_request_pixels", "2000000", 2_000_000),
        "--header-timeout": ("header_timeout_s", "2", 2.0),
        "--body-timeout": ("body_timeout_s", "7", 7.0),
    }
    argv = ["serve", "--scorer", "fake"]
    for flag, (_, text, _) in flags.items():
        argv += [flag, text]
    config = config_from_args(_parser().parse_args(argv))
    assert {field: getattr(config, field) for field, _, _ in flags.values()} == {
        field: value for field, _, value in flags.values()
    }
    # the remaining ServeConfig fields each have a flag too (api_key through the environment as well)
    covered = {f for f, _, _ in flags.values()} | {
        "scorer", "scorer_kwargs", "reranker_folder", "read_captions", "device", "threads", "model", "micro_batching",
        "max_batch_size", "max_wait_ms", "score_workers", "max_concurrency", "cpu_slots", "request_timeout_s",
        "max_body_bytes", "max_documents", "max_image_bytes", "max_image_pixels", "allow_urls", "api_key",
    }  # fmt: skip
    assert {f.name for f in dataclasses.fields(ServeConfig)} == covered
    with pytest.raises(ValueError, match=r"pass_timeout_s must be a positive number of seconds, got -1"):
        config_from_args(_parser().parse_args(["serve", "--pass-timeout", "-1"]))


def test_a_document_over_max_document_chars_is_refused_with_413() -> None:
    from mm_rerank_components.cli import _parser
    from mm_rerank_components.cli.serve import config_from_args

    config = config_from_args(
        _parser().parse_args(["serve", "--scorer", "fake", "--max-document-chars", "50"])
    )
    engine = RerankEngine(config)
    try:
        client = TestClient(create_app(engine))
        refused = client.post("/v1/rerank", json={"query": "fox", "documents": ["a fox", "x" * 51]})
        assert refused.status_code == 413, refused.text
        assert "50" in refused.json()["detail"]
        ok = client.post("/v1/rerank", json={"query": "fox", "documents": ["a fox", "x" * 50]})
        assert ok.status_code == 200
    finally:
        engine.close()
