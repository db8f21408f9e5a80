"""The Ray Serve deployment: options built without Ray running, and one bounded real ``serve.run`` on CPU."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("fastapi")
serve = pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

from mm_rerank_components.serving import RerankEngine, ServeConfig  # noqa: E402
from mm_rerank_components.serving.batching import ScoreCall  # noqa: E402
from mm_rerank_components.serving.fake import PerBatchCostScorer  # noqa: E402
from mm_rerank_components.serving.ray import RerankDeployment, build_app  # noqa: E402


def deployment_of(app: Any) -> Any:
    return app._bound_deployment


def test_build_app_replicas_autoscaling_and_actor_options() -> None:
    config = ServeConfig(scorer="fake", max_concurrency=32)
    fixed = deployment_of(build_app(config, replicas=3, ray_actor_options={"num_cpus": 2, "num_gpus": 0.5}))
    assert fixed.num_replicas == 3 and fixed.ray_actor_options["num_gpus"] == 0.5
    assert fixed.max_ongoing_requests == 32
    auto = deployment_of(build_app(config, autoscale=(1, 4)))
    assert auto._deployment_config.autoscaling_config.min_replicas == 1
    assert auto._deployment_config.autoscaling_config.max_replicas == 4
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        build_app(config, replicas=0)


def test_engine_with_a_list_to_list_batch_function_in_process() -> None:
    """The deployment's contract without Ray: the engine hands calls to an async list -> list batcher."""
    scorer = PerBatchCostScorer(per_batch_s=0.0)
    batches: list[int] = []
    pending: list[tuple[ScoreCall, asyncio.Future[list[float]]]] = []

    async def submit(call: ScoreCall) -> list[float]:  # a minimal stand-in for @serve.batch
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        pending.append((call, future))
        await asyncio.sleep(0.05)
        if pending and not future.done():
            taken = pending[:]
            pending.clear()
            batches.append(len(taken))
            for (_, f), scores in zip(taken, engine.run_batch([c for c, _ in taken]), strict=True):
                f.set_result(scores)
        return await future

    engine = RerankEngine(ServeConfig(), scorer=scorer, submit=submit)

    async def run() -> list[tuple[int, dict[str, Any]]]:
        bodies = [json.dumps({"query": f"w{i}", "documents": ["x", f"w{i}"]}).encode() for i in range(6)]
        return await asyncio.gather(*(engine.handle("jina", b) for b in bodies))

    replies = asyncio.run(run())
    assert all(status == 200 and payload["results"][0]["index"] == 1 for status, payload in replies)
    assert sum(batches) == 6 and max(batches) > 1 and scorer.passes == len(batches)
    engine.close()


@pytest.mark.slow
def test_real_serve_run_on_cpu() -> None:
    """One replica on a local Ray, routes over HTTP on 127.0.0.1, batches formed by @serve.batch."""
    import ray

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = ServeConfig(
            scorer="mm_rerank_components.serving.fake:PerBatchCostScorer",
            scorer_kwargs={"per_batch_s": 0.05},
            max_wait_ms=50,
            max_concurrency=16,
        )
        serve.run(
            build_app(config, ray_actor_options={"num_cpus": 0.5}), name="mm-rerank-test", route_prefix="/"
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the Ray Serve app did not answer /health"
            time.sleep(0.5)
        # the replica's warm-up request (one passage group, one picture, one captioned picture) scores
        # first: wait for /ready, then count only the calls sent here
        while httpx.get(url + "/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the Ray Serve app never became ready"
            time.sleep(0.5)
        before = httpx.get(url + "/metrics", timeout=30).text
        count0 = _metric(before, "mm_rerank_batch_requests_count")
        total0 = _metric(before, "mm_rerank_batch_requests_sum")

        def post(i: int) -> Any:
            body = {"query": f"w{i}", "documents": ["x", f"w{i}", f"w{i + 1}"]}
            return httpx.post(url + "/v1/rerank", json=body, timeout=60)

        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(post, range(6)))
        for reply in replies:
            assert reply.status_code == 200, reply.text
            assert [r["index"] for r in reply.json()["results"]] == [1, 0, 2]
        cohere = httpx.post(url + "/v2/rerank", json={"query": "a", "documents": ["b", "a"]}, timeout=60)
        assert cohere.json()["results"][0]["index"] == 1
        bad = httpx.post(url + "/v1/rerank", content=b"{oops", timeout=60)
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "malformed_json"
        metrics = httpx.get(url + "/metrics", timeout=30).text
        assert "mm_rerank_batch_requests_count" in metrics
        count = _metric(metrics, "mm_rerank_batch_requests_count") - count0
        total = _metric(metrics, "mm_rerank_batch_requests_sum") - total0
        assert total == 7 and count < total  # 7 score calls in fewer passes: @serve.batch batched them
    finally:
        serve.shutdown()
        ray.shutdown()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_deployment_class_is_an_ingress_with_a_batch_method() -> None:
    deployment: Any = RerankDeployment  # a serve.Deployment once decorated
    assert deployment.name == "mm-rerank"
    assert hasattr(deployment.func_or_class.score, "set_max_batch_size")
