"""Events ingestion: formats, column detection, sessions, weights, validation and Online Retail cleaning."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semassoc.behaviour.events import (
    ONLINE_RETAIL_EXCLUDED_CODES,
    EventColumns,
    EventFilters,
    Events,
    events_from_baskets,
    load_events,
)
from semassoc.errors import InvalidInput

from .conftest import require_shared

ONLINE_RETAIL = "online_retail/online_retail_II_2009-2010.parquet"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def baskets_of(events: Events) -> dict[str, list[str]]:
    return {str(events.basket_ids[i]): b for i, b in enumerate(events.baskets())}


RETAIL_CSV = """Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country
1001,85123A,HEART,6,2010-01-01 10:00:00,2.5,13085,UK
1001,22423,CAKESTAND,2,2010-01-01 10:00:00,12.0,13085,UK
1001,POST,POSTAGE,1,2010-01-01 10:00:00,18.0,13085,UK
1002,85123A,HEART,-3,2010-01-02 11:00:00,2.5,,UK
1002,21232,STRAWBERRY,4,2010-01-02 11:00:00,1.0,,UK
C1003,22423,CAKESTAND,1,2010-01-03 12:00:00,12.0,13085,UK
1004,gift_0001_20,VOUCHER,1,2010-01-04 12:00:00,20.0,14000,UK
1004,DCGS0058,MISC,1,2010-01-04 12:00:00,20.0,14000,UK
1004, 22423 ,CAKESTAND,1,2010-01-04 12:00:00,12.0,14000,UK
"""


def test_csv_detects_online_retail_columns_and_filters(tmp_path: Path) -> None:
    events = load_events(write(tmp_path / "retail.csv", RETAIL_CSV), filters=EventFilters.online_retail())
    assert events.rows_read == 9
    assert events.filtered == {"quantity <= 0": 1, "cancellation": 1, "non-product code": 3}
    assert baskets_of(events) == {"1001": ["22423", "85123A"], "1002": ["21232"], "1004": ["22423"]}
    assert events.skipped.rows == 0
    assert events.quantity is not None and sorted(events.quantity.tolist()) == [1, 2, 4, 6]
    assert events.user_ids is not None and "13085" in events.user_ids.tolist()  # missing users are allowed here
    assert events.time_range == (
        datetime(2010, 1, 1, 10, tzinfo=timezone.utc),
        datetime(2010, 1, 4, 12, tzinfo=timezone.utc),
    )


def test_default_filters_drop_only_nonpositive_quantity(tmp_path: Path) -> None:
    events = load_events(write(tmp_path / "retail.csv", RETAIL_CSV))
    assert events.filtered == {"quantity <= 0": 1}
    assert "C1003" in events.basket_ids.tolist()
    assert "POST" in events.item_ids.tolist()
    assert load_events(tmp_path / "retail.csv", filters=EventFilters(drop_nonpositive_quantity=False)).filtered == {}


def test_jsonl_sessions_cut_by_inactivity_gap(tmp_path: Path) -> None:
    rows = [
        {"user_id": "u1", "product_id": "a", "event_type": "view", "timestamp": "2024-01-01T10:00:00"},
        {"user_id": "u1", "product_id": "b", "event_type": "cart", "timestamp": "2024-01-01T10:20:00"},
        {"user_id": "u1", "product_id": "c", "event_type": "purchase", "timestamp": "2024-01-01T10:49:00"},
        {"user_id": "u1", "product_id": "d", "event_type": "view", "timestamp": "2024-01-01T11:30:00"},
        {"user_id": "u2", "product_id": "a", "event_type": "wishlist", "timestamp": "2024-01-01T10:05:00+01:00"},
        {"user_id": "u2", "product_id": "d", "event_type": "VIEW", "timestamp": "2024-01-01T09:10:00Z"},
    ]
    path = write(tmp_path / "events.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    events = load_events(path)
    assert baskets_of(events) == {
        "u1@2024-01-01T10:00:00.000000": ["a", "b", "c"],
        "u1@2024-01-01T11:30:00.000000": ["d"],
        "u2@2024-01-01T09:05:00.000000": ["a", "d"],  # +01:00 converted to UTC
    }
    weights = dict(zip(events.item_ids[events.item].tolist(), events.weight.tolist(), strict=False))
    # view 1 < cart 3 < purchase 5; a custom type weighs 1; types are case-insensitive
    assert sorted(events.event_types.tolist()) == ["cart", "purchase", "view", "wishlist"]
    assert weights["b"] == 3.0 and weights["c"] == 5.0
    assert sorted(events.weight.tolist()) == [1.0, 1.0, 1.0, 1.0, 3.0, 5.0]
    # a longer gap keeps u1's four events together
    assert load_events(path, session_gap=timedelta(hours=1)).n_baskets == 2


def test_weights_and_time_decay_are_configurable(tmp_path: Path) -> None:
    path = write(
        tmp_path / "e.csv",
        "user,item,event,ts\nu,a,view,2024-01-01 00:00:00\nu,b,purchase,2024-01-02 00:00:00\n",
    )
    events = load_events(path, weights={"view": 2.0, "purchase": 10.0}, half_life=timedelta(days=1))
    by_item = dict(zip(events.item_ids[events.item].tolist(), events.weight.tolist(), strict=True))
    assert by_item == {"a": pytest.approx(1.0), "b": pytest.approx(10.0)}  # a is one half-life old
    later = load_events(path, half_life=timedelta(days=1), decay_reference=datetime(2024, 1, 3, tzinfo=timezone.utc))
    by_item = dict(zip(later.item_ids[later.item].tolist(), later.weight.tolist(), strict=True))
    assert by_item == {"a": pytest.approx(0.25), "b": pytest.approx(2.5)}
    with pytest.raises(InvalidInput, match="weight of event type 'view'"):
        load_events(path, weights={"view": -1})


def test_parquet_with_explicit_mapping_and_numeric_ids(tmp_path: Path) -> None:
    table = pa.table(
        {
            "order": pa.array([7, 7, 8], pa.int64()),
            "sku": pa.array(["x", "y", "x"]),
            "shopper": pa.array([1.0, 1.0, None]),
            "qty": pa.array([1, 2, 3]),
        }
    )
    pq.write_table(table, tmp_path / "e.parquet")
    events = load_events(tmp_path / "e.parquet", {"basket": "order", "item": "sku", "user": "shopper"})
    assert baskets_of(events) == {"7": ["x", "y"], "8": ["x"]}
    assert events.user_ids is not None and events.user_ids.tolist() == ["1"]  # 1.0 read as "1"
    assert events.user is not None and events.user.tolist().count(-1) == 1


def test_column_detection_prefers_basket_names() -> None:
    cols = EventColumns().resolve(["order_id", "session_id", "sku", "Customer ID", "event_time", "Qty", "event"])
    assert cols == EventColumns(
        item="sku", basket="order_id", user="Customer ID", timestamp="event_time", event_type="event", quantity="Qty"
    )
    with pytest.raises(InvalidInput, match="unknown event field"):
        EventColumns.from_mapping({"product": "sku"})


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "basket,name\n1,a\n")
    with pytest.raises(InvalidInput, match=r"e\.csv: no product id column"):
        load_events(path)
    with pytest.raises(InvalidInput, match=r"column 'sku' \(mapped to field 'item'\) is missing"):
        load_events(path, {"item": "sku"})
    no_basket = write(tmp_path / "n.csv", "user_id,product_id\nu,a\n")
    with pytest.raises(InvalidInput, match="needs timestamp column"):
        load_events(no_basket)


BAD_CSV = """user_id,product_id,timestamp,quantity
u1,a,2024-01-01 10:00:00,1
u1,,2024-01-01 10:01:00,1
u2,b,not a time,1
u2,c,2024-01-01 10:03:00,lots
u3,d,2024-01-01 10:04:00,1,extra

u4,e,2024-01-01 10:05:00,2
,f,2024-01-01 10:06:00,1
"""


def test_strict_mode_names_file_row_and_field(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", BAD_CSV)
    with pytest.raises(InvalidInput) as info:
        load_events(path)
    message = str(info.value)
    # one line: the first problem, how many more, nothing loaded
    assert message == (
        f"{path}: row 3, field 'product_id': empty product id; 4 more bad row(s); nothing loaded "
        "(--on-error skip loads the good rows)"
    )
    # every problem is listed in skip mode; rows are line numbers, the header being row 1; blank line 7 still counts
    problems = [str(p) for p in load_events(path, on_error="skip").skipped.problems]
    assert problems == [
        f"{path}: row 3, field 'product_id': empty product id",
        f"{path}: row 4, field 'timestamp': bad timestamp 'not a time'",
        f"{path}: row 5, field 'quantity': bad quantity 'lots'",
        f"{path}: row 6, field 'row': expected 4 fields, found 5: 'u3,d,2024-01-01 10:04:00,1,extra'",
        f"{path}: row 9, field 'user_id': empty user id",
    ]


def test_skip_mode_keeps_good_rows_and_summarises(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", BAD_CSV)
    events = load_events(path, on_error="skip")
    assert sorted(events.item_ids.tolist()) == ["a", "e"]
    assert events.skipped.rows == 5
    assert events.skipped.reasons == {
        "product_id: empty product id": 1,
        "timestamp: bad timestamp": 1,
        "quantity: bad quantity": 1,
        "row: wrong number of fields": 1,
        "user_id: empty user id": 1,
    }
    assert [p.row for p in events.skipped.problems] == [3, 4, 5, 6, 9]
    with pytest.raises(InvalidInput, match="on_error"):
        load_events(path, on_error="ignore")  # type: ignore[arg-type]


def test_bad_json_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", '{"basket_id": 1, "item_id": "a"}\n{oops\n{"basket_id": 1, "item_id": "b"}\n')
    with pytest.raises(InvalidInput, match=r"e\.jsonl: row 2, field 'row': not valid JSON"):
        load_events(path)
    events = load_events(path, on_error="skip")
    assert events.baskets() == [["a", "b"]]
    assert events.skipped.rows == 1


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        load_events(tmp_path / "missing.csv")
    with pytest.raises(InvalidInput, match="cannot tell the format"):
        load_events(write(tmp_path / "e.xlsx", "x"))
    with pytest.raises(InvalidInput, match="empty file"):
        load_events(write(tmp_path / "e.csv", ""))
    with pytest.raises(InvalidInput, match="session_gap"):
        load_events(write(tmp_path / "f.csv", "basket,item\n1,a\n"), session_gap=timedelta(0))


def test_concat_merges_vocabularies_and_baskets() -> None:
    first = events_from_baskets([["a", "b"], ["c"]])
    second = events_from_baskets([["b", "d"]])
    joined = Events.concat([first, second])
    assert joined.item_ids.tolist() == ["a", "b", "c", "d"]
    assert joined.baskets() == [["a", "b", "d"], ["c"]]  # basket "0" is in both parts and merges
    assert joined.sources == ("<memory>", "<memory>")


def test_online_retail_cleaning_on_real_file() -> None:
    events = load_events(require_shared(ONLINE_RETAIL), filters=EventFilters.online_retail())
    assert events.rows_read == 525_461
    assert events.skipped.rows == 0
    # quantity <= 0 covers almost every cancellation line; one cancellation has a positive quantity
    assert events.filtered == {"quantity <= 0": 12_326, "cancellation": 1, "non-product code": 2_399}
    assert len(events) == 525_461 - 12_326 - 1 - 2_399
    assert not any(b.startswith("C") for b in events.basket_ids.tolist())
    items = set(events.item_ids.tolist())
    assert not items & ONLINE_RETAIL_EXCLUDED_CODES
    assert not any(i.startswith(("DCGS", "gift_0001_")) for i in items)
    assert events.quantity is not None and events.quantity.min() > 0
    sizes = np.array([len(b) for b in events.baskets()])
    assert events.n_baskets == 21_752
    assert int((sizes >= 2).sum()) == 18_796  # PROVENANCE: "about 18,800 baskets with >= 2 distinct products"
    assert events.n_items == 4_280
