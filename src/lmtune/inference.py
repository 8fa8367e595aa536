"""Load a fine-tuned model (a run folder or a saved model folder) and use it, whatever its task."""

from __future__ import annotations

import shutil
from pathlib import Path

from lmtune.errors import ModelError
from lmtune.files import write_atomically
from lmtune.models.loading import default_device
from lmtune.models.saving import read_meta, save_model
from lmtune.run_dir import find_model_dir, resolve_model_dir, run_of_model
from lmtune.tasks import DEFAULT_TASK, TASKS
from lmtune.tasks.base import Predictor
from lmtune.tasks.classification import Classifier
from lmtune.tasks.generator import Generator

__all__ = ["Classifier", "Generator", "export_model", "find_model_dir", "load", "merge_adapter", "resolve_model_dir"]


def load(path: str | Path, device: str | None = None) -> Predictor:
    """Load a run folder (its best model) or a saved model folder, as its task uses it.

    Classification gives a `Classifier`, the tasks that write text a `Generator`; each task's
    class says what it gives (`load_predictor` in tasks/).
    """
    folder = resolve_model_dir(path)
    meta = read_meta(folder)
    task = meta.get("task", DEFAULT_TASK)
    if task not in TASKS:
        raise ModelError(f"{folder} holds a model of task {task!r}, which this lmtune does not know ({', '.join(TASKS)})")
    return TASKS[task].load_predictor(folder, meta, device or default_device())


def merge_adapter(path: str | Path, target: str | Path) -> Path:
    """Fold an adapter (LoRA and the other PEFT methods) into its base model and save a plain transformers model folder."""
    loaded = load(path, device="cpu")
    if not loaded.meta.get("adapter"):
        raise ModelError(f"{loaded.folder} holds a full model, not an adapter: there is nothing to merge")
    merged = loaded.model.merge_and_unload()  # type: ignore[operator]
    save_model(merged, loaded.tokenizer, {**loaded.meta, "merged_from": str(loaded.folder)}, Path(target))
    return Path(target)


def export_model(path: str | Path, target: str | Path | None = None, merge: bool = False) -> Path:
    """Write a run's model to a folder: merged (an adapter folded into its base) with `merge`, else as saved."""
    folder = resolve_model_dir(path)
    run = run_of_model(folder)
    out = Path(target) if target else (run.merged if merge else run.export)
    if merge:
        return merge_adapter(folder, out)
    write_atomically(out, lambda tmp: shutil.copytree(folder, tmp, dirs_exist_ok=True))
    return out
