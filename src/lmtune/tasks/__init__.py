"""Tasks by name: what data a run reads, which head its model gets, how it is scored and used.

A task is one module with one class (see base.py for what the class declares); this registry
is the only place that lists them. The CLI, the config, the search, the report and inference
ask it.
"""

from __future__ import annotations

from lmtune.schema import Config
from lmtune.tasks.base import Evaluation, Splits, Task, TaskClass
from lmtune.tasks.causal_lm import CausalLMTask
from lmtune.tasks.classification import ClassificationTask
from lmtune.tasks.extractive_qa import ExtractiveQATask
from lmtune.tasks.translation import TranslationTask

TASKS: dict[str, TaskClass] = {
    task.name: task
    for task in (
        ClassificationTask,
        CausalLMTask,
        TranslationTask,
        ExtractiveQATask,
    )
}
DEFAULT_TASK = "classification"  # what a config without `task:` fine-tunes for
BASE_LM_TASK = "causal_lm"  # what `lmtune generate` and `lmtune chat` use a base (not fine-tuned) language model as


def build_task(cfg: Config) -> Task:
    return TASKS[cfg.task](cfg)


__all__ = ["BASE_LM_TASK", "DEFAULT_TASK", "TASKS", "Evaluation", "Splits", "Task", "TaskClass", "build_task"]
