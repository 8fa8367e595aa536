"""Write model folders that plain transformers (or PEFT, for adapters) loads, atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

META_FILE = "lmtune.json"


def is_adapter(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def write_atomically(target: Path, fill: Any) -> None:
    """Fill a temporary sibling folder, then rename it into place: a reader never sees half a folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_model(model: nn.Module, tokenizer: Any, meta: dict[str, Any], target: Path) -> None:
    """Weights (safetensors, or the adapter for LoRA), tokenizer, and lmtune.json with the label space."""

    def fill(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / META_FILE).write_text(json.dumps({**meta, "adapter": is_adapter(model)}, indent=2) + "\n")

    write_atomically(target, fill)


def write_text(path: Path, text: str) -> None:
    """Write a file through a temporary sibling and a rename: a reader never sees half a file.

    The temporary name carries the process id, so processes writing the same file do not collide.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def csv_text(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")  # the csv module's default is \r\n
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
