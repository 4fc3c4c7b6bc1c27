"""A small synthetic BoolQ-format dataset, so the BoolQ example runs with no internet.

Rows have BoolQ's fields: ``question`` (lower case, no question mark, as in BoolQ), ``passage`` (a few
plain English sentences) and ``answer`` (bool). Each passage describes two buildings (kind, place,
colour, material, year built, builder's trade); the question asks about ONE of them:

* one fact lookup:   "is the lighthouse at cedar point red"            (colour / material / trade)
* one comparison:    "was the lighthouse at cedar point built before 1900"

The question is drawn first and the passage second, so the question alone says nothing about the
answer: every question template appears with both answers, 50/50, and the value named in the question
is the passage's value exactly when the answer is yes. The second building is a distractor: its values
are drawn independently, so a yes/no cannot be read off "does the word occur in the passage" alone
for every row, and the reader has to look at the right building.

Usage::

    python examples/boolq_data.py OUT_DIR            # writes OUT_DIR/train.jsonl, OUT_DIR/validation.jsonl

or ``write_boolq_jsonl(folder, n_train=2000, n_valid=400, seed=0)`` from code. The files load with
``load_hf_dataset("OUT_DIR/train.jsonl", process_fn)``. Same seed -> byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

KINDS = ["lighthouse", "bridge", "tower", "mill", "chapel", "school", "library", "barn", "museum", "hotel"]
PLACE_NAMES = ["cedar", "willow", "eagle", "silver", "maple", "raven", "otter", "pine", "fox", "oak"]
PLACE_TYPES = ["point", "bay", "hill", "creek", "falls", "valley", "ridge", "harbor"]
COLORS = ["red", "blue", "green", "white", "black", "yellow", "gray", "brown"]
MATERIALS = ["stone", "wood", "brick", "steel", "glass", "iron", "clay", "marble"]
TRADES = ["farmer", "sailor", "teacher", "doctor", "baker", "miner", "painter", "soldier", "carpenter"]
FIRST_NAMES = ["thomas", "anna", "james", "maria", "peter", "clara", "henry", "alice", "george", "emma"]
LAST_NAMES = ["reed", "carter", "moore", "shaw", "price", "brooks", "ward", "hayes", "fisher"]
THRESHOLDS = [1900]
# Years at least this far from the question's threshold, so "before 1900" never hinges on 1899 vs 1901.
YEAR_MARGIN = 15
QUESTION_TYPES = ["color", "material", "trade", "year"]


def _building(rng: random.Random, kind: str, place: str) -> dict:
    """Random attributes for one building (values are later overridden for the asked building)."""
    return {
        "kind": kind,
        "place": place,
        "color": rng.choice(COLORS),
        "material": rng.choice(MATERIALS),
        "trade": rng.choice(TRADES),
        "year": rng.randint(1730, 1990),
        "builder": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}".title(),
    }


def _describe(b: dict, first: bool) -> str:
    """Two or three sentences about one building, in a randomly chosen but fixed set of phrasings."""
    place = b["place"].title()
    opener = "The" if first else "Not far away, the"
    return (
        f"{opener} {b['color']} {b['kind']} at {place} was built in {b['year']} "
        f"by a {b['trade']} named {b['builder']}. "
        f"It is made of {b['material']} and is still in use today."
    )


def _ask(rng: random.Random, target: dict, qtype: str, answer: bool) -> str:
    """Write the question about ``target`` and set ``target``'s value so that the answer is ``answer``."""
    subject = f"the {target['kind']} at {target['place']}"
    if qtype == "year":
        threshold, before = rng.choice(THRESHOLDS), rng.random() < 0.5
        earlier = before == answer
        lo, hi = (threshold - 110, threshold - YEAR_MARGIN) if earlier else (threshold + YEAR_MARGIN, threshold + 90)
        target["year"] = rng.randint(max(lo, 1730), min(hi, 2020))
        return f"was {subject} built {'before' if before else 'after'} {threshold}"
    values = {"color": COLORS, "material": MATERIALS, "trade": TRADES}[qtype]
    asked = rng.choice(values)
    target[qtype] = asked if answer else rng.choice([v for v in values if v != asked])
    if qtype == "color":
        return f"is {subject} {asked}"
    if qtype == "material":
        return f"is {subject} made of {asked}"
    return f"was {subject} built by a {asked}"


def make_example(rng: random.Random, n_buildings: int = 2) -> dict:
    """One BoolQ-format row: {'question': str, 'passage': str, 'answer': bool}."""
    kinds = rng.sample(KINDS, n_buildings)
    places = [f"{n} {t}" for n, t in zip(rng.sample(PLACE_NAMES, n_buildings), rng.sample(PLACE_TYPES, n_buildings))]
    buildings = [_building(rng, k, p) for k, p in zip(kinds, places)]
    asked = rng.randrange(n_buildings)
    answer = rng.random() < 0.5
    question = _ask(rng, buildings[asked], rng.choice(QUESTION_TYPES), answer)
    passage = " ".join(_describe(b, i == 0) for i, b in enumerate(buildings))
    return {"question": question, "passage": passage, "answer": answer}


def make_boolq_rows(n: int, seed: int, n_buildings: int = 2) -> list[dict]:
    """``n`` rows from a generator seeded with ``seed`` (deterministic)."""
    rng = random.Random(seed)
    return [make_example(rng, n_buildings) for _ in range(n)]


def write_boolq_jsonl(folder: str | Path, n_train: int = 2000, n_valid: int = 400, seed: int = 0) -> dict[str, Path]:
    """Write ``train.jsonl`` and ``validation.jsonl`` to ``folder``; return ``{'train': path, 'validation': path}``.

    Validation rows come from a separate seed stream and never repeat a training (question, passage) pair.
    """
    if n_train < 1 or n_valid < 1:
        raise ValueError(f"n_train and n_valid must be at least 1, got {n_train} and {n_valid}; pass positive sizes.")
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    train = make_boolq_rows(n_train, seed)
    seen = {(r["question"], r["passage"]) for r in train}
    rng = random.Random(seed + 1_000_003)
    valid: list[dict] = []
    while len(valid) < n_valid:
        row = make_example(rng)
        if (row["question"], row["passage"]) not in seen:
            valid.append(row)
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
    a = parser.parse_args()
    for split, path in write_boolq_jsonl(a.folder, a.n_train, a.n_valid, a.seed).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
