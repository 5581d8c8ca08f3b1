"""Behaviour through the API and the CLI: build, update, complements, rules, info."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from semassoc import api
from semassoc.behaviour.events import EventFilters, LoadOptions
from semassoc.cli.app import app
from semassoc.errors import InvalidInput, NotFound
from semassoc.store.base import ProductFilter
from semassoc.text.encoder import HashingEncoder

from .conftest import EXAMPLES

runner = CliRunner()

# Baskets with a known answer: the candle is bought with the t-light holder 3 times, the mug once.
EVENTS = """order_id,product_id,user_id,quantity
o1,l1,u1,1
o1,c1,u1,1
o2,l1,u2,2
o2,c1,u2,1
o3,l1,u3,1
o3,c1,u3,1
o3,m1,u3,1
o4,m1,u1,1
o4,m2,u1,1
o5,m1,u2,1
o5,m2,u2,1
o6,t1,u4,-1
"""


def run(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


@pytest.fixture
def events_csv(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(EVENTS)
    return path


def test_build_and_complements_with_catalog_titles_and_filters(events_csv, catalog_csv, tmp_path):
    ws = tmp_path / "ws"
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(16))
    report = api.build_behavior(events_csv, workspace=ws, min_count=1)
    assert (report.baskets, report.items, report.rows_read, report.rows_used) == (5, 4, 12, 11)
    assert report.filtered == {"quantity <= 0": 1}
    items = api.complements("l1", workspace=ws, metric="count", min_count=1)
    assert [(i.product_id, i.signals["count"]) for i in items] == [("c1", 3.0), ("m1", 1.0)]
    assert items[0].title == "Scented candle vanilla"
    assert items[0].explanation.startswith("bought together in 3 baskets")
    assert items[0].signals["confidence"] == pytest.approx(1.0) and items[0].signals["lift"] == pytest.approx(5 / 3)
    home = api.complements("l1", workspace=ws, metric="count", min_count=1, filter=ProductFilter(categories=("home",)))
    assert [i.product_id for i in home] == ["c1"]
    assert [
        i.product_id for i in api.complements("l1", workspace=ws, min_count=1, filter=ProductFilter(exclude=("c1",)))
    ] == ["m1"]
    with pytest.raises(NotFound, match="no behaviour statistics"):
        api.complements("t1", workspace=ws)


def test_update_equals_rebuild_through_the_api(events_csv, tmp_path):
    lines = EVENTS.strip().splitlines()
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("\n".join(lines[:8]) + "\n")  # orders o1-o3 (no order spans the two files)
    second.write_text("\n".join([lines[0], *lines[8:]]) + "\n")
    api.build_behavior(first, workspace=tmp_path / "inc", min_count=1)
    updated = api.update_behavior(second, workspace=tmp_path / "inc")
    full = api.build_behavior([first, second], workspace=tmp_path / "full", min_count=1)
    assert (updated.baskets, updated.items, updated.pairs) == (full.baskets, full.items, full.pairs)
    for item in ("l1", "m1"):
        a = api.complements(item, workspace=tmp_path / "inc", metric="count", min_count=1)
        b = api.complements(item, workspace=tmp_path / "full", metric="count", min_count=1)
        assert [(x.product_id, x.signals) for x in a] == [(x.product_id, x.signals) for x in b]
    with pytest.raises(InvalidInput, match="already"):
        api.update_behavior(second, workspace=tmp_path / "inc")


def test_update_reuses_the_stored_load_options(tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("Invoice,StockCode\n1,X\n1,Y\n1,POST\nC2,X\nC2,Y\n")
    api.build_behavior(
        raw, workspace=tmp_path / "ws", options=LoadOptions(filters=EventFilters.online_retail()), min_count=1
    )
    more = tmp_path / "more.csv"
    more.write_text("Invoice,StockCode\n3,X\n3,Y\n3,POST\nC4,X\nC4,Y\n")
    report = api.update_behavior(more, workspace=tmp_path / "ws")
    assert report.filtered == {"cancellation": 2, "non-product code": 1}
    assert report.baskets == 2


def test_cli_build_complements_info_and_json(events_csv, tmp_path):
    ws = str(tmp_path / "ws")
    out = run("behavior", "build", str(events_csv), "-w", ws, "--min-count", "1").output
    assert "5 baskets, 4 products" in out
    table = run("complements", "l1", "-w", ws, "--metric", "count").output
    assert "bought with l1" in table and "│ c1 " in table
    rows = [json.loads(x) for x in run("complements", "l1", "-w", ws, "--json").stdout.splitlines()]
    assert {r["product_id"] for r in rows} == {"c1", "m1"}
    assert {"count", "confidence", "lift"} <= set(rows[0]["signals"])
    info = json.loads(run("info", "-w", ws, "--json").stdout)
    assert info["sections"]["behaviour"]["baskets"] == 5


def test_cli_bad_events_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("order_id,product_id\no1,a\n,b\n")
    result = run("behavior", "build", str(bad), "-w", str(tmp_path / "ws"), code=2)
    assert f"{bad}: row 3, field 'order_id': empty basket id" in result.output
    assert result.output.strip().count("\n") == 0 and not (tmp_path / "ws" / "behaviour").exists()
    skipped = run("behavior", "build", str(bad), "-w", str(tmp_path / "ws"), "--on-error", "skip").output
    assert "skipped 1 bad rows" in skipped
    run("behavior", "build", str(tmp_path / "missing.csv"), code=2)
    run("complements", "zz", "-w", str(tmp_path / "ws"), code=1)
    run("complements", "a", "-w", str(tmp_path / "ws"), "--metric", "magic", code=2)


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_cli_rules_on_the_example_invoices(tmp_path, suffix):
    out_file = tmp_path / f"rules.{suffix}"
    args = [
        "rules",
        str(EXAMPLES / "invoices.parquet"),
        "--preset",
        "online-retail",
        "--min-support",
        "0.02",
        "--min-confidence",
        "0.5",
        "--out",
        str(out_file),
    ]
    table = run(*args).output
    assert "rules from 12" in table and "by lift" in table and f"wrote 47 rules to {out_file}" in table
    if suffix == "parquet":
        assert pq.read_table(out_file).num_rows == 47
    elif suffix == "jsonl":
        rows = [json.loads(line) for line in out_file.read_text().splitlines()]
        assert len(rows) == 47 and rows[0]["lift"] >= rows[-1]["lift"]
    else:
        assert len(out_file.read_text().splitlines()) == 48


def test_rules_api_sorting_and_bad_sort(tmp_path):
    events = EXAMPLES / "invoices.parquet"
    options = LoadOptions(filters=EventFilters.online_retail())
    by_count = api.rules(events, options=options, min_support=0.02, min_confidence=0.5, sort_by="count")
    assert len(by_count.rules) == 47 and by_count.out is None
    assert [r.count for r in by_count.rules] == sorted((r.count for r in by_count.rules), reverse=True)
    with pytest.raises(InvalidInput, match="cannot sort"):
        api.rules(events, options=options, sort_by="magic")


def test_cli_update_can_override_the_stored_strictness(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("order_id,product_id\no1,a\no1,b\n")
    second.write_text("order_id,product_id\no2,a\n,b\no2,b\n")
    ws = str(tmp_path / "ws")
    run("behavior", "build", str(first), "-w", ws, "--min-count", "1")
    strict = run("behavior", "update", str(second), "-w", ws, code=2)
    assert f"{second}: row 3, field 'order_id': empty basket id" in strict.output
    assert "skipped 1 bad rows" in run("behavior", "update", str(second), "-w", ws, "--on-error", "skip").output
    assert api.complements("a", workspace=ws, metric="count", min_count=1)[0].signals["count"] == 2.0
