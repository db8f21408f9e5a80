"""Labelled-data loading, pipelines, metrics and the runner on a tiny synthetic corpus (no models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mm_rerank_components.eval.embeddings import HashingEmbedder
from mm_rerank_components.eval.pipelines import (
    FUSION_PIPELINES,
    FirstStage,
    FirstStageScorer,
    calibrated_run,
    fusion_run,
    ranking_to_run,
    score_union,
)
from mm_rerank_components.eval.tasks import EvalTask, assign_split, load_labelled_jsonl
from mm_rerank_components.scorers.fake import FakeScorer
from mm_rerank_components.types import Candidate

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "yellow": (230, 230, 10)}


def write_corpus(root: Path) -> Path:
    """Four colours, each as a text passage and a solid-colour image; queries name the colour."""
    from PIL import Image

    lines = []
    for name, rgb in COLOURS.items():
        Image.new("RGB", (16, 16), rgb).save(root / f"{name}.png")
        lines.append({"type": "doc", "id": f"txt-{name}", "text": f"the colour {name} is bright {name}"})
        lines.append({"type": "doc", "id": f"img-{name}", "image": f"{name}.png"})
    for i, name in enumerate(COLOURS):
        lines.append(
            {
                "type": "query",
                "id": f"q-{name}",
                "text": f"{name} colour",
                "relevant": [f"txt-{name}", f"img-{name}"],
                "split": "test" if i % 2 else "dev",
            }
        )
    path = root / "labels.jsonl"
    path.write_text("# a comment line\n" + "\n".join(json.dumps(x) for x in lines) + "\n\n")
    return path


def test_load_labelled_jsonl(tmp_path: Path) -> None:
    task = load_labelled_jsonl(write_corpus(tmp_path))
    assert task.name.startswith("labels-") and len(task.name) == len("labels-") + 8
    assert task.summary() == {
        "documents": 8,
        "text_documents": 4,
        "image_documents": 4,
        "queries": 4,
        "dev_queries": 2,
        "test_queries": 2,
    }
    assert Path(str(task.docs["img-red"].image)).is_absolute()
    assert task.qrels["q-red"] == {"txt-red": 1, "img-red": 1}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "must be a JSON object"),
        ('{"type": "doc", "text": "x"}', 'non-empty string "id"'),
        ('{"type": "doc", "id": "d"}', 'needs "text", "image" or both'),
        ('{"type": "doc", "id": "d", "image": "missing.png"}', "image 'missing.png' not found"),
        ('{"type": "query", "id": "q", "text": "x", "relevant": []}', 'needs "relevant"'),
        ('{"type": "query", "id": "q", "text": "x", "relevant": {"d": -1}}', "must be an int >= 0"),
        ('{"type": "query", "id": "q", "text": "x", "relevant": ["d"], "split": "train"}', '"split" must be'),
        ('{"type": "passage", "id": "x"}', '"type" must be "task", "doc" or "query"'),
        ('{"type": "task", "name": ""}', 'the "task" line needs a non-empty string "name"'),
        ('{"type": "doc", "id": "d", "text": "x", "metadata": [1]}', '"metadata" must be an object'),
    ],
)
def test_load_labelled_jsonl_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"type": "doc", "id": "d0", "text": "ok"}\n' + line + "\n")
    with pytest.raises(
        ValueError, match=r"bad\.jsonl:2: .*" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        load_labelled_jsonl(path)


def test_load_labelled_jsonl_unknown_relevant_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(
        '{"type": "doc", "id": "d", "text": "a"}\n{"type": "query", "id": "q", "text": "a", "relevant": ["nope"]}\n'
    )
    with pytest.raises(ValueError, match=r"query 'q' marks unknown documents relevant: \['nope'\]"):
        load_labelled_jsonl(path)
    path.write_text('{"type": "doc", "id": "d", "text": "a"}\n{"type": "doc", "id": "d", "text": "b"}\n')
    with pytest.raises(ValueError, match="duplicate document id 'd'"):
        load_labelled_jsonl(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_labelled_jsonl(tmp_path / "missing.jsonl")


def test_assign_split_is_stable_and_balanced() -> None:
    splits = [assign_split(f"item-{i}") for i in range(2000)]
    assert splits == [assign_split(f"item-{i}") for i in range(2000)]
    assert 0.45 < splits.count("test") / 2000 < 0.55
    assert assign_split("item-1", seed="other") in ("dev", "test")
    with pytest.raises(ValueError, match="test_fraction must be between 0 and 1"):
        assign_split("x", test_fraction=1.5)


def _toy_first_stage() -> tuple[EvalTask, FirstStage]:
    docs = {
        "t1": Candidate("t1", text="alpha"),
        "t2": Candidate("t2", text="beta"),
        "i1": Candidate("i1", image="i1.png"),
        "i2": Candidate("i2", image="i2.png"),
    }
    task = EvalTask("toy", "toy", docs, {"q": "alpha"}, {"q": {"t1": 1, "i2": 1}}, {"q": "test"})
    # text cosines small, image cosines large: the modality gap raw merging falls for
    first = FirstStage(["q"], ["t1", "t2"], ["i1", "i2"], np.array([[0.30, 0.10]]), np.array([[0.90, 0.80]]))
    return task, first


def test_fusion_pipelines_on_a_known_case() -> None:
    _, first = _toy_first_stage()
    order = {p: list(fusion_run(first, p, ["q"], k_text=2, k_image=2)["q"]) for p in FUSION_PIPELINES}
    assert order["text-only"] == ["t1", "t2"]
    assert order["image-only"] == ["i1", "i2"]
    assert order["raw-merge"] == ["i1", "i2", "t1", "t2"]  # images win on raw scale
    assert order["rrf"] == ["t1", "i1", "t2", "i2"]  # rank ties keep the text-first union order
    assert order["minmax"] == ["t1", "i1", "t2", "i2"]
    assert order["zscore"] == ["t1", "i1", "t2", "i2"]
    with pytest.raises(ValueError, match="unknown pipeline 'magic'"):
        fusion_run(first, "magic", ["q"])


def test_ranking_to_run_scores_strictly_decrease() -> None:
    run = ranking_to_run({"q": ["c", "a", "b"]})
    assert list(run["q"]) == ["c", "a", "b"]
    assert run["q"]["c"] > run["q"]["a"] > run["q"]["b"]


def test_rerank_with_calibration_fixes_the_modality_gap(tmp_path: Path) -> None:
    from mm_rerank_components.calibration import PerModalityCalibrator, PlattCalibrator

    task, first = _toy_first_stage()
    from PIL import Image

    for name in ("i1", "i2"):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{name}.png")
    task.docs["i1"] = Candidate("i1", image=str(tmp_path / "i1.png"))
    task.docs["i2"] = Candidate("i2", image=str(tmp_path / "i2.png"))
    scored = score_union(task, first, FirstStageScorer(), ["q"], k_text=2, k_image=2)
    # the product's merge: routes interleaved rank by rank, text route first at each rank
    assert scored.items["q"] == [
        ("t1", "text", 0.3),
        ("i1", "image", 0.9),
        ("t2", "text", 0.1),
        ("i2", "image", 0.8),
    ]
    calibrator = PerModalityCalibrator({"text": PlattCalibrator(20, -4), "image": PlattCalibrator(20, -17)})
    assert list(calibrated_run(scored, calibrator, ["q"])["q"]) == ["t1", "i1", "i2", "t2"]
    assert list(calibrated_run(scored, None, ["q"])["q"]) == ["i1", "i2", "t1", "t2"]


@pytest.mark.slow  # ranx compiles its numba kernels on first use
def test_metrics_match_hand_computed_values() -> None:
    from mm_rerank_components.eval.metrics import evaluate_run

    task, first = _toy_first_stage()
    raw = fusion_run(first, "raw-merge", ["q"], 2, 2)  # i1, i2, t1, t2; relevant: t1, i2
    m = evaluate_run(task, raw, ["q"])
    assert m["overall"]["recall@1"] == 0.0
    assert m["overall"]["recall@5"] == 1.0
    assert m["overall"]["mrr"] == 0.5
    assert m["overall"]["hit_rate@10"] == 1.0
    assert m["overall"]["ndcg@10"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3)))
    assert m["text"]["recall@10"] == 1.0 and m["text"]["mrr"] == pytest.approx(1 / 3)
    assert m["image"]["mrr"] == 0.5
    assert m["image_share@10"] == 0.5


@pytest.mark.slow
def test_run_evaluation_end_to_end_with_fake_scorer(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from mm_rerank_components.eval.runner import run_evaluation

    task = load_labelled_jsonl(write_corpus(tmp_path))
    out = tmp_path / "report"
    results = run_evaluation(
        [task],
        HashingEmbedder(),
        {"fake": FakeScorer(), "first-stage": FirstStageScorer()},
        methods=("platt", "standardize"),
        k_text=2,
        k_image=2,
        out_dir=out,
    )
    entry = results["tasks"][task.name]
    pipelines = entry["pipelines"]
    assert set(FUSION_PIPELINES) <= set(pipelines)
    assert {
        "rerank:fake",
        "rerank:fake+platt",
        "rerank:first-stage+platt",
        "rerank:first-stage+standardize",
    } <= set(pipelines)
    # text queries hash-match their passage: the text route finds every relevant passage (half of all)
    assert pipelines["text-only"]["test"]["overall"]["recall@10"] == 0.5
    for entry in pipelines.values():
        for value in entry["test"]["overall"].values():
            assert 0.0 <= value <= 1.0
    assert (out / "results.json").exists() and (out / "report.md").exists()
    assert "_scored" not in results
    written = json.loads((out / "results.json").read_text())
    task_out = written["tasks"][task.name]
    # per-query metrics for every pipeline, on the test queries
    per_query = task_out["pipelines"]["rrf"]["test"]["per_query"]
    assert set(per_query["recall@10"]) == set(task.query_ids("test"))
    rows = task_out["targets"]["rows"]
    chosen = task_out["targets"]["chosen_on_dev"]
    assert chosen in rows
    for check in rows[chosen]["checks"]:
        assert check["verdict"] in ("met", "tie", "missed", "n/a")
        if "lo" in check:
            assert check["lo"] <= check["hi"]
    # label-free standardisation is not reported as a probability
    assert task_out["calibration"]["first-stage+standardize"]["probability"] is False
    assert "test" not in task_out["calibration"]["first-stage+standardize"]
    assert "ece" in task_out["calibration"]["first-stage+platt"]["test"]["text"]
    report = (out / "report.md").read_text()
    assert "| raw-merge |" in report and "Held-out test" in report and "95% CI" in report
    assert "oracle" not in report
    for png in (out / "img").glob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert png.stat().st_size < 200_000
    # the docs' tables are printed from results.json by scripts/benchmark_tables.py
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_tables.py"
    printed = subprocess.run(
        [sys.executable, str(script), str(out / "results.json")], capture_output=True, text=True, check=True
    ).stdout
    assert "## Per task (held-out test queries)" in printed and "## Calibration, per modality" in printed
    rrf_row = next(line for line in printed.splitlines() if line.startswith("| rrf |"))
    assert rrf_row.count("[") == 2  # vs min-max on R@10 and nDCG@10, each with its CI ("–" vs itself)


@pytest.mark.slow
def test_runner_main_on_user_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mm_rerank_components.cli.eval import main

    data = write_corpus(tmp_path)
    code = main(
        [
            "--threads",
            "1",
            "--depths",
            "1,2",
            "--data",
            str(data),
            "--scorer",
            "fake",
            "--calibration",
            "platt",
            "--embedder",
            "hashing",
            "--k-text",
            "2",
            "--k-image",
            "2",
            "--no-plots",
            "--out",
            str(tmp_path / "r"),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "labels-" in out and "(held-out test queries" in out and "rerank:fake+platt" in out
    written = json.loads((tmp_path / "r/results.json").read_text())
    assert written["config"]["depths"] == [1, 2] and "depth_sweep" in written
    assert (tmp_path / "r/results.json").exists()


def test_runner_main_reports_bad_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mm_rerank_components.cli.eval import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "doc"}\n')
    assert main(["--data", str(bad), "--embedder", "hashing", "--out", str(tmp_path / "r")]) == 2
    assert 'non-empty string "id"' in capsys.readouterr().err


def test_union_recall_is_the_pools_share_of_relevant_documents() -> None:
    from mm_rerank_components.eval.pipelines import union_recall

    task, first = _toy_first_stage()
    task.qrels["q"] = {"t2": 1, "i2": 1}
    assert union_recall(first, task, ["q"], 1, 1) == {"q": 0.0}
    assert union_recall(first, task, ["q"], 2, 1) == {"q": 0.5}
    assert union_recall(first, task, ["q"], 2, 2) == {"q": 1.0}


def test_scored_union_restrict_keeps_union_order_and_refuses_unscored_depths(tmp_path: Path) -> None:
    from mm_rerank_components.eval.pipelines import compute_first_stage

    task = load_labelled_jsonl(write_corpus(tmp_path))
    first = compute_first_stage(task, HashingEmbedder())
    deep = score_union(task, first, FakeScorer(), task.query_ids(), 4, 4)
    shallow = score_union(task, first, FakeScorer(), task.query_ids(), 2, 1)
    assert deep.restrict(first, 2, 1).items == shallow.items
    with pytest.raises(ValueError, match="never scored"):
        shallow.restrict(first, 4, 4)


def test_task_names_come_from_the_data_not_the_file_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = load_labelled_jsonl(write_corpus(tmp_path / "a"))
    path = write_corpus(tmp_path / "b")
    path.write_text(path.read_text().replace("bright", "vivid"))
    two = load_labelled_jsonl(path)
    assert one.name != two.name  # both files are labels.jsonl
    named = tmp_path / "b" / "named.jsonl"
    named.write_text('{"type": "task", "name": "fox-photos", "description": "foxes"}\n' + path.read_text())
    task = load_labelled_jsonl(named)
    assert (task.name, task.description) == ("fox-photos", "foxes")
    named.write_text('{"type": "task", "name": "x"}\n{"type": "task", "name": "y"}\n' + path.read_text())
    with pytest.raises(ValueError, match=r"named.jsonl:2: a second \"task\" line"):
        load_labelled_jsonl(named)


def test_run_evaluation_refuses_two_tasks_with_one_name(tmp_path: Path) -> None:
    from mm_rerank_components.eval.runner import run_evaluation

    task = load_labelled_jsonl(write_corpus(tmp_path), name="same")
    with pytest.raises(ValueError, match="two tasks are named 'same'"):
        run_evaluation([task, task], HashingEmbedder(), {"fake": FakeScorer()}, methods=("platt",))


def test_run_evaluation_reports_progress_through_logging_and_callback_never_print(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from mm_rerank_components.eval.runner import run_evaluation

    task = load_labelled_jsonl(write_corpus(tmp_path))
    lines: list[str] = []
    scored: dict[str, Any] = {}
    with caplog.at_level(logging.INFO, logger="mm_rerank_components.eval.runner"):
        results = run_evaluation(
            [task],
            HashingEmbedder(),
            {"fake": FakeScorer()},
            methods=("platt",),
            k_text=2,
            k_image=2,
            depths=(1, 2),
            plots=False,
            progress=lines.append,
            scored_out=scored,
        )
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert any("scored the unions with fake" in line for line in lines)
    assert any("scored the unions with fake" in r.getMessage() for r in caplog.records)
    assert set(scored[task.name]) == {"fake"}
    sweep = results["depth_sweep"][task.name]["depths"]
    assert set(sweep) == {"1", "2"}
    # deeper pools can only hold more of the relevant documents
    assert sweep["2"]["union_recall"]["value"] >= sweep["1"]["union_recall"]["value"]
    assert sweep["1"]["rrf"]["recall@10"]["vs_first_depth"] == 0.0


def test_score_union_disk_cache_skips_rescoring(tmp_path: Path) -> None:
    from mm_rerank_components.eval.pipelines import compute_first_stage

    task = load_labelled_jsonl(write_corpus(tmp_path))
    first = compute_first_stage(task, HashingEmbedder())
    scorer = FakeScorer()
    one = score_union(task, first, scorer, task.query_ids(), 2, 2, cache_dir=tmp_path / "c")
    calls = scorer.calls
    two = score_union(task, first, scorer, task.query_ids(), 2, 2, cache_dir=tmp_path / "c")
    assert scorer.calls == calls  # read back, not rescored
    assert two.items == {q: [tuple(x) for x in v] for q, v in one.items.items()}
    task.queries["q-red"] = "crimson colour"  # any change in the data invalidates the cache
    score_union(task, first, scorer, task.query_ids(), 2, 2, cache_dir=tmp_path / "c")
    assert scorer.calls > calls


@pytest.mark.slow
def test_learned_rows_depth_sweep_and_latency_on_user_data(tmp_path: Path) -> None:
    from mm_rerank_components.defaults import default_reranker
    from mm_rerank_components.eval.runner import run_evaluation

    task = load_labelled_jsonl(write_corpus(tmp_path))
    results = run_evaluation(
        [task],
        HashingEmbedder(),
        {"fake": FakeScorer()},
        methods=("platt",),
        k_text=2,
        k_image=2,
        depths=(1, 2),
        plots=False,
        learned_scorer="fake",
        latency=lambda: default_reranker(FakeScorer()),
        label_free=True,
    )
    entry = results["tasks"][task.name]
    # user data: the shipped default as is (it never saw this data), and a row adapted on dev
    assert {"default", "adapted"} <= set(entry["pipelines"])
    rows = entry["targets"]["rows"]
    assert rows["default"]["role"] == "product default"
    # issue 19: the default is never significantly below any fusion on R@10, per task
    names = {c["name"] for c in rows["default"]["checks"]}
    assert {f"default vs {b}, recall@10" for b in ("raw-merge", "rrf", "minmax", "zscore")} <= names, names
    assert any("ECE" in c["name"] for c in rows["adapted"]["checks"])
    assert {c["name"].split(",")[0] for c in results["pooled"]["adapted"]} == {"adapted vs default"}
    assert set(results["latency"][task.name]) == {"1", "2"}
    assert results["latency"][task.name]["2"]["candidates"] > results["latency"][task.name]["1"]["candidates"]
    assert "default" in results["depth_sweep"][task.name]["depths"]["2"]
    # the same models on candidates stripped of route signals, with their calibration checked
    assert {"default-no-routes", "adapted-no-routes"} <= set(entry["pipelines"])
    assert any("ECE" in c["name"] for c in rows["default-no-routes"]["checks"])
    from mm_rerank_components.eval.report import EvalReport

    # the label-free row: adapted to the task's documents alone, measured on the same queries
    assert "label-free" in entry["pipelines"] and "label-free" in entry["calibration"]
    assert rows["label-free"]["role"] == "adapted to the corpus without labels"
    assert any(c["name"].startswith("label-free vs rrf") for c in results["pooled"]["label-free"])
    # pooled same-score tables: every learned row, its test pairs cut into score bins per modality
    same = results["same_score"]
    assert {"default", "adapted", "default-no-routes", "label-free"} <= set(same)
    test_pairs = entry["calibration"]["default"]["test_pairs"]
    assert same["default"]["pairs"] == test_pairs and same["default"]["tasks"] == [task.name]
    assert [b["bin"] for b in same["default"]["bins"]] == [(0.1, 0.2), (0.2, 0.4), (0.4, 0.7), (0.7, 1.0)]
    binned = sum(b[m]["pairs"] for b in same["default"]["bins"] for m in ("image", "text"))
    figures = entry["calibration"]["default"]["test"]
    assert binned == sum(f["above_0.1"]["pairs"] for f in figures.values())  # every pair >= 0.1, once
    text = EvalReport(results).markdown()
    assert "## Same score, same meaning?" in text and "| default | 0.2-0.4 |" in text
    from mm_rerank_components.eval.report import same_score_lines, write_json

    written = json.loads(write_json(results, tmp_path / "results.json").read_text())  # nan -> null
    assert same_score_lines(written["same_score"]) == same_score_lines(results["same_score"])
    assert "### Targets: default-no-routes (default, candidates without route signals)" in text
    assert text.count("## ") >= 2 and "retriever's own merge" in text


def test_learned_rows_are_skipped_with_a_reason_without_the_adapt_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mm_rerank_components.eval.runner as runner

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise ImportError('bm25s is not installed: pip install "mm-rerank-components[adapt]"')

    monkeypatch.setattr(runner, "learned_rows", missing)
    task = load_labelled_jsonl(write_corpus(tmp_path))
    lines: list[str] = []
    results = runner.run_evaluation(
        [task],
        HashingEmbedder(),
        {"fake": FakeScorer()},
        methods=("platt",),
        k_text=2,
        k_image=2,
        plots=False,
        learned_scorer="fake",
        progress=lines.append,
    )
    assert "default" not in results["tasks"][task.name]["pipelines"]
    assert any("no default/adapted rows" in line and "[adapt]" in line for line in lines)


def test_union_is_the_retrievers_merge() -> None:
    """The eval's first stage hands the reranker what ChromaMultiCollectionRetriever would."""
    from mm_rerank_components.retrievers._hits import Hit, merge

    _, first = _toy_first_stage()
    union = first.union("q", 2, 2)
    routes = [
        [
            Hit(Candidate(d, text=d, source=route, retrieval_score=s), route, rank)
            for rank, (d, s) in enumerate(first.hits("q", route, 2))
        ]
        for route in ("text", "image")
    ]
    assert [(d, r) for d, r, _ in union] == [(c.id, c.source) for c in merge(routes)]
    assert [r for _, r, _ in union] == ["text", "image", "text", "image"]


def test_score_cache_survives_a_change_of_union_order(tmp_path: Path) -> None:
    """Scores are cached per query's candidate set, so a reordered union reads them back, reordered."""

    class Reversed(FirstStage):
        def union(self, query_id: str, k_text: int, k_image: int) -> list[tuple[str, str, float]]:
            return super().union(query_id, k_text, k_image)[::-1]

    class Refuses(FirstStageScorer):
        def score(self, query: Any, candidates: Any) -> list[float]:
            raise AssertionError("the cache should have answered")

    task, first = _toy_first_stage()
    scored = score_union(task, first, FirstStageScorer(), ["q"], 2, 2, cache_dir=tmp_path)
    flipped = Reversed(
        first.query_ids, first.text_ids, first.image_ids, first.text_scores, first.image_scores
    )
    cached = score_union(task, flipped, Refuses(), ["q"], 2, 2, cache_dir=tmp_path)
    assert cached.items["q"] == scored.items["q"][::-1]
    assert len(list(tmp_path.glob("union-*.json"))) == 1
