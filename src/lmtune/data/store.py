"""Checked and tokenized examples on disk in Arrow, through `datasets`: written once, memory-mapped by every run that reads them.

A cache entry is a folder named by a key over what made it: the content of the data files, the
data settings and (for the token files inside) the tokenizer and max_length. A run that finds
its entry skips reading, checking and tokenizing; a run that does not writes the entry in a
staging folder and renames it into place, so a crashed or concurrent run never leaves half an
entry where another run would read it. The examples never sit in Python lists as a whole: the
loaders read rows out of the memory-mapped files, a batch at a time.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmtune.errors import DataError

log = logging.getLogger("lmtune")

STORE_VERSION = 1  # bump when what an entry holds changes: older entries are then never read
META_FILE = "meta.json"  # written last: an entry without it is not finished
WRITE_BATCH = 10_000  # rows per Arrow record batch


def cache_root(configured: str | None) -> Path:
    """`data.cache_dir`, else $LMTUNE_CACHE_DIR/data, else ~/.cache/lmtune/data."""
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("LMTUNE_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "lmtune") / "data"


def file_digest(path: str) -> str | None:
    """sha256 of a data file's bytes (of every file, with its relative path, for a folder); None for a hub dataset."""
    p = Path(path)
    if p.is_file():
        files = [(p.name, p)]
    elif p.is_dir():
        files = sorted((str(f.relative_to(p)), f) for f in p.rglob("*") if f.is_file())
    else:
        return None
    digest = hashlib.sha256()
    for name, f in files:
        digest.update(name.encode() + b"\0" if p.is_dir() else b"")
        try:
            with f.open("rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as err:
            raise DataError(f"{f}: cannot be read ({err.strerror})") from None
    return digest.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """sha256 of what the tokenizer saves (vocabulary, merges, special tokens, settings): equal digests tokenize alike."""
    with tempfile.TemporaryDirectory(prefix="lmtune-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        digest = hashlib.sha256()
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                digest.update(f.name.encode() + b"\0" + f.read_bytes())
    digest.update(type(tokenizer).__name__.encode())
    return digest.hexdigest()


def key_of(value: Any) -> str:
    return hashlib.sha256(json.dumps([STORE_VERSION, value], sort_keys=True, default=str).encode()).hexdigest()[:24]


class Entry:
    """One cache entry: a folder of Arrow files and meta.json.

    `cached=False` (data.cache: false, or data that cannot be keyed) puts the entry in a temporary
    folder removed when the process ends.
    """

    def __init__(self, root: Path, kind: str, key: str, cached: bool):
        if cached:
            self.folder = root / f"{kind}-{key}"
        else:
            self.folder = Path(tempfile.mkdtemp(prefix=f"lmtune-{kind}-"))
            atexit.register(shutil.rmtree, self.folder, True)
        self.cached = cached
        self.key = key

    def meta(self) -> dict[str, Any] | None:
        """What the finished entry records, or None when it is not there (or not finished)."""
        try:
            return json.loads((self.folder / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write(self, fill: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Fill a staging folder (`fill` writes the Arrow files and returns the meta), then move it into place."""
        if not self.cached:
            meta = fill(self.folder)
            (self.folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
            return meta
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.", dir=self.folder.parent))
        except OSError as err:
            raise DataError(f"data cache {self.folder.parent}: cannot be written ({err.strerror}); set data.cache_dir to "
                            f"a writable folder, or data.cache: false") from None
        try:
            meta = fill(staging)
            (staging / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
            try:
                staging.rename(self.folder)
            except OSError:  # another process finished the same entry first: theirs is as good
                shutil.rmtree(staging, ignore_errors=True)
                found = self.meta()
                if found is None:
                    raise
                return found
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return meta

    def arrow(self, name: str) -> Any:
        """The memory-mapped `datasets.Dataset` of NAME.arrow in this entry."""
        import datasets

        return datasets.Dataset.from_file(str(self.folder / f"{name}.arrow"))


def write_arrow(path: Path, features: Any, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows to one Arrow file with `features` (a `datasets.Features`), a batch at a time; returns the row count."""
    from datasets.arrow_writer import ArrowWriter

    count = 0
    with ArrowWriter(features=features, path=str(path)) as writer:
        batch: dict[str, list[Any]] = {name: [] for name in features}
        for row in rows:
            for name in features:
                batch[name].append(row[name])
            count += 1
            if count % WRITE_BATCH == 0:
                writer.write_batch(batch)
                batch = {name: [] for name in features}
        if any(batch.values()):
            writer.write_batch(batch)
        writer.finalize()
    return count


class ArrowColumn(Sequence[Any]):
    """One column of a memory-mapped table, read a value at a time (a list is never made of all of it)."""

    def __init__(self, dataset: Any, name: str):
        self._column = dataset.data.column(name)

    def __len__(self) -> int:
        return len(self._column)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self._column[i].to_pylist()
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._column[i].as_py()

    def __iter__(self) -> Iterator[Any]:
        for chunk in self._column.iterchunks():
            for start in range(0, len(chunk), WRITE_BATCH):
                yield from chunk.slice(start, WRITE_BATCH).to_pylist()

    def to_list(self) -> list[Any]:
        return self._column.to_pylist()


class TokenStore:
    """Token ids (and token type ids) with one target per example, memory-mapped from Arrow: the TokenDataset of a split.

    DataLoader fetches a batch with one `__getitems__` call, so a batch is one slice of the file.
    """

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self._table = dataset.data.table  # a pyarrow Table over the memory-mapped file
        self.has_types = "token_type_ids" in dataset.column_names
        self._lengths = np.asarray(dataset.data.column("length").to_numpy(), dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {"dataset": self.dataset}  # a loader worker started by spawn maps the file again: the rows are not copied

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["dataset"])  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self._lengths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        table = self._table.take(indices)
        columns = {name: table.column(name).to_pylist() for name in ("input_ids", "target", *(("token_type_ids",) if self.has_types else ()))}
        items = []
        for k, i in enumerate(indices):
            item = {"index": int(i), "input_ids": columns["input_ids"][k], "target": columns["target"][k]}
            if self.has_types:
                item["token_type_ids"] = columns["token_type_ids"][k]
            items.append(item)
        return items

    @property
    def lengths(self) -> list[int]:
        return self._lengths.tolist()

    @property
    def targets(self) -> list[Any]:
        return self.dataset.data.column("target").to_pylist()

    def at_limit(self, max_length: int) -> int:
        """How many examples were cut at max_length."""
        return int((self._lengths >= max_length).sum())
