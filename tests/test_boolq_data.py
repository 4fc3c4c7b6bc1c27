"""The synthetic BoolQ data: deterministic, balanced, correct, and not answerable from the question alone."""
from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import boolq_data  # noqa: E402
from boolq_data import write_boolq_jsonl  # noqa: E402

from sat_accel.data.hf import load_hf_dataset  # noqa: E402

BUILDING = re.compile(
    r"the (\w+) (\w+) at (\w+ \w+) was built in (\d+) by a (\w+) named \w+ \w+\. it is made of (\w+)"
)
QUESTIONS = {
    "color": re.compile(r"^is the (\w+) at (\w+ \w+) (\w+)$"),
    "material": re.compile(r"^is the (\w+) at (\w+ \w+) made of (\w+)$"),
    "trade": re.compile(r"^was the (\w+) at (\w+ \w+) built by a (\w+)$"),
    "year": re.compile(r"^was the (\w+) at (\w+ \w+) built in (\d+)$"),
    "before": re.compile(r"^was the (\w+) at (\w+ \w+) built (before|after) (\d+)$"),
}
DEFAULT_TYPES = {"color", "material", "trade", "year"}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def template(question: str) -> str:
    """Which question kind this is ('material' is tried before 'color': both start 'is the')."""
    for name in ("material", "year", "before", "trade", "color"):
        if QUESTIONS[name].match(question):
            return name
    raise AssertionError(f"question matches no template: {question!r}")


def oracle(row: dict) -> bool:
    """Answer by reading the passage: find the asked building, look the fact up or compare the year."""
    buildings = {(m[1], m[2]): m for m in BUILDING.findall(row["passage"].lower())}
    kind = template(row["question"])
    q = QUESTIONS[kind].match(row["question"]).groups()
    color, _, _, year, trade, material = buildings[(q[0], q[1])]
    if kind == "before":
        return int(year) < int(q[3]) if q[2] == "before" else int(year) > int(q[3])
    return {"color": color, "material": material, "trade": trade, "year": year}[kind] == q[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return write_boolq_jsonl(tmp_path_factory.mktemp("boolq"), n_train=2000, n_valid=400, seed=0)


def test_files_fields_and_sizes(files):
    train, valid = read_rows(files["train"]), read_rows(files["validation"])
    assert (len(train), len(valid)) == (2000, 400)
    for row in train[:50] + valid[:50]:
        assert set(row) == {"question", "passage", "answer"}
        assert isinstance(row["answer"], bool) and row["question"] == row["question"].lower()
        assert row["passage"].count(". ") + 1 >= 2  # a few sentences
    pairs = {(r["question"], r["passage"]) for r in train}
    assert not any((r["question"], r["passage"]) in pairs for r in valid)


def test_same_seed_same_bytes_other_seed_differs(tmp_path, files):
    again = write_boolq_jsonl(tmp_path / "a", n_train=2000, n_valid=400, seed=0)
    other = write_boolq_jsonl(tmp_path / "b", n_train=2000, n_valid=400, seed=1)
    assert again["train"].read_bytes() == files["train"].read_bytes()
    assert again["validation"].read_bytes() == files["validation"].read_bytes()
    assert other["train"].read_bytes() != files["train"].read_bytes()


def test_answers_follow_from_the_passage(files):
    rows = read_rows(files["train"]) + read_rows(files["validation"])
    assert all(oracle(r) == r["answer"] for r in rows)


def test_every_template_balanced_with_both_answers(files):
    rows = read_rows(files["train"])
    assert 0.45 <= sum(r["answer"] for r in rows) / len(rows) <= 0.55
    by_template = defaultdict(list)
    for r in rows:
        by_template[template(r["question"])].append(r["answer"])
    assert set(by_template) == DEFAULT_TYPES
    for name, answers in by_template.items():
        assert 0.4 <= sum(answers) / len(answers) <= 0.6, name


def test_value_in_question_does_not_predict_answer(files):
    """Per asked word value (e.g. 'red', 'stone'), yes and no both occur and neither dominates."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in read_rows(files["train"]):
        if template(r["question"]) != "year":  # years: too many values for per-value counts
            counts[r["question"].split()[-1]][r["answer"]] += 1
    assert len(counts) == len(boolq_data.COLORS) + len(boolq_data.MATERIALS) + len(boolq_data.TRADES)
    for value, c in counts.items():
        assert c[True] > 0 and c[False] > 0, value
        assert c[True] / (c[True] + c[False]) <= 0.75, (value, c)


def test_harder_options_stay_correct_and_balanced(tmp_path):
    paths = write_boolq_jsonl(tmp_path, n_train=600, n_valid=50, seed=3, n_buildings=2,
                              question_types=["before", "color"])
    rows = read_rows(paths["train"])
    assert all(r["passage"].count("built in") == 2 for r in rows)
    assert {template(r["question"]) for r in rows} == {"before", "color"}
    assert all(oracle(r) == r["answer"] for r in rows)
    before = [r["answer"] for r in rows if template(r["question"]) == "before"]
    assert 0.4 <= sum(before) / len(before) <= 0.6


@pytest.mark.parametrize("kwargs, message", [
    ({"n_buildings": 0}, "n_buildings must be between"),
    ({"question_types": ["colour"]}, r"Unknown question types \['colour'\]"),
    ({"question_types": []}, "Unknown question types"),
])
def test_rejects_bad_options(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_boolq_jsonl(tmp_path, n_train=5, n_valid=5, **kwargs)


def bag_of_words(texts: list[str], vocab: dict[str, int]) -> torch.Tensor:
    """Binary unigram + bigram features."""
    x = torch.zeros(len(texts), len(vocab))
    for i, text in enumerate(texts):
        words = text.split()
        for feature in words + [" ".join(p) for p in zip(words, words[1:])]:
            if feature in vocab:
                x[i, vocab[feature]] = 1.0
    return x


def test_question_alone_is_near_chance(files):
    """A logistic regression on the question's words cannot beat ~chance on validation."""
    train, valid = read_rows(files["train"]), read_rows(files["validation"])
    features = sorted({f for r in train for w in [r["question"].split()] for f in w + [" ".join(p) for p in zip(w, w[1:])]})
    vocab = {f: i for i, f in enumerate(features)}
    x_train, x_valid = bag_of_words([r["question"] for r in train], vocab), bag_of_words([r["question"] for r in valid], vocab)
    y_train = torch.tensor([float(r["answer"]) for r in train])
    y_valid = torch.tensor([float(r["answer"]) for r in valid])
    torch.manual_seed(0)
    model = torch.nn.Linear(len(vocab), 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x_train).squeeze(-1), y_train)
        loss.backward()
        opt.step()
    train_acc = ((model(x_train).squeeze(-1) > 0).float() == y_train).float().mean().item()
    valid_acc = ((model(x_valid).squeeze(-1) > 0).float() == y_valid).float().mean().item()
    assert train_acc > valid_acc  # it did fit something (noise) on the training questions ...
    assert valid_acc <= 0.6  # ... which does not carry over: the answer needs the passage


def test_loads_with_load_hf_dataset(files, tmp_path):
    words = {w: i for i, w in enumerate(sorted({*boolq_data.COLORS, *boolq_data.MATERIALS, *boolq_data.TRADES}))}

    def process_fn(row):
        ids = [words.get(w, len(words)) for w in row["question"].split()]
        return {"input_ids": (ids + [0] * 12)[:12], "label": int(row["answer"])}

    ds = load_hf_dataset(str(files["validation"]), process_fn, columns=["input_ids", "label"], cache_dir=str(tmp_path))
    assert len(ds) == 400 and ds[0]["input_ids"].shape == (12,)
    assert ds[:]["label"].tolist() == [int(r["answer"]) for r in read_rows(files["validation"])]


def test_rejects_empty_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_train and n_valid must be at least 1"):
        write_boolq_jsonl(tmp_path, n_train=0)
