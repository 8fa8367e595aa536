"""Read tabular data files into rows, or fail with a DataError naming file, line and field.

We read CSV/TSV/JSON/JSONL ourselves rather than through `datasets.load_dataset`, because the
user must learn *where* a file is broken (line, byte offset, field), which the generic
loaders do not say.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from array import array
from collections.abc import Iterator, Sequence
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
            raise no_column(self.source, name, role, self.columns)
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


@dataclass
class Columns:
    """Some columns of one data source, as one list per column (no dict per row), each row with the place it came from."""

    source: str
    columns: list[str]  # every column of the source, for messages
    values: dict[str, list[Any]]  # the columns read
    places: array  # 1-based line or row number of each row
    place_word: str = "line"

    def __len__(self) -> int:
        return len(self.places)

    def where(self, i: int) -> str:
        return f"{self.place_word} {self.places[i]}"

    def column(self, name: str, role: str) -> list[Any]:
        if name not in self.columns:
            raise no_column(self.source, name, role, self.columns)
        return self.values[name]


def no_column(source: str, name: str, role: str, columns: Sequence[str]) -> DataError:
    return DataError(f"{source}: no column {name!r} (asked for as {role}); the columns are: {', '.join(map(repr, columns)) or 'none'}")


def read_columns(path: str, names: Sequence[str | None], on_empty: str, limit: int | None, header: bool = True) -> Columns:
    """The named columns of a data file, read a row at a time and kept as lists, as `read_table(path).without_empty(names,
    on_empty).head(limit)` would give them: a row missing a column has None there."""
    wanted = [n for n in dict.fromkeys(names) if n is not None]
    stream = open_rows(path, header)
    values: dict[str, list[Any]] = {n: [] for n in wanted}
    places = array("q")
    blank = array("b")  # per row: a wanted cell is empty (data.on_empty: drop leaves it out)
    kept = 0
    for place, row in stream.rows:
        cells = [row.get(n) for n in wanted]
        empty = any(is_blank(c) for c in cells)
        for n, c in zip(wanted, cells):
            values[n].append(c)
        places.append(place)
        blank.append(empty)
        kept += not empty if on_empty == "drop" else 1
        if stream.fixed_columns and limit is not None and kept >= limit:  # the columns are known up front: the rest need not be read
            break
    columns = stream.columns()
    named = [n for n in wanted if n in columns]
    # a column none of the rows has is never empty: the check that names it missing comes later
    keep = [i for i in range(len(places)) if not any(is_blank(values[n][i]) for n in named)] if on_empty == "drop" and any(blank) else []
    if on_empty == "drop" and any(blank) and len(keep) < len(places):
        log.warning("%s: dropped %d of %d rows with an empty or null %s (data.on_empty: drop)", stream.source,
                    len(places) - len(keep), len(places), " or ".join(map(repr, named)))
        values = {n: [v[i] for i in keep] for n, v in values.items()}
        places = array("q", (places[i] for i in keep))
    if limit is not None and len(places) > limit:
        values = {n: v[:limit] for n, v in values.items()}
        places = places[:limit]
    return Columns(stream.source, columns, values, places, stream.place_word)


def is_blank(value: Any) -> bool:
    """A cell with nothing in it: null, or text of only whitespace."""
    return value is None or (isinstance(value, str) and not value.strip())


def read_table(path: str, header: bool = True) -> Table:
    """Read a data file, a saved `datasets` folder, or (online) a hub dataset `name[:split]`.

    `header=False`: the first line of a CSV/TSV file is data, and columns are named 0, 1, 2, ...
    """
    stream = open_rows(path, header)
    rows: list[dict[str, Any]] = []
    places: list[int] = []
    for place, row in stream.rows:
        rows.append(row)
        places.append(place)
    return Table(stream.source, stream.columns(), rows, places, stream.place_word)


@dataclass
class RowStream:
    """The rows of one data source, read one at a time: `rows` yields (place, row) and raises DataError where the file is
    broken; `columns()` names every column seen so far (all of them once `rows` is exhausted)."""

    source: str
    rows: Iterator[tuple[int, dict[str, Any]]]
    place_word: str
    seen: list[str]
    fixed_columns: bool = True  # the columns are known before the rows are read (not so in JSONL)

    def columns(self) -> list[str]:
        return list(self.seen)


def open_rows(path: str, header: bool = True) -> RowStream:
    """The rows of a data file, a saved `datasets` folder or a hub dataset, read as `read_table` reads them.

    CSV, TSV, TXT, JSONL and Parquet files are read a row at a time, so a file larger than memory
    can be checked and cached; a JSON document and hub datasets are read whole first.
    """
    p = Path(path)
    if p.is_dir():
        return _table_stream(_read_saved_dataset(p))
    fmt = FORMATS.get(p.suffix.lower())
    if p.is_file():
        if fmt is None:
            raise DataError(f"{path}: unknown data format {p.suffix!r}; use one of {', '.join(FORMATS)}")
        if fmt in ("csv", "tsv"):
            return _delimited_stream(p, fmt, header)
        if fmt == "json":
            return _table_stream(_read_json(p, _decode(p)))
        if fmt == "jsonl":
            return _jsonl_stream(p)
        return _parquet_stream(p)
    if fmt is None and re.fullmatch(r"[\w.-]+(/[\w.-]+)?(:[\w.-]+)?", path):
        return _table_stream(_read_hub_dataset(path))
    raise DataError(f"data file {path} does not exist (looked in {p.resolve().parent})")


def _table_stream(table: Table) -> RowStream:
    return RowStream(table.source, zip(table.places, table.rows), table.place_word, table.columns)


def _decode(p: Path) -> str:
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise DataError(f"{p}: cannot be read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(p, raw, err.start) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{p}: line {line} contains a NUL byte; the file looks binary or corrupted")
    return text.removeprefix("\ufeff")


def _not_utf8(p: Path, raw: bytes, start: int, line: int | None = None, line_start: int = 0) -> DataError:
    """The error for a byte that is not UTF-8 at offset `start` of `raw` (a whole file, or one line of it that begins at
    file offset `line_start` and is line number `line`)."""
    if line is None:
        line = raw.count(b"\n", 0, start) + 1
        col = start - (raw.rfind(b"\n", 0, start) + 1) + 1
    else:
        col = start + 1
    return DataError(
        f"{p}: not UTF-8 text: line {line}, column {col} (byte offset {line_start + start}) holds byte "
        f"0x{raw[start]:02x}; re-save the file as UTF-8"
    )


def text_lines(p: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file with their endings (a line ends at \\n, \\r\\n or \\r), one at a time; a DataError
    names the line, column and byte offset of a byte that is not UTF-8, or the line of a NUL byte."""
    try:
        f = p.open("rb")
    except OSError as err:
        raise DataError(f"{p}: cannot be read ({err.strerror})") from None
    with f:
        offset, number, pending = 0, 0, b""
        for chunk in iter(lambda: f.read(1 << 20), b""):
            pieces = re.split(rb"(\r\n|\r|\n)", pending + chunk)
            # the last piece may be the start of a longer line; a lone \r at the end may be the start of \r\n
            keep = pieces.pop()
            if pieces and pieces[-1] == b"\r" and not keep:
                keep = pieces.pop(-2) + pieces.pop()
            pending = keep
            for i in range(0, len(pieces), 2):
                raw = pieces[i] + pieces[i + 1]
                number += 1
                yield _line_text(p, raw, number, offset)
                offset += len(raw)
        if pending:
            number += 1
            yield _line_text(p, pending, number, offset)


def _line_text(p: Path, raw: bytes, number: int, offset: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(p, raw, err.start, number, offset) from None
    if "\x00" in text:
        raise DataError(f"{p}: line {number} contains a NUL byte; the file looks binary or corrupted")
    return text.removeprefix("\ufeff") if number == 1 else text


def _delimited_stream(p: Path, fmt: str, has_header: bool) -> RowStream:
    # GLUE-style TSV files are unquoted: a quote character is literal text there.
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(text_lines(p), **_dialect(fmt))
    start = 1  # the line the record being read starts on
    try:
        header = next(reader, None)
        if header is not None and not has_header:  # the first line is a row: name columns by position and read it again
            reader = csv.reader(text_lines(p), **_dialect(fmt))
            header = [str(i) for i in range(len(header))]
    except csv.Error as err:
        raise _csv_error(p, fmt, reader, start, err) from None
    if header is None or not any(h.strip() for h in header):
        raise DataError(f"{p}: the file is empty" + ("; the first line must name the columns" if has_header else ""))
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{p}: line 1 names column(s) {', '.join(map(repr, dupes))} more than once")
    start = reader.line_num + 1

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        nonlocal start
        try:
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip() and len(header) > 1):
                    start = reader.line_num + 1
                    continue  # blank line
                if len(fields) != len(header):
                    raise DataError(
                        f"{p}: line {start} has {len(fields)} fields but the header has {len(header)} "
                        f"({', '.join(header)}); check for an unquoted delimiter or a missing value"
                    )
                yield start, dict(zip(header, fields))
                start = reader.line_num + 1
        except csv.Error as err:
            raise _csv_error(p, fmt, reader, start, err) from None

    return RowStream(str(p), rows(), "line", header)


def _csv_error(p: Path, fmt: str, reader: Any, start: int, err: csv.Error) -> DataError:
    if reader.line_num > start:  # the broken record runs over several lines: a quote opened and never closed
        return DataError(
            f"{p}: line {start}: malformed {fmt.upper()}: a quoted field that starts on this line is not closed "
            f"where it should be (reading reached line {reader.line_num}: {err}); check the quotes on line {start}"
        )
    return DataError(f"{p}: line {reader.line_num}: malformed {fmt.upper()} ({err})")


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


def _jsonl_stream(p: Path) -> RowStream:
    # Only \n, \r\n and \r end a line: str.splitlines() would also split at U+2028, U+0085, form
    # feeds and more, which JSON allows unescaped inside strings.
    seen: list[str] = []

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        known: set[str] = set()
        for number, line in enumerate(text_lines(p), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as err:
                raise DataError(f"{p}: line {number} is not valid JSON (column {err.colno}: {err.msg})") from None
            except _DuplicateKey as err:
                raise DataError(f"{p}: line {number} names the key {str(err)!r} more than once") from None
            except RecursionError:
                raise DataError(f"{p}: line {number} is not valid JSON (arrays or objects nested too deeply)") from None
            if not isinstance(record, dict):
                raise DataError(f"{p}: line {number} is a {type(record).__name__}, expected an object of column: value")
            for key in record:
                if key not in known:
                    known.add(key)
                    seen.append(key)
            yield number, record

    return RowStream(str(p), rows(), "line", seen, fixed_columns=False)


def _parquet_stream(p: Path) -> RowStream:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(p)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several unrelated types for a bad file
        raise DataError(f"{p}: not a readable Parquet file ({err})") from None
    names = file.schema_arrow.names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{p}: column(s) {', '.join(map(repr, dupes))} appear more than once")

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        number = 0
        try:
            batches = file.iter_batches(batch_size=10_000)
            for batch in batches:
                for row in batch.to_pylist():
                    number += 1
                    yield number, row
        except OSError as err:  # a truncated or corrupted row group
            raise DataError(f"{p}: not a readable Parquet file after row {number} ({err})") from None

    return RowStream(str(p), rows(), "row", names)


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
