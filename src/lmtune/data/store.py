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
from lmtune.schema import CachedDataConfig

log = logging.getLogger("lmtune")

STORE_VERSION = 1  # bump when what an entry holds changes: older entries are then never read
META_FILE = "meta.json"  # written last: an entry without it is not finished
WRITE_BATCH = 10_000  # rows per Arrow record batch, at most
WRITE_BATCH_VALUES = 1_000_000  # and values (a token id is one) per batch, at most


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


# `data` keys whose change does not change the rows: the paths (their content is keyed), the cache itself.
NOT_KEYED = {"train", "validation", "test", "cache", "cache_dir", "num_proc"}


def data_entry(kind: str, cfg: CachedDataConfig, seed: int, more: dict[str, Any] | None = None) -> Entry:
    """The entry of `cfg`'s data files and settings (the seed too when validation is split off), and of `more`."""
    digests = {split: file_digest(path) for split in ("train", "validation", "test") if (path := getattr(cfg, split))}
    keyable = cfg.cache and all(d is not None for d in digests.values())  # a hub dataset has no content to key
    settings = cfg.model_dump(mode="json", exclude=NOT_KEYED)
    key = key_of({"kind": kind, "files": digests, "settings": settings, "seed": None if cfg.validation else seed, **(more or {})})
    return Entry(cache_root(cfg.cache_dir), kind, key, cached=keyable)


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

    def read_or_write(self, what: str, fill: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """The meta of the finished entry, or of the one `fill` writes now. The log lines of the run that wrote the entry
        are logged again when it is read, so that a run from the cache says what the first one said."""
        meta = self.meta() if self.cached else None
        if meta is None:
            return self.write(lambda folder: _with_log(fill, folder))
        log.info("data: %s from the cache (%s)", what, self.folder)
        for level, message in meta["log"]:
            log.log(level, "%s", message)
        return meta

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
    """Write rows to one Arrow file with `features` (a `datasets.Features`), a batch at a time (WRITE_BATCH rows, or
    fewer rows of WRITE_BATCH_VALUES values in all: a batch of long blocks stays small); returns the row count."""
    from datasets.arrow_writer import ArrowWriter

    count = 0
    with ArrowWriter(features=features, path=str(path)) as writer:
        batch: dict[str, list[Any]] = {name: [] for name in features}
        held = 0
        for row in rows:
            for name in features:
                value = row[name]
                batch[name].append(value)
                held += len(value) if isinstance(value, list) else 1
            count += 1
            if len(batch[next(iter(features))]) >= WRITE_BATCH or held >= WRITE_BATCH_VALUES:
                writer.write_batch(batch)
                batch, held = {name: [] for name in features}, 0
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

    A file without a `target` column holds text blocks, each its own target. `rows` picks some rows
    of the file, in order (a validation split held out of the training file). DataLoader fetches a
    batch with one `__getitems__` call: one gather from the file.
    """

    def __init__(self, dataset: Any, rows: np.ndarray | None = None):
        self.dataset = dataset
        self.rows = rows
        self._table = dataset.data.table  # a pyarrow Table over the memory-mapped file
        names = dataset.column_names
        self.has_types, self.has_target = "token_type_ids" in names, "target" in names
        lengths = np.asarray(dataset.data.column("length").to_numpy(), dtype=np.int64)
        self._lengths = lengths[rows] if rows is not None else lengths

    def __getstate__(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "rows": self.rows}  # a loader worker started by spawn maps the file again

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["dataset"], state["rows"])  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self._lengths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        positions = self.rows[indices] if self.rows is not None else indices
        table = self._table.take(positions)
        ids = table.column("input_ids").to_pylist()
        targets = table.column("target").to_pylist() if self.has_target else [list(x) for x in ids]
        types = table.column("token_type_ids").to_pylist() if self.has_types else None
        items = []
        for k, i in enumerate(indices):
            item = {"index": int(i), "input_ids": ids[k], "target": targets[k]}
            if types is not None:
                item["token_type_ids"] = types[k]
            items.append(item)
        return items

    @property
    def lengths(self) -> list[int]:
        return self._lengths.tolist()

    @property
    def targets(self) -> list[Any]:
        column = self._table.column("target" if self.has_target else "input_ids")
        return (column.take(self.rows) if self.rows is not None else column).to_pylist()

    def pairs(self) -> list[tuple[list[int], list[int]]]:
        """Every example's ids and target, in memory (for packing, which places them all)."""
        return [(item["input_ids"], item["target"]) for start in range(0, len(self), WRITE_BATCH)
                for item in self.__getitems__(list(range(start, min(start + WRITE_BATCH, len(self)))))]

    def at_limit(self, max_length: int) -> int:
        """How many examples were cut at max_length."""
        return int((self._lengths >= max_length).sum())


def token_stores(entry: Entry, fill: Callable[[Path], dict[str, Any]]) -> dict[str, TokenStore]:
    """The token stores of an entry whose meta lists `splits` (each a `file` and, for some rows of it, a `rows` .npy):
    read from the cache when the entry is there, else written by `fill` first."""
    meta = entry.read_or_write("token ids", fill)
    stores = {}
    for split, where in meta["splits"].items():
        rows = np.load(entry.folder / where["rows"]) if where.get("rows") else None
        stores[split] = TokenStore(entry.arrow(where["file"]), rows)
    return stores


def _with_log(fill: Callable[[Path], dict[str, Any]], folder: Path) -> dict[str, Any]:
    """`fill`'s meta, with what lmtune logged at INFO and above while it ran."""
    lines: list[tuple[int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append((record.levelno, record.getMessage()))

    keep = Keep(logging.INFO)
    log.addHandler(keep)
    try:
        meta = fill(folder)
    finally:
        log.removeHandler(keep)
    return {**meta, "log": lines}


def write_tokens(path: Path, rows: Iterable[dict[str, list[int]]], with_target: bool) -> int:
    """Token rows ({input_ids, target}: target omitted when each row is its own) to one Arrow file; returns the count."""
    features = token_features(with_target)
    return write_arrow(path, features, ({**row, "length": len(row["input_ids"])} for row in rows))


def token_features(with_target: bool) -> Any:
    """Token rows: ids, their count, and (unless each row is its own target) a target list of label ids (-100: none)."""
    from datasets import Features, Sequence, Value

    return Features({"input_ids": Sequence(Value("int32")), **({"target": Sequence(Value("int32"))} if with_target else {}),
                     "length": Value("int32")})
