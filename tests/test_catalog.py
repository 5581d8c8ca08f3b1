import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semassoc.catalog import CatalogColumns, normalise_text, read_catalog
from semassoc.errors import InvalidInput

from .conftest import EXAMPLES


def test_normalise_text_html_nfkc_whitespace_and_cjk():
    assert normalise_text("  Mug&nbsp;<b>Red</b>\n\t 350 ml ") == "Mug Red 350 ml"
    assert normalise_text("Ｆｕｌｌ　width") == "Full width"  # NFKC folds full-width forms
    assert normalise_text("<p>陶瓷 马克杯</p>") == "陶瓷 马克杯"  # CJK kept intact
    assert normalise_text("caf\u0065\u0301") == "café"  # composed


def test_reads_csv_with_detected_columns(catalog_csv):
    result = read_catalog(catalog_csv)
    assert result.rows_read == 8 and not result.problems
    m1 = result.products[0]
    assert (m1.product_id, m1.title, m1.category, m1.brand, m1.price, m1.in_stock) == (
        "m1",
        "Red enamel mug",
        "kitchen",
        "Acme",
        4.5,
        True,
    )
    assert m1.description == "A red enamel mug & saucer, 350 ml."
    assert result.products[2].in_stock is False


def test_extra_columns_become_attributes_and_mapping_by_file(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("StockCode,Description,Colour\nA1,Red mug,red\nA2,Blue mug,\n")
    with pytest.raises(InvalidInput, match="no title column found"):
        read_catalog(path)
    mapping = tmp_path / "columns.toml"
    mapping.write_text('[columns]\nid = "StockCode"\ntitle = "Description"\n')
    result = read_catalog(path, CatalogColumns.from_file(mapping))
    assert [p.product_id for p in result.products] == ["A1", "A2"]
    assert result.products[0].attributes == {"Colour": "red"}
    assert result.products[1].attributes == {}


def test_mapping_to_missing_column_is_reported(catalog_csv):
    with pytest.raises(InvalidInput, match=r"column 'sku' .*not found"):
        read_catalog(catalog_csv, CatalogColumns(id="sku"))


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        (",No id,1.0,yes", "product_id", "missing product id"),
        ("x1,,1.0,yes", "title", "missing title"),
        ("x1,Mug,cheap,yes", "price", "expected a number"),
        ("x1,Mug,-2,yes", "price", "non-negative"),
        ("x1,Mug,1.0,maybe", "in_stock", "expected true/false"),
        ("x1,Mug,1.0", "row", "expected 4 fields, found 3"),
    ],
)
def test_strict_mode_names_file_line_and_field(tmp_path, row, field, message):
    path = tmp_path / "bad.csv"
    path.write_text(f"product_id,title,price,in_stock\nok1,Fine mug,2.0,yes\n{row}\n")
    with pytest.raises(InvalidInput) as info:
        read_catalog(path)
    text = str(info.value)
    assert f"{path}: row 3, field '{field}'" in text
    assert message in text
    assert "\n" not in text


def test_duplicate_id_names_first_occurrence(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("id,title\na,One\nb,Two\na,Three\n")
    with pytest.raises(InvalidInput, match=r"row 4, field 'id': duplicate id 'a' \(first seen at row 2\)"):
        read_catalog(path)


def test_skip_mode_keeps_good_rows_and_lists_problems(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("id,title,price\na,Mug,1\nb,,2\nc,Cup,x\nd,Jar,3\na,Again,1\n")
    result = read_catalog(path, on_error="skip")
    assert [p.product_id for p in result.products] == ["a", "d"]
    assert [(p.row, p.field) for p in result.problems] == [(3, "title"), (4, "price"), (6, "id")]
    assert result.rows_read == 5


def test_multiline_csv_field_keeps_line_numbers_right(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('id,title,description\na,Mug,"two\nlines"\nb,,x\n')
    with pytest.raises(InvalidInput, match="row 4, field 'title'"):
        read_catalog(path)


def test_jsonl_and_bad_json_line(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"id": 1, "name": "Mug", "price": 2, "tags": ["a", "b"]}, {"id": 2, "name": "Cup"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    with pytest.raises(InvalidInput, match="row 3, field 'row': not valid JSON"):
        read_catalog(path)
    result = read_catalog(path, on_error="skip")
    assert [p.product_id for p in result.products] == ["1", "2"]
    assert result.products[0].attributes == {"tags": ["a", "b"]}


def test_parquet_rows_and_types(tmp_path):
    path = tmp_path / "c.parquet"
    table = pa.table(
        {
            "sku": ["a", "b", "c"],
            "title": ["Mug", "Cup", None],
            "price": [1.5, None, 2.0],
            "in_stock": [True, False, True],
        }
    )
    pq.write_table(table, path)
    with pytest.raises(InvalidInput, match=r"c.parquet: row 3, field 'title': missing title"):
        read_catalog(path)
    result = read_catalog(path, on_error="skip")
    assert [(p.product_id, p.price, p.in_stock) for p in result.products] == [("a", 1.5, True), ("b", None, False)]


def test_unsupported_format_and_missing_file(tmp_path):
    with pytest.raises(InvalidInput, match="not found"):
        read_catalog(tmp_path / "nope.csv")
    path = tmp_path / "c.xlsx"
    path.write_text("x")
    with pytest.raises(InvalidInput, match="cannot tell the format"):
        read_catalog(path)


def test_bundled_example_catalog_reads_cleanly():
    result = read_catalog(EXAMPLES / "catalog.csv")
    assert len(result.products) == 3000 and not result.problems
    assert all(p.title == p.title.strip() for p in result.products)
    assert {"group"} == set().union(*(p.attributes for p in result.products))
