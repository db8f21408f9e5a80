"""Label files for adaptation: eval format, FlagEmbedding lines, click logs, and errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mm_rerank_components.adapt.labels import LabelError, load_labels


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8"
    )
    return path


def _png(path: Path, colour: tuple[int, int, int] = (200, 20, 20)) -> Path:
    from PIL import Image

    Image.new("RGB", (16, 16), colour).save(path)
    return path


EVAL_LINES: list[object] = [
    {"type": "doc", "id": "d1", "text": "Foxes live in dens.", "metadata": {"year": 2001}},
    {"type": "doc", "id": "d2", "text": "Owls hunt at night."},
    {"type": "query", "id": "q1", "text": "where do foxes live", "relevant": ["d1"]},
    {"type": "query", "id": "q2", "text": "owls", "relevant": {"d2": 2, "d1": 0}, "split": "test"},
]


def test_eval_format(tmp_path: Path) -> None:
    labels = load_labels(_write(tmp_path / "labels.jsonl", EVAL_LINES))
    assert [q.id for q in labels.queries] == ["q1", "q2"]
    assert labels.queries[1].relevant == {"d2": 2} and labels.queries[1].negatives == {"d1"}
    assert labels.queries[0].where.endswith("labels.jsonl:3")
    assert labels.docs["d1"].metadata == {"year": 2001}
    assert len(labels.sha256) == 64
    assert [q.id for q in load_labels(tmp_path / "labels.jsonl", splits=("test",)).queries] == ["q2"]


def test_unknown_doc_id_names_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "labels.jsonl",
        [*EVAL_LINES, {"type": "query", "id": "q3", "text": "x", "relevant": ["nope"]}],
    )
    with pytest.raises(
        LabelError, match=r"labels\.jsonl:5: query 'q3' names unknown document id 'nope'"
    ) as info:
        load_labels(path)
    assert info.value.line == 5 and info.value.path == path


def test_query_without_positive_names_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "labels.jsonl",
        [*EVAL_LINES[:2], {"type": "query", "id": "q1", "text": "x", "relevant": {"d1": 0}}],
    )
    with pytest.raises(LabelError, match=r"labels\.jsonl:3: query 'q1' has no positive"):
        load_labels(path)
    flag = _write(
        tmp_path / "flag.jsonl", [{"query": "a", "pos": ["p"]}, {"query": "b", "pos": [], "neg": ["n"]}]
    )
    with pytest.raises(LabelError, match=r"flag\.jsonl:2: query has no positive"):
        load_labels(flag)


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "labels.jsonl", [EVAL_LINES[0], "# a comment", "", '{"type": "doc", "id": '])
    with pytest.raises(LabelError, match=r"labels\.jsonl:4: not valid JSON"):
        load_labels(path)
    other = _write(tmp_path / "other.jsonl", [{"hello": 1}])
    with pytest.raises(LabelError, match=r"other\.jsonl:1: expected an eval-format line"):
        load_labels(other)


def test_flagembedding_items(tmp_path: Path) -> None:
    _png(tmp_path / "fox.png")
    path = _write(
        tmp_path / "flag.jsonl",
        [
            {"query": "red fox", "pos": ["A red fox.", {"image": "fox.png"}], "neg": [{"text": "An owl."}]},
            {
                "query": "red  fox",
                "pos": [{"image": "fox.png", "text": "a fox photo"}],
                "neg": ["A red fox."],
            },
            {"query": "owl", "pos": ["An owl."]},
        ],
    )
    labels = load_labels(path)
    assert len(labels.queries) == 2  # "red  fox" is the same query as "red fox"
    fox = labels.queries[0]
    assert len(fox.relevant) == 3
    # "A red fox." is positive on line 1, so line 2's "neg" cannot make it a negative
    assert all(labels.docs[k].text == "An owl." for k in fox.negatives)
    modalities = sorted(labels.docs[k].modality for k in fox.relevant)
    assert modalities == ["image", "text", "text+image"]
    missing = _write(tmp_path / "missing.jsonl", [{"query": "x", "pos": [{"image": "nowhere.png"}]}])
    with pytest.raises(LabelError, match=r"missing\.jsonl:1: image 'nowhere.png' not found"):
        load_labels(missing)


def test_click_log_weak_labels(tmp_path: Path) -> None:
    data = _write(
        tmp_path / "labels.jsonl",
        [{"type": "doc", "id": f"d{i}", "text": f"passage {i}"} for i in range(1, 6)],
    )
    clicks = _write(
        tmp_path / "clicks.jsonl",
        [
            {"query": "foxes", "shown": ["d1", "d2", "d3", "d4"], "clicked": ["d3"]},
            {"query": "foxes", "shown": ["d3", "d1"], "clicked": ["d1"]},
            {"query": "owls", "shown": ["d5"], "clicked": []},
            {"query": "cats", "shown": [{"text": "an inline passage"}, "d5"], "clicked": ["d5"]},
        ],
    )
    labels = load_labels(data, clicks=clicks)
    foxes, cats = labels.queries
    assert foxes.relevant == {"d3": 1, "d1": 1} and foxes.weak
    # d1 and d2 were skipped above the click on line 1, but d1 was clicked on line 2: never a negative
    assert foxes.negatives == {"d2"}  # d4 was below the last click: no label
    assert len(cats.negatives) == 1
    assert labels.summary()["click_lines_without_click"] == 1
    bad = _write(tmp_path / "bad_clicks.jsonl", [{"query": "x", "shown": ["d1", "zz"], "clicked": ["d1"]}])
    with pytest.raises(LabelError, match=r"bad_clicks\.jsonl:1: unknown document id 'zz'"):
        load_labels(data, clicks=bad)


def test_click_log_alone_and_missing_files(tmp_path: Path) -> None:
    clicks = _write(
        tmp_path / "c.jsonl",
        [{"query": "x", "shown": [{"text": "a"}, {"text": "b"}], "clicked": [{"text": "b"}]}],
    )
    labels = load_labels(clicks=clicks)
    assert len(labels.queries) == 1 and len(labels.queries[0].negatives) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_labels(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="give a labels file"):
        load_labels()


# -- hostile and broken lines (issue 22 row 15): each an error with file:line and the reason ------------


def test_deep_nesting_is_refused_with_file_and_line(tmp_path: Path) -> None:
    deep = '{"query": "x", "pos": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = _write(tmp_path / "labels.jsonl", [{"query": "ok", "pos": ["fine"]}, deep])
    with pytest.raises(LabelError, match=r"labels\.jsonl:2: refused: JSON nested deeper than 32 levels"):
        load_labels(path)


def test_moderate_nesting_under_the_recursion_limit_is_refused_too(tmp_path: Path) -> None:
    line = '{"query": "x", "pos": [' + "[" * 200 + "]" * 200 + "]}"
    with pytest.raises(LabelError, match=r"labels\.jsonl:1: refused: JSON nested deeper than 32"):
        load_labels(_write(tmp_path / "labels.jsonl", [line]))


def test_huge_integer_is_refused_with_file_and_line(tmp_path: Path) -> None:
    line = '{"type": "query", "id": "q1", "text": "x", "relevant": {"d1": ' + "9" * 5000 + "}}"
    path = _write(tmp_path / "labels.jsonl", [EVAL_LINES[0], line])
    with pytest.raises(LabelError, match=r"labels\.jsonl:2: refused: an integer of 5000 digits"):
        load_labels(path)


def test_nan_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "labels.jsonl", ['{"query": "x", "pos": ["a"], "w": NaN}'])
    with pytest.raises(LabelError, match=r"labels\.jsonl:1: refused: NaN"):
        load_labels(path)


def test_lone_surrogate_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "labels.jsonl", ['{"query": "fox", "pos": ["a fox \\ud800 here"]}'])
    with pytest.raises(LabelError, match=r"labels\.jsonl:1: refused: a lone surrogate '\\ud800'"):
        load_labels(path)


def test_duplicate_query_ids_are_an_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "labels.jsonl",
        [*EVAL_LINES[:2], EVAL_LINES[2], {**EVAL_LINES[2], "relevant": ["d2"]}],  # type: ignore[dict-item]
    )
    with pytest.raises(
        LabelError, match=r"labels\.jsonl:4: duplicate query id 'q1' \(first at .*labels\.jsonl:3\)"
    ):
        load_labels(path)


def test_hash_split_matches_the_eval() -> None:
    from mm_rerank_components.adapt.labels import hash_split
    from mm_rerank_components.eval.tasks import assign_split

    assert all(hash_split(f"q{i}") == assign_split(f"q{i}") for i in range(200))


def test_documents_remember_their_line(tmp_path: Path) -> None:
    labels = load_labels(_write(tmp_path / "labels.jsonl", [*EVAL_LINES, {"query": "z", "pos": ["inline"]}]))
    assert labels.doc_where["d2"].endswith("labels.jsonl:2")
    inline = next(k for k, d in labels.docs.items() if d.text == "inline")
    assert labels.doc_where[inline].endswith("labels.jsonl:5")
