"""One optimizer step, guarded: gradient accumulation, non-finite numbers, out of memory."""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lmtune.errors import TrainingError
from lmtune.schema import TrainConfig
from lmtune.tasks.base import Batch, Task
from lmtune.train import zero
from lmtune.train.adversarial import Adversary
from lmtune.train.checkpoint import restore_rng, rng_state

if TYPE_CHECKING:
    from accelerate import Accelerator
    from accelerate.scheduler import AcceleratedScheduler

log = logging.getLogger("lmtune")


@dataclass
class Progress:
    """Where a run stands: what a checkpoint saves besides tensors, and a resume restores."""

    step: int = 0  # optimizer steps done (skipped non-finite steps included)
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches this process has consumed in the current epoch
    examples: int = 0
    tokens: int = 0  # non-pad tokens trained on
    loss_sum: float = 0.0  # since the last train log record
    loss_count: int = 0
    train_seconds: float = 0.0
    log_seconds: float = 0.0  # train_seconds at the last log record
    log_examples: int = 0
    log_tokens: int = 0
    bad_steps: int = 0  # steps skipped for a non-finite loss or gradient
    bad_streak: int = 0
    splits: int = 1  # each micro-batch is cut into this many chunks (train.auto_batch_size)


def boundary(state: Progress, scheduler: AcceleratedScheduler) -> dict[str, Any]:
    """A step boundary: counters, scheduler and RNG. With the weights of that moment, a checkpoint."""
    return {"progress": asdict(state), "scheduler": copy.deepcopy(scheduler.state_dict()), "rng": rng_state()}


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class Stepper:
    """One optimizer step over a group of micro-batches: forward, loss, backward, clip, update.

    Guards: a non-finite loss or gradient skips the update (and `train.max_bad_steps` in a row
    stop the run); out of memory either stops with advice or, with `train.auto_batch_size`,
    replays the step with each micro-batch cut in halves, which leaves the gradient unchanged.
    Under DeepSpeed its engine takes the update (train/zero.py): lmtune marks the step's last
    micro-batch, and a non-finite gradient is one DeepSpeed skipped.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: AcceleratedScheduler, task: Task,
                 accelerator: Accelerator, tc: TrainConfig, state: Progress):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.task, self.accelerator, self.tc, self.state = task, accelerator, tc, state
        self.streak_start: dict[str, Any] | None = None  # the point before the first bad step in a row
        self.updating = False  # inside the optimizer update: the weights may be half changed
        self.engine = model if zero.is_deepspeed(accelerator) else None  # DeepSpeed's engine, which updates itself
        self.adversary = Adversary(tc, accelerator.unwrap_model(model)) if tc.adversarial != "none" else None
        self.model.train()

    def step(self, group: list[Batch], point: dict[str, Any]) -> None:
        while True:
            try:
                loss = self._forward_backward(group)
                break
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                self._out_of_memory(group, err)
                restore_rng(point["rng"])  # the replay draws the same dropout masks
        if self.engine is not None:  # DeepSpeed updates, or skips a non-finite gradient, on every process alike
            self.updating = True
            updated, norm = zero.update(self.engine)
            self.updating = False
            bad = not (updated and math.isfinite(loss))
        else:
            norm = self._gradient_norm()
            bad = not (math.isfinite(loss) and math.isfinite(norm))
            if self.accelerator.num_processes > 1:  # every process must take the same decision
                bad = bool(self.accelerator.reduce(torch.tensor(float(bad), device=self.accelerator.device), "max").item())
        s = self.state
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()  # the data was used: the schedule moves on, the weights do not
            s.bad_steps += 1
            s.bad_streak += 1
            if s.bad_streak == 1:
                self.streak_start = point
            log.warning("step %d: non-finite %s; update skipped (%d in a row)", s.step + 1,
                        f"loss ({loss})" if not math.isfinite(loss) else f"gradient norm ({norm})", s.bad_streak)
            if s.bad_streak >= self.tc.max_bad_steps:
                assert self.streak_start is not None  # set at the streak's first step
                first = self.streak_start["progress"]["step"]
                raise TrainingError(
                    f"{s.bad_streak} steps in a row (from step {first + 1}) had a non-finite loss or gradient, so the run "
                    f"stopped; the checkpoint of step {first} holds the weights from before. Likely causes: a learning rate too "
                    f"high for this model (train.learning_rate={self.tc.learning_rate:g}: try 10x lower), fp16 overflow "
                    f"(train.precision={self.tc.precision}: try bf16 or fp32), no gradient clipping "
                    f"(train.max_grad_norm={self.tc.max_grad_norm}), or extreme target values. "
                    f"Resume with --resume --allow-changes after changing them"
                )
        else:
            if self.engine is None:
                self.updating = True
                self.optimizer.step()
                self.updating = False
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            s.bad_streak = 0
            self.streak_start = None
            s.loss_sum += loss
            s.loss_count += 1
        s.step += 1
        s.batches_in_epoch += len(group)
        s.examples += sum(b["input_ids"].shape[0] for b in group)
        s.tokens += sum(int(b["attention_mask"].sum()) for b in group)

    def _forward_backward(self, group: list[Batch]) -> float:
        """Backward over every chunk of every micro-batch; returns the step's loss.

        The step's loss is the mean over all its units (examples, or target tokens) on all
        processes: each chunk's summed loss is divided by the step's total unit count. Gradients
        are averaged over processes, hence the factor num_processes.
        """
        chunks = [c for b in group for c in split_batch(b, self.state.splits)]
        units = sum(self.task.units(b) for b in group)
        processes = self.accelerator.num_processes
        if processes > 1:
            units = int(self.accelerator.reduce(torch.tensor(units, device=self.accelerator.device), "sum").item())
        scale = processes / max(units, 1)
        total = 0.0
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1  # gradients are synchronised across processes once, at the end

            def loss_of(chunk: Batch = chunk) -> torch.Tensor:
                return self.task.loss(self.model, chunk)[0] * scale

            def sync(final: bool, last: bool = last) -> contextlib.AbstractContextManager[object]:
                return contextlib.nullcontext() if last and final else self.accelerator.no_sync(self.model)

            if self.adversary is not None:
                loss = self.adversary.backward(loss_of, chunk.get("attention_mask"), self.accelerator.backward, sync)
            else:
                with sync(True):
                    loss = loss_of()
                    if self.engine is not None:
                        zero.backward(self.engine, loss, last)
                    else:
                        self.accelerator.backward(loss)
            total += float(loss.detach())
        if processes > 1:  # the mean over every process: the same logged value, and checkpointed, on each
            total = float(self.accelerator.reduce(torch.tensor(total, device=self.accelerator.device), "mean").item())
        return total

    def _gradient_norm(self) -> float:
        if self.tc.max_grad_norm is not None:
            return float(self.accelerator.clip_grad_norm_(self.model.parameters(), self.tc.max_grad_norm))
        if self.tc.precision == "fp16":
            return 0.0  # the gradient scaler skips steps with inf/nan gradients itself
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0

    def _out_of_memory(self, group: list[Batch], err: BaseException) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        rows = max(b["input_ids"].shape[0] for b in group)
        width = max(b["input_ids"].shape[1] for b in group)
        chunk = math.ceil(rows / self.state.splits)
        if self.tc.auto_batch_size and chunk > 1:
            self.state.splits *= 2
            log.warning("out of memory on %d examples x %d tokens: retrying the step with micro-batches of %d "
                        "(the effective batch is unchanged)", chunk, width, math.ceil(rows / self.state.splits))
            return
        advice = ("even single examples do not fit: lower model.max_length or use a smaller model or method lora"
                  if chunk <= 1 else
                  "lower train.batch_size and raise train.gradient_accumulation_steps to keep the effective batch, "
                  "lower model.max_length, or set train.auto_batch_size=true to split batches automatically")
        raise TrainingError(
            f"out of memory at step {self.state.step + 1} on a micro-batch of {chunk} examples x {width} tokens "
            f"(train.batch_size={self.tc.batch_size}): {advice}. ({str(err).splitlines()[0]})"
        ) from None

    def log_record(self, epoch: float) -> dict[str, Any]:
        s = self.state
        seconds = s.train_seconds - s.log_seconds
        record = {
            "type": "train",
            "step": s.step,
            "epoch": round(epoch, 4),
            "loss": s.loss_sum / s.loss_count if s.loss_count else None,  # None: every step since the last record was skipped
            "learning_rate": self.scheduler.get_last_lr()[0],
            "examples_per_s": (s.examples - s.log_examples) / seconds if seconds > 0 else 0.0,
            "tokens_per_s": (s.tokens - s.log_tokens) / seconds if seconds > 0 else 0.0,
        }
        s.loss_sum, s.loss_count = 0.0, 0
        s.log_seconds, s.log_examples, s.log_tokens = s.train_seconds, s.examples, s.tokens
        return record


def split_batch(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """Cut a right-padded batch into `parts` row chunks, each trimmed to its own longest row.

    An encoder-decoder's `labels` have their own width (the target text): they are trimmed to their
    own last trained column, never to the encoder input's width.
    """
    if parts == 1:
        return [batch]
    rows, full_width = batch["input_ids"].shape
    size = math.ceil(rows / parts)
    chunks = []
    for start in range(0, rows, size):
        chunk = {k: v[start : start + size] for k, v in batch.items()}
        width = int(chunk["attention_mask"].sum(1).max())
        widths = {k: width for k, v in chunk.items() if v.dim() == 2}
        if "labels" in chunk:
            used = int((chunk["labels"] != -100).any(0).nonzero().max()) + 1 if (chunk["labels"] != -100).any() else 1
            widths["labels"] = max(width, used) if chunk["labels"].shape[1] == full_width else used
        chunks.append({k: v[:, : widths[k]] if k in widths else v for k, v in chunk.items()})
    return chunks
