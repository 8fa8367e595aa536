"""Read tabular data files into rows, or fail with a DataError naming file, line and field.

We read CSV/TSV/JSON/JSONL ourselves rather than through `datasets.load_dataset`, because the
user must learn *where* a file is broken (line, byte offset, field), which the generic
loaders do not say.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.errors import DataError
from lmtune.hub import hub_unreachable, offline_mode_set

log = logging.getLogger("lmtune")

FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
MAX_FIELD_CHARS = 10_000_000


@dataclass
class Table:
    """Rows of one data source, each with the place it came from (for error messages)."""

    source: str
    columns: list[str]
    rows: list[dict[str, Any]]
    places: list[int]  # 1-based line (text formats) or row number (others) of each row
    place_word: str = "line"

    def where(self, i: int) -> str:
        return f"{self.place_word} {self.places[i]}"

    def column(self, name: str, role: str) -> list[Any]:
        if name not in self.columns:
            raise DataError(
                f"{self.source}: no column {name!r} (asked for as {role}); "
                f"the columns are: {', '.join(map(repr, self.columns)) or 'none'}"
            )
        return [row.get(name) for row in self.rows]

    def head(self, n: int) -> Table:
        return Table(self.source, self.columns, self.rows[:n], self.places[:n], self.place_word)

    def without_empty(self, columns: Sequence[str | None], on_empty: str) -> Table:
        """With `data.on_empty: drop`, the rows whose cell in one of `columns` is null or blank, left out (the log
        says how many, for this file); with `error`, the table as it is, for the caller's check to name them."""
        named = [c for c in columns if c is not None and c in self.columns]
        if on_empty != "drop" or not named:
            return self
        keep = [i for i, row in enumerate(self.rows) if not any(is_blank(row.get(c)) for c in named)]
        if len(keep) < len(self.rows):
            log.warning("%s: dropped %d of %d rows with an empty or null %s (data.on_empty: drop)", self.source,
                        len(self.rows) - len(keep), len(self.rows), " or ".join(map(repr, named)))
        return Table(self.source, self.columns, [self.rows[i] for i in keep], [self.places[i] for i in keep], self.place_word)


def is_blank(value: Any) -> bool:
    """A cell with nothing in it: null, or text of only whitespace."""
    return value is None or (isinstance(value, str) and not value.strip())


def read_table(path: str, header: bool = True) -> Table:
    """Read a data file, a saved `datasets` folder, or (online) a hub dataset `name[:split]`.

    `header=False`: the first line of a CSV/TSV file is data, and columns are named 0, 1, 2, ...
    """
    p = Path(path)
    if p.is_dir():
        return _read_saved_dataset(p)
    fmt = FORMATS.get(p.suffix.lower())
    if p.is_file():
        if fmt is None:
            raise DataError(f"{path}: unknown data format {p.suffix!r}; use one of {', '.join(FORMATS)}")
        if fmt in ("csv", "tsv"):
            return _read_delimited(p, _decode(p), fmt, header)
        if fmt == "json":
            return _read_json(p, _decode(p))
        if fmt == "jsonl":
            return _read_jsonl(p, _decode(p))
        return _read_parquet(p)
    if fmt is None and re.fullmatch(r"[\w.-]+(/[\w.-]+)?(:[\w.-]+)?", path):
        return _read_hub_dataset(path)
    raise DataError(f"data file {path} does not exist (looked in {p.resolve().parent})")


def _decode(p: Path) -> str:
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise DataError(f"{p}: cannot be read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{p}: not UTF-8 text: line {line}, column {col} (byte offset {err.start}) holds byte "
            f"0x{raw[err.start]:02x}; re-save the file as UTF-8"
        ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{p}: line {line} contains a NUL byte; the file looks binary or corrupted")
    return text.removeprefix("\ufeff")


def _read_delimited(p: Path, text: str, fmt: str, has_header: bool = True) -> Table:
    # GLUE-style TSV files are unquoted: a quote character is literal text there.
    reader = csv.reader(io.StringIO(text, newline=""), **_dialect(fmt))
    csv.field_size_limit(MAX_FIELD_CHARS)
    rows: list[dict[str, Any]] = []
    places: list[int] = []
    start = 1  # the line the record being read starts on
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise DataError(f"{p}: the file is empty" + ("; the first line must name the columns" if has_header else ""))
        if not has_header:  # the first line is a row: name columns by position and read it again
            header = [str(i) for i in range(len(header))]
            reader = csv.reader(io.StringIO(text, newline=""), **_dialect(fmt))
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"{p}: line 1 names column(s) {', '.join(map(repr, dupes))} more than once")
        start = reader.line_num + 1
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip() and len(header) > 1):
                start = reader.line_num + 1
                continue  # blank line
            if len(fields) != len(header):
                raise DataError(
                    f"{p}: line {start} has {len(fields)} fields but the header has {len(header)} "
                    f"({', '.join(header)}); check for an unquoted delimiter or a missing value"
                )
            rows.append(dict(zip(header, fields)))
            places.append(start)
            start = reader.line_num + 1
    except csv.Error as err:
        if reader.line_num > start:  # the broken record runs over several lines: a quote opened and never closed
            raise DataError(
                f"{p}: line {start}: malformed {fmt.upper()}: a quoted field that starts on this line is not closed "
                f"where it should be (reading reached line {reader.line_num}: {err}); check the quotes on line {start}"
            ) from None
        raise DataError(f"{p}: line {reader.line_num}: malformed {fmt.upper()} ({err})") from None
    return Table(str(p), header, rows, places)


def _dialect(fmt: str) -> dict[str, Any]:
    if fmt == "tsv":
        return {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "strict": True}
    return {"strict": True}


def _check_records(p: Path, records: list[Any], places: list[int], word: str) -> Table:
    columns: list[str] = []
    seen: set[str] = set()
    for rec, place in zip(records, places):
        if not isinstance(rec, dict):
            raise DataError(f"{p}: {word} {place} is a {type(rec).__name__}, expected an object of column: value")
        for key in rec:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    return Table(str(p), columns, records, places, word)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: json would silently keep the last of two equal keys."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _read_json(p: Path, text: str) -> Table:
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise DataError(f"{p}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except _DuplicateKey as err:
        raise DataError(f"{p}: an object names the key {str(err)!r} more than once") from None
    except RecursionError:
        raise DataError(f"{p}: invalid JSON: arrays or objects nested too deeply") from None
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise DataError(f"{p}: the column lists have different lengths {sorted(lengths)}")
        keys = list(data)
        data = [dict(zip(keys, values)) for values in zip(*data.values())]
    if not isinstance(data, list):
        raise DataError(f"{p}: expected a JSON list of records (or an object of equal-length column lists)")
    return _check_records(p, data, list(range(1, len(data) + 1)), "record")


def _read_jsonl(p: Path, text: str) -> Table:
    records, places = [], []
    # Only \n, \r\n and \r end a line: str.splitlines() would also split at U+2028, U+0085, form
    # feeds and more, which JSON allows unescaped inside strings.
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line, object_pairs_hook=_unique_keys))
        except json.JSONDecodeError as err:
            raise DataError(f"{p}: line {number} is not valid JSON (column {err.colno}: {err.msg})") from None
        except _DuplicateKey as err:
            raise DataError(f"{p}: line {number} names the key {str(err)!r} more than once") from None
        except RecursionError:
            raise DataError(f"{p}: line {number} is not valid JSON (arrays or objects nested too deeply)") from None
        places.append(number)
    return _check_records(p, records, places, "line")


def _read_parquet(p: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several unrelated types for a bad file
        raise DataError(f"{p}: not a readable Parquet file ({err})") from None
    names = table.column_names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{p}: column(s) {', '.join(map(repr, dupes))} appear more than once")
    rows = table.to_pylist()
    return Table(str(p), names, rows, list(range(1, len(rows) + 1)), "row")


def _from_hf_dataset(ds: Any, source: str) -> Table:
    rows = ds.to_list()
    return Table(source, list(ds.column_names), rows, list(range(1, len(rows) + 1)), "row")


def _read_saved_dataset(p: Path) -> Table:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as err:  # noqa: BLE001 - FileNotFoundError or datasets' own errors for a non-dataset folder
        raise DataError(f"{p}: a folder, but not one saved by datasets' save_to_disk ({err})") from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"{p}: holds several splits ({', '.join(ds)}); name one, e.g. {p / next(iter(ds))}")
    return _from_hf_dataset(ds, str(p))


def _read_hub_dataset(spec: str) -> Table:
    import datasets

    name, _, split = spec.partition(":")
    why = hub_unreachable()
    if why is not None and not offline_mode_set():  # offline mode reads datasets' own cache, quickly
        raise DataError(
            f"{spec}: no such local file, and it cannot be loaded as a hub dataset: the Hugging Face hub cannot be "
            f"reached ({why}). Give a local data file, or set HF_HUB_OFFLINE=1 to use a copy in datasets' cache"
        )
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as err:  # noqa: BLE001 - offline, unknown name, unknown split: all end here
        raise DataError(
            f"{spec}: no such local file, and loading it as a hub dataset (name {name!r}, split "
            f"{split or 'train'!r}) failed: {err}"
        ) from None
    return _from_hf_dataset(ds, spec)
