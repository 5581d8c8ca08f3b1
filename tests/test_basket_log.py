"""The timestamped basket log beside the pair statistics: written by build, extended by update, same baskets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semassoc import api
from semassoc.behaviour.baskets import MISSING, BasketLog
from semassoc.behaviour.cooccurrence import pair_counts
from semassoc.behaviour.stats import BehaviourStats


def _events(path: Path, baskets: list[tuple[str, list[str]]]) -> Path:
    lines = ["order_id,product_id,timestamp"]
    for number, (day, items) in enumerate(baskets):
        lines += [f"{path.stem}{number},{item},{day} 10:00:00" for item in items]
    path.write_text("\n".join(lines) + "\n")
    return path


FIRST = [("2024-01-01", ["a", "b"]), ("2024-01-02", ["a", "c", "b"]), ("2024-01-03", ["c"])]
SECOND = [("2024-02-01", ["d", "a"]), ("2024-02-02", ["b", "d"])]


def test_build_writes_a_log_matching_the_statistics(tmp_path: Path) -> None:
    api.build_behavior(_events(tmp_path / "one.csv", FIRST + SECOND), workspace=tmp_path / "ws", min_count=1)
    stats = BehaviourStats.open(tmp_path / "ws" / "behaviour")
    log = stats.basket_log()
    assert log is not None and len(log) == stats.info().baskets == 5
    ids, counts = stats.item_ids_and_counts()
    matrix = log.matrix()
    assert np.asarray(matrix.sum(axis=0)).ravel().tolist() == counts.tolist()
    pairs, _ = pair_counts(matrix)
    assert stats.neighbour_codes("a", min_count=1)[1].tolist() == pairs[int(np.searchsorted(ids, "a"))].data.tolist()
    days = sorted((log.time // 86_400_000_000).tolist())
    assert days[0] == np.datetime64("2024-01-01").astype(np.int64)
    first = BasketLog.load_first_seen(tmp_path / "ws" / "behaviour")
    assert first[int(np.searchsorted(ids, "d"))] == np.datetime64("2024-02-01T10:00", "us").astype(np.int64)


def test_update_appends_to_the_log(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    api.build_behavior(_events(tmp_path / "one.csv", FIRST), workspace=ws, min_count=1)
    api.update_behavior(_events(tmp_path / "two.csv", SECOND), workspace=ws)
    stats = BehaviourStats.open(ws / "behaviour")
    log = stats.basket_log()
    assert log is not None and len(log) == 5
    names = np.asarray(stats.item_ids_and_counts()[0])
    baskets = sorted(
        (int(log.time[b]), sorted(names[log.items[log.indptr[b] : log.indptr[b + 1]]].tolist())) for b in range(5)
    )
    assert [items for _, items in baskets] == [["a", "b"], ["a", "b", "c"], ["c"], ["a", "d"], ["b", "d"]]
    assert all(t != MISSING for t, _ in baskets)
