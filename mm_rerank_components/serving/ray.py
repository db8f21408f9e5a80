"""Scale-out on Ray Serve: the same routes and engine, with Ray owning replicas and batching.

:class:`RerankDeployment` is a Ray Serve deployment whose HTTP routes are the FastAPI app of
:mod:`mm_rerank_components.serving.app` (through ``@serve.ingress``), and whose cross-request batching is
Ray's ``@serve.batch`` on :meth:`RerankDeployment.score`: a list of score calls in, a list of score lists of
the same length out, computed by the same :func:`~mm_rerank_components.serving.batching.score_many` as the
plain server. Replicas (``num_replicas`` or an autoscaling config) and their CPUs and GPU fractions
(``ray_actor_options``) are Ray's business; scoring and calibration stay the package's.

Example:
    >>> from mm_rerank_components.serving import ServeConfig
    >>> from mm_rerank_components.serving.ray import build_app
    >>> app = build_app(ServeConfig(scorer="fake"), replicas=2)  # doctest: +SKIP
    >>> # from ray import serve; serve.run(app)  -> http://127.0.0.1:8000/v1/rerank
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
from typing import Any

from mm_rerank_components._deps import require
from mm_rerank_components.serving.app import create_app
from mm_rerank_components.serving.batching import ScoreCall
from mm_rerank_components.serving.engine import RerankEngine, ServeConfig

require("ray.serve", "ray", "serving on Ray Serve")

from ray import serve  # noqa: E402

logger = logging.getLogger(__name__)

#: The engine of the replica running in this process (Ray runs each replica in its own actor process).
_ENGINE: RerankEngine | None = None


def _register_engine(engine: RerankEngine) -> None:
    # Ray ships the deployment class by value, so its methods see a copy of this module's globals; a
    # module-level function is shipped by reference and sets the real one, which the routes read
    global _ENGINE
    _ENGINE = engine


def _replica_engine() -> RerankEngine:
    if _ENGINE is None:
        raise RuntimeError("no RerankDeployment replica has started in this process")
    return _ENGINE


def _candidates(calls: list[ScoreCall]) -> int:
    return sum(len(call) for call in calls)


# count candidates, not calls, where the installed Ray can (batch_size_fn arrived in Ray 2.4x)
_SIZE_BY_CANDIDATES = "batch_size_fn" in inspect.signature(serve.batch).parameters
_BATCH_OPTIONS: dict[str, Any] = {"batch_size_fn": _candidates} if _SIZE_BY_CANDIDATES else {}

app = create_app(_replica_engine, title="mm-rerank (Ray Serve)")


@serve.deployment(name="mm-rerank", max_ongoing_requests=256)
@serve.ingress(app)
class RerankDeployment:
    """One replica: a :class:`~mm_rerank_components.serving.RerankEngine` whose batcher is ``@serve.batch``.

    Example:
        >>> handle = serve.run(RerankDeployment.bind(ServeConfig(scorer="fake")))  # doctest: +SKIP
    """

    def __init__(self, config: ServeConfig) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(config.score_workers, thread_name_prefix="score")
        self.engine = RerankEngine(config, submit=self.score)
        handler: Any = self.score  # Ray's batch wrapper carries the setters
        if config.micro_batching:
            handler.set_max_batch_size(config.max_batch_size)
        else:
            handler.set_max_batch_size(1 if not _SIZE_BY_CANDIDATES else config.max_batch_size)
        handler.set_batch_wait_timeout_s(config.max_wait_ms / 1000.0 if config.micro_batching else 0.0)
        _register_engine(self.engine)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005, **_BATCH_OPTIONS)
    async def score(self, calls: list[ScoreCall]) -> list[list[float]]:
        """Ray's micro-batch: one scoring pass over the calls of concurrent requests, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.engine.run_batch, list(calls))


def build_app(
    config: ServeConfig,
    *,
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    ray_actor_options: dict[str, Any] | None = None,
) -> Any:
    """The Ray Serve application: ``replicas`` fixed replicas, or autoscaling between ``(min, max)``.

    Example:
        >>> options = {"num_gpus": 0.5}
        >>> config = ServeConfig(scorer="starter")
        >>> build_app(config, autoscale=(1, 4), ray_actor_options=options)  # doctest: +SKIP
    """
    if not config.micro_batching and _SIZE_BY_CANDIDATES:
        logger.info("micro-batching off: each Ray batch holds up to %d candidates", config.max_batch_size)
    options: dict[str, Any] = {
        "ray_actor_options": ray_actor_options or {"num_cpus": 1},
        "max_ongoing_requests": config.max_concurrency,
    }
    if autoscale is not None:
        low, high = autoscale
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": max(1, config.max_concurrency // 2),
        }
    else:
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas!r}")
        options["num_replicas"] = replicas
    deployment: Any = RerankDeployment  # a serve.Deployment once decorated
    return deployment.options(**options).bind(config)


def run_ray(
    config: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    ray_actor_options: dict[str, Any] | None = None,
    blocking: bool = True,
) -> Any:
    """Start Ray (or join the cluster in ``RAY_ADDRESS``), then serve on ``host:port``.

    Example:
        >>> run_ray(ServeConfig(scorer="fake"), port=8080, replicas=2)  # doctest: +SKIP
    """
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": host, "port": port})
    application = build_app(
        config, replicas=replicas, autoscale=autoscale, ray_actor_options=ray_actor_options
    )
    return serve.run(application, name="mm-rerank", route_prefix="/", blocking=blocking)
