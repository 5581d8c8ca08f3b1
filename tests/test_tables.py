"""The one table reader behind catalogs and events: formats, delimiters, long fields, bad bytes, JSON columns."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semassoc.behaviour.events import load_events
from semassoc.catalog import read_catalog
from semassoc.errors import InvalidInput
from semassoc.tables import read_table


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_fields_longer_than_the_csv_module_default_limit(tmp_path):
    description = "<p>" + "very long html " * 20_000 + "</p>"  # ~300 KB, over csv's 128 KiB default
    assert len(description) > 131_072  # Python's csv default field limit
    path = tmp_path / "c.csv"
    path.write_text(f'id,title,description\na,Mug,"{description}"\nb,Cup,short\n', encoding="utf-8")
    result = read_catalog(path)
    assert [p.product_id for p in result.products] == ["a", "b"]
    assert len(result.products[0].description or "") > 200_000
    events = tmp_path / "e.csv"
    events.write_text(f'basket,item,note\n1,a,"{description}"\n1,b,x\n', encoding="utf-8")
    assert load_events(events).baskets() == [["a", "b"]]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiter_is_detected_for_catalogs_and_events(tmp_path, delimiter):
    d = delimiter
    catalog = tmp_path / "c.csv"
    catalog.write_text(f"id{d}title{d}price\na{d}Mug, red{d}2,5\nb{d}Cup{d}3\n".replace("2,5", "2.5"))
    result = read_catalog(catalog)
    assert [(p.product_id, p.title, p.price) for p in result.products] == [("a", "Mug, red", 2.5), ("b", "Cup", 3.0)]
    events = tmp_path / "e.csv"
    events.write_text(f"order_id{d}sku\n1{d}a\n1{d}b\n2{d}a\n")
    assert load_events(events).baskets() == [["a", "b"], ["a"]]


def test_explicit_delimiter_and_undetectable_one(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id:title\na:Mug\n")
    assert read_table(path, delimiter=":", exact=True).columns == ["id", "title"]
    bad = tmp_path / "d.csv"
    bad.write_text("id;title\na;b;c\n")  # ';' splits the header and the row differently, ',' not at all
    with pytest.raises(InvalidInput, match=r"cannot tell the delimiter .*--delimiter"):
        read_catalog(bad)
    with pytest.raises(InvalidInput, match="delimiter must be one character"):
        read_table(path, delimiter=";;")


def test_invalid_utf8_strict_names_the_right_row_and_skip_drops_only_it(tmp_path):
    lines = [b"id,title"] + [f"p{i},Product {i}".encode() for i in range(1, 400)]
    lines[250] = b"p250,Caf\xe9 au lait"  # latin-1 byte at file line 251
    path = write_bytes(tmp_path / "c.csv", b"\n".join(lines) + b"\n")
    with pytest.raises(InvalidInput) as info:
        read_catalog(path)
    assert f"{path}: row 251, field 'title': not valid UTF-8 text (byte 0xe9" in str(info.value)
    result = read_catalog(path, on_error="skip")
    assert len(result.products) == 398 and [(p.row, p.field) for p in result.problems] == [(251, "title")]
    # events: the same row, in strict and skip mode, CSV and JSON lines
    ev_lines = [b"basket,item"] + [f"{i},p{i}".encode() for i in range(1, 400)]
    ev_lines[100] = b"100,p\xff100"
    events = write_bytes(tmp_path / "e.csv", b"\n".join(ev_lines) + b"\n")
    with pytest.raises(InvalidInput, match=r"e\.csv: row 101, field 'item': not valid UTF-8 text \(byte 0xff"):
        load_events(events)
    loaded = load_events(events, on_error="skip")
    assert len(loaded) == 398 and [p.row for p in loaded.skipped.problems] == [101]
    jsonl = [json.dumps({"basket": i, "item": f"p{i}"}).encode() for i in range(1, 50)]
    jsonl[9] = b'{"basket": 10, "item": "p\xc310"}'
    path = write_bytes(tmp_path / "e.jsonl", b"\n".join(jsonl) + b"\n")
    with pytest.raises(InvalidInput, match=r"e\.jsonl: row 10, field 'item': not valid UTF-8"):
        load_events(path)
    assert len(load_events(path, on_error="skip")) == 48


def test_lone_surrogates_are_bad_rows(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "title": "Mug"}\n{"id": "b\\ud800", "title": "Cup"}\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"row 2, field 'id': not valid UTF-8 text \(lone surrogate U\+D800"):
        read_catalog(path)
    assert [p.product_id for p in read_catalog(path, on_error="skip").products] == ["a"]


def test_jsonl_columns_come_from_every_line(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"id": "a", "title": "Mug"}, {"id": "b", "title": "Cup", "price": "abc"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(InvalidInput, match=r"row 2, field 'price': expected a number, found 'abc'"):
        read_catalog(path)
    assert read_table(path).columns == ["id", "title", "price"]
    assert read_table(path, exact=True).columns == ["id", "title", "price"]


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_non_finite_json_numbers_are_bad_rows(tmp_path, literal):
    path = tmp_path / "c.jsonl"
    path.write_text(f'{{"id": "a", "title": "Mug"}}\n{{"id": "b", "title": "Cup", "weight": {literal}}}\n')
    with pytest.raises(InvalidInput, match=r"row 2, field 'row': not valid JSON"):
        read_catalog(path)
    events = tmp_path / "e.jsonl"
    events.write_text(f'{{"basket": 1, "item": "a"}}\n{{"basket": 1, "item": "b", "quantity": {literal}}}\n')
    with pytest.raises(InvalidInput, match=r"row 2, field 'row': not valid JSON"):
        load_events(events)


def test_non_finite_parquet_attribute_and_quantity(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "title": ["Mug", "Cup"], "weight": [1.0, float("inf")]}), path)
    with pytest.raises(InvalidInput, match=r"row 2, field 'weight': expected a finite number"):
        read_catalog(path)
    events = tmp_path / "e.parquet"
    pq.write_table(pa.table({"basket": [1, 1], "item": ["a", "b"], "quantity": [1.0, float("inf")]}), events)
    with pytest.raises(InvalidInput, match=r"row 2, field 'quantity': bad quantity inf"):
        load_events(events)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_na_null_and_nan_are_ids_in_events_as_in_the_catalog(tmp_path, suffix):
    ids = ["NA", "nan", "NULL", "N/A", "None"]
    catalog = tmp_path / f"c{suffix}"
    events = tmp_path / f"e{suffix}"
    table_c = pa.table({"id": ids, "title": [f"t{i}" for i in ids]})
    table_e = pa.table({"basket": ["1"] * len(ids), "item": ids})
    if suffix == ".csv":
        catalog.write_text("id,title\n" + "".join(f"{i},t{i}\n" for i in ids))
        events.write_text("basket,item\n" + "".join(f"1,{i}\n" for i in ids))
    elif suffix == ".jsonl":
        catalog.write_text("".join(json.dumps(r) + "\n" for r in table_c.to_pylist()))
        events.write_text("".join(json.dumps(r) + "\n" for r in table_e.to_pylist()))
    else:
        pq.write_table(table_c, catalog)
        pq.write_table(table_e, events)
    products = {p.product_id for p in read_catalog(catalog).products}
    assert products == set(ids)
    assert set(load_events(events).item_ids.tolist()) == products


def test_empty_timestamp_is_rejected_in_strict_mode_with_or_without_decay(tmp_path):
    from datetime import timedelta

    path = tmp_path / "e.csv"
    path.write_text("basket,item,timestamp\n1,a,2024-01-01 10:00\n1,b,\n2,a,2024-01-02 10:00\n")
    expected = r"e\.csv: row 3, field 'timestamp': missing timestamp"
    with pytest.raises(InvalidInput, match=expected):
        load_events(path)
    with pytest.raises(InvalidInput, match=expected):
        load_events(path, half_life=timedelta(days=7))
    assert len(load_events(path, on_error="skip")) == 2
    assert len(load_events(path, on_error="skip", half_life=timedelta(days=7))) == 2


@pytest.mark.parametrize("name", ["c.csv", "c.jsonl", "c.parquet", "c.csv.gz"])
def test_binary_files_give_one_line(tmp_path, name):
    path = write_bytes(tmp_path / name, bytes(range(256)) * 40)
    for read in (read_catalog, load_events):
        with pytest.raises(InvalidInput) as info:
            read(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_gzip_for_every_format(tmp_path, fmt):
    rows = [{"id": "a", "title": "Mug"}, {"id": "b", "title": "Cup"}]
    plain = tmp_path / f"c.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), plain)
    elif fmt == "jsonl":
        plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        d = "\t" if fmt == "tsv" else ","
        plain.write_text(f"id{d}title\na{d}Mug\nb{d}Cup\n")
    packed = tmp_path / f"c.{fmt}.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert [p.title for p in read_catalog(packed).products] == ["Mug", "Cup"]
    assert read_table(packed).table.to_pylist() == read_table(plain).table.to_pylist()


def test_truncated_gzip_is_one_line(tmp_path):
    path = tmp_path / "c.csv.gz"
    body = "".join(f"p{i},Mug {i * 7919 % 10007}\n" for i in range(10_000)).encode()
    path.write_bytes(gzip.compress(b"id,title\n" + body)[:2000])
    with pytest.raises(InvalidInput, match="not a readable gzip file"):
        read_catalog(path)


def test_fast_and_exact_reads_agree(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text('basket,item,note\n1,a,"two\nlines"\n\n1,"b, c",""\n2,NA,x\n')
    fast, exact = read_table(path), read_table(path, exact=True)
    assert not fast.exact_numbers and exact.exact_numbers
    assert fast.table.to_pylist() == exact.table.to_pylist()
    assert [exact.row_number(i) for i in range(exact.num_rows)] == [2, 5, 6]
