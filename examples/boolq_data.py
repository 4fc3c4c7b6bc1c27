"""A small synthetic BoolQ-format dataset, so the BoolQ example runs with no internet.

Rows have BoolQ's fields: ``question`` (lower case, no question mark, as in BoolQ), ``passage`` (plain
English sentences) and ``answer`` (bool). A passage describes a building (kind, place, colour, material,
year built, the builder's trade and name); the question asks one fact about it, e.g.

    passage:  "The red lighthouse at Cedar Point was built in 1874 by a baker named Thomas Reed.
               It is made of stone and is still in use today."
    question: "is the lighthouse at cedar point made of brick"  -> False
              "was the lighthouse at cedar point built in 1874"  -> True

The question is drawn first and the passage second, so the question alone says nothing about the
answer: every question template appears with both answers, 50/50, and the value named in the question
is the passage's value exactly when the answer is yes. Options: ``n_buildings=2`` adds a second
(distractor) building to each passage, so the reader has to find the right one; question type
"before" asks a comparison ("was the lighthouse at cedar point built before 1900"). Both make the task
slower to learn. With the defaults a small pretrained BERT (MiniLM-L6, hidden 384) reaches >= 0.99
validation accuracy within about 120 steps of batch 8 (about 30 s on 2 free CPU cores; see
bench/boolq_learnability.py and bench/RESULTS.md).

Usage::

    python examples/boolq_data.py OUT_DIR            # writes OUT_DIR/train.jsonl, OUT_DIR/validation.jsonl

or ``write_boolq_jsonl(folder, n_train=2000, n_valid=400, seed=0)`` from code. The files load with
``load_hf_dataset("OUT_DIR/train.jsonl", process_fn)``. Same arguments -> byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Sequence

KINDS = ["lighthouse", "bridge", "tower", "mill", "chapel", "school", "library", "barn", "museum", "hotel"]
PLACE_NAMES = ["cedar", "willow", "eagle", "silver", "maple", "raven", "otter", "pine", "fox", "oak"]
PLACE_TYPES = ["point", "bay", "hill", "creek", "falls", "valley", "ridge", "harbor"]
COLORS = ["red", "blue", "green", "white", "black", "yellow", "gray", "brown"]
MATERIALS = ["stone", "wood", "brick", "steel", "glass", "iron", "clay", "marble"]
TRADES = ["farmer", "sailor", "teacher", "doctor", "baker", "miner", "painter", "soldier", "carpenter"]
FIRST_NAMES = ["thomas", "anna", "james", "maria", "peter", "clara", "henry", "alice", "george", "emma"]
LAST_NAMES = ["reed", "carter", "moore", "shaw", "price", "brooks", "ward", "hayes", "fisher"]
FIRST_YEAR, LAST_YEAR = 1750, 1990  # every year in this range is one word in BERT's uncased vocabulary
THRESHOLD = 1900
# "before 1900" questions keep the year at least this far from 1900, so no answer hinges on 1899 vs 1901.
YEAR_MARGIN = 15
# Default: four fact lookups, which MiniLM-L6 learns in ~100 steps. "before" (a comparison with 1900) is
# a harder option: in our runs it stayed at chance for 175 steps (see bench/RESULTS.md).
QUESTION_TYPES = ("color", "material", "trade", "year")
ALL_QUESTION_TYPES = QUESTION_TYPES + ("before",)


def _building(rng: random.Random, kind: str, place: str) -> dict:
    """Random attributes for one building (the asked one is then set to fit the answer)."""
    return {
        "kind": kind,
        "place": place,
        "color": rng.choice(COLORS),
        "material": rng.choice(MATERIALS),
        "trade": rng.choice(TRADES),
        "year": rng.randint(FIRST_YEAR, LAST_YEAR),
        "builder": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}".title(),
    }


def _describe(b: dict, first: bool) -> str:
    """Two sentences about one building."""
    opener = "The" if first else "Not far away, the"
    return (
        f"{opener} {b['color']} {b['kind']} at {b['place'].title()} was built in {b['year']} "
        f"by a {b['trade']} named {b['builder']}. It is made of {b['material']} and is still in use today."
    )


def _ask_year(rng: random.Random, target: dict, qtype: str, answer: bool, subject: str) -> str:
    """A year question: exact lookup ('built in 1874') or comparison ('built before 1900')."""
    if qtype == "before":
        before = rng.random() < 0.5
        earlier = before == answer
        lo, hi = (FIRST_YEAR, THRESHOLD - YEAR_MARGIN) if earlier else (THRESHOLD + YEAR_MARGIN, LAST_YEAR)
        target["year"] = rng.randint(lo, hi)
        return f"was {subject} built {'before' if before else 'after'} {THRESHOLD}"
    asked = rng.randint(FIRST_YEAR, LAST_YEAR)
    other = [y for y in range(asked - 40, asked + 41) if y != asked and FIRST_YEAR <= y <= LAST_YEAR]
    target["year"] = asked if answer else rng.choice(other)
    return f"was {subject} built in {asked}"


def _ask(rng: random.Random, target: dict, qtype: str, answer: bool) -> str:
    """Write the question about ``target`` and set ``target``'s value so that the answer is ``answer``."""
    subject = f"the {target['kind']} at {target['place']}"
    if qtype in ("year", "before"):
        return _ask_year(rng, target, qtype, answer, subject)
    values = {"color": COLORS, "material": MATERIALS, "trade": TRADES}[qtype]
    asked = rng.choice(values)
    target[qtype] = asked if answer else rng.choice([v for v in values if v != asked])
    if qtype == "color":
        return f"is {subject} {asked}"
    if qtype == "material":
        return f"is {subject} made of {asked}"
    return f"was {subject} built by a {asked}"


def make_example(rng: random.Random, n_buildings: int = 1, question_types: Sequence[str] = QUESTION_TYPES) -> dict:
    """One BoolQ-format row: {'question': str, 'passage': str, 'answer': bool}.

    The question is drawn before the passage: its type, building and value never depend on the answer.
    """
    kinds = rng.sample(KINDS, n_buildings)
    places = [f"{n} {t}" for n, t in zip(rng.sample(PLACE_NAMES, n_buildings), rng.sample(PLACE_TYPES, n_buildings))]
    buildings = [_building(rng, k, p) for k, p in zip(kinds, places)]
    asked = rng.randrange(n_buildings)
    answer = rng.random() < 0.5
    question = _ask(rng, buildings[asked], rng.choice(list(question_types)), answer)
    passage = " ".join(_describe(b, i == 0) for i, b in enumerate(buildings))
    return {"question": question, "passage": passage, "answer": answer}


def make_boolq_rows(n: int, seed: int, n_buildings: int = 1, question_types: Sequence[str] = QUESTION_TYPES) -> list[dict]:
    """``n`` rows from a generator seeded with ``seed`` (deterministic)."""
    _check_options(n_buildings, question_types)
    rng = random.Random(seed)
    return [make_example(rng, n_buildings, question_types) for _ in range(n)]


def _check_options(n_buildings: int, question_types: Sequence[str]) -> None:
    if not 1 <= n_buildings <= min(len(KINDS), len(PLACE_TYPES)):
        raise ValueError(f"n_buildings must be between 1 and {len(PLACE_TYPES)}, got {n_buildings}.")
    unknown = sorted(set(question_types) - set(ALL_QUESTION_TYPES)) or ([] if question_types else ["(none)"])
    if unknown:
        raise ValueError(f"Unknown question types {unknown}; choose from {list(ALL_QUESTION_TYPES)}.")


def write_boolq_jsonl(
    folder: str | Path,
    n_train: int = 2000,
    n_valid: int = 400,
    seed: int = 0,
    n_buildings: int = 1,
    question_types: Sequence[str] = QUESTION_TYPES,
) -> dict[str, Path]:
    """Write ``train.jsonl`` and ``validation.jsonl`` to ``folder``; return ``{'train': path, 'validation': path}``.

    Validation rows come from a separate seed stream and never repeat a training (question, passage) pair.
    ``n_buildings=2`` adds a distractor building to every passage; ``question_types`` may add "before".
    """
    if n_train < 1 or n_valid < 1:
        raise ValueError(f"n_train and n_valid must be at least 1, got {n_train} and {n_valid}; pass positive sizes.")
    train = make_boolq_rows(n_train, seed, n_buildings, question_types)
    seen = {(r["question"], r["passage"]) for r in train}
    rng = random.Random(seed + 1_000_003)
    valid: list[dict] = []
    while len(valid) < n_valid:
        row = make_example(rng, n_buildings, question_types)
        if (row["question"], row["passage"]) not in seen:
            valid.append(row)
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"train": folder / "train.jsonl", "validation": folder / "validation.jsonl"}
    for split, rows in (("train", train), ("validation", valid)):
        with open(paths[split], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return paths


def main() -> None:
    """Command line: write the two files and print where they are."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="output folder (created if missing)")
    parser.add_argument("--n-train", type=int, default=2000, help="training rows")
    parser.add_argument("--n-valid", type=int, default=400, help="validation rows")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--n-buildings", type=int, default=1, help="buildings per passage (2 adds a distractor)")
    parser.add_argument("--question-types", nargs="+", default=list(QUESTION_TYPES), choices=ALL_QUESTION_TYPES,
                        help="question kinds to draw from ('before' is a harder comparison)")
    a = parser.parse_args()
    paths = write_boolq_jsonl(a.folder, a.n_train, a.n_valid, a.seed, a.n_buildings, a.question_types)
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
