"""Load test of ``mm-rerank serve``: throughput and latency with micro-batching on and off.

Starts the server as a subprocess on 127.0.0.1 (stopped by PID), then drives it from this process with
1, 8, 32 and 128 concurrent clients (asyncio + httpx). Every request is a mixed list of 32 candidates
(16 passages, 8 pictures, 8 captioned pictures as PNG data URIs), all different, so no cache can help.
While the clients run, a probe calls ``GET /health`` every 50 ms.

Scorers:

* ``batch``: :class:`~mm_rerank_components.serving.fake.PerBatchCostScorer`, FakeScorer's scores at a fixed
  cost per scoring pass (default 20 ms, slept, like an accelerator's forward pass), batch-friendly: a pass
  over the calls of several requests costs the same as one;
* ``starter``: the offline starter models on CPU (``--threads 1``), at 1, 8 and 32 clients by default
  (about 2 s per request on a busy 2-core machine); it has no multi-query pass, so micro-batching can
  only group its calls, not merge them.

Each level runs until it has sent ``--requests`` requests (``--starter-requests`` for the starter; at
least one per client) or ``--seconds`` passed. Checks: 0 errors, 0 lost documents (every response returns all 32 indices exactly once).
Targets (issue 12), with the batch-friendly scorer at 32 clients: throughput with micro-batching on is at
least 3x that with it off, and ``/health`` p99 under 50 ms.

    python benchmarks/serving.py                        # both scorers, all levels (a few minutes)
    python benchmarks/serving.py --scorers batch --levels 1,8,32 --seconds 8

Prints a table and writes ``benchmarks/results/serving.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

SCORERS: dict[str, list[str]] = {
    "batch": [
        "--scorer",
        "mm_rerank_components.serving.fake:PerBatchCostScorer",
        "--scorer-kwargs",
        '{"per_batch_s": 0.02}',
    ],
    "starter": ["--scorer", "starter"],
}
WORDS = ["fox", "owl", "river", "forest", "snow", "mountain", "bird", "dog", "cat", "horse", "boat", "bridge"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def png_uri(rng: random.Random) -> str:
    image = Image.new("RGB", (48, 48), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):  # a few random blocks, so every picture differs
        x, y = rng.randrange(40), rng.randrange(40)
        image.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, x + 8, y + 8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def make_request(rng: random.Random, serial: int) -> dict[str, Any]:
    def sentence() -> str:
        return f"request {serial}: " + " ".join(rng.choice(WORDS) for _ in range(12))

    documents: list[Any] = [sentence() for _ in range(16)]
    documents += [{"image": png_uri(rng)} for _ in range(8)]
    documents += [{"text": sentence(), "image": png_uri(rng)} for _ in range(8)]
    rng.shuffle(documents)
    return {
        "query": " ".join(rng.choice(WORDS) for _ in range(3)),
        "documents": documents,
        "return_documents": False,
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Server:
    def __init__(self, scorer: str, batching: bool, batch_size: int, max_wait_ms: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "mm_rerank_components.cli",
            "--threads",
            "1",
            "serve",
            "--port",
            str(self.port),
        ]
        command += SCORERS[scorer] + ["--batch-size", str(batch_size), "--max-wait-ms", str(max_wait_ms)]
        if not batching:
            command.append("--no-micro-batching")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


async def run_level(url: str, clients: int, max_requests: int, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    total = max(max_requests, clients)
    bodies = [json.dumps(make_request(rng, i)).encode() for i in range(total)]
    latencies: list[float] = []
    errors = 0
    lost = 0
    sent = 0
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors, lost, sent
            while sent < total and time.monotonic() < stop_at:
                body = bodies[sent]
                sent += 1
                started = time.perf_counter()
                try:
                    reply = await client.post(
                        "/v1/rerank", content=body, headers={"content-type": "application/json"}
                    )
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                if reply.status_code != 200:
                    errors += 1
                    continue
                indices = sorted(r["index"] for r in reply.json()["results"])
                lost += 0 if indices == list(range(32)) else 32 - len(set(indices) & set(range(32)))

        before = (await client.get("/metrics")).text
        # the /health probe runs in its own process, so the clients' event loop does not delay it
        context = multiprocessing.get_context("spawn")
        stop, results = context.Event(), context.Queue()
        prober = context.Process(target=probe_health, args=(url, stop, results))
        prober.start()
        await asyncio.get_running_loop().run_in_executor(None, results.get, True, 120)  # "ready"
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        stop.set()
        health, health_failures = results.get(timeout=60)
        prober.join(timeout=30)
        metrics = (await client.get("/metrics")).text
    return {
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 2) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "errors": errors,
        "lost_documents": lost,
        "health_p99_ms": round(percentile(health, 99) * 1000, 1),
        "health_probes": len(health),
        "health_failures": health_failures,
        "mean_calls_per_pass": _mean_from_metrics(before, metrics, "mm_rerank_batch_requests"),
    }


def probe_health(url: str, stop: Any, results: Any) -> None:
    """``GET /health`` every 50 ms until ``stop``; puts ``(latencies in seconds, failures)`` on ``results``.

    A probe that fails or takes over 10 s counts as a failure, and as 10 s in the latencies.
    """
    latencies: list[float] = []
    failures = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        client.get("/health")  # connection and first-call costs, untimed
        results.put("ready")
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = client.get("/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started if ok else 10.0)
            failures += 0 if ok else 1
            time.sleep(0.05)
    results.put((latencies, failures))


def _read(text: str, name: str) -> dict[str, float]:
    values = {"_sum": 0.0, "_count": 0.0}
    for line in text.splitlines():
        for suffix in values:
            if line.startswith(name + suffix + " "):
                values[suffix] = float(line.split()[1])
    return values


def _mean_from_metrics(before: str, after: str, name: str) -> float | None:
    """Mean of a histogram over this level only (the server's counters run across levels)."""
    start, end = _read(before, name), _read(after, name)
    count = end["_count"] - start["_count"]
    return round((end["_sum"] - start["_sum"]) / count, 2) if count else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scorers", default="batch,starter", help="comma list of: " + ", ".join(SCORERS))
    parser.add_argument("--levels", default="1,8,32,128", help="concurrent clients per level (batch scorer)")
    parser.add_argument(
        "--starter-levels",
        default="1,8,32",
        help="levels for the starter (about 2 s per request on a busy CPU)",
    )
    parser.add_argument("--requests", type=int, default=600, help="most requests per level (batch scorer)")
    parser.add_argument("--starter-requests", type=int, default=32, help="most requests per level (starter)")
    parser.add_argument("--seconds", type=float, default=8.0, help="most seconds per level")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="server --batch-size (candidates per pass)"
    )
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="server --max-wait-ms")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serving.json"))
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for scorer in args.scorers.split(","):
        for batching in (True, False):
            server = Server(scorer, batching, args.batch_size, args.max_wait_ms)
            try:
                server.wait_ready()
                # one warm-up request (model loading, first-call costs) outside the measurement
                asyncio.run(run_level(server.url, 1, 1, 60.0, seed=999))
                levels = args.levels if scorer == "batch" else args.starter_levels
                for clients in [int(x) for x in levels.split(",")]:
                    limit = args.requests if scorer == "batch" else args.starter_requests
                    row = asyncio.run(run_level(server.url, clients, limit, args.seconds, seed=clients))
                    row.update(scorer=scorer, micro_batching="on" if batching else "off")
                    rows.append(row)
                    print(
                        f"{scorer:<8} {row['micro_batching']:<3} clients={clients:<4} {row['throughput_rps']:>7.1f} req/s "
                        f"p50 {row['p50_ms']:>7.1f} ms  p99 {row['p99_ms']:>7.1f} ms  errors {row['errors']}  "
                        f"lost {row['lost_documents']}  health p99 {row['health_p99_ms']:.1f} ms "
                        f"({row['health_failures']} failed)",
                        file=sys.stderr,
                    )
            finally:
                server.stop()
    summary = summarize(rows)
    print_table(rows, summary)
    load = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "loadavg_after": [round(x, 2) for x in load],
                "settings": {k: str(v) for k, v in vars(args).items()},
                "rows": rows,
                "summary": summary,
            },
            indent=2,
        )
    )
    print(f"\nwrote {args.out}; load average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def row(scorer: str, mode: str, clients: int) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in rows
                if r["scorer"] == scorer and r["micro_batching"] == mode and r["clients"] == clients
            ),
            None,
        )

    summary: dict[str, Any] = {
        "errors": sum(r["errors"] for r in rows),
        "lost_documents": sum(r["lost_documents"] for r in rows),
    }
    for scorer in sorted({r["scorer"] for r in rows}):
        for clients in sorted({r["clients"] for r in rows}):
            on, off = row(scorer, "on", clients), row(scorer, "off", clients)
            if on and off and off["throughput_rps"]:
                summary[f"{scorer}_speedup_at_{clients}"] = round(
                    on["throughput_rps"] / off["throughput_rps"], 2
                )
    on32 = row("batch", "on", 32)
    if on32 is not None and "batch_speedup_at_32" in summary:
        summary["targets"] = {
            "speedup_at_32_ge_3": summary["batch_speedup_at_32"] >= 3.0,
            "no_errors": summary["errors"] == 0,
            "no_lost_documents": summary["lost_documents"] == 0,
            "no_health_failures": sum(r["health_failures"] for r in rows) == 0,
            "health_p99_under_50ms_at_32": on32["health_p99_ms"] < 50.0,
        }
    return summary


def print_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    header = (
        f"{'scorer':<8} {'batching':<8} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'lost':>5} {'health p99':>10} {'calls/pass':>10}"
    )
    print(header)
    for r in rows:
        calls = r["mean_calls_per_pass"]
        print(
            f"{r['scorer']:<8} {r['micro_batching']:<8} {r['clients']:>7} {r['throughput_rps']:>8.1f} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['errors']:>6} {r['lost_documents']:>5} {r['health_p99_ms']:>10.1f} "
            f"{calls if calls is not None else '-':>10}"
        )
    print()
    for key, value in summary.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
