"""The example scripts on a tiny corpus built here (passages and generated pictures), with the real
offline starter models: each example's one-shot mode as a subprocess, as a user runs it; the chat loop and
the LLM paths in this process (``main(argv)``), so the starter weights load once for all of them.

The no-LLM runs check the extractive answer and the evidence; the LLM runs point the examples at a tiny
OpenAI-compatible server on 127.0.0.1 started by the test, to prove the framework LLM paths (LlamaIndex
query and chat engines, LangChain LCEL, both ReAct agents) really send the evidence and use the reply.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 240


def write_corpus(folder: Path) -> Path:
    """Four short passages and three simple pictures with captions."""
    folder.mkdir(parents=True, exist_ok=True)
    passages = {
        "cow.txt": "Cow\n\nThe cow is a farm animal that gives us milk. Cows eat grass in the meadow.",
        "koala.txt": "Koala\n\nThe koala lives in Australia and eats eucalyptus leaves.",
        "tower.txt": "Eiffel Tower\n\nThe Eiffel Tower is an iron tower in Paris, built in 1889.",
        "sea.txt": "The sea\n\nThe ocean is salty water that covers most of the planet.",
    }
    for name, text in passages.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    lines = []
    for name, caption, draw in (
        ("ball.png", "a red ball", lambda d: d.ellipse((20, 20, 108, 108), fill=(220, 20, 20))),
        (
            "grass.png",
            "green grass in a meadow",
            lambda d: d.rectangle((0, 64, 128, 128), fill=(30, 170, 40)),
        ),
        ("sky.png", "a blue sky", lambda d: d.rectangle((0, 0, 128, 80), fill=(60, 120, 230))),
    ):
        image = Image.new("RGB", (128, 128), (245, 245, 245))
        draw(ImageDraw.Draw(image))
        image.save(folder / name)
        lines.append(json.dumps({"file_name": name, "caption": caption}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("examples")
    return {"data": write_corpus(root / "corpus"), "db": root / "db"}


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MM_RERANK_LLM", "OPENAI_"))  # never reach a real LLM from a test
    }
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, **extra)
    return env


def run_example(
    script: str, corpus: dict[str, Path], *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        str(EXAMPLES / script),
        "--db",
        str(corpus["db"]),
        "--data",
        str(corpus["data"]),
        "--top-n",
        "4",
        "--k",
        "4",
        *args,
    ]
    result = subprocess.run(
        command, cwd=ROOT, env=_env(**env), input=stdin, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, f"{script} failed:\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def run_in_process(
    script: str,
    corpus: dict[str, Path],
    *args: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: str = "",
    **env: str,
) -> str:
    """Run ``script``'s ``main`` in this process (the starter weights load once per process), return stdout."""
    for name in list(os.environ):
        if name.startswith(("MM_RERANK_LLM", "OPENAI_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    spec = importlib.util.spec_from_file_location(f"example_{Path(script).stem}", EXAMPLES / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    argv = ["--db", str(corpus["db"]), "--data", str(corpus["data"]), "--top-n", "4", "--k", "4", *args]
    capsys.readouterr()
    assert module.main(argv) == 0
    return capsys.readouterr().out


def evidence_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("[")]


def assert_extractive_with_evidence(stdout: str, expect: str) -> None:
    assert "Extractive answer (no LLM configured)" in stdout
    assert "[1]" in stdout.split("Evidence, reranked")[0], "the answer cites evidence"
    lines = evidence_lines(stdout.split("Evidence, reranked")[-1])
    assert 1 <= len(lines) <= 4
    assert any(
        kind in lines[0] for kind in ("(passage,", "(picture,", "(picture with caption,", "(relevance")
    )
    assert "relevance " in lines[0]
    assert expect in lines[0], f"expected {expect!r} at rank 1:\n{stdout}"


# -- what the examples import: everything must come with mm-rerank-components[all] (issue #11, item 14) --


def _all_extra_closure() -> set[str]:
    """Canonical names of every distribution ``pip install "mm-rerank-components[all]"`` installs: the
    package's ``all`` extra (as installed), expanded through each installed package's requirements."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement("mm-rerank-components[all]")]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in visited:
            continue
        visited.add(key)
        seen.add(key[0])
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            continue  # not installed here (a platform marker): it has no imports to offer the examples
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (*req.extras, "")):
                todo.append(sub)
    return seen


def _required_imports(path: Path) -> set[str]:
    """Top-level modules ``path`` imports, except those guarded by ``except ImportError`` (optional)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            optional.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_every_example_runs_with_the_all_extra() -> None:
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    installed = _all_extra_closure()
    providers = packages_distributions()
    local = {p.stem for p in EXAMPLES.glob("*.py")} | {"mm_rerank_components", "__future__"}
    missing = []
    for script in sorted(EXAMPLES.glob("*.py")):
        for module in sorted(_required_imports(script) - local - set(sys.stdlib_module_names)):
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            if not dists & installed:
                missing.append(
                    f"{script.name} imports {module} ({', '.join(sorted(dists)) or 'not installed'})"
                )
    assert not missing, "not installed by mm-rerank-components[all]:\n" + "\n".join(missing)


# -- offline, extractive -------------------------------------------------------------------------------


def test_llamaindex_chatbot_one_shot(corpus: dict[str, Path]) -> None:
    result = run_example("llamaindex_chatbot.py", corpus, "--question", "Which farm animal gives us milk?")
    assert_extractive_with_evidence(result.stdout, "Cow")
    assert "The cow is a farm animal that gives us milk. (Cow [1])" in result.stdout


def test_langchain_chatbot_one_shot(corpus: dict[str, Path]) -> None:
    result = run_example("langchain_chatbot.py", corpus, "--question", "What does the koala eat?")
    assert_extractive_with_evidence(result.stdout, "Koala")
    assert "eats eucalyptus leaves. (Koala [1])" in result.stdout


def test_agent_tool_one_shot_both_frameworks(corpus: dict[str, Path]) -> None:
    result = run_example("agent_tool.py", corpus, "--question", "Where is the Eiffel Tower?")
    sections = result.stdout.split("=== ")[1:]
    assert [s.split(":")[0] for s in sections] == ["llama-index", "langchain"]
    for section in sections:
        assert "rule-based router (no LLM configured; not an LLM)" in section.splitlines()[0]
        assert_extractive_with_evidence(section, "Eiffel Tower")
    assert "LlamaIndex FunctionTool" in sections[0] and "LangChain @tool" in sections[1]


def test_web_chat_one_shot_json(corpus: dict[str, Path]) -> None:
    result = run_example("web_chat.py", corpus, "--question", "a red ball")
    data = json.loads(result.stdout)
    assert data["extractive"] is True and data["answer"].startswith("Extractive answer")
    evidence = data["evidence"]
    assert evidence[0]["modality"] in ("image", "text+image") and evidence[0]["title"] == "a red ball"
    scores = [e["score"] for e in evidence]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)


def test_chat_loop_reads_questions_until_exit(
    corpus: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = "What does the koala eat?\nexit\nnever asked\n"
    out = run_in_process("llamaindex_chatbot.py", corpus, capsys=capsys, monkeypatch=monkeypatch, stdin=stdin)
    assert out.count("you>") == 2
    assert "eats eucalyptus leaves. (Koala [1])" in out and "never asked" not in out


# -- with an LLM: a tiny OpenAI-compatible server on loopback ---------------------------------------------


class FakeLLM(BaseHTTPRequestHandler):
    """Plays a ReAct agent (search first, answer after an observation) or a plain RAG answerer."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeLLM.requests.append(body)
        conversation = "\n".join(str(m.get("content")) for m in body["messages"])
        if "search_passages_and_pictures" in conversation and "Observation: [1]" not in conversation:
            wants_json = "JSON" in conversation  # LlamaIndex's ReAct prompt asks for JSON tool input
            action_input = '{"query": "koala food"}' if wants_json else "koala food"
            content = f"Thought: I should search.\nAction: search_passages_and_pictures\nAction Input: {action_input}"
        elif "search_passages_and_pictures" in conversation:
            content = "Thought: I can answer without using any more tools.\nFinal Answer: FAKE-AGENT: eucalyptus [1]."
        else:
            content = "FAKE-LLM: koalas eat eucalyptus [1]."
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def llm_env() -> Iterator[dict[str, str]]:
    FakeLLM.requests.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {
            "MM_RERANK_LLM_MODEL": "fake-llm",
            "MM_RERANK_LLM_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}/v1",
            "MM_RERANK_LLM_API_KEY": "sk-test",
        }
    finally:
        server.shutdown()
        server.server_close()


def test_llamaindex_chatbot_with_llm(
    corpus: dict[str, Path],
    llm_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = run_in_process(
        "llamaindex_chatbot.py",
        corpus,
        "--question",
        "What does the koala eat?",
        capsys=capsys,
        monkeypatch=monkeypatch,
        **llm_env,
    )
    assert out.startswith("FAKE-LLM: koalas eat eucalyptus [1].")
    assert "Extractive" not in out
    (request,) = FakeLLM.requests
    prompt = request["messages"][-1]["content"]
    assert "Question: What does the koala eat?" in prompt
    assert "[1] Koala (passage, relevance " in prompt and "content_id" not in prompt
    assert request["model"] == "fake-llm"


def test_langchain_chatbot_chat_loop_with_llm(
    corpus: dict[str, Path],
    llm_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdin = "What does the koala eat?\nAnd the cow?\n"
    out = run_in_process(
        "langchain_chatbot.py", corpus, capsys=capsys, monkeypatch=monkeypatch, stdin=stdin, **llm_env
    )
    assert out.count("FAKE-LLM: koalas eat eucalyptus [1].") == 2
    assert len(FakeLLM.requests) == 2
    second = FakeLLM.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]  # history is kept
    assert "Question: And the cow?" in second[-1]["content"]


def test_agents_call_the_tool_with_llm(
    corpus: dict[str, Path],
    llm_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = run_in_process(
        "agent_tool.py",
        corpus,
        "--question",
        "What does the koala eat?",
        capsys=capsys,
        monkeypatch=monkeypatch,
        **llm_env,
    )
    sections = out.split("=== ")[1:]
    assert "LlamaIndex ReActAgent with fake-llm" in sections[0]
    assert "LangChain ReAct agent (langchain-core loop) with fake-llm" in sections[1]
    for section in sections:
        assert "FAKE-AGENT: eucalyptus [1]." in section
        lines = evidence_lines(section.split("Evidence, reranked")[-1])
        assert lines and "Koala" in lines[0], section  # the evidence came through the tool call
    observations = [r for r in FakeLLM.requests if "Observation: [1]" in json.dumps(r)]
    assert len(observations) == 2  # one agent turn per framework saw the tool's output


def test_web_chat_with_a_reranker_folder(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Issue 23: ``--reranker FOLDER`` (what mm-rerank adapt writes) replaces the default reranker."""
    from test_cli import _saved_fake_reranker

    saved = _saved_fake_reranker(tmp_path / "my-reranker")
    result = run_example("web_chat.py", corpus, "--question", "a red ball", "--reranker", str(saved))
    assert f"reranker: the folder {saved}" in result.stderr
    data = json.loads(result.stdout)
    scores = [e["score"] for e in data["evidence"]]
    assert data["evidence"] and scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    missing = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "web_chat.py"),
            "--question",
            "x",
            "--reranker",
            str(tmp_path / "nope"),
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert missing.returncode == 1 and "is not a folder (write one with mm-rerank adapt)" in missing.stderr


def test_examples_read_captions_like_the_cli(tmp_path: Path) -> None:
    """``--read-captions`` on every example (one shared parser) turns on the same opt-in as ``mm-rerank
    query --read-captions``; off by default."""
    from test_cli import _saved_fake_reranker

    spec = importlib.util.spec_from_file_location("example_common", EXAMPLES / "_common.py")
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    saved = _saved_fake_reranker(tmp_path / "my-reranker")
    assert common.parser("x").parse_args(["--read-captions"]).read_captions is True
    assert common.parser("x").parse_args([]).read_captions is False
    assert common.make_reranker(saved, read_captions=True).read_captions is True
    assert common.make_reranker(saved).read_captions is False
