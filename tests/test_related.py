"""related, recommend and batch on a small catalog with known behaviour (hashing encoder, embedded store)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from semassoc import api
from semassoc.cli.app import app
from semassoc.errors import InvalidInput, NotFound
from semassoc.ranking.engine import RelatedEngine
from semassoc.ranking.fusion import FusionWeights
from semassoc.store.base import ProductFilter
from semassoc.text.encoder import HashingEncoder
from semassoc.workspace import Workspace

runner = CliRunner()

CATALOG = """product_id,title,category,price
L1,White hanging heart t-light holder,home,2.95
L1B,White hanging heart t-light holder,home,2.95
C1,Vanilla scented candle,home,6.00
C2,Lavender scented candle,home,6.00
M1,Red enamel mug,kitchen,4.50
M2,Blue enamel mug,kitchen,4.75
T1,Striped cotton tea towel,kitchen,3.20
N1,Pink hanging heart t-light holder,home,3.10
"""
# L1 is bought with C1 (often) and T1 (twice); M1 with M2. N1 (new) and C2 have no behaviour.
ORDERS = [("L1", "C1")] * 6 + [("L1", "T1")] * 2 + [("M1", "M2")] * 4 + [("C1", "M1")]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(CATALOG)
    events = tmp_path / "orders.csv"
    lines = ["order_id,product_id,user_id,timestamp"]
    for number, basket in enumerate(ORDERS):
        user = f"u{number % 3}"
        lines += [f"o{number},{item},{user},2024-01-{number + 1:02d} 10:00:00" for item in basket]
    events.write_text("\n".join(lines) + "\n")
    path = tmp_path / "ws"
    api.index_catalog(catalog, workspace=path, encoder=HashingEncoder(256))
    api.build_behavior(events, workspace=path, min_count=1)
    return path


def test_warm_product_leans_on_its_behaviour(ws):
    # 8 baskets: with the evidence half point at 2, L1 counts as well known (confidence 0.8)
    items = api.related("L1", workspace=ws, k=3, weights=FusionWeights(half_point=2))
    assert items[0].product_id == "C1"
    assert items[0].explanation.startswith("bought together in 6 baskets")
    assert {"text", "behaviour", "transfer", "popularity", "evidence"} <= set(items[0].signals)


def test_new_product_borrows_behaviour_through_text(ws):
    items = api.related("N1", workspace=ws, k=5)  # never bought; its text is close to L1 and L1B
    ids = [i.product_id for i in items]
    assert "C1" in ids
    c1 = items[ids.index("C1")]
    assert c1.signals["transfer"] > 0 and c1.signals["behaviour"] == 0
    assert "via White hanging heart t-light holder" in c1.explanation and "bought together 6 times" in c1.explanation
    assert items[0].signals["evidence"] == 0.0


def test_modes_differ_and_complements_drop_near_duplicates(ws):
    substitutes = [i.product_id for i in api.related("L1", workspace=ws, mode="substitutes", k=3)]
    assert substitutes[:2] == ["L1B", "N1"]  # the two heart t-light holders, by text
    complements = [
        i.product_id
        for i in api.related("L1", workspace=ws, mode="complements", k=5, weights=FusionWeights(half_point=2))
    ]
    assert complements[:2] == ["C1", "T1"] and "L1B" not in complements
    with pytest.raises(InvalidInput, match="unknown mode"):
        api.related("L1", workspace=ws, mode="magic")
    with pytest.raises(NotFound):
        api.related("ZZZ", workspace=ws)


def test_filters_and_variant_collapsing(ws):
    kitchen = api.related("L1", workspace=ws, k=5, filter=ProductFilter(categories=("kitchen",)))
    assert kitchen and all(i.attributes["category"] == "kitchen" for i in kitchen)
    collapsed = [i.product_id for i in api.related("N1", workspace=ws, k=8, collapse="title")]
    # N1's variant group is its own title; L1 and L1B share a title, so only one of them stays
    assert len({"L1", "L1B"} & set(collapsed)) == 1


def test_batch_equals_single_calls(ws):
    with Workspace.open(ws) as w:
        engine = RelatedEngine(w)
        ids = ["L1", "N1", "M1", "C2"]
        batch = engine.related_batch(ids, k=4)
        singles = [engine.related(p, k=4) for p in ids]
    assert [[(i.product_id, round(i.score, 9)) for i in row] for row in batch] == [
        [(i.product_id, round(i.score, 9)) for i in row] for row in singles
    ]


def test_recommend_paths(ws):
    warm = api.recommend("u0", workspace=ws, k=3)
    assert warm.path == "history" and warm.history_size >= 3
    bought = {h.product_id for h in RelatedEngine(Workspace.open(ws)).histories.history("u0")}
    assert not bought & {i.product_id for i in warm.items}
    again = api.recommend("u0", workspace=ws, k=8, allow_repeat=True)
    assert bought & {i.product_id for i in again.items}
    cold = api.recommend(history=["N1"], workspace=ws, k=3)
    assert cold.path == "cold-user" and cold.items[0].product_id in {"L1", "L1B"}
    interests = api.recommend(interests="scented candle", workspace=ws, k=2)
    assert interests.path == "interests" and {i.product_id for i in interests.items} == {"C1", "C2"}
    nobody = api.recommend("stranger", workspace=ws, k=2)
    assert nobody.path == "popularity" and nobody.items[0].product_id in {"L1", "C1"}
    steered = api.recommend(history=["M1"], negatives=["M2"], workspace=ws, k=3)
    assert "M2" not in [i.product_id for i in steered.items]


def test_batch_recommend_equals_single_calls(ws, tmp_path):
    out = tmp_path / "recs.jsonl"
    report = api.batch_recommend(out, workspace=ws, all_users=True, k=3)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert report.queries == 3 and report.rows == len(rows)
    for user in ("u0", "u1", "u2"):
        single = api.recommend(user, workspace=ws, k=3)
        assert [r["product_id"] for r in rows if r["query"] == user] == [i.product_id for i in single.items]
        assert {r["path"] for r in rows if r["query"] == user} == {single.path}


def test_batch_related_file_formats_and_choices(ws, tmp_path):
    for suffix in ("parquet", "csv", "jsonl"):
        out = tmp_path / f"related.{suffix}"
        report = api.batch_related(out, workspace=ws, all_products=True, k=2, chunk_size=3)
        assert report.queries == 8 and report.chunks == 3 and out.is_file()
        assert not out.with_name(out.name + ".parts").exists()
    table = pq.read_table(tmp_path / "related.parquet").to_pylist()
    assert [r["product_id"] for r in table if r["query"] == "L1"] == [
        i.product_id for i in api.related("L1", workspace=ws, k=2)
    ]
    cold = api.batch_related(tmp_path / "cold.parquet", workspace=ws, cold=1, k=2)
    assert cold.queries == 3  # L1B, C2 and N1 were never bought
    ids = tmp_path / "ids.txt"
    ids.write_text("product_id\nL1\nM1\n")
    assert api.batch_related(tmp_path / "two.csv", workspace=ws, products=ids, k=2).queries == 2
    with pytest.raises(InvalidInput, match="exactly one"):
        api.batch_related(tmp_path / "x.csv", workspace=ws, k=2)
    with pytest.raises(InvalidInput, match="unsupported output"):
        api.batch_related(tmp_path / "x.xlsx", workspace=ws, all_products=True)


def test_batch_resumes_after_kill_9_without_duplicates(ws, tmp_path):
    out = tmp_path / "big.jsonl"
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(["L1", "N1", "M1", "C2", "C1", "M2", "T1", "L1B"]) + "\n")
    # A child that answers one product per chunk and sleeps between chunks, so it can be killed mid-run.
    code = (
        "import time; from semassoc import api\n"
        "def slow(done, total):\n    time.sleep(0.4)\n"
        f"api.batch_related({str(out)!r}, workspace={str(ws)!r}, products={str(ids)!r}, k=3, chunk_size=1, "
        "progress=slow)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    parts = out.with_name(out.name + ".parts")
    deadline = time.time() + 60
    while time.time() < deadline and len(list(parts.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done_before = len(list(parts.glob("part-*.parquet")))
    assert 3 <= done_before < 8 and not out.exists()
    report = api.batch_related(out, workspace=ws, products=ids, k=3, chunk_size=1)
    assert report.resumed_chunks == done_before
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    clean = tmp_path / "clean.jsonl"
    api.batch_related(clean, workspace=ws, products=ids, k=3, chunk_size=1)
    assert rows == [json.loads(line) for line in clean.read_text().splitlines()]
    assert len({(r["query"], r["rank"]) for r in rows}) == len(rows)
    with pytest.raises(InvalidInput, match="other arguments"):
        (tmp_path / "again.jsonl.parts").mkdir()
        (tmp_path / "again.jsonl.parts" / "job.json").write_text('{"task": "other"}')
        api.batch_related(tmp_path / "again.jsonl", workspace=ws, products=ids, k=3)


def test_cli_related_recommend_batch(ws, tmp_path):
    def run(*args, code=0):
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.output, result.exception)
        return result

    rows = [json.loads(x) for x in run("related", "L1", "-w", str(ws), "--json", "-k", "3").stdout.splitlines()]
    assert rows == [{"rank": n, **i.to_dict()} for n, i in enumerate(api.related("L1", workspace=ws, k=3), start=1)]
    rec = json.loads(run("recommend", "-w", str(ws), "--history", "N1", "--json").stdout)
    assert rec["path"] == "cold-user"
    out = tmp_path / "b.parquet"
    summary = json.loads(run("batch", "related", "--all", "-w", str(ws), "--out", str(out), "--json").stdout)
    assert summary["queries"] == 8 and summary["per_second"] > 0
    run("batch", "recommend", "--all", "-w", str(ws), "--out", str(tmp_path / "r.csv"))
    run("related", "nope", "-w", str(ws), code=1)
    run("batch", "related", "-w", str(ws), "--out", str(out), code=2)
