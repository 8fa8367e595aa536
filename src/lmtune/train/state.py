"""The state of a run that outlives the process: the best model so far, and checkpoints of the whole run."""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmtune.errors import CheckpointError, ConfigError
from lmtune.schema import Config
from lmtune.train import zero
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
    rotate,
    save_state,
    staging_dir,
    verify,
)
from lmtune.train.engines import checkpoint_layout
from lmtune.train.sharded import load_shards, reshard, save_shards, trainable_shards
from lmtune.train.step import Progress
from lmtune.train.writer import CheckpointWriter

log = logging.getLogger("lmtune")


class BestKeeper:
    """Keeps track of the best evaluation so far, and says when to stop early.

    With checkpoints on, a checkpoint is written at every new best, so the best weights are read
    back from it at the end of the run; without, they are copied in memory. `layout` and
    `zero_stage` say how the processes hold the parameters (see copy_trainable).
    """

    def __init__(self, metric: str, greater_is_better: bool, patience: int | None, checkpoints: Path | None,
                 layout: str = "full", zero_stage: int = 0):
        self.metric, self.greater_is_better, self.patience = metric, greater_is_better, patience
        self.checkpoints, self.layout, self.zero_stage = checkpoints, layout, zero_stage
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
                self._weights = copy_trainable(model, self.layout, self.zero_stage)
            self.evals_without_gain = 0
            return True
        self.evals_without_gain += 1
        if self.patience and self.evals_without_gain >= self.patience:
            log.info("early stopping: %s did not improve in %d evaluations", self.metric, self.evals_without_gain)
            self.should_stop = True
        return False

    def restore(self, model: torch.nn.Module) -> None:
        """Put the best model's trainable tensors back into `model` (nothing when nothing was evaluated)."""
        if self.metrics is None:
            return
        if self.checkpoints is None:
            assert self._weights is not None  # copied at every new best
            put_trainable(model, self._weights, self.layout, self.zero_stage)
        elif self.layout == "sharded":
            load_shards(self._folder(), model)
        else:
            folder = self._folder()
            put_trainable(model, load_file(str(folder / WEIGHTS_FILE)), self.layout, self.zero_stage, folder / WEIGHTS_FILE)

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


def copy_trainable(model: torch.nn.Module, layout: str, zero_stage: int) -> dict[str, torch.Tensor]:
    """Copies of the trainable tensors, as this process can put them back: its own shards under FSDP2
    ("sharded"), whole tensors otherwise (gathered under ZeRO-3; every process calls it then)."""
    if layout == "sharded":
        return {n: t.clone() for n, t in trainable_shards(model).items()}
    if zero_stage == 3:
        return zero.read_trainable(model, zero_stage)
    return {n: t.clone() for n, t in trainable_tensors(model).items()}  # on the CPU already, .cpu() copies nothing


def put_trainable(model: torch.nn.Module, saved: dict[str, torch.Tensor], layout: str, zero_stage: int,
                  source: Path | str = "the saved weights") -> None:
    """Put tensors from copy_trainable (or a checkpoint's whole tensors, except under FSDP2) back into the model."""
    if layout == "sharded":
        reshard(model)
    if zero_stage == 3:
        zero.write_trainable(model, saved, zero_stage, source)
    else:
        restore_trainable(model, saved, source)


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
    scheduler: Any, accelerator: Any, best: BestKeeper, history: list[dict[str, Any]], writer: CheckpointWriter,
    keep_last: int,
) -> None:
    """Each process adds its RNG state; the main process snapshots the rest and hands it to `writer`.

    The writer writes the files, commits (see checkpoint.py) and rotates the checkpoints, in the
    background when it is a background writer: the snapshot is a copy then, so the training can
    go on changing the weights and the optimizer while it is written. Where each process holds
    shards (FSDP2), every process writes its shards of the weights and the optimizer first, at once;
    under DeepSpeed each writes its optimizer partition (and ZeRO-3 gathers the weights for the main one).
    """
    step = point["progress"]["step"]
    main = accelerator.is_main_process
    layout, stage = checkpoint_layout(accelerator), zero.zero_stage(accelerator)
    gathered = zero.read_trainable(model, stage) if stage == 3 else None  # every process takes part
    if main:
        writer.wait()  # the previous write is complete (or its failure raised) before this one begins
    snapshot: Snapshot | None = None
    try:
        if main:
            begin(root, step)
        accelerator.wait_for_everyone()
        save_state(point["rng"], rng_file(staging_dir(root, step), accelerator.process_index))
        if layout == "sharded":
            save_shards(staging_dir(root, step), model, optimizer)
        elif layout == "zero":
            zero.save_partition(staging_dir(root, step), optimizer, accelerator.process_index)
        if main:
            snapshot = Snapshot.take(point, cfg, fingerprints, model, optimizer, accelerator, best, history, writer,
                                     layout, gathered)
    except OSError as err:
        abort(root, step)
        raise write_failure(root, step, err) from None
    accelerator.wait_for_everyone()  # every process's RNG file is staged
    if snapshot is not None:
        writer.submit(partial(snapshot.write, root, step, keep_last, {best.step} if best.step else set()))


class Snapshot:
    """What a checkpoint holds besides the RNG files, taken at a step boundary (copies, for a background write)."""

    def __init__(self, files: dict[str, Any], texts: dict[str, str], layout: str = "full"):
        self.files, self.texts, self.layout = files, texts, layout

    @classmethod
    def take(cls, point: dict[str, Any], cfg: Config, fingerprints: dict[str, str], model: Any, optimizer: Any,
             accelerator: Any, best: BestKeeper, history: list[dict[str, Any]], writer: CheckpointWriter,
             layout: str = "full", weights: dict[str, torch.Tensor] | None = None) -> Snapshot:
        """In the foreground, the live tensors (written before training goes on); in the background, the writer's copies.

        `layout` "sharded": the weights and optimizer are already written, shard by shard; "zero": the
        optimizer is, partition by partition. `weights`: the trainable tensors, gathered already (ZeRO-3).
        """
        step = point["progress"]["step"]
        sharded = layout == "sharded"
        if weights is None:
            weights = {n: p for n, p in model.named_parameters() if p.requires_grad} if not sharded else {}
        optimizer_state = optimizer.state_dict() if layout == "full" else None
        scaler_state = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        if writer.background:
            weights, optimizer_state, scaler_state = writer.copy((weights, optimizer_state, scaler_state))
        files: dict[str, Any] = {SCHEDULER_FILE: point["scheduler"]}  # a deep copy already
        if not sharded:
            files[WEIGHTS_FILE] = {n: t.detach().cpu().contiguous() for n, t in weights.items()}
        if optimizer_state is not None:
            files[OPTIMIZER_FILE] = optimizer_state
        if scaler_state is not None:
            files[SCALER_FILE] = scaler_state
        state = {
            "progress": point["progress"],
            "best": best.state(),
            "history": [r for r in history if r.get("step", 0) <= step],
            "fingerprints": fingerprints,
            "num_processes": accelerator.num_processes,
            "layout": layout,
        }
        return cls(files, {CONFIG_FILE: cfg.to_yaml(), STATE_FILE: json.dumps(state, indent=1)}, layout)

    def write(self, root: Path, step: int, keep_last: int, protect: set[int]) -> None:
        """Write into step N's staging folder, commit it, then rotate the checkpoints."""
        tmp = staging_dir(root, step)
        try:
            for name, value in self.files.items():
                if name == WEIGHTS_FILE:
                    save_file(value, str(tmp / name))
                else:
                    save_state(value, tmp / name)
            for name, text in self.texts.items():
                (tmp / name).write_text(text, encoding="utf-8")
            commit(root, step, self.layout)
        except OSError as err:
            abort(root, step)
            raise write_failure(root, step, err) from None
        rotate(root, keep_last, protect)


def write_failure(root: Path, step: int, err: OSError) -> CheckpointError:
    previous = latest_valid(root)
    return CheckpointError(
        f"could not write the checkpoint of step {step} in {root}: {err.strerror or err}. "
        + (f"The previous checkpoint {previous.name} is intact; free space or fix permissions, then resume with --resume."
           if previous else "No earlier checkpoint exists; free space or fix permissions and start again.")
    )


def read_state(folder: Path) -> dict[str, Any]:
    """The state.json of a verified checkpoint: counters, best record, history, fingerprints."""
    return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))


ENGINES = {"full": "one process or DDP", "sharded": "FSDP2", "zero": "DeepSpeed ZeRO"}  # by checkpoint layout


def restore_checkpoint(
    folder: Path, state: dict[str, Any], model: Any, optimizer: Any, scheduler: Any, accelerator: Any, best: BestKeeper
) -> tuple[Progress, list[dict[str, Any]]]:
    """Load weights, optimizer, scheduler, scaler and this process's RNG from a verified checkpoint."""
    layout = checkpoint_layout(accelerator)
    written = state.get("layout") or ("sharded" if state.get("sharded") else "full")
    if written != layout:
        raise ConfigError(f"cannot resume {folder}: it was written under {ENGINES[written]}, and this run trains under "
                          f"{ENGINES[layout]}; resume with the accelerate config the run was started with")
    if state["num_processes"] != accelerator.num_processes:
        raise ConfigError(f"cannot resume {folder}: it was written by {state['num_processes']} processes, this run has "
                          f"{accelerator.num_processes}; resume with the same number of processes")
    if layout == "sharded":
        load_shards(folder, model, optimizer)
    elif layout == "zero":
        put_trainable(model, load_file(str(folder / WEIGHTS_FILE)), layout, zero.zero_stage(accelerator), folder / WEIGHTS_FILE)
        zero.load_partition(folder, optimizer, accelerator.process_index, accelerator.num_processes)
    else:
        restore_trainable(model, load_file(str(folder / WEIGHTS_FILE)), folder / WEIGHTS_FILE)
        optimizer.load_state_dict(load_state(folder / OPTIMIZER_FILE))
    scheduler.load_state_dict(load_state(folder / SCHEDULER_FILE))
    if accelerator.scaler is not None and (folder / SCALER_FILE).exists():
        accelerator.scaler.load_state_dict(load_state(folder / SCALER_FILE))
    best.load(state["best"])
    restore_rng(load_state(rng_file(folder, accelerator.process_index)))
    return Progress(**state["progress"]), state["history"]
