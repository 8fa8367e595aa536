"""read_table: every format reads correctly, and every broken input raises a DataError naming file and place."""

from __future__ import annotations

import json

import pytest

from lmtune.data.readers import Table, read_table
from lmtune.errors import DataError


def write_text(path, text: str):
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def write_bytes(path, raw: bytes):
    path.write_bytes(raw)
    return str(path)


def data_error(path: str) -> str:
    with pytest.raises(DataError) as info:
        read_table(path)
    return str(info.value)


# --- formats that read ---------------------------------------------------------------------------


def test_csv_with_quoted_commas_quotes_and_newlines(tmp_path):
    path = write_text(
        tmp_path / "train.csv",
        'text,label\n"hello, world",pos\n"two\nlines, here",neg\n"she said ""hi""",pos\nplain,neg\n',
    )
    table = read_table(path)
    assert isinstance(table, Table)
    assert table.source == path
    assert table.columns == ["text", "label"]
    assert [r["text"] for r in table.rows] == ["hello, world", "two\nlines, here", 'she said "hi"', "plain"]
    assert [r["label"] for r in table.rows] == ["pos", "neg", "pos", "neg"]
    # each row's place is the line it starts on; the quoted newline makes row 3 start on line 5
    assert table.places == [2, 3, 5, 6]
    assert table.where(2) == "line 5"


def test_csv_with_crlf_line_endings_and_blank_lines(tmp_path):
    path = write_text(tmp_path / "crlf.csv", "text,label\r\na,1\r\n\r\nb,2\r\n")
    table = read_table(path)
    assert table.rows == [{"text": "a", "label": "1"}, {"text": "b", "label": "2"}]
    assert table.places == [2, 4]


def test_csv_header_names_are_stripped(tmp_path):
    table = read_table(write_text(tmp_path / "h.csv", " text , label \nx,y\n"))
    assert table.columns == ["text", "label"]
    assert table.rows == [{"text": "x", "label": "y"}]


def test_csv_header_only_has_no_rows(tmp_path):
    table = read_table(write_text(tmp_path / "h.csv", "text,label\n"))
    assert table.columns == ["text", "label"] and table.rows == [] and table.places == []


def test_tsv_is_unquoted_so_quote_characters_are_literal(tmp_path):
    path = write_text(
        tmp_path / "sst2.tsv",
        'sentence\tlabel\nit \'s a " quoted " film\t1\n"starts with a quote\t0\nends with one"\t1\n',
    )
    table = read_table(path)
    assert table.columns == ["sentence", "label"]
    assert [r["sentence"] for r in table.rows] == ['it \'s a " quoted " film', '"starts with a quote', 'ends with one"']
    assert [r["label"] for r in table.rows] == ["1", "0", "1"]
    assert table.places == [2, 3, 4]


def test_tsv_commas_are_not_delimiters(tmp_path):
    table = read_table(write_text(tmp_path / "x.tsv", "text\tlabel\na, b, c\tx\n"))
    assert table.rows == [{"text": "a, b, c", "label": "x"}]


def test_json_list_of_records(tmp_path):
    records = [{"text": "a", "label": 1}, {"text": "b", "label": [1, 2], "extra": None}]
    table = read_table(write_text(tmp_path / "d.json", json.dumps(records)))
    assert table.rows == records
    assert table.columns == ["text", "label", "extra"]  # union, in order of first appearance
    assert table.places == [1, 2]
    assert table.where(1) == "record 2"


def test_json_dict_of_column_lists(tmp_path):
    table = read_table(write_text(tmp_path / "d.json", json.dumps({"text": ["a", "b", "c"], "label": [0, 1, 0]})))
    assert table.columns == ["text", "label"]
    assert table.rows == [{"text": "a", "label": 0}, {"text": "b", "label": 1}, {"text": "c", "label": 0}]


def test_jsonl_with_blank_lines_keeps_line_numbers(tmp_path):
    path = write_text(tmp_path / "d.jsonl", '{"text": "a", "label": 0}\n\n   \n{"text": "b", "label": 1}\r\n\n')
    table = read_table(path)
    assert table.rows == [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    assert table.places == [1, 4]
    assert table.where(1) == "line 4"


def test_ndjson_extension_is_jsonl(tmp_path):
    table = read_table(write_text(tmp_path / "d.ndjson", '{"a": 1}\n{"a": 2}\n'))
    assert table.rows == [{"a": 1}, {"a": 2}]


def test_jsonl_with_unicode_line_separators_inside_strings(tmp_path):
    # json.dumps(ensure_ascii=False) writes U+2028, U+2029, U+0085 and form feeds unescaped; they are
    # not line breaks in JSONL.
    records = [{"text": "a\u2028b\u2029c\x85d\x0ce\x1cf", "label": 0}, {"text": "g", "label": 1}]
    path = write_text(tmp_path / "u.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    table = read_table(path)
    assert table.rows == records
    assert table.places == [1, 2]


def test_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["a", "b"], "label": [0, 1]}).to_parquet(path, index=False)
    table = read_table(str(path))
    assert table.columns == ["text", "label"]
    assert table.rows == [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    assert table.where(1) == "row 2"


def test_saved_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [2, 0, 1]}).save_to_disk(str(folder))
    table = read_table(str(folder))
    assert table.columns == ["text", "label"]
    assert table.rows == [{"text": "a", "label": 2}, {"text": "b", "label": 0}, {"text": "c", "label": 1}]
    assert table.places == [1, 2, 3]


@pytest.mark.parametrize("name", ["bom.csv", "bom.tsv", "bom.json", "bom.jsonl"])
def test_utf8_bom_is_stripped(tmp_path, name):
    body = {
        "csv": "text,label\nx,1\n",
        "tsv": "text\tlabel\nx\t1\n",
        "json": '[{"text": "x", "label": "1"}]',
        "jsonl": '{"text": "x", "label": "1"}\n',
    }[name.split(".")[1]]
    table = read_table(write_bytes(tmp_path / name, b"\xef\xbb\xbf" + body.encode()))
    assert table.columns == ["text", "label"]
    assert table.rows == [{"text": "x", "label": "1"}]


def test_extension_is_case_insensitive(tmp_path):
    assert read_table(write_text(tmp_path / "UPPER.CSV", "a\n1\n")).rows == [{"a": "1"}]


def test_non_ascii_text_survives(tmp_path):
    table = read_table(write_text(tmp_path / "u.csv", "text,label\nnaïve café 日本語 🙂,ok\n"))
    assert table.rows[0]["text"] == "naïve café 日本語 🙂"


# --- Table -------------------------------------------------------------------------------------------


def test_table_column_and_missing_column_lists_the_columns(tmp_path):
    path = write_text(tmp_path / "t.csv", "sentence,label\na,1\nb,2\n")
    table = read_table(path)
    assert table.column("sentence", "data.text_column") == ["a", "b"]
    with pytest.raises(DataError) as info:
        table.column("text", "data.text_column")
    msg = str(info.value)
    assert path in msg
    assert "'text'" in msg and "data.text_column" in msg
    assert "'sentence'" in msg and "'label'" in msg


def test_table_column_with_no_columns():
    with pytest.raises(DataError, match="none"):
        Table("src", [], [], []).column("text", "data.text_column")


def test_table_head():
    table = Table("src", ["a"], [{"a": 1}, {"a": 2}, {"a": 3}], [2, 3, 4])
    head = table.head(2)
    assert head.rows == [{"a": 1}, {"a": 2}] and head.places == [2, 3] and head.columns == ["a"]


# --- broken inputs -----------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.csv")
    msg = data_error(path)
    assert path in msg and "does not exist" in msg


def test_unknown_extension(tmp_path):
    path = write_text(tmp_path / "data.xlsx", "text,label\n")
    msg = data_error(path)
    assert "data.xlsx" in msg and "'.xlsx'" in msg
    for ext in (".csv", ".tsv", ".json", ".jsonl", ".parquet"):
        assert ext in msg


@pytest.mark.parametrize("name", ["bad.csv", "bad.tsv", "bad.json", "bad.jsonl"])
def test_non_utf8_byte_names_line_column_and_byte_offset(tmp_path, name):
    prefix = "text,label\nfine,1\nca" if name.endswith(".csv") else "text\tlabel\nfine\t1\nca"
    if name.endswith(".json"):
        prefix = '[{"text": "fine",\n "label": 1},\n {"text": "ca'
    elif name.endswith(".jsonl"):
        prefix = '{"text": "fine"}\n{"text": "ok"}\n{"text": "ca'
    raw = prefix.encode() + b"\xe9" + b'"}\n'
    offset = len(prefix.encode())
    msg = data_error(write_bytes(tmp_path / name, raw))
    assert name in msg
    assert "not UTF-8" in msg
    assert "line 3" in msg
    assert f"byte offset {offset}" in msg
    column = offset - prefix.rindex("\n")
    assert f"column {column}" in msg
    assert "0xe9" in msg


def test_non_utf8_on_first_line(tmp_path):
    msg = data_error(write_bytes(tmp_path / "first.csv", b"\xfftext,label\n"))
    assert "first.csv" in msg and "line 1, column 1 (byte offset 0)" in msg and "0xff" in msg


@pytest.mark.parametrize("name", ["nul.csv", "nul.jsonl"])
def test_nul_byte(tmp_path, name):
    raw = b"text,label\na,1\nb\x00,2\n" if name.endswith(".csv") else b'{"a": 1}\n{"a": 2}\n{"a": "\x00"}\n'
    msg = data_error(write_bytes(tmp_path / name, raw))
    assert name in msg and "NUL" in msg and "line 3" in msg


def test_csv_row_with_too_few_fields(tmp_path):
    msg = data_error(write_text(tmp_path / "short.csv", "text,label\na,1\nb,2\nmissing a label\nc,3\n"))
    assert "short.csv" in msg
    assert "line 4 has 1 fields but the header has 2" in msg


def test_csv_row_with_too_many_fields_after_multiline_field(tmp_path):
    # the bad row starts on line 5 because the quoted field before it spans two lines
    msg = data_error(write_text(tmp_path / "long.csv", 'text,label\na,1\n"b\nb",2\nc, unquoted comma,3\n'))
    assert "long.csv" in msg
    assert "line 5 has 3 fields but the header has 2" in msg


def test_tsv_row_with_wrong_field_count(tmp_path):
    msg = data_error(write_text(tmp_path / "bad.tsv", "sentence\tlabel\na\t1\nb\t2\textra\n"))
    assert "bad.tsv" in msg and "line 3 has 3 fields" in msg


def test_csv_malformed_quoting_names_line(tmp_path):
    msg = data_error(write_text(tmp_path / "q.csv", 'text,label\na,1\n"b"x,2\n'))
    assert "q.csv" in msg and "line 3" in msg and "malformed CSV" in msg


def test_csv_unterminated_quote_names_the_line_it_opens_on(tmp_path):
    msg = data_error(write_text(tmp_path / "open.csv", 'text,label\na,1\n"never closed,2\nmore\n'))
    assert "open.csv: line 3: malformed CSV" in msg and "quoted field" in msg


def test_csv_unterminated_quote_in_the_middle_of_a_long_file(tmp_path):
    lines = ["text,label", *[f"row {i},pos" for i in range(2, 7)], '"opens here,neg', *[f"row {i},pos" for i in range(8, 26)]]
    msg = data_error(write_text(tmp_path / "long.csv", "\n".join(lines) + "\n"))
    assert "long.csv: line 7:" in msg and "check the quotes on line 7" in msg and "line 25" in msg


@pytest.mark.parametrize("name", ["dup.csv", "dup.tsv"])
def test_duplicate_header_names(tmp_path, name):
    sep = "," if name.endswith(".csv") else "\t"
    header = sep.join(["text", "label", "text ", "label", "x"])
    msg = data_error(write_text(tmp_path / name, header + "\n" + sep.join("abcde") + "\n"))
    assert name in msg and "line 1" in msg
    assert "'label', 'text'" in msg
    assert "'x'" not in msg


@pytest.mark.parametrize("name", ["empty.csv", "empty.tsv", "empty.json"])
def test_empty_file(tmp_path, name):
    msg = data_error(write_bytes(tmp_path / name, b""))
    assert name in msg


def test_empty_jsonl_is_an_empty_table(tmp_path):
    # zero records is valid JSONL; load_classification_data rejects it ("holds no data rows")
    table = read_table(write_text(tmp_path / "empty.jsonl", "\n\n"))
    assert table.rows == [] and table.columns == []


def test_empty_csv_says_the_header_is_missing(tmp_path):
    msg = data_error(write_text(tmp_path / "empty.csv", ""))
    assert "empty" in msg and "name the columns" in msg


def test_whitespace_only_header(tmp_path):
    msg = data_error(write_text(tmp_path / "blank.csv", "   \n"))
    assert "blank.csv" in msg and "empty" in msg


def test_malformed_jsonl_line(tmp_path):
    path = write_text(tmp_path / "bad.jsonl", '{"text": "a"}\n\n{"text": "b"}\n{"text": "c",}\n{"text": "d"}\n')
    msg = data_error(path)
    assert "bad.jsonl" in msg
    assert "line 4 is not valid JSON" in msg
    assert "column 14" in msg  # the '}' after the trailing comma


def test_jsonl_truncated_last_line(tmp_path):
    msg = data_error(write_text(tmp_path / "cut.jsonl", '{"a": 1}\n{"a": 2}\n{"a": '))
    assert "cut.jsonl" in msg and "line 3" in msg


def test_invalid_json_names_line_and_column(tmp_path):
    path = write_text(tmp_path / "bad.json", '[\n  {"text": "a"},\n  {"text": "b" "label": 1}\n]\n')
    msg = data_error(path)
    assert "bad.json" in msg
    assert "line 3, column 16" in msg  # where '"label"' starts


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('[{"text": "a"}, ["b"], {"text": "c"}]', "record 2 is a list"),
        ("[1, 2]", "record 1 is a int"),
        ('[{"text": "a"}, null]', "record 2 is a NoneType"),
    ],
)
def test_json_records_that_are_not_objects(tmp_path, body, where):
    msg = data_error(write_text(tmp_path / "recs.json", body))
    assert "recs.json" in msg and where in msg


def test_jsonl_records_that_are_not_objects(tmp_path):
    msg = data_error(write_text(tmp_path / "recs.jsonl", '{"a": 1}\n\n"just a string"\n'))
    assert "recs.jsonl" in msg and "line 3 is a str" in msg


@pytest.mark.parametrize("body", ['{"text": "a"}', '"text"', "42", "{}"])
def test_json_that_is_not_a_list_of_records(tmp_path, body):
    msg = data_error(write_text(tmp_path / "obj.json", body))
    assert "obj.json" in msg and "list of records" in msg


def test_json_column_lists_of_different_lengths(tmp_path):
    msg = data_error(write_text(tmp_path / "cols.json", '{"text": ["a", "b"], "label": [1]}'))
    assert "cols.json" in msg and "[1, 2]" in msg


@pytest.mark.parametrize("name", ["deep.json", "deep.jsonl"])
def test_deeply_nested_json(tmp_path, name):
    # Python's json parser raises RecursionError on deep nesting; that must still be a DataError
    msg = data_error(write_text(tmp_path / name, "[" * 100_000 + "]" * 100_000 + "\n"))
    assert name in msg


def test_datasets_dict_folder_names_the_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "dd"
    part = datasets.Dataset.from_dict({"text": ["a"], "label": [0]})
    datasets.DatasetDict({"train": part, "validation": part}).save_to_disk(str(folder))
    msg = data_error(str(folder))
    assert str(folder) in msg
    assert "train" in msg and "validation" in msg
    assert str(folder / "train") in msg
    # ... and the named split reads
    assert read_table(str(folder / "train")).rows == [{"text": "a", "label": 0}]


def test_folder_that_is_not_a_saved_dataset(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi", encoding="utf-8")
    msg = data_error(str(folder))
    assert str(folder) in msg and "save_to_disk" in msg


def test_corrupt_parquet(tmp_path):
    msg = data_error(write_bytes(tmp_path / "bad.parquet", b"this is not parquet"))
    assert "bad.parquet" in msg and "Parquet" in msg


@pytest.mark.parametrize(("name", "content", "where"), [
    ("dup.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0, "text": "c"}\n', "line 2"),
    ("dup.json", '[{"text": "a", "label": 1, "label": 0}]', "more than once"),
])
def test_duplicate_json_keys(tmp_path, name, content, where):
    msg = data_error(write_text(tmp_path / name, content))
    assert name in msg and where in msg and "more than once" in msg
