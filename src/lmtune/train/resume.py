"""Which checkpoint a run resumes from, and whether the new config may continue it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from lmtune.config import Config, build_config, flatten_keys
from lmtune.errors import CheckpointError, ConfigError
from lmtune.run_dir import RunDir
from lmtune.train.checkpoint import CONFIG_FILE, MANIFEST, latest_valid, verify

# Keys that never change the trained weights: they may differ freely on resume.
NO_EFFECT = {
    "resume", "resume_allow_changes",
    "train.log_every_n_steps", "train.save_every_n_steps", "train.keep_last_checkpoints", "train.background_checkpoints",
    "train.dataloader_workers", "train.max_bad_steps", "train.auto_batch_size", "train.gradient_checkpointing",
    "eval.batch_size", "eval.at_start", "eval.threshold", "data.test",
    "output.dir", "output.overwrite", "output.save_final", "output.merge_lora",
}
# Keys a user may change on purpose when continuing a run (resume_allow_changes / --allow-changes):
# a longer or shorter run, another evaluation schedule, a new learning rate after a divergence,
# other kernels on another machine (the same computation, rounded differently).
SAFE_WITH_FLAG = {
    "train.epochs", "train.max_steps", "train.learning_rate", "train.head_learning_rate",
    "train.max_grad_norm", "train.precision", "train.compile", "train.liger_kernel", "model.attn_implementation",
    "eval.every_n_steps", "eval.early_stopping_patience", "eval.metric",
}
# Paths that may move: the change is fine when what they point to is unchanged (fingerprints).
MOVABLE = {"data.train": "data", "data.validation": "data", "model.name_or_path": "model"}


def find_checkpoint(cfg: Config) -> Path | None:
    """The checkpoint `resume` names: None for a fresh start. An explicit path must verify."""
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        return latest_valid(RunDir(cfg.output.dir).checkpoints)
    path = Path(cfg.resume)
    if not path.exists():
        raise CheckpointError(f"resume={path}: no such checkpoint or run folder")
    if not (path / MANIFEST).exists() and RunDir(path).checkpoints.is_dir():  # a run folder
        found = latest_valid(RunDir(path).checkpoints)
        if found is None:
            raise CheckpointError(f"resume={path}: the run folder holds no complete checkpoint")
        return found
    try:
        verify(path)
    except CheckpointError as err:
        raise CheckpointError(f"resume={path} is not a usable checkpoint: {err}. lmtune never starts afresh in "
                              f"place of a named checkpoint; name another, or use resume=auto") from None
    return path


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def saved_config(checkpoint: Path) -> Config:
    return build_config(yaml.safe_load((checkpoint / CONFIG_FILE).read_text(encoding="utf-8")))


def check_compatible(old: Config, new: Config, old_prints: dict[str, str], new_prints: dict[str, str]) -> list[str]:
    """Refuse a resume that would not continue the same run; return the accepted changes for the log."""
    before, after = flatten_keys(old.model_dump(mode="json")), flatten_keys(new.model_dump(mode="json"))
    refused: list[str] = []
    needs_flag: list[str] = []
    accepted: list[str] = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a == b or key in NO_EFFECT or key.startswith("search."):  # the search section never changes a run
            continue
        line = f"{key}: {a!r} -> {b!r}"
        if key in MOVABLE:
            kind = MOVABLE[key]
            (accepted if old_prints.get(kind) == new_prints.get(kind) else refused).append(
                line + (" (same content)" if old_prints.get(kind) == new_prints.get(kind) else f" ({kind} content differs)")
            )
        elif key in SAFE_WITH_FLAG:
            (accepted if new.resume_allow_changes else needs_flag).append(line)
        else:
            refused.append(line)
    for kind in ("data", "model"):
        if old_prints.get(kind) != new_prints.get(kind) and not any(MOVABLE.get(k) == kind for k in _changed(before, after)):
            refused.append(f"{kind} content changed at the same path (fingerprint {old_prints.get(kind)} -> {new_prints.get(kind)})")
    if refused or needs_flag:
        parts = []
        if refused:
            parts.append("changes that make it a different run (start a new run in another output.dir instead):\n  " + "\n  ".join(refused))
        if needs_flag:
            parts.append("changes allowed only on purpose (add --allow-changes, or resume_allow_changes: true):\n  " + "\n  ".join(needs_flag))
        raise ConfigError("cannot resume: the config differs from the checkpoint's.\n" + "\n".join(parts))
    return accepted


def changed_keys(old: Config, new: Config) -> list[str]:
    """`key: old -> new` for every key that changes what a run trains (not NO_EFFECT keys, not the search)."""
    before, after = flatten_keys(old.model_dump(mode="json")), flatten_keys(new.model_dump(mode="json"))
    return [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in sorted(_changed(before, after))
            if key not in NO_EFFECT and not key.startswith("search.")]


def _changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}

