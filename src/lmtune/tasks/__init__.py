"""Tasks by name: what data a run reads, which head its model gets, how it is scored."""

from __future__ import annotations

from lmtune.config import Config
from lmtune.tasks.base import Evaluation, Splits, Task
from lmtune.tasks.causal_lm import CausalLMTask
from lmtune.tasks.classification import ClassificationTask
from lmtune.tasks.translation import TranslationTask

TASKS: dict[str, type] = {"classification": ClassificationTask, "causal_lm": CausalLMTask, "translation": TranslationTask}


def build_task(cfg: Config) -> Task:
    return TASKS[cfg.task](cfg)


__all__ = ["TASKS", "Evaluation", "Splits", "Task", "build_task"]
