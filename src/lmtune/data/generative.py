"""Data for generative tasks: instruction, chat and QA records as conversations; raw text as blocks.

Formats (each row of a CSV, TSV, JSON, JSONL or Parquet file, or a saved datasets folder):
- `alpaca`: `instruction`, optional `input` (appended to the instruction after a blank line),
  `output`, optional `system`, optional `history` (earlier `[user, assistant]` pairs).
- `messages`: a `messages` list of `{role, content}` (OpenAI style), or a ShareGPT
  `conversations` list of `{from, value}` (`human`/`user`, `gpt`/`assistant`, `system`).
- SQuAD JSON (`{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}`): one conversation per
  question, the user turn holding context and question, the assistant turn the first answer;
  every reference answer is kept for scoring.
- `text`: documents (a text column, or a .txt file as one document), tokenized, joined with EOS
  and cut into blocks for next-token training on every token.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lmtune.data.batching import TOKENIZE_CHUNK
from lmtune.data.chat import check_messages
from lmtune.data.readers import Table, is_blank, no_column, open_rows, read_table, text_lines
from lmtune.data.redact import Redactor, add_counts, log_redacted, redactor_for
from lmtune.errors import ConfigError, DataError
from lmtune.progress import bar
from lmtune.schema import CachedDataConfig

log = logging.getLogger("lmtune")

GENERATIVE_COLUMNS = {"instruction", "input", "output", "system", "history", "messages"}


class GenerativeSection(CachedDataConfig):
    """`data` keys of the tasks that train a model to write replies."""

    system_prompt: str | None = Field(None, description="System message for conversations that have none (lmtune generate and chat use it too).")
    train_on_prompt: bool = Field(False, description="Train on prompt tokens too, not only on the responses.")
    packing: bool = Field(False, description="Put several examples in one row; they do not attend to each other.")


class CausalLMSection(GenerativeSection):
    """`data` of task causal_lm: documents, or instruction, chat and QA records."""

    text_column: str = Field("text", description="format text: column of the documents.")
    format: Literal["auto", "text", "alpaca", "messages", "squad"] = Field(
        "auto", description="text, alpaca, messages (or ShareGPT) or squad; auto decides from the columns."
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="The file's names for instruction, input, output, system, history, messages."
    )
    streaming: bool = Field(False, description="format text: read the documents a row (a .txt file a MiB) at a time while they "
                            "are tokenized into the data cache, never all in memory: for corpora larger than memory.")

    @model_validator(mode="after")
    def _known_columns(self) -> CausalLMSection:
        unknown = set(self.columns) - GENERATIVE_COLUMNS
        if unknown:
            raise ValueError(f"data.columns: unknown name(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(GENERATIVE_COLUMNS))}")
        return self


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                  "system": "system"}


@dataclass
class Conversations:
    source: str
    messages: list[list[dict[str, str]]]
    references: list[list[str]] = field(default_factory=list)  # all accepted answers (SQuAD), else empty

    def __len__(self) -> int:
        return len(self.messages)

    def take(self, indices: list[int]) -> Conversations:
        refs = [self.references[i] for i in indices] if self.references else []
        return Conversations(self.source, [self.messages[i] for i in indices], refs)

    def answers(self) -> list[list[str]]:
        """What a generated reply is scored against: the references, else the last assistant message."""
        if self.references:
            return self.references
        return [[next(m["content"] for m in reversed(ms) if m["role"] == "assistant")] for ms in self.messages]


def detect_format(path: str, columns: dict[str, str] | None = None, text_column: str = "text") -> str:
    """data.format=auto: squad for SQuAD JSON, text for .txt, else from the columns of the first file."""
    p = Path(path)
    if p.suffix.lower() == ".txt":
        return "text"
    if p.suffix.lower() == ".json" and p.is_file() and _is_squad(p):
        return "squad"
    names = {"instruction": "instruction", "messages": "messages", **(columns or {})}
    found = first_columns(path)
    if names["messages"] in found or "conversations" in found:
        return "messages"
    if names["instruction"] in found:
        return "alpaca"
    if text_column in found:
        return "text"
    raise DataError(
        f"{path}: cannot tell the data format from its columns ({', '.join(map(repr, found)) or 'none'}); expected "
        f"'instruction'/'output' (alpaca), 'messages' or 'conversations' (chat), or {text_column!r} (raw text). "
        f"Set data.format, and data.columns or data.text_column if the names differ"
    )


def first_columns(path: str) -> list[str]:
    """The columns of a data file as its first row shows them (a JSONL row may name fewer than a later one)."""
    stream = open_rows(path)
    if not stream.fixed_columns:
        next(stream.rows, None)
    return stream.columns()


def load_conversations(path: str, fmt: str, columns: dict[str, str] | None = None, on_empty: str = "error") -> Conversations:
    """Read `alpaca`, `messages` or `squad` data; every problem is a DataError naming file and row.

    `on_empty: drop` leaves out the alpaca rows with an empty instruction or output."""
    if fmt == "squad" or (Path(path).suffix.lower() == ".json" and _is_squad(Path(path))):
        return read_squad(Path(path))
    table = read_table(path)
    if not table.rows:
        raise DataError(f"{table.source}: holds no data rows")
    names = {"instruction": "instruction", "input": "input", "output": "output", "system": "system",
             "history": "history", "messages": "messages", **(columns or {})}
    convert = {"alpaca": _alpaca, "messages": _messages}.get(fmt)
    if convert is None:
        raise DataError(f"{path}: format {fmt!r} does not hold conversations; expected alpaca or messages")
    if fmt == "alpaca":
        for key in ("instruction", "output"):
            table.column(names[key], f"the alpaca {key}")  # fails naming the columns that exist
        table = table.without_empty([names["instruction"], names["output"]], on_empty)
        if not table.rows:
            raise DataError(f"{table.source}: holds no row with both an instruction and an output")
    out = []
    for i, row in enumerate(table.rows):
        where = f"{table.source}: {table.where(i)}"
        out.append(check_messages(convert(row, names, where), where))
    return Conversations(table.source, out)


def _alpaca(row: dict[str, Any], names: dict[str, str], where: str) -> list[dict[str, str]]:
    def text(key: str, required: bool) -> str:
        value = row.get(names[key])
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise DataError(f"{where}: {names[key]!r} is empty; fill it, or set data.on_empty: drop to leave such rows out")
            return ""
        if not isinstance(value, str):
            raise DataError(f"{where}: {names[key]!r} is a {type(value).__name__}, expected text")
        return value

    instruction, extra, output, system = text("instruction", True), text("input", False), text("output", True), text("system", False)
    messages = [{"role": "system", "content": system}] if system else []
    history = row.get(names["history"]) or []
    if not isinstance(history, list) or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p) for p in history):
        raise DataError(f"{where}: {names['history']!r} must be a list of [user, assistant] text pairs")
    for user, assistant in history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages + [{"role": "user", "content": alpaca_user_text(instruction, extra)}, {"role": "assistant", "content": output}]


def alpaca_user_text(instruction: str, extra: str) -> str:
    """An alpaca row's user message: the instruction, and its `input` after a blank line."""
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


def _messages(row: dict[str, Any], names: dict[str, str], where: str) -> list[dict[str, str]]:
    if names["messages"] in row:
        value = row[names["messages"]]
        if isinstance(value, str):  # a CSV cell may hold the list as JSON
            try:
                return json.loads(value)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: {names['messages']!r} is text but not a JSON list of messages ({err.msg})") from None
        return value
    turns = row.get("conversations")
    if turns is None:
        raise DataError(f"{where}: no {names['messages']!r} list (or ShareGPT 'conversations') in this row")
    if not isinstance(turns, list):
        raise DataError(f"{where}: 'conversations' must be a list of {{from, value}} turns")
    out = []
    for n, turn in enumerate(turns, start=1):
        role = SHAREGPT_ROLES.get(str(turn.get("from"))) if isinstance(turn, dict) else None
        if role is None:
            raise DataError(f"{where}: turn {n} has 'from' {turn.get('from') if isinstance(turn, dict) else turn!r}; "
                            f"expected one of {', '.join(SHAREGPT_ROLES)}")
        out.append({"role": role, "content": turn.get("value")})
    return out


def _is_squad(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(200).lstrip()
    return head.startswith(b"{") and (b'"data"' in head or b'"version"' in head)


def squad_prompt(context: str, question: str) -> str:
    return f"Answer the question from the text.\n\nText: {context}\n\nQuestion: {question}"


def read_squad(path: Path) -> Conversations:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        articles = doc["data"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a SQuAD-format JSON file ({err})") from None
    messages, references = [], []
    for article in articles:
        for para in article.get("paragraphs", []):
            for q in para.get("qas", []):
                answers = [x["text"] for x in q.get("answers", []) if isinstance(x, dict) and str(x.get("text", "")).strip()]
                if not answers:
                    continue  # SQuAD 2.0 unanswerable questions: nothing to learn to say
                user = squad_prompt(para["context"], q["question"])
                messages.append([{"role": "user", "content": user}, {"role": "assistant", "content": answers[0]}])
                references.append(answers)
    if not messages:
        raise DataError(f"{path}: no answered questions found")
    return Conversations(str(path), messages, references)


def load_documents(path: str, text_column: str = "text", on_empty: str = "error") -> list[str]:
    """Raw text: a .txt file is one document; other formats give one document per row."""
    p = Path(path)
    if p.suffix.lower() == ".txt":
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"{p}: no such file") from None
        except UnicodeDecodeError as err:
            raise DataError(f"{p}: not UTF-8 text (byte {err.start})") from None
        if not text.strip():
            raise DataError(f"{p}: the file is empty")
        return [text]
    table: Table = read_table(path)
    table.column(text_column, "the text")  # fails naming the columns that exist
    table = table.without_empty([text_column], on_empty)
    docs = table.column(text_column, "the text")
    bad = [table.where(i) for i, d in enumerate(docs) if not isinstance(d, str)]
    if bad:
        raise DataError(f"{table.source}: {len(bad)} rows have no text in {text_column!r} (first: {', '.join(bad[:3])}); "
                        f"fill them, or set data.on_empty: drop to leave them out")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DataError(f"{table.source}: every text is empty")
    return docs


STREAM_WINDOW_CHARS = 1 << 18  # data.streaming: a .txt file is tokenized in windows of about this many characters,
STREAM_OVERLAP_CHARS = 4096  # each overlapping the next by this many, where the two tokenizations are joined
SYNC_TOKENS = 8  # tokens that must agree after a join: the join is where both windows tokenize the same
WINDOWS_PER_CALL = 4
TOKENIZE_CHARS = 4 << 20  # characters per tokenizer call, at most (and TOKENIZE_CHUNK documents)


class DocumentStream:
    """data.streaming: the documents of a file, read (and checked) a row at a time each time they are iterated.

    Other formats than .txt give one document per row of `text_column`, with load_documents'
    checks and messages. A .txt file is one document, read in overlapping windows of about a MiB:
    two neighbouring windows are joined at a token boundary in their overlap after which both give
    the same tokens (far from the edges of either), so the file gives the tokens it gives read
    whole, whatever the tokenizer does with whitespace or the start of a text.
    """

    def __init__(self, path: str, text_column: str, on_empty: str, limit: int | None):
        self.path, self.text_column, self.on_empty, self.limit = path, text_column, on_empty, limit
        self.source = path

    def token_chunks(self, tokenizer: Any) -> Iterator[tuple[list[int], bool]]:
        """(token ids, ends a document) pairs, in file order."""
        if Path(self.path).suffix.lower() == ".txt":
            yield from self._text_chunks(tokenizer)
        else:
            yield from _tokenized(tokenizer, ((doc, True) for doc in self._rows()))

    def _text_chunks(self, tokenizer: Any) -> Iterator[tuple[list[int], bool]]:
        p = Path(self.path)
        if not p.is_file():
            raise DataError(f"{p}: no such file")
        previous: tuple[list[int], list[int]] | None = None  # the last window's ids and their start characters
        emitted = 0  # ids of `previous` already given
        seen_text = False
        for group in _groups(_windows(_newlines(text_lines(p)), STREAM_WINDOW_CHARS, STREAM_OVERLAP_CHARS), WINDOWS_PER_CALL):
            seen_text = seen_text or any(text.strip() for _, text in group)
            # several windows a call: the tokenizer encodes them on as many threads
            encodings = tokenizer([text for _, text in group], add_special_tokens=False, return_offsets_mapping=True)
            for (start, _), ids, offsets in zip(group, encodings["input_ids"], encodings["offset_mapping"]):
                current = (ids, [start + lo for lo, _ in offsets])
                if previous is None:
                    previous = current
                    continue
                join = _join(previous, current, start + STREAM_OVERLAP_CHARS // 4, start + 3 * STREAM_OVERLAP_CHARS // 4)
                if join is None:
                    raise DataError(
                        f"{p}: read in pieces for data.streaming, the text near character {start:,} does not tokenize the same "
                        f"in two overlapping pieces, so the pieces cannot be joined exactly; give the corpus as documents (a "
                        f"JSONL or CSV file with a text column), or set data.streaming: false")
                i, j = join
                yield previous[0][emitted:i], False
                previous, emitted = current, j
        if not seen_text:
            raise DataError(f"{p}: the file is empty")
        if previous is not None:
            yield previous[0][emitted:], True

    def _rows(self) -> Iterator[str]:
        stream = open_rows(self.path)
        if stream.fixed_columns and self.text_column not in stream.columns():
            raise no_column(stream.source, self.text_column, "the text", stream.columns())
        bad: list[str] = []
        dropped = count = kept = 0
        for place, row in stream.rows:
            value = row.get(self.text_column)
            count += 1
            if is_blank(value) and self.on_empty == "drop":
                dropped += 1
                continue
            if not isinstance(value, str):
                bad.append(f"{stream.place_word} {place}")
                continue
            if value.strip():
                kept += 1
                yield value
                if self.limit and kept >= self.limit:
                    break
        if self.text_column not in stream.columns():
            raise no_column(stream.source, self.text_column, "the text", stream.columns())
        if dropped:
            log.warning("%s: dropped %d of %d rows with an empty or null %r (data.on_empty: drop)", stream.source, dropped, count,
                        self.text_column)
        if bad:
            raise DataError(f"{stream.source}: {len(bad)} rows have no text in {self.text_column!r} (first: {', '.join(bad[:3])}); "
                            f"fill them, or set data.on_empty: drop to leave them out")
        if not kept:
            raise DataError(f"{stream.source}: every text is empty")


def _windows(lines: Iterator[str], size: int, overlap: int) -> Iterator[tuple[int, str]]:
    """(start character, text) windows of size + overlap characters, one every `size` characters; the last one shorter."""
    parts: list[str] = []
    held, start = 0, 0
    for line in lines:
        parts.append(line)
        held += len(line)
        while held >= size + overlap:
            text = "".join(parts)
            yield start, text[: size + overlap]
            parts, held, start = [text[size:]], held - size, start + size
    text = "".join(parts)
    if text and (start == 0 or held > overlap):  # else the previous window held all of it
        yield start, text


def _newlines(lines: Iterator[str]) -> Iterator[str]:
    """Each line ending in \\n (\\r\\n and \\r read as \\n, as Python reads a text file whole)."""
    for line in lines:
        yield line.replace("\r\n", "\n").replace("\r", "\n")


def _groups(items: Iterator[tuple[int, str]], n: int) -> Iterator[list[tuple[int, str]]]:
    group: list[tuple[int, str]] = []
    for item in items:
        group.append(item)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group


def _join(previous: tuple[list[int], list[int]], current: tuple[list[int], list[int]], lo: int, hi: int) -> tuple[int, int] | None:
    """Indices (i in previous, j in current) of a token that starts at the same character in both, between lo and hi,
    after which both windows give the same SYNC_TOKENS tokens."""
    p_ids, p_starts = previous
    c_ids, c_starts = current
    where = {s: j for j, s in enumerate(c_starts) if lo <= s <= hi}
    for i, s in enumerate(p_starts):
        if lo <= s <= hi and s in where:
            j = where[s]
            if p_ids[i : i + SYNC_TOKENS] == c_ids[j : j + SYNC_TOKENS] and len(c_ids) - j >= SYNC_TOKENS:
                return i, j
    return None


def _tokenized(tokenizer: Any, pieces: Iterable[tuple[str, bool]]) -> Iterator[tuple[list[int], bool]]:
    """Each (text, ends a document) piece's token ids, tokenized TOKENIZE_CHUNK pieces or TOKENIZE_CHARS characters a call."""
    batch: list[tuple[str, bool]] = []
    size = 0

    def flush() -> Iterator[tuple[list[int], bool]]:
        ids = tokenizer([text for text, _ in batch], add_special_tokens=False)["input_ids"]
        yield from zip(ids, (ends for _, ends in batch))

    for piece in pieces:
        batch.append(piece)
        size += len(piece[0])
        if len(batch) >= TOKENIZE_CHUNK or size >= TOKENIZE_CHARS:
            yield from flush()
            batch, size = [], 0
    if batch:
        yield from flush()


def text_blocks(tokenizer: Any, documents: list[str] | DocumentStream, block_size: int) -> Iterator[list[int]]:
    """Tokenize, join with EOS (each document ends with it), cut into blocks of block_size tokens, one block at a time.

    The last, shorter block is kept: no token of the data is dropped.
    """
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token to separate documents")
    if isinstance(documents, DocumentStream):
        chunks, total = documents.token_chunks(tokenizer), None
    else:
        chunks, total = _tokenized(tokenizer, ((d, True) for d in documents)), len(documents)
    stream: list[int] = []  # the tokens not yet in a block
    with bar(total=total, desc="tokenize", unit="documents" if total is not None else "pieces") as progress:
        for ids, ends in chunks:
            stream.extend(ids)
            if ends:
                stream.append(tokenizer.eos_token_id)
            whole = len(stream) - len(stream) % block_size
            for start in range(0, whole, block_size):
                yield stream[start : start + block_size]
            stream = stream[whole:]
            progress.update(1)
    if stream:
        yield stream


@dataclass
class GenerativeData:
    """The splits of a causal-LM run: conversations, or documents for format `text`."""

    format: str
    train: Conversations | list[str] | DocumentStream
    validation: Conversations | list[str] | DocumentStream | None  # None: hold out blocks of the training text (or none)
    test: Conversations | list[str] | DocumentStream | None = None
    redacted: dict[str, int] = field(default_factory=dict)  # data.redact: placeholders put in the text, by name


def load_generative_data(cfg: CausalLMSection, seed: int) -> GenerativeData:
    """Read and check every split before anything is trained or written."""
    fmt = detect_format(cfg.train, cfg.columns, cfg.text_column) if cfg.format == "auto" else cfg.format
    redactor = redactor_for(cfg)
    if cfg.streaming and redactor is not None:
        raise ConfigError("data.redact (and data.redact_patterns) with data.streaming is not supported yet; redact the corpus "
                          "files beforehand, or set data.streaming: false")
    if fmt == "text":  # documents: validation text, if not given, is held out later as blocks of tokens
        redacted: dict[str, int] = {}

        def documents(path: str, limit: int | None) -> list[str] | DocumentStream:
            nonlocal redacted
            if cfg.streaming:  # read, checked and tokenized together, into the data cache
                return DocumentStream(path, cfg.text_column, cfg.on_empty, limit)
            docs = load_documents(path, cfg.text_column, cfg.on_empty)
            docs = docs[:limit] if limit else docs
            if redactor is not None:
                docs = [redactor(d) for d in docs]
                redacted = add_counts(redacted, log_redacted(redactor, path))
            return docs

        return GenerativeData(
            fmt, documents(cfg.train, cfg.max_train_examples),
            documents(cfg.validation, cfg.max_eval_examples) if cfg.validation else None,
            documents(cfg.test, cfg.max_eval_examples) if cfg.test else None,
            redacted,
        )
    if cfg.streaming:
        raise ConfigError(f"data.streaming reads raw text (data.format text); {cfg.train} holds {fmt} records, which are read "
                          f"into memory: set data.streaming: false")
    splits = read_splits(cfg, seed, lambda path: load_conversations(path, fmt, cfg.columns, cfg.on_empty), "example", redactor)
    return GenerativeData(fmt, *splits[:3], splits[3])


def read_splits(
    cfg: GenerativeSection, seed: int, read: Callable[[str], Conversations], unit: str, redactor: Redactor | None = None
) -> tuple[Conversations, Conversations | None, Conversations | None, dict[str, int]]:
    """Train, validation (given, held out by data.validation_split, or none) and test conversations,
    cut to data.max_*_examples, with data.system_prompt added where a conversation has none; the
    text as `redactor` (data.redact) leaves it, and the placeholders it put in, by name."""
    redacted: dict[str, int] = {}

    def one(path: str, limit: int | None) -> Conversations:
        nonlocal redacted
        conv = read(path)
        if limit:
            conv = conv.take(list(range(min(limit, len(conv)))))
        if redactor is not None:
            conv.messages = [[{**m, "content": redactor(m["content"])} for m in ms] for ms in conv.messages]
            conv.references = [[redactor(r) for r in refs] for refs in conv.references]
            redacted = add_counts(redacted, log_redacted(redactor, path))
        if cfg.system_prompt:
            conv.messages = [m if m[0]["role"] == "system" else [{"role": "system", "content": cfg.system_prompt}, *m]
                             for m in conv.messages]
        return conv

    train = one(cfg.train, cfg.max_train_examples)
    validation = one(cfg.validation, cfg.max_eval_examples) if cfg.validation else None
    if validation is None and cfg.validation_split > 0:
        kept, held = hold_out(len(train), cfg.validation_split, seed, train.source, unit)
        train, validation = train.take(kept), train.take(held)
    test = one(cfg.test, cfg.max_eval_examples) if cfg.test else None
    return train, validation, test, redacted


def hold_out(n: int, fraction: float, seed: int, source: str, unit: str) -> tuple[list[int], list[int]]:
    """A seeded split of n items into kept and held-out indices, each in the original order."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(n * fraction))
    if n - n_held < 1:
        raise DataError(f"{source}: {n} {unit}(s) are too few to split off a validation set; "
                        f"give data.validation or set data.validation_split=0")
    log.info("no data.validation given: held out %d of %d %ss (seed %d)", n_held, n, unit, seed)
    return sorted(order[n_held:]), sorted(order[:n_held])
