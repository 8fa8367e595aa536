"""The state of a run that outlives the process: the best model so far, and checkpoints of the whole run."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmtune.errors import CheckpointError, ConfigError
from lmtune.schema import Config
from lmtune.train.checkpoint import (
    CONFIG_FILE,
    OPTIMIZER_FILE,
    SCALER_FILE,
    SCHEDULER_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    abort,
    begin,
    commit,
    latest_valid,
    load_state,
    restore_rng,
    rng_file,
    save_state,
    staging_dir,
    verify,
)
from lmtune.train.step import Progress

log = logging.getLogger("lmtune")


class BestKeeper:
    """Keeps track of the best evaluation so far, and says when to stop early.

    With checkpoints on, a checkpoint is written at every new best, so the best weights are read
    back from it at the end of the run; without, they are copied in memory.
    """

    def __init__(self, metric: str, greater_is_better: bool, patience: int | None, checkpoints: Path | None):
        self.metric, self.greater_is_better, self.patience = metric, greater_is_better, patience
        self.checkpoints = checkpoints
        self.value: float | None = None
        self.step = 0
        self.metrics: dict[str, Any] | None = None
        self._weights: dict[str, torch.Tensor] | None = None  # only without checkpoints
        self.evals_without_gain = 0
        self.should_stop = False  # early stopping says the run should end

    def update(self, step: int, metrics: dict[str, Any], model: torch.nn.Module) -> bool:
        """Record one evaluation; True when it is the best so far (the caller then checkpoints it)."""
        value = metrics.get(self.metric)
        if value is not None and math.isfinite(value) and (
            self.value is None or (value > self.value if self.greater_is_better else value < self.value)
        ):
            self.value, self.step, self.metrics = value, step, metrics
            if self.checkpoints is None:
                self._weights = {n: t.clone() for n, t in trainable_tensors(model).items()}
            self.evals_without_gain = 0
            return True
        self.evals_without_gain += 1
        if self.patience and self.evals_without_gain >= self.patience:
            log.info("early stopping: %s did not improve in %d evaluations", self.metric, self.evals_without_gain)
            self.should_stop = True
        return False

    def weights(self) -> dict[str, torch.Tensor] | None:
        """The trainable tensors of the best model, or None when nothing was evaluated."""
        if self.metrics is None or self.checkpoints is None:
            return self._weights
        return load_file(str(self._folder() / WEIGHTS_FILE))

    def state(self) -> dict[str, Any]:
        return {"value": self.value, "step": self.step, "metrics": self.metrics,
                "evals_without_gain": self.evals_without_gain, "should_stop": self.should_stop}

    def load(self, state: dict[str, Any]) -> None:
        """Restore the record of a resumed run; its best checkpoint must still be there."""
        self.value, self.step, self.metrics = state["value"], state["step"], state["metrics"]
        self.evals_without_gain, self.should_stop = state["evals_without_gain"], state["should_stop"]
        if self.metrics is not None:
            self._folder()

    def _folder(self) -> Path:
        assert self.checkpoints is not None
        folder = self.checkpoints / f"step-{self.step}"
        try:
            verify(folder)
        except CheckpointError as err:
            raise CheckpointError(f"the best model (step {self.step}) cannot be restored: {err}") from None
        return folder


def trainable_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors training changes (on the CPU): what checkpoints and the best model keep."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def restore_trainable(model: torch.nn.Module, saved: dict[str, torch.Tensor], source: Path | str = "the saved weights") -> None:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if saved.keys() != params.keys():
        missing, extra = sorted(params.keys() - saved.keys()), sorted(saved.keys() - params.keys())
        raise CheckpointError(f"{source} does not fit this model: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, value in saved.items():
        params[name].copy_(value)


def write_checkpoint(
    root: Path, point: dict[str, Any], cfg: Config, fingerprints: dict[str, str], model: Any, optimizer: Any,
    scheduler: Any, accelerator: Any, best: BestKeeper, history: list[dict[str, Any]],
) -> None:
    """Each process adds its RNG state; the main process writes the rest and commits (see checkpoint.py)."""
    step = point["progress"]["step"]
    main = accelerator.is_main_process
    try:
        if main:
            begin(root, step)
        accelerator.wait_for_everyone()
        tmp = staging_dir(root, step)
        save_state(point["rng"], rng_file(tmp, accelerator.process_index))
        if main:
            save_file(trainable_tensors(model), str(tmp / WEIGHTS_FILE))
            save_state(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            save_state(point["scheduler"], tmp / SCHEDULER_FILE)
            if accelerator.scaler is not None:
                save_state(accelerator.scaler.state_dict(), tmp / SCALER_FILE)
            (tmp / CONFIG_FILE).write_text(cfg.to_yaml(), encoding="utf-8")
            state = {
                "progress": point["progress"],
                "best": best.state(),
                "history": [r for r in history if r.get("step", 0) <= step],
                "fingerprints": fingerprints,
                "num_processes": accelerator.num_processes,
            }
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        accelerator.wait_for_everyone()
        if main:
            commit(root, step)
    except OSError as err:
        abort(root, step)
        previous = latest_valid(root)
        raise CheckpointError(
            f"could not write the checkpoint of step {step} in {root}: {err.strerror or err}. "
            + (f"The previous checkpoint {previous.name} is intact; free space or fix permissions, then resume with --resume."
               if previous else "No earlier checkpoint exists; free space or fix permissions and start again.")
        ) from None


def read_state(folder: Path) -> dict[str, Any]:
    """The state.json of a verified checkpoint: counters, best record, history, fingerprints."""
    return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))


def restore_checkpoint(
    folder: Path, state: dict[str, Any], model: Any, optimizer: Any, scheduler: Any, accelerator: Any, best: BestKeeper
) -> tuple[Progress, list[dict[str, Any]]]:
    """Load weights, optimizer, scheduler, scaler and this process's RNG from a verified checkpoint."""
    if state["num_processes"] != accelerator.num_processes:
        raise ConfigError(f"cannot resume {folder}: it was written by {state['num_processes']} processes, this run has "
                          f"{accelerator.num_processes}; resume with the same number of processes")
    restore_trainable(model, load_file(str(folder / WEIGHTS_FILE)), folder / WEIGHTS_FILE)
    optimizer.load_state_dict(load_state(folder / OPTIMIZER_FILE))
    scheduler.load_state_dict(load_state(folder / SCHEDULER_FILE))
    if accelerator.scaler is not None and (folder / SCALER_FILE).exists():
        accelerator.scaler.load_state_dict(load_state(folder / SCALER_FILE))
    best.load(state["best"])
    restore_rng(load_state(rng_file(folder, accelerator.process_index)))
    return Progress(**state["progress"]), state["history"]
