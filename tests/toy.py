"""The toy sentiment data every test trains on: short sentences with one positive or negative word."""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = ["good", "great", "lovely", "excellent", "wonderful", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "boring", "horrible"]
FILLER = ["the", "movie", "food", "service", "was", "really", "quite", "and", "plot", "staff", "very", "a", "room", "show"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "</s>"]
VOCAB = SPECIALS + POSITIVE + NEGATIVE + FILLER + ["neutral", "mixed", "fine"]


def toy_sentence(rng: random.Random, positive: bool) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(2, 9))]
    words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if positive else NEGATIVE))
    return " ".join(words)


def toy_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        rows.append({"text": toy_sentence(rng, positive), "label": "pos" if positive else "neg"})
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
