"""The learned ranker of ``related`` (``semassoc fit``) on the Online Retail example, with the hashing encoder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from semassoc import api
from semassoc.behaviour.baskets import FILES
from semassoc.behaviour.events import EventFilters, LoadOptions
from semassoc.behaviour.stats import BehaviourStats
from semassoc.errors import SemassocError
from semassoc.ranking import simulate as S
from semassoc.ranking.engine import RelatedEngine
from semassoc.ranking.features import BASELINES
from semassoc.ranking.ranker import FitConfig, Ranker, group_of, ndcg10, order_by_score, validation_part
from semassoc.store.base import ProductFilter
from semassoc.text.encoder import HashingEncoder
from semassoc.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "online_retail"
#: Small enough for a test (one cut, few queries and rounds), large enough to fit both models.
SMALL = FitConfig(cuts=1, max_queries=150, candidates=30, text_limit=60, rounds=30)
OPTIONS = LoadOptions(filters=EventFilters.online_retail())


def _workspace(path: Path, catalog: Path) -> Path:
    api.index_catalog(catalog, workspace=path, encoder=HashingEncoder(64))
    api.build_behavior(EXAMPLES / "invoices.parquet", workspace=path, options=OPTIONS)
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = _workspace(tmp_path_factory.mktemp("ranker") / "ws", EXAMPLES / "catalog.csv")
    report = api.fit(path, config=SMALL)
    assert report.saved, report.message
    return path


def _queries(ws: Path) -> list[str]:
    """Established, young and never-bought catalog products (every group the ranker serves)."""
    stats = BehaviourStats.open(ws / "behaviour")
    ids, counts = stats.item_ids_and_counts()
    by_count = sorted(zip(counts.tolist(), np.asarray(ids).tolist(), strict=True))
    catalog = [row["product_id"] for row in csv.DictReader((EXAMPLES / "catalog.csv").open())]
    never = sorted(set(catalog) - set(np.asarray(ids).tolist()))[:3]
    return [p for _, p in by_count[-8:]] + [p for c, p in by_count if c < 5][:8] + never


def test_simulated_catalog_excludes_products_first_seen_after_the_simulated_period(fitted: Path) -> None:
    with Workspace.open(fitted) as ws:
        stats = BehaviourStats.open(ws.behaviour_dir)
        log = stats.basket_log()
        assert log is not None
        stats_ids = np.asarray(stats.item_ids_and_counts()[0]).astype(str)
        catalog = S.load_catalog(ws.store, stats_ids)
    log_to_code = np.searchsorted(catalog.ids, stats_ids)
    first_all = S.BasketLog(log.indptr, log_to_code[log.items], log.time, catalog.ids.shape[0]).first_seen()
    timed = log.time[log.time != S.MISSING]
    middle = int(np.quantile(timed, 0.5))
    cut = S.Cut(middle, middle + 30 * 86_400_000_000)
    later = catalog.in_store & ((first_all == S.MISSING) | (first_all >= cut.end))
    assert later.sum() > 20  # there are products first seen after the simulated period, and never-bought ones
    sim = S.simulate(
        log, log_to_code, catalog, cut, min_count=2, established_min=5, max_queries=100, seed=0, k=30, text_limit=60
    )
    assert sim.table.candidates.size and (~sim.established).any() and sim.established.any()
    assert not later[sim.table.candidates].any()
    assert (first_all[sim.table.candidates] < cut.end).all()
    # the new queries are truly new at the cut: no basket before it
    query_baskets = np.expm1(sim.table.column("query_baskets")[sim.table.offsets[:-1]])
    assert (query_baskets[~sim.established] < 5).all() and (query_baskets[sim.established] >= 5).all()
    never_before = sim.queries[query_baskets == 0]
    assert never_before.size and (first_all[never_before] >= cut.at).all()


def _saved(ws: Path) -> tuple[dict[str, bytes], dict]:
    """The model files of a fitted workspace and its lineage's models (baseline, gate, rounds, validation)."""
    models = json.loads((ws / "ranker" / "lineage.json").read_text())["models"]
    return {p.name: p.read_bytes() for p in (ws / "ranker").glob("*.txt")}, models


def test_fit_twice_with_one_seed_gives_the_same_model(fitted: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ws"
    shutil.copytree(fitted, copy)
    first, models = _saved(fitted)
    assert first  # trees kept for at least one group
    # every group is served: by trees (a file) or, gated, by its baseline list alone (no file)
    assert {f"{g}.txt" for g in models if models[g].get("gate") == "trees kept"} == set(first)
    assert all(models[g]["baseline"] in BASELINES for g in models)
    assert set(models) in ({"established", "young", "new"}, {"established", "new"})
    report = api.fit(copy, config=SMALL)
    assert report.saved
    assert _saved(copy) == (first, models)


def test_shuffling_the_catalog_rows_leaves_every_list_identical(fitted: Path, tmp_path: Path) -> None:
    rows = list(csv.DictReader((EXAMPLES / "catalog.csv").open()))
    np.random.default_rng(7).shuffle(rows)
    shuffled = tmp_path / "catalog.csv"
    with shuffled.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    other = _workspace(tmp_path / "ws", shuffled)
    assert api.fit(other, config=SMALL).saved
    assert _saved(other) == _saved(fitted)
    for pid in _queries(fitted):
        a = [(i.product_id, round(i.score, 9)) for i in api.related(pid, workspace=fitted, k=10)]
        b = [(i.product_id, round(i.score, 9)) for i in api.related(pid, workspace=other, k=10)]
        assert a == b, pid


def test_batch_equals_single_calls_with_the_model(fitted: Path) -> None:
    queries = _queries(fitted)
    with Workspace.open(fitted) as ws:
        engine = RelatedEngine(ws)
        assert engine.ranker is not None
        batch = engine.related_batch(queries, k=10)
        singles = [RelatedEngine(ws).related(q, k=10) for q in queries]
        filtered = engine.related_batch(queries[:4], k=5, collapse="base-code")
    for a, b in zip(batch, singles, strict=True):
        assert [(i.product_id, i.explanation) for i in a] == [(i.product_id, i.explanation) for i in b]
        assert all("ranker" in i.signals for i in a)
    assert all(
        len({i.product_id.rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") for i in row}) == len(row)
        for row in filtered
    )
    explanations = " | ".join(i.explanation for row in batch for i in row)
    assert "bought together in" in explanations and "text similarity" in explanations
    info = api.info(workspace=fitted).sections["ranker"]
    assert info["in use"].startswith("fitted ranker")


def _full(rows: list) -> list:
    return [[(i.product_id, i.title, i.score, i.signals, i.explanation, i.attributes) for i in row] for row in rows]


def test_ranked_lists_do_not_depend_on_what_the_engine_served_before(fitted: Path) -> None:
    """The server keeps payloads, attributes, pair rows and absent products across calls (serving speed): every list
    and score must come out as from a fresh engine answering that product alone, in any order and batch size."""
    stats = BehaviourStats.open(fitted / "behaviour")
    behaviour_only = sorted(set(np.asarray(stats.item_ids_and_counts()[0]).tolist()) - _catalog_ids())[:3]
    queries = _queries(fitted) + behaviour_only
    with Workspace.open(fitted) as ws:
        singles = [RelatedEngine(ws).related(q, k=10) for q in queries]
        engine = RelatedEngine(ws)
        forward = engine.related_batch(queries, k=10)
        backward = engine.related_batch(queries[::-1], k=10)[::-1]  # warm caches, other order
        pairs = [row for i in range(0, len(queries), 2) for row in engine.related_batch(queries[i : i + 2], k=10)]
    assert _full(forward) == _full(singles)
    assert _full(backward) == _full(singles)
    assert _full(pairs) == _full(singles)


def test_serving_scores_with_lightgbm_s_own_numbers_without_importing_the_package(fitted: Path) -> None:
    """Serving calls LightGBM's library directly (NativeModel): the same predictions as ``Booster.predict``, bit for
    bit, with missing values; and a `related` process never imports the package (scipy, narwhals)."""
    import subprocess
    import sys

    from semassoc.ranking.native_model import NativeModel
    from semassoc.ranking.ranker import _lightgbm

    rng = np.random.default_rng(0)
    paths = sorted((fitted / "ranker").glob("*.txt"))
    assert paths
    for path in paths:
        group = path.stem
        native = NativeModel.load(path)
        assert native is not None
        booster = _lightgbm().Booster(model_file=str(path))
        x = rng.normal(scale=5.0, size=(300, booster.num_feature()))
        x[rng.random(x.shape) < 0.2] = np.nan
        for rows in (x, x[:1], np.asfortranarray(x)):
            assert np.array_equal(native.predict(rows), booster.predict(rows, num_threads=1)), group
    code = (
        "import sys; from semassoc import api; "
        f"rows = api.related({_queries(fitted)[0]!r}, workspace={str(fitted)!r}, k=5); "
        "assert rows and 'ranker' in rows[0].signals; "
        "print(sorted(m for m in ('lightgbm', 'scipy', 'narwhals') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_serving_scores_reproduce_the_fit_s_validation(fitted: Path) -> None:
    """What serving orders by (``Ranker.predict``: the group's baseline list score plus its trees, or the baseline
    alone where the gate kept no trees) ranks the fit's held-out queries exactly as the fit's validation did."""
    ranker = Ranker.open(fitted)
    assert ranker is not None
    with Workspace.open(fitted) as ws:
        stats = BehaviourStats.open(ws.behaviour_dir)
        log = stats.basket_log()
        assert log is not None
        stats_ids = np.asarray(stats.item_ids_and_counts()[0]).astype(str)
        catalog = S.load_catalog(ws.store, stats_ids)
        min_count = stats.info().min_count
    cuts = S.choose_cuts(log.time, SMALL.cuts, SMALL.label_fraction, SMALL.step_fraction)
    assert [c.to_dict() for c in cuts] == ranker.lineage["cuts"]
    sim = S.simulate(
        log,
        np.searchsorted(catalog.ids, stats_ids),
        catalog,
        cuts[0],
        min_count=min_count,
        established_min=SMALL.established_min,
        max_queries=SMALL.max_queries,
        seed=SMALL.seed,
        k=SMALL.candidates,
        text_limit=SMALL.text_limit,
    )
    assert sim.table.names == ranker.features
    validation = validation_part(catalog.ids[sim.queries], SMALL.validation_share) == 2  # the judging half
    checked = 0
    for group, summary in ranker.lineage["models"].items():
        scores = []
        for i in np.flatnonzero(validation).tolist():
            if ranker.group_of(int(sim.baskets[i])) != group:
                continue
            lo, hi = int(sim.table.offsets[i]), int(sim.table.offsets[i + 1])
            cands = sim.table.candidates[lo:hi]
            if hi > lo:
                cands = order_by_score(cands, ranker.predict(group, sim.table.features[lo:hi]), catalog.ids)
            scores.append(ndcg10(cands.tolist(), sim.truth[i]))
        expected = summary["validation_ndcg@10"]["model"]
        assert (len(scores), round(float(np.mean(scores)), 4)) == (expected["n"], expected["mean"]), group
        if summary["gate"] == "baseline only":
            assert expected == summary["validation_ndcg@10"]["baseline"]
        checked += 1
    assert checked >= 2


def test_query_groups_by_baskets(fitted: Path) -> None:
    assert [group_of(b, 5) for b in (0, 1, 4, 5, 90)] == ["new", "young", "young", "established", "established"]
    ranker = Ranker.open(fitted)
    assert ranker is not None
    if "young" in ranker.lineage["models"]:
        assert [ranker.group_of(b) for b in (0, 1, 5)] == ["new", "young", "established"]
    else:  # too few young and new queries in this small log to fit apart: one model for both
        assert ranker.lineage["models"]["new"]["merged"]
        assert [ranker.group_of(b) for b in (0, 1, 4, 5)] == ["new", "new", "new", "established"]
        assert api.info(workspace=fitted).sections["ranker"]["new queries"].startswith("young and new queries")
    info = api.info(workspace=fitted).sections["ranker"]
    for group, summary in ranker.lineage["models"].items():  # info says what each group is served by
        assert info[group].startswith(f"{summary['baseline']} list"), info
        assert ("rounds of trees" in info[group]) == (summary["gate"] == "trees kept")


@pytest.mark.parametrize("baseline", ["popularity", "text"])
def test_a_group_gated_to_its_baseline_serves_exactly_that_list(fitted: Path, tmp_path: Path, baseline: str) -> None:
    """Where the gate keeps no trees, the group is served by its single-signal list alone, in that list's order
    (here every group is set so, as ``fit`` saves it when the trees do not beat their start)."""
    ws = tmp_path / "ws"
    shutil.copytree(fitted, ws)
    path = ws / "ranker" / "lineage.json"
    lineage = json.loads(path.read_text())
    for group in lineage["models"]:
        lineage["models"][group].update(baseline=baseline, gate="baseline only", rounds=0)
        (ws / "ranker" / f"{group}.txt").unlink(missing_ok=True)
    path.write_text(json.dumps(lineage))
    stats = BehaviourStats.open(ws / "behaviour")
    ids, counts = stats.item_ids_and_counts()
    by_count = sorted(zip((-np.asarray(counts)).tolist(), np.asarray(ids).astype(str).tolist(), strict=True))
    popular = [p for _, p in by_count[: SMALL.candidates]]
    catalog = _catalog_ids()
    for pid in _queries(ws):
        got = api.related(pid, workspace=ws, k=10)
        assert all("ranker" in i.signals for i in got)
        if baseline == "popularity":
            expected = [p for p in popular if p != pid and p in catalog][:10]
        else:
            text = api.similar(pid, workspace=ws, k=30)  # equally similar products: by id, as serving settles ties
            expected = [i.product_id for i in sorted(text, key=lambda i: (-i.score, i.product_id))][:10]
        assert [i.product_id for i in got] == expected, pid


def _catalog_ids() -> set[str]:
    return {row["product_id"] for row in csv.DictReader((EXAMPLES / "catalog.csv").open())}


def test_ranker_false_and_other_modes_keep_the_hand_set_fusion(fitted: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(fitted, bare)
    shutil.rmtree(bare / "ranker")
    assert api.info(workspace=bare).sections["ranker"]["in use"].startswith("hand-set fusion")
    for pid in _queries(fitted)[:6]:
        without = [i.product_id for i in api.related(pid, workspace=bare, k=10)]
        assert without == [i.product_id for i in api.related(pid, workspace=fitted, k=10, ranker=False)]
        for mode in ("substitutes", "complements"):
            assert [i.product_id for i in api.related(pid, workspace=bare, k=10, mode=mode)] == [
                i.product_id for i in api.related(pid, workspace=fitted, k=10, mode=mode)
            ]


def test_fit_on_a_tiny_workspace_falls_back_with_a_clear_message(tmp_path: Path, catalog_csv: Path) -> None:
    events = tmp_path / "orders.csv"
    lines = ["order_id,product_id,timestamp"]
    baskets = [("m1", "m2"), ("c1", "c2"), ("l1", "l2"), ("m1", "t1")] * 3
    for number, basket in enumerate(baskets):
        lines += [f"o{number},{item},2024-01-{number + 1:02d} 10:00:00" for item in basket]
    events.write_text("\n".join(lines) + "\n")
    ws = tmp_path / "ws"
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(64))
    api.build_behavior(events, workspace=ws, min_count=1)
    report = api.fit(ws)
    assert not report.saved
    assert "too few events" in report.message and "hand-set fusion" in report.message
    assert not (ws / "ranker").exists()
    assert api.related("m1", workspace=ws, k=3)  # still answers, with the fusion
    assert api.info(workspace=ws).sections["ranker"]["in use"].startswith("hand-set fusion")


def test_statistics_without_a_log_ask_for_a_rebuild(tmp_path: Path, catalog_csv: Path) -> None:
    events = tmp_path / "orders.csv"
    events.write_text("order_id,product_id,timestamp\no1,m1,2024-01-01\no1,m2,2024-01-01\n")
    ws = tmp_path / "ws"
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(64))
    api.build_behavior(events, workspace=ws, min_count=1)
    for name in FILES:
        (ws / "behaviour" / name).unlink()
    with pytest.raises(SemassocError, match="behavior build"):
        api.fit(ws)


def _users(ws: Path, n: int) -> list[str]:
    """Users with at least three distinct products in their history (the ``history`` path)."""
    with Workspace.open(ws) as opened:
        histories = RelatedEngine(opened).histories
        assert histories is not None
        users = [u for u in histories.user_ids() if len(histories.history(u)) >= 3]
    return users[:n]


def test_recommend_with_the_model_ranks_related_lists_of_the_history(fitted: Path, tmp_path: Path) -> None:
    users = _users(fitted, 12)
    assert len(users) == 12
    cheap = ProductFilter(max_price=2.0)
    changed = 0
    with Workspace.open(fitted) as ws:
        engine = RelatedEngine(ws)
        for user in users:
            bought = {h.product_id for h in engine.histories.history(user)}  # type: ignore[union-attr]
            result = engine.recommend(user, k=10)
            ids = [i.product_id for i in result.items]
            assert result.path == "history" and len(ids) == 10 and len(set(ids)) == 10
            assert not bought & set(ids)
            assert all(
                i.explanation.startswith("related to ") and " you bought: " in i.explanation for i in result.items
            )
            filtered = engine.recommend(user, k=10, filter=cheap)
            prices = [p.get("price") for p in engine.payloads([i.product_id for i in filtered.items]).values()]
            assert filtered.items and all(price is not None and price <= 2.0 for price in prices)
            assert not bought & {i.product_id for i in filtered.items}
            fusion = [i.product_id for i in engine.recommend(user, k=10, ranker=False).items]
            changed += fusion != ids
    assert changed > 0  # the ranked path is in use, not the profile fusion
    out = tmp_path / "recs.jsonl"
    report = api.batch_recommend(out, workspace=fitted, users=users, k=10, chunk_size=5)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert report.rows == len(rows)
    for user in users:
        single = api.recommend(user, workspace=fitted, k=10)
        assert [(r["product_id"], r["explanation"]) for r in rows if r["query"] == user] == [
            (i.product_id, i.explanation) for i in single.items
        ]


def test_recommend_without_the_model_is_the_profile_fusion(fitted: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(fitted, bare)
    shutil.rmtree(bare / "ranker")
    for user in _users(fitted, 6):
        without = api.recommend(user, workspace=bare, k=10)
        assert not any(i.explanation.startswith("related to ") for i in without.items)
        opted_out = api.recommend(user, workspace=fitted, k=10, ranker=False)
        assert [(i.product_id, i.explanation) for i in without.items] == [
            (i.product_id, i.explanation) for i in opted_out.items
        ]
    unknown = api.recommend(history=["no-such-1", "no-such-2", "no-such-3"], workspace=fitted, k=5)
    assert len(unknown.items) == 5 and not any(i.explanation.startswith("related to ") for i in unknown.items)
    two = _queries(fitted)[:2]  # a cold user (one or two products) stays on the profile fusion
    cold = api.recommend(history=two, workspace=fitted, k=5)
    assert cold.path == "cold-user"
    assert [i.product_id for i in cold.items] == [
        i.product_id for i in api.recommend(history=two, workspace=fitted, k=5, ranker=False).items
    ]


def test_ranked_text_search_without_an_exclusion_filter_gives_the_filtered_neighbours(
    fitted: Path, tmp_path: Path
) -> None:
    """Ranked queries search the (exact, unindexed) store without Qdrant's exclusion filter, for as many more
    neighbours as products are excluded, and drop those afterwards. Against searches with the filter, after the tie
    rule: the same neighbours, also for a query with more exact duplicates than the search returns (so it may be
    missing from its own hits) and under attribute filters and exclusions; never the query itself."""
    from semassoc.ranking.nearest import by_score, nearest_ids
    from semassoc.ranking.serve import cut_ties

    rows = list(csv.DictReader((EXAMPLES / "catalog.csv").open()))
    query = _queries(fitted)[0]
    original = next(r for r in rows if r["product_id"] == query)
    dups = [f"DUP{i}" for i in range(8)]
    catalog = tmp_path / "catalog.csv"
    with catalog.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows + [{**original, "product_id": d, "group": d} for d in dups])
    ws_path = tmp_path / "ws"
    shutil.copytree(fitted, ws_path)
    api.index_catalog(catalog, workspace=ws_path, encoder=HashingEncoder(64))
    queries = [query, *dups[:4], *_queries(fitted)[1:12]]
    with Workspace.open(ws_path) as ws:
        engine = RelatedEngine(ws)
        store = ws.store
        assert store.exact_by_default()  # no HNSW index: every search is a full scan
        vectors = engine.vectors(queries)
        stacked = np.stack([vectors[p] for p in queries])
        # the duplicates tie with the query at cosine 1: a search for 4 returns 4 of the 9, not always the query
        unfiltered = store.search_ids_batch(stacked[:5], limit=4, filters=[None] * 5)
        assert any(p not in ids for p, (ids, _) in zip(queries[:5], unfiltered, strict=True))
        for base in (
            ProductFilter(),
            ProductFilter(max_price=2.0),
            ProductFilter(exclude=(dups[5], query, *_queries(fitted)[12:15])),
            ProductFilter(min_price=0.5, exclude=(dups[6],)),
        ):
            for limit in (3, 8, 60):
                got = [cut_ties(*row, limit) for row in nearest_ids(store, queries, vectors, base, limit)]
                filtered = store.search_ids_batch(
                    stacked, limit=limit, filters=[base.with_excluded([p]) for p in queries]
                )
                expected = [cut_ties(*by_score(*row, limit), limit) for row in filtered]
                assert got == expected, (base, limit)
                payloads = engine.payloads([i for ids, _ in got for i in ids])
                for pid, (ids, _) in zip(queries, got, strict=True):
                    assert pid not in ids and not set(base.exclude) & set(ids)
                    assert all(base.matches(payloads[i]) for i in ids)
                if limit == 60 and base == ProductFilter():
                    assert set(dups[:7]) <= set(got[0][0])  # duplicates of the query are its nearest neighbours
        lists = engine.related_batch(queries[:5], k=10)
        assert all(p not in {i.product_id for i in row} for p, row in zip(queries[:5], lists, strict=True))
        assert all("ranker" in i.signals for row in lists for i in row)
