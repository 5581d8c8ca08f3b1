"""The Spark engine gives the local engine's answers: pair statistics, basket log, user histories, updates, bad-row
reports, and association rules (arules' Groceries counts), on one local[2] Spark session shared by the module."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semassoc import api
from semassoc.behaviour.events import EventColumns, EventFilters, LoadOptions, load_events
from semassoc.behaviour.rules import mine_rules
from semassoc.errors import EngineUnavailable, InvalidInput

from .conftest import require_shared


def _spark_missing(reason: str) -> None:
    """Skip this module where Spark cannot run (a user's clone), fail where it must (CI: SEMASSOC_REQUIRE_SPARK=1)."""
    if os.environ.get("SEMASSOC_REQUIRE_SPARK") == "1":
        pytest.fail(f"{reason}; SEMASSOC_REQUIRE_SPARK=1 requires it", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


if importlib.util.find_spec("pyspark") is None:
    _spark_missing("PySpark is not installed (pip install 'semassoc[spark]')")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    _spark_missing("Java is not installed (Spark needs Java 17 or later)")

import pyspark  # noqa: E402

from semassoc.behaviour.spark import (  # noqa: E402
    SparkSettings,
    load_events_spark,
    mine_rules_spark,
    spark_session,
)

SETTINGS = SparkSettings(
    "local[2]",
    {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "2",
    },
)
ONLINE_RETAIL = "online_retail/online_retail_II_2009-2010.parquet"
GROCERIES = "groceries"


@pytest.fixture(scope="module")
def spark():  # type: ignore[no-untyped-def]
    session = spark_session(SETTINGS)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_missing_pyspark_or_java_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs first in this module, before the shared session starts (the Java check runs only before one starts).
    with pytest.raises(InvalidInput, match="unknown engine 'dask'"):
        api.build_behavior(tmp_path / "x.csv", workspace=tmp_path / "w", engine="dask")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "pyspark.sql", None)  # what an environment without PySpark gives
        with pytest.raises(EngineUnavailable, match=r"pip install 'semassoc\[spark\]'"):
            spark_session(SETTINGS)
    active = pyspark.sql.SparkSession.getActiveSession()
    if active is not None:
        pytest.skip("a Spark session is active in this process; the Java check runs only before one starts")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(EngineUnavailable, match="needs Java 17"):
        spark_session(SETTINGS)


def stored(directory: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(directory.glob("*.npy"))}


def assert_same_files(local: Path, spark_dir: Path) -> None:
    """Every array equal; float arrays (weighted dot products, summed in another order) to 1e-12 relative."""
    a, b = stored(local), stored(spark_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        if a[name].dtype.kind == "f":
            np.testing.assert_allclose(b[name], a[name], rtol=1e-12, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    if not (local / "manifest.json").is_file():
        return  # user histories: arrays only
    ma = json.loads((local / "manifest.json").read_text())
    mb = json.loads((spark_dir / "manifest.json").read_text())
    for key in ("baskets", "items", "pairs", "neighbour_pairs", "min_count", "top_k", "weighted", "event_types"):
        assert ma[key] == mb[key], key


# ------------------------------------------------------------------------------------------- real data, exact


def test_online_retail_statistics_equal_the_local_engine(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = require_shared(ONLINE_RETAIL)
    options = LoadOptions(filters=EventFilters.online_retail())
    kwargs = {"options": options}
    local = api.build_behavior(path, workspace=tmp_path / "local", **kwargs)
    remote = api.build_behavior(path, workspace=tmp_path / "spark", engine="spark", spark=SETTINGS, **kwargs)
    assert (
        (remote.baskets, remote.items, remote.pairs)
        == (local.baskets, local.items, local.pairs)
        == (
            21_752,
            4_280,
            3_648_432,
        )
    )
    assert (remote.rows_read, remote.rows_used, remote.filtered) == (local.rows_read, local.rows_used, local.filtered)
    assert_same_files(tmp_path / "local" / "behaviour", tmp_path / "spark" / "behaviour")
    assert_same_files(tmp_path / "local" / "users", tmp_path / "spark" / "users")
    # The query side reads the Spark-built workspace unchanged.
    a = api.complements("85123A", workspace=tmp_path / "local", k=5)
    b = api.complements("85123A", workspace=tmp_path / "spark", k=5)
    assert [(x.product_id, x.score) for x in a] == [(x.product_id, x.score) for x in b]


def test_groceries_statistics_and_rules_equal_arules(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    events = require_shared(f"{GROCERIES}/groceries_long.csv")
    local = api.build_behavior(events, workspace=tmp_path / "local", min_count=1)
    api.build_behavior(events, workspace=tmp_path / "spark", min_count=1, engine="spark", spark=SETTINGS)
    assert local.baskets == 9_835
    assert_same_files(tmp_path / "local" / "behaviour", tmp_path / "spark" / "behaviour")

    parts = load_events_spark(spark, str(events))
    with require_shared(f"{GROCERIES}/groceries_basket.csv").open(encoding="utf-8", newline="") as fh:
        baskets = [[item.strip() for item in row] for row in csv.reader(fh)]  # ids are stripped on load
    for support, confidence, min_len, expected, lengths in (
        (0.001, 0.5, 1, 5_668, {2: 11, 3: 1461, 4: 3211, 5: 939, 6: 46}),
        (0.005, 0.5, 1, 120, None),
        (0.001, 0.8, 1, 410, None),
        (0.006, 0.25, 2, 463, {2: 150, 3: 297, 4: 16}),
    ):
        rules = mine_rules_spark(parts, support, confidence, min_len, 10)
        assert len(rules) == expected, (support, confidence)
        if lengths is not None:
            assert Counter(len(r.lhs) + 1 for r in rules) == lengths
        # Same rules, same order, every metric bit for bit (both compute them from the same integer counts).
        assert rules == mine_rules(baskets, support, confidence, min_len, 10)
        if expected == 5_668:
            top = rules[0]
            assert (top.lhs, top.rhs, top.count) == (("Instant food products", "soda"), ("hamburger meat",), 12)


# -------------------------------------------------------------------------------------- update, options, input


def write_orders(path: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    lines = ["order_id,user_id,product_id,event_type,timestamp"] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def random_rows(seed: int, n_orders: int, first: int, n_items: int = 30) -> list[tuple[str, str, str, str, str]]:
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, n_items + 1)
    p /= p.sum()
    rows = []
    for order in range(first, first + n_orders):
        user = f"u{rng.integers(0, 40)}"
        minute = int(rng.integers(0, 60 * 24 * 20))
        for item in sorted({int(i) for i in rng.choice(n_items, size=rng.integers(1, 6), p=p)}):
            kind = ("view", "cart", "purchase", "wishlist")[int(rng.integers(0, 4))]
            stamp = f"2024-06-{1 + minute // 1440:02d}T{minute % 1440 // 60:02d}:{minute % 60:02d}:00"
            rows.append((f"o{order}", user, f"p{item:02d}", kind, stamp))
    return rows


def test_update_equals_rebuild_and_the_local_engine(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old = write_orders(tmp_path / "old.csv", random_rows(1, 300, 0))
    new = write_orders(tmp_path / "new.csv", random_rows(2, 200, 300, n_items=40))  # new products too
    options = LoadOptions(half_life_days=7.0)
    build = {"options": options, "weighted": True, "top_k": 3, "event_types": ["purchase", "cart"]}
    spark_kwargs = {"engine": "spark", "spark": SETTINGS}
    api.build_behavior(old, workspace=tmp_path / "inc", **build, **spark_kwargs)
    api.update_behavior(new, workspace=tmp_path / "inc", **spark_kwargs)
    api.build_behavior([old, new], workspace=tmp_path / "full", **build, **spark_kwargs)
    api.build_behavior([old, new], workspace=tmp_path / "local", **build)
    for other in ("full", "local"):
        assert_same_files(tmp_path / other / "behaviour", tmp_path / "inc" / "behaviour")
        assert_same_files(tmp_path / other / "users", tmp_path / "inc" / "users")
    # Either engine updates what the other built.
    api.build_behavior(old, workspace=tmp_path / "mixed", **build)
    api.update_behavior(new, workspace=tmp_path / "mixed", **spark_kwargs)
    assert_same_files(tmp_path / "local" / "behaviour", tmp_path / "mixed" / "behaviour")
    with pytest.raises(InvalidInput, match="already counted"):
        api.update_behavior(new, workspace=tmp_path / "inc", **spark_kwargs)


def test_sessions_weights_and_decay_without_a_basket_column(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = [(u, p, k, t) for _, u, p, k, t in random_rows(3, 400, 0)]
    path = tmp_path / "clicks.jsonl"
    path.write_text(
        "".join(json.dumps({"visitor": u, "sku": p, "action": k, "ts": t}) + "\n" for u, p, k, t in rows),
        encoding="utf-8",
    )
    options = LoadOptions(
        columns=EventColumns(item="sku", user="visitor"),
        session_gap_minutes=90,
        weights={"view": 1.0, "cart": 2.5, "purchase": 4.0},
        half_life_days=3.0,
    )
    build = {"options": options, "weighted": True, "min_count": 1}
    local = api.build_behavior(path, workspace=tmp_path / "local", **build)
    remote = api.build_behavior(path, workspace=tmp_path / "spark", engine="spark", spark=SETTINGS, **build)
    sessions = load_events(path, options.columns, session_gap=timedelta(minutes=90)).n_baskets
    assert remote.baskets == local.baskets == sessions
    assert_same_files(tmp_path / "local" / "behaviour", tmp_path / "spark" / "behaviour")
    assert_same_files(tmp_path / "local" / "users", tmp_path / "spark" / "users")


def test_partitioned_parquet_directory_equals_one_file(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = random_rows(4, 300, 0)
    table = pa.table({name: [r[i] for r in rows] for i, name in enumerate(["order", "user", "sku", "type", "ts"])})
    pq.write_table(table, tmp_path / "all.parquet")
    lake = tmp_path / "lake"
    for day in sorted({r[4][:10] for r in rows}):
        (lake / f"dt={day}").mkdir(parents=True)
        pq.write_table(table.filter(pa.compute.starts_with(table["ts"], day)), lake / f"dt={day}" / "part-0.parquet")
    local = api.build_behavior(tmp_path / "all.parquet", workspace=tmp_path / "local")
    remote = api.build_behavior(str(lake), workspace=tmp_path / "spark", engine="spark", spark=SETTINGS)
    assert remote.sources == [str(lake)] and remote.rows_read == local.rows_read == len(rows)
    assert_same_files(tmp_path / "local" / "behaviour", tmp_path / "spark" / "behaviour")
    glob_report = api.build_behavior(
        str(lake / "dt=*" / "*.parquet"), workspace=tmp_path / "glob", engine="spark", spark=SETTINGS
    )
    assert glob_report.pairs == local.pairs
    assert_same_files(tmp_path / "local" / "behaviour", tmp_path / "glob" / "behaviour")


def test_streamed_result_equals_the_in_memory_one_in_many_pieces(spark, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The Spark result reaches the files piece by piece (sorted partitions read back in small batches, neighbour
    lists in small blocks): the bytes equal the local engine's in-memory assembly, weighted, with top_k."""
    from datetime import datetime, timezone

    from semassoc.behaviour import pair_state
    from semassoc.behaviour import spark as engine

    path = write_orders(tmp_path / "orders.csv", random_rows(7, 400, 0, n_items=60))
    monkeypatch.setattr(engine, "_BATCH_ROWS", 7)
    monkeypatch.setattr(pair_state, "BLOCK", 40)
    coalesce = "spark.sql.adaptive.coalescePartitions.enabled"
    before = spark.conf.get(coalesce)
    spark.conf.set(coalesce, "false")  # keep the 4 shuffle partitions, small as they are: several pieces
    try:
        files = engine._stream(load_events_spark(spark, str(path)), True, None, None)
    finally:
        spark.conf.set(coalesce, before)
    assert files.pieces > 1
    assert spark.conf.get("spark.sql.ansi.enabled") == "true"  # restored after the log's wrapping hash
    local = pair_state.PairState.from_events(load_events(path), True, None, None)
    options = {"min_count": 1, "top_k": 3, "weighted": True, "event_types": None}
    when = datetime(2024, 6, 1, tzinfo=timezone.utc)
    for state, name in ((files, "spark"), (local, "local")):
        state.write(tmp_path / name, options, [], created=when, updated=when, progress=None)
    assert not files.scratch.exists()
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "spark").iterdir())
    assert {"pairs_wdot.npy", "nbr_wdot.npy", "log_items.npy", "nbr_indices.npy"} <= set(names)
    for name in names:
        a, b = (tmp_path / "local" / name).read_bytes(), (tmp_path / "spark" / name).read_bytes()
        if name.endswith("wdot.npy") or name == "item_wnorm2.npy":  # float sums in another order
            np.testing.assert_allclose(np.load(tmp_path / "spark" / name), np.load(tmp_path / "local" / name), 1e-12)
        else:
            assert a == b, name


BAD_CSV = (
    "order_id,item,qty,ts\n"
    "1,a,2,2024-01-01 10:00:00\n"
    "1,b\n"  # wrong number of fields
    "\n"
    "2, ,3,2024-01-01 10:00:00\n"  # empty product id
    "2,c,x,2024-01-01\n"  # bad quantity
    "3,d,1,yesterday\n"  # bad timestamp
    "3,e,-1,2024-01-02\n"  # filtered: quantity <= 0
    "4,f,NA,2024-01-02\n"  # bad quantity (NA is text, not a missing value)
    "4,g,1,\n"  # missing timestamp
)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_bad_rows_are_reported_as_the_local_engine_does(spark, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV, encoding="utf-8")
    if kind == "parquet":
        table = load_table_as_text(path)
        path = tmp_path / "bad.parquet"
        pq.write_table(table, path)
    with pytest.raises(InvalidInput) as local_error:
        load_events(path)
    with pytest.raises(InvalidInput) as spark_error:
        load_events_spark(spark, str(path))
    assert str(spark_error.value) == str(local_error.value)
    local = load_events(path, on_error="skip")
    (remote,) = load_events_spark(spark, str(path), LoadOptions(on_error="skip"))
    assert remote.skipped == local.skipped
    assert (remote.rows_read, len(remote), remote.filtered) == (local.rows_read, len(local), local.filtered)


def load_table_as_text(path: Path) -> pa.Table:
    """The good-width rows of the CSV as a Parquet-ready table of text columns."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    header, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    return pa.table({h: [r[i] or None for r in body] for i, h in enumerate(header)})


def test_cli_engine_spark_writes_what_the_local_cli_writes(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from semassoc.cli.app import app

    events = write_orders(tmp_path / "orders.csv", random_rows(5, 120, 0))
    runner = CliRunner()
    spark_args = ["--engine", "spark", "--spark-master", "local[2]", "--spark-conf", "spark.ui.enabled=false"]
    local = runner.invoke(app, ["behavior", "build", str(events), "-w", str(tmp_path / "local"), "--json"])
    remote = runner.invoke(
        app, ["behavior", "build", str(events), "-w", str(tmp_path / "spark"), *spark_args, "--json"]
    )
    assert local.exit_code == remote.exit_code == 0, remote.output
    a, b = json.loads(local.stdout), json.loads(remote.stdout)
    assert (a["baskets"], a["items"], a["pairs"]) == (b["baskets"], b["items"], b["pairs"])
    assert_same_files(tmp_path / "local" / "behaviour", tmp_path / "spark" / "behaviour")
    rules = runner.invoke(app, ["rules", str(events), "--min-support", "0.02", *spark_args, "--json"])
    assert rules.exit_code == 0, rules.output
    local_rules = runner.invoke(app, ["rules", str(events), "--min-support", "0.02", "--json"])
    assert rules.stdout == local_rules.stdout
    bad = runner.invoke(app, ["rules", str(events), "--spark-conf", "x=1"])
    assert bad.exit_code == 2 and "need --engine spark" in bad.output
    bad = runner.invoke(app, ["rules", str(events), "--engine", "spark", "--spark-conf", "novalue"])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output
