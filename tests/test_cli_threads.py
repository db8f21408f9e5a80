"""``mm-rerank query`` runs on one torch thread unless told otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_rerank_components import cli


def _record(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    monkeypatch.setattr(cli, "set_threads", seen.append)
    return seen


def test_query_defaults_to_one_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = _record(monkeypatch)
    cli.main(["query", "x", "--db", str(tmp_path / "missing")])  # exits 2 (no database); threads set first
    assert seen == [1]
    assert "query" in cli.ONE_THREAD_COMMANDS


def test_threads_flag_and_omp_env_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = _record(monkeypatch)
    cli.main(["--threads", "2", "query", "x", "--db", str(tmp_path / "missing")])
    assert seen == [2]
    seen.clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    cli.main(["query", "x", "--db", str(tmp_path / "missing")])
    assert seen == []


def test_other_commands_keep_torch_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = _record(monkeypatch)
    cli.main(["info", "--db", str(tmp_path / "missing")])
    assert seen == []
