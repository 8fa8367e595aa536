"""Checkpoint folders that are either complete or absent.

`OUTPUT_DIR/checkpoints/step-N/` is filled in a staging folder, every file is fsynced, a manifest
with each file's size and SHA-256 is written last, and only then is the folder renamed into place.
A folder whose manifest is missing or does not match its files is not a checkpoint: it is skipped
when resuming and removed when checkpoints rotate. Old checkpoints are deleted only after a new
one is complete, by renaming them aside first, so a crash mid-delete never leaves a half folder
under a checkpoint's name.

Torch state files (optimizer, scheduler, RNG) load with `weights_only=True`: a file that would
run code when unpickled is refused. Weights are safetensors.

Written here rather than with `Accelerator.save_state`: that saves the whole model (not only the
trainable tensors), writes in place without a manifest, and reloads its RNG file with full
unpickling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmtune.errors import CheckpointError

log = logging.getLogger("lmtune")

MANIFEST = "manifest.json"
FORMAT = 1
# The files of a checkpoint folder (rng-N.pt: one per process; scaler.pt: fp16 only).
STATE_FILE = "state.json"  # counters, best model record, history, fingerprints
CONFIG_FILE = "config.yaml"  # the config the checkpoint was trained with
WEIGHTS_FILE = "model.safetensors"  # the trainable tensors
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
SCALER_FILE = "scaler.pt"
# What a checkpoint must hold, by layout: "full" keeps the trainable tensors and the optimizer state
# in one file each; "sharded" (FSDP2, train/sharded.py) keeps every process's shards of both in
# shards/; "zero" (DeepSpeed, train/zero.py) the whole trainable tensors and one optimizer partition
# per process (optimizer-N.pt).
REQUIRED = {
    "full": (STATE_FILE, CONFIG_FILE, WEIGHTS_FILE, OPTIMIZER_FILE, SCHEDULER_FILE, "rng-0.pt"),
    "sharded": (STATE_FILE, CONFIG_FILE, SCHEDULER_FILE, "rng-0.pt", "shards/.metadata"),
    "zero": (STATE_FILE, CONFIG_FILE, WEIGHTS_FILE, SCHEDULER_FILE, "rng-0.pt", "optimizer-0.pt"),
}
_NAME = re.compile(r"step-(\d+)")
_CHUNK = 1 << 20


def rng_file(folder: Path, process_index: int) -> Path:
    return folder / f"rng-{process_index}.pt"


def staging_dir(root: Path, step: int) -> Path:
    """Where step N is assembled; the same path in every process, so each can add its own files."""
    return root / f".staging-step-{step}"


def begin(root: Path, step: int) -> Path:
    """Create an empty staging folder for step N (main process only)."""
    tmp = staging_dir(root, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(root: Path, step: int, layout: str = "full") -> Path:
    """Fsync the staged files (those of its subfolders too), write the manifest last, rename the folder into place."""
    tmp = staging_dir(root, step)
    try:
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            _fsync(path)
            files[path.relative_to(tmp).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        for folder in sorted(p for p in tmp.rglob("*") if p.is_dir()):
            _fsync(folder)
        manifest = {"format": FORMAT, "step": step, "layout": layout, "files": files}
        with (tmp / MANIFEST).open("w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        _fsync(tmp)
        target = root / f"step-{step}"
        if target.exists():  # the same step saved again (after a resume): replace it
            _discard(target)
        os.replace(tmp, target)
        _fsync(root)
        return target
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def abort(root: Path, step: int) -> None:
    """Remove a staging folder after a failed save."""
    shutil.rmtree(staging_dir(root, step), ignore_errors=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(folder: Path) -> dict[str, Any]:
    """The manifest of a complete, unaltered checkpoint; CheckpointError saying what is wrong otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder")
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {MANIFEST}: it was never completed")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict) or layout(manifest) not in REQUIRED:
            raise ValueError("unknown format")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not a valid manifest ({err})") from None
    for name in REQUIRED[layout(manifest)]:
        if name not in files:
            raise CheckpointError(f"{folder}: the manifest does not list {name}")
    inside = folder.resolve()
    for name, entry in files.items():
        file = folder / name
        if not _plain_name(name) or inside not in file.resolve().parents:
            raise CheckpointError(f"{folder}: the manifest names {name!r}, which is not a file inside the checkpoint")
        if not file.is_file():
            raise CheckpointError(f"{folder}: {name} is missing")
        if file.stat().st_size != entry.get("bytes") or sha256_file(file) != entry.get("sha256"):
            raise CheckpointError(f"{folder}: {name} does not match its SHA-256 in the manifest (damaged or altered)")
    return manifest


def layout(manifest: dict[str, Any]) -> str:
    """How a checkpoint holds its tensors: "full" or "sharded" (see REQUIRED)."""
    return str(manifest.get("layout", "full"))


def _plain_name(name: Any) -> bool:
    """A relative path that stays inside the folder: plain names joined by '/', no '..', not absolute."""
    if not isinstance(name, str) or "\\" in name or "\0" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def listed(root: Path) -> list[tuple[int, Path]]:
    """step-N folders (complete or not), oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        m = _NAME.fullmatch(path.name)
        if m and path.is_dir():
            found.append((int(m.group(1)), path))
    return sorted(found)


def latest_valid(root: Path) -> Path | None:
    """The newest checkpoint that verifies; damaged ones are skipped with a warning."""
    for _, path in reversed(listed(root)):
        try:
            verify(path)
            return path
        except CheckpointError as err:
            log.warning("skipping checkpoint: %s", err)
    return None


def rotate(root: Path, keep_last: int, protect: set[int]) -> None:
    """Keep the newest `keep_last` complete checkpoints and the protected steps; remove the rest.

    Also removes step folders without a manifest and leftovers of interrupted saves or deletes.
    Completeness here is the manifest's presence (a step folder only gets its name once its
    manifest is written); file hashes are checked when a checkpoint is resumed, not at every save.
    """
    complete: list[tuple[int, Path]] = []
    broken: list[tuple[int, Path]] = []
    for step, path in listed(root):
        (complete if (path / MANIFEST).is_file() else broken).append((step, path))
    newest = {step for step, _ in complete[-keep_last:]} if keep_last > 0 else set()
    for step, path in complete:
        if step not in newest and step not in protect:
            _discard(path)
    for _, path in broken:
        _discard(path)
    clean_leftovers(root)


def clean_leftovers(root: Path) -> None:
    """Remove staging and trash folders left by a killed process."""
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith((".trash-", ".staging-")) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def _discard(path: Path) -> None:
    """Rename aside (atomic: the name disappears at once), then delete."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- safe torch state files -----------------------------------------------------------------


def save_state(obj: Any, path: Path) -> None:
    torch.save(obj, path)


def load_state(path: Path) -> Any:
    """torch.load with weights_only=True: tensors and plain Python values only, never code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} was refused: it holds Python objects that could run code when loaded, and lmtune "
            f"loads state files with weights_only=True ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} cannot be read: {err}") from None


# --- random number generators ---------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every RNG a training step can draw from, as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    """random.setstate needs tuples; a round trip through torch.save keeps them, lists are converted."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
