"""Prometheus metrics of one engine, in its own registry (so several engines never clash)."""

from __future__ import annotations

from typing import Any

from mm_rerank_components._deps import require

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Counters and histograms for ``GET /metrics``.

    * ``mm_rerank_requests_total{route,status}`` and ``mm_rerank_request_seconds{route}``;
    * ``mm_rerank_errors_total{kind}``: refused requests by kind (``malformed_json``, ``unauthorized``...);
    * ``mm_rerank_documents_total{modality}``;
    * ``mm_rerank_batch_candidates``, ``mm_rerank_batch_requests``, ``mm_rerank_batch_seconds``: per
      scoring pass; ``mm_rerank_queue_wait_seconds``: how long a call waited for its pass;
    * ``mm_rerank_in_flight``: requests being handled;
    * ``mm_rerank_stuck_passes``: scoring passes abandoned past their deadline and still running,
      ``mm_rerank_abandoned_passes_total``: all such passes so far, ``mm_rerank_oldest_pass_seconds``:
      age of the oldest pass still running (abandoned ones included);
    * ``mm_rerank_model_info{model,scorer,reranker}``: the short model id and the scorer's full name.

    Example:
        >>> metrics = Metrics()
        >>> metrics.errors.labels(kind="malformed_json").inc()
        >>> b"mm_rerank_errors_total" in metrics.render()[0]
        True
    """

    def __init__(self) -> None:
        prom = require("prometheus_client", "serve", "the rerank service's /metrics")
        self.registry = prom.CollectorRegistry()
        reg = self.registry
        self.requests = prom.Counter(
            "mm_rerank_requests",
            "Rerank requests by route and HTTP status",
            ["route", "status"],
            registry=reg,
        )
        self.latency = prom.Histogram(
            "mm_rerank_request_seconds",
            "Rerank request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.errors = prom.Counter(
            "mm_rerank_errors", "Refused or failed requests by kind", ["kind"], registry=reg
        )
        self.documents = prom.Counter(
            "mm_rerank_documents", "Documents received, by modality", ["modality"], registry=reg
        )
        self.batch_candidates = prom.Histogram(
            "mm_rerank_batch_candidates", "Candidates per scoring pass", buckets=_SIZE_BUCKETS, registry=reg
        )
        self.batch_requests = prom.Histogram(
            "mm_rerank_batch_requests",
            "Score calls (from any requests) per scoring pass",
            buckets=_SIZE_BUCKETS,
            registry=reg,
        )
        self.batch_seconds = prom.Histogram(
            "mm_rerank_batch_seconds", "Duration of one scoring pass", buckets=_LATENCY_BUCKETS, registry=reg
        )
        self.queue_wait = prom.Histogram(
            "mm_rerank_queue_wait_seconds",
            "Wait of a score call for its pass",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = prom.Gauge("mm_rerank_in_flight", "Requests being handled", registry=reg)
        self.abandoned_passes = prom.Counter(
            "mm_rerank_abandoned_passes",
            "Scoring passes abandoned past their deadline (their threads were replaced)",
            registry=reg,
        )
        self.stuck_passes = prom.Gauge(
            "mm_rerank_stuck_passes", "Abandoned scoring passes still running", registry=reg
        )
        self.oldest_pass = prom.Gauge(
            "mm_rerank_oldest_pass_seconds", "Age of the oldest scoring pass still running", registry=reg
        )
        self.model = prom.Info(
            "mm_rerank_model",
            "The served model: short id, the scorer's full name, the reranker",
            registry=reg,
        )
        self._prom = prom

    def watch_pool(self, pool: Any) -> None:
        """Read the stuck-pass gauges from ``pool`` (a :class:`~.engine.ScoringPool`) at each scrape."""
        self.stuck_passes.set_function(lambda: pool.stuck)
        self.oldest_pass.set_function(pool.oldest_pass_s)

    def render(self) -> tuple[bytes, str]:
        """``(body, content type)`` in the Prometheus text format."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
