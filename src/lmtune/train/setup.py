"""The first phase of a run: everything the epoch loop needs, loaded and checked before a file is written.

Data, tokenizer and model come from the task; the method (models/methods.py) sets what trains;
Accelerate prepares the model, optimizer, loaders and schedule for this machine's processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lmtune.config import Config
from lmtune.data.batching import LengthGroupedBatchSampler
from lmtune.models.kernels import apply_liger, compile_model
from lmtune.models.loading import count_parameters, effective_max_length, enable_gradient_checkpointing, load_tokenizer
from lmtune.models.methods import apply_method
from lmtune.tasks import Task, build_task
from lmtune.tasks.base import Batch, TokenDataset
from lmtune.train import zero
from lmtune.train.engines import build_accelerator, check_engine, requested_engine
from lmtune.train.optim import build_optimizer, build_scheduler, parameter_groups
from lmtune.train.resume import fingerprint
from lmtune.train.tracking import check_trackers

if TYPE_CHECKING:
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from accelerate.scheduler import AcceleratedScheduler
    from transformers import PreTrainedTokenizerBase


@dataclass
class Setup:
    """A run ready to train: its task, prepared model, optimizer, schedule and loaders."""

    cfg: Config
    task: Task
    tokenizer: PreTrainedTokenizerBase
    accelerator: Accelerator
    model: nn.Module  # as Accelerate prepared it (wrapped with several processes)
    unwrapped: nn.Module  # the model itself: what is saved and checkpointed
    optimizer: AcceleratedOptimizer
    scheduler: AcceleratedScheduler  # (the torch schedule itself under DeepSpeed)
    train_loader: Any
    train_sampler: LengthGroupedBatchSampler
    val_loader: Iterable[Batch] | None
    test_set: TokenDataset | None
    data_counts: dict[str, int]  # train_examples, validation_examples and what more the task counts (Splits.data_counts)
    redacted: dict[str, int]  # data.redact: placeholders put in the text, by name (Splits.redacted)
    batches_per_epoch: int  # micro-batches per epoch on this process
    total_steps: int
    max_length: int
    fingerprints: dict[str, str]  # what resume compares: the data and the model config
    trainable_parameters: int
    total_parameters: int

    @property
    def main(self) -> bool:
        """Only the main process writes files."""
        return self.accelerator.is_main_process

    def eval_loader(self, dataset: TokenDataset) -> Iterable[Batch]:
        batch_size = self.cfg.eval.batch_size or 2 * self.cfg.train.batch_size
        sampler = LengthGroupedBatchSampler(dataset.lengths, batch_size, seed=self.cfg.train.seed, shuffle=False)
        return self.accelerator.prepare(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=self.task.collate))  # type: ignore[arg-type]


def load_model(cfg: Config) -> tuple[Task, PreTrainedTokenizerBase, nn.Module]:
    """Load and check data, tokenizer and model; adapt the model with the chosen method."""
    check_trackers(cfg)
    task = build_task(cfg)
    task.load_data()
    tokenizer = load_tokenizer(cfg.model)
    model = task.load_model(tokenizer)
    if cfg.train.liger_kernel:
        apply_liger(model)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model, cfg.model.name_or_path)
    model = apply_method(model, cfg.method, task.peft_task_type(), task.new_head)
    task.prepare_model(model)
    if cfg.train.compile:
        compile_model(model)
    return task, tokenizer, model


def build_setup(cfg: Config) -> Setup:
    tc = cfg.train
    check_engine(cfg, requested_engine())
    task, tokenizer, model = load_model(cfg)
    fingerprints = {
        "data": fingerprint(task.data_fingerprint()),
        "model": fingerprint({k: v for k, v in getattr(model, "config").to_dict().items()
                              if k not in ("_name_or_path", "transformers_version")}),
    }
    max_length = effective_max_length(cfg.model, tokenizer, model.config)
    splits = task.encode(tokenizer, max_length)

    # Gradient accumulation is done by the Stepper, not by Accelerate, so a resumed run knows exactly where it is.
    accelerator = build_accelerator(cfg)
    train_sampler = LengthGroupedBatchSampler(splits.train.lengths, tc.batch_size, seed=tc.seed)
    # The loader's own generator: making an iterator then draws nothing from the global RNG, which
    # dropout uses, so a run resumed mid-epoch replays the same dropout masks.
    train_loader: Any = torch.utils.data.DataLoader(
        splits.train, batch_sampler=train_sampler, collate_fn=task.collate, num_workers=tc.dataloader_workers,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(tc.seed),
    )
    optimizer = build_optimizer(parameter_groups(model, tc, task.new_head), tc)
    # Accelerate gives each process its share of the batches: count steps per process.
    batches_per_epoch = math.ceil(len(train_sampler) / accelerator.num_processes)
    total_steps = math.ceil(batches_per_epoch / tc.gradient_accumulation_steps) * tc.epochs
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    if zero.is_deepspeed(accelerator):
        # DeepSpeed's engine updates, and lmtune steps the schedule itself, once per optimizer step (train/zero.py).
        scheduler = build_scheduler(optimizer, tc, total_steps)
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    else:
        # The prepared scheduler steps once per process for every optimizer step: schedule in global steps.
        scheduler = build_scheduler(optimizer, tc, total_steps * accelerator.num_processes)
        model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    trainable, total = count_parameters(model)
    setup = Setup(
        cfg, task, tokenizer, accelerator, model, accelerator.unwrap_model(model), optimizer, scheduler, train_loader,
        train_sampler, None, splits.test, splits.data_counts(), splits.redacted, batches_per_epoch, total_steps, max_length, fingerprints, trainable, total,
    )
    if splits.validation is not None:
        setup.val_loader = setup.eval_loader(splits.validation)
    return setup
