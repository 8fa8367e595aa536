"""A task that exists only in the tests: rating reviews, written as a new task is written, in one file.

It is a classifier under another name, with its own `data` key, its own predict input (`review`)
and its own endpoint (`POST /v1/rate`). `register()` adds it to the task registry; a test
process calls it, and `sitecustomize.py` in SITE (put on PYTHONPATH) calls it in the `lmtune
serve` and `lmtune ui` processes the tests start. Nothing else in lmtune names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from lmtune.data.classification import ClassificationSection
from lmtune.schema import Config
from lmtune.tasks import TASKS
from lmtune.tasks.base import TryPanel
from lmtune.tasks.classification import ClassificationConfig, ClassificationTask, Classifier

SITE = Path(__file__).resolve().parent / "toy_site"


class RatingSection(ClassificationSection):
    """`data` of task rating: reviews and their ratings."""

    text_column: str = Field("review", description="Column of the review to rate.")
    label_column: str = Field("rating", description="Column of the review's rating.")


class RatingConfig(ClassificationConfig):
    task: Literal["rating"] = "rating"  # type: ignore[assignment]
    data: RatingSection = Field(default_factory=RatingSection)


class Rater(Classifier):
    """A saved rating model: each record is one review."""

    @property
    def input_fields(self) -> list[str]:
        return ["review"]

    def read_records(self, path: str) -> list[dict[str, str]]:
        texts, _ = self.read_texts(path)
        return [{"review": t} for t in texts]

    def predict_records(self, records: list[dict[str, str]], batch_size: int = 32) -> list[dict[str, Any]]:
        return self.predict([r["review"] for r in records], None, batch_size)


class RatingTask(ClassificationTask):
    name: ClassVar[str] = "rating"
    config_class: ClassVar[type[Config]] = RatingConfig
    predict_inputs: ClassVar[dict[str, str]] = {"review": "rating: a review to rate (repeatable)"}
    predict_endpoint: ClassVar[str] = "rate"
    has_labels: ClassVar[bool] = True
    try_panel: ClassVar[TryPanel] = "predict"

    @classmethod
    def load_predictor(cls, folder: Path, meta: dict[str, Any], device: str) -> Rater:
        loaded = ClassificationTask.load_predictor(folder, meta, device)
        return Rater(loaded.model, loaded.tokenizer, meta, folder)


def register() -> None:
    TASKS[RatingTask.name] = RatingTask
