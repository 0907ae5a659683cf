import pytest

from metaloop.data.tables import label_order, read_table
from metaloop.errors import MetaloopError


def write(path, content, encoding="utf-8"):
    path.write_bytes(content.encode(encoding))
    return path


def test_csv_and_json_lines_read_the_same(tmp_path):
    csv = read_table(write(tmp_path / "a.csv", 'text,label\n"hi, there",1\n\n  ho ,b \n'))
    jsonl = read_table(write(tmp_path / "a.jsonl", '{"text": "hi, there", "label": 1}\n\n{"text": "  ho ", "label": "b "}\n'))
    for table in (csv, jsonl):
        assert table.fields == ("text", "label") and table.has("label") and not table.has("split")
        assert table.column("text", kind="text") == ["hi, there", "  ho "]  # texts as written
        assert table.column("label", integers=True, strip=True) == ["1", "b"]
        assert [number for number, _ in table.rows] == [2, 4] if table is csv else [1, 3]
    assert not csv.is_json and jsonl.is_json


def test_byte_order_mark_and_other_suffixes(tmp_path):
    table = read_table(write(tmp_path / "a.csv", "\ufefftext,label\nhi,a\n"))
    assert table.fields == ("text", "label")
    for suffix in (".json", ".ndjson", ".JSONL"):
        assert read_table(write(tmp_path / f"b{suffix}", '{"text": "x"}\n')).column("text") == ["x"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("t.txt", "hi\n", r"t.txt: unknown file type '.txt'; expected .csv"),
        ("t", "hi\n", r"t: unknown file type '\(no suffix\)'"),
        ("t.csv", "text,label\na,b\nc,d,e\n", r"t.csv:3: more fields than the header has columns \(quote a text"),
        ("t.jsonl", '{"text": "a"}\n{"text": ', r"t.jsonl:2: invalid JSON \(.*, column 10\); expected one JSON object"),
        ("t.jsonl", '{"text": "a"}\n[1, 2]\n', r"t.jsonl:2: expected a JSON object, got list"),
    ],
)
def test_read_errors(tmp_path, name, content, message):
    with pytest.raises(MetaloopError, match=message) as e:
        read_table(write(tmp_path / name, content))
    assert "\n" not in str(e.value)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(MetaloopError, match=r"support file .*none.csv does not exist"):
        read_table(tmp_path / "none.csv", what="support file")
    with pytest.raises(MetaloopError, match=r"latin.csv: not UTF-8 text \(invalid .* at byte 14\)"):
        read_table(write(tmp_path / "latin.csv", "text,label\ncaf\xe9,a\n", encoding="latin-1"))


@pytest.mark.parametrize(
    "name, content, kwargs, message",
    [
        ("t.csv", "txt,label\na,b\n", {"what": "the texts"}, r"t.csv: no column 'text' \(the texts; columns: txt, label\)"),
        ("t.csv", "", {}, r"t.csv: no column 'text' \(columns: none: the file is empty\)"),
        ("t.csv", "text,label\n", {}, r"t.csv: no rows after the header"),
        ("t.csv", "text,label\na,b\n  ,c\n", {"kind": "text"}, r"t.csv:3: empty text in column 'text'"),
        ("t.csv", "label,text\nb\n", {}, r"t.csv:2: empty value in column 'text'"),  # a short row
        ("t.jsonl", '{"text": "a"}\n{"txt": "b"}\n', {}, r"t.jsonl:2: no field 'text' \(fields: txt\)"),
        ("t.jsonl", '{"txt": "a"}\n', {}, r"t.jsonl: no field 'text' \(fields: txt\)"),
        ("t.jsonl", '{"text": 3}\n', {}, r"t.jsonl:1: field 'text' must be a string, not int"),
        ("t.jsonl", '{"text": true}\n', {"integers": True}, r"must be a string or an integer, not bool"),
        ("t.jsonl", '{"text": null}\n', {}, r"t.jsonl:1: field 'text' must be a string, not NoneType"),
    ],
)
def test_column_errors(tmp_path, name, content, kwargs, message):
    table = read_table(write(tmp_path / name, content))
    with pytest.raises(MetaloopError, match=message) as e:
        table.column("text", **kwargs)
    assert "\n" not in str(e.value)


def test_label_order():
    assert label_order(["10", "2", "-1", "2"]) == ["-1", "2", "10"]
    assert label_order(["b", "a", "10", "2"]) == ["10", "2", "a", "b"]


def test_binary_duplicated_columns_and_long_fields(tmp_path):
    """A NUL byte (a binary or UTF-16 file) and a column named twice are errors naming file and line; a field
    longer than the csv module's default limit (131,072 characters) is read."""
    from metaloop.data.tables import read_table

    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"text,label\nhello\x00,a\n")
    with pytest.raises(MetaloopError, match=r"nul.csv:2: contains a NUL byte"):
        read_table(nul)
    twice = tmp_path / "twice.csv"
    twice.write_text("text,label,text\na,b,c\n")
    with pytest.raises(MetaloopError, match=r"twice.csv:1: column 'text' appears twice"):
        read_table(twice)
    long = tmp_path / "long.csv"
    long.write_text("text,label\n" + "x" * 200_000 + ",a\n")
    assert read_table(long).column("text", kind="text", what="texts") == ["x" * 200_000]
