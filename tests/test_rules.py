"""Association rules: hand-checked tiny cases, and exact agreement with arules on Groceries."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from semassoc.behaviour.events import events_from_baskets
from semassoc.behaviour.rules import Rule, item_frequencies, mine_rules, write_rules
from semassoc.errors import InvalidInput

from .conftest import require_shared

TINY = [["a", "b", "c"], ["a", "b"], ["a", "c"], ["b", "d"]]


def test_tiny_rules_by_hand() -> None:
    rules = mine_rules(TINY, min_support=0.5, min_confidence=0.6, min_len=2)
    # itemsets with count >= 2: a 3, b 3, c 2, ab 2, ac 2 -> rules with confidence >= 0.6
    assert {(r.lhs, r.rhs): (r.count, r.confidence) for r in rules} == {
        (("c",), ("a",)): (2, 1.0),
        (("a",), ("c",)): (2, pytest.approx(2 / 3)),
        (("a",), ("b",)): (2, pytest.approx(2 / 3)),
        (("b",), ("a",)): (2, pytest.approx(2 / 3)),
    }
    c_a = rules[0]
    assert c_a == Rule(("c",), ("a",), support=0.5, confidence=1.0, coverage=0.5, lift=4 / 3, count=2)
    assert [r.lift for r in rules] == sorted((r.lift for r in rules), reverse=True)


def test_support_threshold_rounds_up_and_empty_lhs() -> None:
    # support 0.3 of 4 baskets needs ceil(1.2) = 2 baskets: the pair {b, d} (1 basket) is out
    assert all(r.count >= 2 for r in mine_rules(TINY, 0.3, 0.0, min_len=2))
    # min_len=1 allows {} => {x} when support(x) >= min_confidence (as arules)
    empty_lhs = [r for r in mine_rules(TINY, 0.5, 0.75, min_len=1, max_len=1)]
    assert {(r.lhs, r.rhs) for r in empty_lhs} == {((), ("a",)), ((), ("b",))}
    assert empty_lhs[0].coverage == 1.0
    # confidence exactly at the threshold is kept
    assert (("a",), ("b",)) in {(r.lhs, r.rhs) for r in mine_rules(TINY, 0.5, 2 / 3, min_len=2)}


def test_events_input_equals_plain_baskets() -> None:
    assert mine_rules(events_from_baskets(TINY), 0.25, 0.3) == mine_rules(TINY, 0.25, 0.3)
    assert mine_rules([], 0.5, 0.5) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_support": 0}, "min_support"),
        ({"min_support": 1.5}, "min_support"),
        ({"min_confidence": -0.1}, "min_confidence"),
        ({"min_len": 0}, "min_len"),
        ({"min_len": 3, "max_len": 2}, "min_len"),
    ],
)
def test_bad_thresholds(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        mine_rules(TINY, **kwargs)


def test_bad_baskets() -> None:
    with pytest.raises(InvalidInput, match="basket 2 is a string"):
        mine_rules([["a"], "ab"], 0.5, 0.5)
    with pytest.raises(InvalidInput, match="basket 1: empty item"):
        mine_rules([["a", ""]], 0.5, 0.5)


def test_writers_round_trip(tmp_path: Path) -> None:
    rules = mine_rules(TINY, 0.25, 0.3)
    write_rules(rules, tmp_path / "out" / "rules.csv")
    with (tmp_path / "out" / "rules.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["lhs"], r["rhs"], int(r["count"]), float(r["lift"])) for r in rows] == [
        ("{" + ",".join(r.lhs) + "}", "{" + ",".join(r.rhs) + "}", r.count, r.lift) for r in rules
    ]
    write_rules(rules, tmp_path / "rules.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "rules.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines == [r.as_dict() for r in rules]
    write_rules(rules, tmp_path / "rules.parquet")
    table = pq.read_table(tmp_path / "rules.parquet")
    assert table.column_names == ["lhs", "rhs", "support", "confidence", "coverage", "lift", "count"]
    assert table.to_pylist() == [r.as_dict() for r in rules]
    with pytest.raises(InvalidInput, match="rules format"):
        write_rules(rules, tmp_path / "rules.xlsx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "rules.jsonl", "rules.parquet"]


# ------------------------------------------------------------------------------------------------ arules Groceries


def groceries_dir() -> Path:
    return require_shared("groceries/groceries_basket.csv").parent


@pytest.fixture(scope="module")
def groceries() -> list[list[str]]:
    with (groceries_dir() / "groceries_basket.csv").open(encoding="utf-8", newline="") as fh:
        return [row for row in csv.reader(fh)]


def parse_itemset(text: str) -> tuple[str, ...]:
    inner = text[1:-1]
    return tuple(sorted(inner.split(","))) if inner else ()


def reference_rules(name: str) -> dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, str]]:
    with (groceries_dir() / "reference" / name).open(encoding="utf-8", newline="") as fh:
        return {(parse_itemset(r["lhs"]), parse_itemset(r["rhs"])): r for r in csv.DictReader(fh)}


@pytest.mark.parametrize(
    ("support", "confidence", "min_len", "expected", "lengths"),
    [
        (0.001, 0.5, 1, 5668, {2: 11, 3: 1461, 4: 3211, 5: 939, 6: 46}),
        (0.006, 0.25, 2, 463, {2: 150, 3: 297, 4: 16}),
        (0.005, 0.5, 1, 120, None),
        (0.001, 0.8, 1, 410, None),
    ],
)
def test_groceries_rules_equal_arules(
    groceries: list[list[str]], support: float, confidence: float, min_len: int, expected: int, lengths: dict | None
) -> None:
    rules = mine_rules(groceries, min_support=support, min_confidence=confidence, min_len=min_len, max_len=10)
    assert len(rules) == expected
    if lengths is not None:
        assert dict(Counter(len(r.lhs) + len(r.rhs) for r in rules)) == lengths
    reference = reference_rules(f"rules_supp{support}_conf{confidence}_minlen{min_len}_maxlen10.csv")
    mine = {(r.lhs, r.rhs): r for r in rules}
    assert mine.keys() == reference.keys()
    for key, row in reference.items():
        rule = mine[key]
        assert rule.count == int(row["count"])
        for metric in ("support", "confidence", "coverage", "lift"):
            assert getattr(rule, metric) == pytest.approx(float(row[metric]), abs=1e-9, rel=0), (key, metric)


def test_groceries_top_rules_by_lift(groceries: list[list[str]]) -> None:
    rules = mine_rules(groceries, 0.001, 0.5)
    top = rules[0]
    assert (top.lhs, top.rhs, top.count) == (("Instant food products", "soda"), ("hamburger meat",), 12)
    assert top.support == pytest.approx(0.001220132, abs=5e-10)
    assert top.confidence == pytest.approx(0.6315789, abs=5e-8)
    assert top.lift == pytest.approx(18.99565, abs=5e-6)
    assert rules[1].lhs == ("popcorn", "soda") and rules[1].rhs == ("salty snack",)
    cream = [r for r in rules if r.rhs == ("cream cheese ",)]  # the label keeps its trailing space
    assert any(r.lhs == ("curd", "other vegetables", "whipped/sour cream", "yogurt") for r in cream)
    lantz = mine_rules(groceries, 0.006, 0.25, min_len=2)[0]
    assert (lantz.lhs, lantz.rhs, lantz.count) == (("herbs",), ("root vegetables",), 69)


def test_groceries_item_frequencies(groceries: list[list[str]]) -> None:
    with (groceries_dir() / "reference" / "item_frequencies.csv").open(encoding="utf-8", newline="") as fh:
        reference = {r["item"]: (int(r["count"]), float(r["support"])) for r in csv.DictReader(fh)}
    mine = item_frequencies(groceries)
    assert len(mine) == len(reference) == 169
    for f in mine:
        count, support = reference[f.item]
        assert f.count == count
        assert f.support == pytest.approx(support, abs=1e-12)
    assert [(f.item, f.count) for f in mine[:2]] == [("whole milk", 2513), ("other vegetables", 1903)]


def test_memory_estimate_is_exact_when_it_fits_and_refuses_when_not():
    import csv

    from semassoc.behaviour.rules import estimate_mining

    from .conftest import shared_data_dir

    path = shared_data_dir() / "groceries" / "groceries_basket.csv"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    with path.open(newline="") as handle:
        baskets = [[item for item in row if item] for row in csv.reader(handle)]
    estimate = estimate_mining(baskets, 10, 10)
    # every frequent k-itemset gives k one-item-consequent rules at confidence 0: the estimate is that exact count
    assert estimate.exact and estimate.rules == len(mine_rules(baskets, 10 / len(baskets), 0.0, 1, 10))
    with pytest.raises(InvalidInput, match=r"count 2\) may give up to .* use --min-support .* or --force"):
        mine_rules(baskets, 2 / len(baskets), 0.0, 1, 10, memory_budget=2**30)
    assert len(mine_rules(baskets, 0.01, 0.5, 1, 10, memory_budget=2**30)) > 0
