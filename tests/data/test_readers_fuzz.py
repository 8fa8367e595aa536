"""Property: on any file content, read_table returns a Table or raises DataError, never anything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmtune.data.readers import Table, read_table
from lmtune.errors import DataError

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Pieces that matter to the parsers: delimiters, quotes, line ends, JSON syntax, NUL, a BOM.
TOKENS = [
    ",", "\t", '"', "'", '""', "\n", "\r\n", "\r", "\x00", "\ufeff", " ", "text", "label", "a,b",
    "{", "}", "[", "]", ":", '"text"', '"label"', "null", "true", "1", "-2.5e3", "NaN", "\\", "\\u00e9",
    "\\ud800", "\u2028", "\x85", "\x0c", "é", "🙂",
]
INVALID_UTF8 = [b"\xff", b"\xc3", b"\xe9", b"\xed\xa0\x80", b"\xf0\x9f", b"\x80", b"\xef\xbb"]

token_text = st.lists(st.sampled_from(TOKENS) | st.text(max_size=5), max_size=40).map("".join)
junk_text = st.one_of(token_text, st.text(max_size=200))


@st.composite
def junk_bytes(draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=300))
    text = draw(junk_text).encode("utf-8", "surrogatepass")
    if kind == 1:
        return text
    # valid-looking text with invalid UTF-8 (or NUL) spliced in
    spots = draw(st.lists(st.integers(0, len(text)), min_size=1, max_size=3))
    for spot in sorted(spots, reverse=True):
        text = text[:spot] + draw(st.sampled_from(INVALID_UTF8 + [b"\x00"])) + text[spot:]
    return text


def structured(ext: str) -> st.SearchStrategy[bytes]:
    """Nearly valid files: a header or JSON skeleton around junk cells."""
    cell = st.one_of(st.sampled_from(TOKENS), st.text(max_size=8))
    if ext in (".csv", ".tsv"):
        sep = "," if ext == ".csv" else "\t"
        row = st.lists(cell, min_size=1, max_size=4).map(sep.join)
        body = st.lists(row, max_size=8).map("\n".join)
        return body.map(lambda b: ("text" + sep + "label\n" + b).encode("utf-8", "surrogatepass"))
    value = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    )
    if ext == ".json":
        doc = st.one_of(
            st.lists(value, max_size=5),
            st.dictionaries(st.text(max_size=5), st.lists(value, max_size=3), max_size=3),
            value,
        ).map(json.dumps)
        # a valid document, sometimes with junk spliced in somewhere
        return st.tuples(doc, st.one_of(st.just(""), junk_text), st.floats(0, 1)).map(
            lambda t: _splice(t[0], t[1], t[2]).encode("utf-8", "surrogatepass")
        )
    lines = st.lists(st.one_of(value.map(json.dumps), junk_text, st.just("")), max_size=6)
    return lines.map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))


def _splice(doc: str, junk: str, where: float) -> str:
    cut = int(len(doc) * where)
    return doc[:cut] + junk + doc[cut:]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def check(folder, ext: str, raw: bytes) -> None:
    path = folder / f"junk{ext}"
    path.write_bytes(raw)
    try:
        table = read_table(str(path))
    except DataError as err:
        assert str(path) in str(err)
        return
    assert isinstance(table, Table)
    assert len(table.rows) == len(table.places)
    assert all(isinstance(row, dict) for row in table.rows)
    assert table.places == sorted(table.places)


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".json", ".jsonl"])
@FUZZ
@given(raw=junk_bytes())
def test_junk_bytes_give_a_table_or_a_data_error(folder, ext, raw):
    check(folder, ext, raw)


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".json", ".jsonl"])
@FUZZ
@given(data=st.data())
def test_nearly_valid_files_give_a_table_or_a_data_error(folder, ext, data):
    check(folder, ext, data.draw(structured(ext)))
