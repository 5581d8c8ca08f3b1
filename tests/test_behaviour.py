"""Pair statistics: hand-computed metrics, persistence, memory-mapped queries, exact incremental updates."""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from semassoc.behaviour.cooccurrence import basket_item_matrix, pair_counts
from semassoc.behaviour.events import EventFilters, Events, events_from_baskets, load_events
from semassoc.behaviour.stats import BehaviourStats
from semassoc.behaviour.weightings import METRICS, npmi
from semassoc.errors import InvalidInput, NotFound
from semassoc.io import WriteFailed, replace_directory

from .conftest import require_shared

# Four baskets; by hand: n = 4, counts a 3, b 3, c 2, d 1; pairs ab 2, ac 2, bc 1, bd 1.
TINY = [["a", "b", "c"], ["a", "b"], ["a", "c"], ["b", "d"]]


ONLINE_RETAIL = "online_retail/online_retail_II_2009-2010.parquet"


@pytest.fixture
def tiny(tmp_path: Path) -> BehaviourStats:
    return BehaviourStats.build(events_from_baskets(TINY), tmp_path / "behaviour", min_count=1)


def test_pair_counts_without_dense_tables() -> None:
    matrix, _ = basket_item_matrix(events_from_baskets(TINY))
    pairs, counts = pair_counts(matrix, workers=2)
    assert counts.tolist() == [3, 3, 2, 1]
    assert pairs.toarray().tolist() == [[0, 2, 2, 0], [2, 0, 1, 1], [2, 1, 0, 0], [0, 1, 0, 0]]
    single, _ = pair_counts(matrix, workers=1)
    assert (single != pairs).nnz == 0


def test_every_metric_by_hand(tiny: BehaviourStats) -> None:
    rows = {n.item: n for n in tiny.neighbours("a", k=10, metric="count")}
    b, c = rows["b"], rows["c"]
    assert (b.count, b.support) == (2, 0.5)
    assert b.confidence == b.reverse_confidence == pytest.approx(2 / 3)
    assert b.lift == pytest.approx(8 / 9)
    assert b.cosine == pytest.approx(2 / 3)
    assert b.jaccard == pytest.approx(0.5)
    assert b.npmi == pytest.approx(math.log(8 / 9) / math.log(2))
    assert (c.count, c.confidence, c.reverse_confidence) == (2, pytest.approx(2 / 3), 1.0)
    assert c.lift == pytest.approx(4 / 3)
    assert c.cosine == pytest.approx(2 / math.sqrt(6))
    assert c.jaccard == pytest.approx(2 / 3)
    assert c.npmi == pytest.approx(math.log(4 / 3) / math.log(2))
    (d,) = [n for n in tiny.neighbours("b", metric="count") if n.item == "d"]
    assert (d.count, d.support, d.confidence, d.reverse_confidence) == (1, 0.25, pytest.approx(1 / 3), 1.0)
    assert d.lift == pytest.approx(4 / 3)
    assert d.npmi == pytest.approx(math.log(4 / 3) / math.log(4))
    assert d.cosine == pytest.approx(1 / math.sqrt(3))
    assert d.jaccard == pytest.approx(1 / 3)


def test_npmi_edge_cases() -> None:
    # together in every basket: 1; never alone apart (independent) gives 0
    assert npmi(np.array([4]), np.array([4]), np.array([4]), 4).tolist() == [1.0]
    assert npmi(np.array([1]), np.array([2]), np.array([2]), 4).tolist() == [0.0]


def test_ranking_k_min_count_and_errors(tiny: BehaviourStats) -> None:
    assert [n.item for n in tiny.neighbours("a", metric="lift")] == ["c", "b"]
    assert [n.item for n in tiny.neighbours("a", metric="reverse_confidence")] == ["c", "b"]
    assert [n.item for n in tiny.neighbours("b", metric="count")] == ["a", "c", "d"]  # ties: count, then id
    assert [n.item for n in tiny.neighbours("b", metric="lift", k=1)] == ["d"]
    assert [n.item for n in tiny.neighbours("b", metric="count", min_count=2)] == ["a"]
    assert tiny.neighbours("d", min_count=2) == []
    assert tiny.item_count("a") == 3 and "a" in tiny and "zz" not in tiny
    with pytest.raises(NotFound, match="'zz'"):
        tiny.neighbours("zz")
    with pytest.raises(NotFound):
        tiny.item_count("a" * 50)  # longer than every stored id
    with pytest.raises(InvalidInput, match="unknown metric"):
        tiny.neighbours("a", metric="pmi")
    with pytest.raises(InvalidInput, match="k must be"):
        tiny.neighbours("a", k=0)
    assert set(METRICS) >= {"count", "support", "confidence", "lift", "npmi", "cosine", "jaccard"}


def test_info_and_memory_mapped_reopen(tiny: BehaviourStats, tmp_path: Path) -> None:
    info = tiny.info()
    assert (info.baskets, info.items, info.pairs) == (4, 4, 4)
    assert info.last_update == info.created
    assert info.sources[0][0] == "<memory>"
    again = BehaviourStats.open(tmp_path / "behaviour")
    # queries read memory maps, not arrays loaded whole
    assert isinstance(again._counts, np.memmap) and isinstance(again._item_ids, np.memmap)
    assert again.neighbours("a") == tiny.neighbours("a")
    with pytest.raises(NotFound, match="no behaviour statistics"):
        BehaviourStats.open(tmp_path / "nothing")


def test_weighted_cosine_uses_event_weights(tmp_path: Path) -> None:
    csv = "basket,item,event\n1,a,purchase\n1,b,view\n2,a,purchase\n2,c,purchase\n2,c,view\n"
    (tmp_path / "e.csv").write_text(csv, encoding="utf-8")
    events = load_events(tmp_path / "e.csv")
    stats = BehaviourStats.build(events, tmp_path / "w", min_count=1, weighted=True)
    rows = {n.item: n for n in stats.neighbours("a", metric="cosine")}
    # a = (5, 5), b = (1, 0), c = (0, 5): the purchase of c counts for more than the view of b
    assert rows["b"].cosine == pytest.approx(5 / (math.sqrt(50) * 1))
    assert rows["c"].cosine == pytest.approx(25 / (math.sqrt(50) * 5))
    assert rows["b"].count == rows["c"].count == 1
    only_purchases = BehaviourStats.build(events, tmp_path / "p", min_count=1, event_types=["purchase"])
    assert [n.item for n in only_purchases.neighbours("a")] == ["c"]


def random_baskets(seed: int, n: int, n_items: int = 40) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, n_items + 1)
    weights /= weights.sum()
    return [sorted({f"p{i:02d}" for i in rng.choice(n_items, size=rng.integers(1, 7), p=weights)}) for _ in range(n)]


def write_orders(path: Path, baskets: list[list[str]], first_id: int) -> Path:
    lines = ["order_id,product_id,event_type"]
    for number, basket in enumerate(baskets, start=first_id):
        lines += [f"o{number},{item},{'view' if (number + len(item)) % 3 == 0 else 'purchase'}" for item in basket]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored_arrays(directory: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(directory.glob("*.npy"))}


@pytest.mark.parametrize("options", [{}, {"weighted": True}, {"top_k": 3, "min_count": 2}])
def test_incremental_update_equals_full_rebuild(tmp_path: Path, options: dict) -> None:
    old = write_orders(tmp_path / "old.csv", random_baskets(1, 300), first_id=0)
    new = write_orders(tmp_path / "new.csv", random_baskets(2, 200, n_items=50), first_id=300)  # new products too
    both = tmp_path / "both.csv"
    both.write_text(old.read_text() + "".join(new.read_text().splitlines(keepends=True)[1:]), encoding="utf-8")

    updated = BehaviourStats.build(load_events(old), tmp_path / "inc", **options).update(load_events(new))
    rebuilt = BehaviourStats.build(load_events(both), tmp_path / "full", **options)
    concatenated = BehaviourStats.build([load_events(old), load_events(new)], tmp_path / "cat", **options)

    for other in (rebuilt, concatenated):
        a, b = stored_arrays(updated.directory), stored_arrays(other.directory)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        ia, ib = updated.info(), other.info()
        assert (ia.baskets, ia.items, ia.pairs) == (ib.baskets, ib.items, ib.pairs)
        assert ia.neighbour_pairs == ib.neighbour_pairs
    assert updated.info().baskets == 500
    assert [s for s, _ in updated.info().sources] == [str(old), str(new)]
    for item in ("p00", "p07", "p45"):
        assert updated.neighbours(item, k=3, metric="npmi") == rebuilt.neighbours(item, k=3, metric="npmi")

    # Pair counts agree with a brute-force count over the baskets.
    brute: dict[tuple[str, str], int] = {}
    for basket in load_events(both).baskets():
        for pair in combinations(basket, 2):
            brute[pair] = brute.get(pair, 0) + 1
    if "top_k" not in options:
        for n in updated.neighbours("p01", k=100, metric="count", min_count=1):
            assert n.count == brute[tuple(sorted(("p01", n.item)))]


def test_update_refuses_the_same_file_twice(tmp_path: Path) -> None:
    path = write_orders(tmp_path / "o.csv", random_baskets(3, 20), first_id=0)
    stats = BehaviourStats.build(load_events(path), tmp_path / "b")
    with pytest.raises(InvalidInput, match="already counted"):
        stats.update(load_events(path))
    with pytest.raises(InvalidInput, match="already counted"):
        BehaviourStats.build([load_events(path), load_events(path)], tmp_path / "c")


def test_session_spanning_two_files_is_the_documented_edge_case(tmp_path: Path) -> None:
    first = tmp_path / "a.csv"
    second = tmp_path / "b.csv"
    first.write_text("user,item,ts\nu,x,2024-01-01 10:00:00\n", encoding="utf-8")
    second.write_text("user,item,ts\nu,y,2024-01-01 10:10:00\n", encoding="utf-8")
    updated = BehaviourStats.build(load_events(first), tmp_path / "inc", min_count=1).update(load_events(second))
    assert updated.info().baskets == 2  # counted as two sessions, one per file
    joined = Events.concat([load_events(first), load_events(second)])
    assert joined.n_baskets == 2  # sessions are cut per load, so concat of loads agrees with the update


def test_failed_write_leaves_previous_statistics(tiny: BehaviourStats, tmp_path: Path) -> None:
    directory = tmp_path / "behaviour"
    before = stored_arrays(directory)

    def half_write(tmp: Path) -> None:
        (tmp / "item_ids.npy").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(WriteFailed, match="cannot write: disk full"):
        replace_directory(directory, half_write)
    after = stored_arrays(directory)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["behaviour"]  # no temporary directory left behind
    assert json.loads((directory / "manifest.json").read_text())["baskets"] == 4


def test_bad_build_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="min_count"):
        BehaviourStats.build(events_from_baskets(TINY), tmp_path / "x", min_count=0)
    with pytest.raises(InvalidInput, match="top_k"):
        BehaviourStats.build(events_from_baskets(TINY), tmp_path / "x", top_k=0)
    truncated = BehaviourStats.build(events_from_baskets(TINY), tmp_path / "t", min_count=2, top_k=1)
    with pytest.raises(InvalidInput, match="below the 2"):
        truncated.neighbours("a", min_count=1)


def test_online_retail_pairs_match_brute_force(tmp_path: Path) -> None:
    events = load_events(require_shared(ONLINE_RETAIL), filters=EventFilters.online_retail())
    stats = BehaviourStats.build(events, tmp_path / "behaviour")
    info = stats.info()
    assert (info.baskets, info.items) == (21_752, 4_280)
    baskets = [set(b) for b in events.baskets()]
    top = stats.neighbours("85123A", k=5, metric="count")
    assert top[0].item == "21733"
    for n in top:
        assert n.count == sum(1 for b in baskets if "85123A" in b and n.item in b)
    assert stats.item_count("85123A") == sum(1 for b in baskets if "85123A" in b)
