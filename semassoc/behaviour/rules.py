"""Association rules of any length, exactly as R's arules computes them.

Frequent itemsets and rules come from Christian Borgelt's FP-growth (PyPI ``pyfim``), the same C code family that
arules wraps, run with ``mode="o"`` so that rule support is support(lhs ∪ rhs) as in arules. Every metric is then
recomputed here from integer counts, and thresholds are applied to those counts:

- ``min_support`` is relative: a rule needs ``count >= ceil(min_support * baskets)`` (on Groceries' 9,835 baskets,
  0.001 means 10, not 9);
- ``min_confidence``: ``count / lhs_count >= min_confidence``;
- lengths count lhs and rhs items together (arules ``minlen``/``maxlen``); ``min_len=1`` allows rules with an empty
  lhs, as in arules.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from semassoc.behaviour.events import Events
from semassoc.errors import InvalidInput
from semassoc.io import atomic_output

__all__ = [
    "ItemFrequency",
    "MiningEstimate",
    "Rule",
    "estimate_mining",
    "item_frequencies",
    "mine_rules",
    "write_rules",
]

# Relative slack on the confidence threshold: 0.5 must accept 15/30 even if a division rounds down by an ulp.
_CONFIDENCE_SLACK = 1e-12


@dataclass(frozen=True)
class Rule:
    """``lhs => rhs`` with arules' quality measures.

    Attributes:
        lhs: antecedent items, sorted (empty for a rule with an empty lhs).
        rhs: consequent items (one item, as in arules' apriori).
        support: share of baskets holding lhs ∪ rhs.
        confidence: ``support / coverage``.
        coverage: share of baskets holding lhs (1 for an empty lhs).
        lift: ``confidence / support(rhs)``.
        count: number of baskets holding lhs ∪ rhs.
    """

    lhs: tuple[str, ...]
    rhs: tuple[str, ...]
    support: float
    confidence: float
    coverage: float
    lift: float
    count: int

    def as_dict(self) -> dict[str, object]:
        """Plain dict with list-valued lhs/rhs (for JSON)."""
        return {
            "lhs": list(self.lhs),
            "rhs": list(self.rhs),
            "support": self.support,
            "confidence": self.confidence,
            "coverage": self.coverage,
            "lift": self.lift,
            "count": self.count,
        }


@dataclass(frozen=True)
class ItemFrequency:
    """How many baskets hold an item (``count``) and which share (``support``)."""

    item: str
    count: int
    support: float


def _transactions(baskets: Events | Iterable[Iterable[str]]) -> list[list[str]]:
    if isinstance(baskets, Events):
        return baskets.baskets()
    out = []
    for position, basket in enumerate(baskets, start=1):
        if isinstance(basket, str):
            raise InvalidInput(f"basket {position} is a string, not a collection of items")
        items = list(dict.fromkeys(str(item) for item in basket))
        if any(item == "" for item in items):
            raise InvalidInput(f"basket {position}: empty item id")
        out.append(items)
    return out


def _min_count(min_support: float, n: int) -> int:
    # ceil with a little slack so that e.g. 0.006 * 10000 = 60.00000000000001 still means 60.
    return max(1, math.ceil(min_support * n * (1 - 1e-12)))


def check_rule_options(min_support: float, min_confidence: float, min_len: int, max_len: int) -> None:
    """Raise ``InvalidInput`` for thresholds ``mine_rules`` (and the Spark miner) cannot take."""
    if not (isinstance(min_support, int | float) and 0 < min_support <= 1):
        raise InvalidInput(f"min_support must be in (0, 1], not {min_support!r}")
    if not (isinstance(min_confidence, int | float) and 0 <= min_confidence <= 1):
        raise InvalidInput(f"min_confidence must be in [0, 1], not {min_confidence!r}")
    if not (isinstance(min_len, int) and isinstance(max_len, int) and 1 <= min_len <= max_len):
        raise InvalidInput(f"need 1 <= min_len <= max_len, got min_len={min_len!r}, max_len={max_len!r}")


def rules_from_counts(
    counted: Iterable[tuple[Iterable[str], str, int, int, int]], n: int, min_count: int, min_confidence: float
) -> list[Rule]:
    """Rules from integer counts, with the exact thresholds and arules' measures, best first.

    Args:
        counted: candidate rules as ``(lhs items, rhs item, count of lhs ∪ rhs, lhs count, rhs count)``; a miner may
            pass candidates under a looser confidence bound: the exact test on counts is applied here.
        n: baskets mined.
        min_count: the smallest count a rule needs (``ceil(min_support * n)``).
        min_confidence: ``count / lhs_count >= min_confidence`` (up to a relative slack of an ulp or so).
    """
    rules = []
    for lhs, rhs, both, body_count, rhs_count in counted:
        if both < min_count or both < min_confidence * body_count * (1 - _CONFIDENCE_SLACK):
            continue
        confidence = both / body_count
        rules.append(
            Rule(
                lhs=tuple(sorted(lhs)),
                rhs=(rhs,),
                support=both / n,
                confidence=confidence,
                coverage=body_count / n,
                lift=confidence / (rhs_count / n),
                count=int(both),
            )
        )
    rules.sort(key=lambda r: (-r.lift, -r.confidence, -r.support, r.lhs, r.rhs))
    return rules


def item_frequencies(baskets: Events | Iterable[Iterable[str]]) -> list[ItemFrequency]:
    """Basket count and support of every item, most frequent first (ties by item).

    Args:
        baskets: ``Events`` or an iterable of baskets (iterables of item ids; repeats within a basket count once).

    Returns:
        One ``ItemFrequency`` per item.

    Example:
        >>> [(f.item, f.count) for f in item_frequencies([["a", "b"], ["a"]])]
        [('a', 2), ('b', 1)]
    """
    transactions = _transactions(baskets)
    n = len(transactions)
    counts = Counter(item for basket in transactions for item in basket)
    return [ItemFrequency(item, c, c / n) for item, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


#: Bytes one mined rule takes at the peak of mining (pyfim's output, the Rule and its tuples): 665-847 measured with
#: tracemalloc on Groceries (5,668 to 700,638 rules).
BYTES_PER_RULE = 850


@dataclass(frozen=True)
class MiningEstimate:
    """How many itemsets and rules a minimum count may produce, found before mining the rules.

    Frequent itemsets are counted length by length (exact counts); before each length is counted, its size is
    bounded by Apriori's candidate count (every frequent k-itemset joins two frequent (k-1)-itemsets that share
    their first k-2 items). When that bound would already exceed the budget the counting stops there and the
    estimate is the bound (``exact`` False), so estimating never takes the memory it warns about.

    Attributes:
        by_length: frequent itemsets per length (the last one a bound when ``exact`` is False).
        rules: at most ``sum(k * N(k))`` one-item-consequent rules (before the confidence threshold).
        bytes: ``rules * BYTES_PER_RULE``.
    """

    min_count: int
    by_length: dict[int, float]
    exact: bool
    rules: float
    bytes: float


def estimate_mining(
    transactions: list[list[str]], min_count: int, max_len: int, budget: float | None = None
) -> MiningEstimate:
    """Count the frequent itemsets of each length up to ``max_len`` (see :class:`MiningEstimate`)."""
    import fim

    counts = Counter(item for basket in transactions for item in basket)
    previous: list[tuple[str, ...]] = sorted((item,) for item, c in counts.items() if c >= min_count)
    by_length: dict[int, float] = {1: float(len(previous))}
    exact = True
    limit = float("inf") if budget is None else budget / BYTES_PER_RULE
    rules = by_length[1]
    for k in range(2, max_len + 1):
        bound = _candidates(previous)
        if bound == 0:
            break
        if rules + k * bound > limit:
            by_length[k] = float(bound)
            rules += k * bound
            exact = False
            break
        found = fim.fpgrowth(transactions, target="s", supp=-min_count, zmin=k, zmax=k, report="")
        previous = sorted(tuple(sorted(itemset[0] if isinstance(itemset[0], tuple) else itemset)) for itemset in found)
        del found
        by_length[k] = float(len(previous))
        rules += k * by_length[k]
        if not previous:
            break
    return MiningEstimate(min_count, by_length, exact, rules, rules * BYTES_PER_RULE)


def _candidates(itemsets: list[tuple[str, ...]]) -> int:
    """Apriori's candidates of the next length: pairs of sorted itemsets that share all but their last item."""
    groups = Counter(itemset[:-1] for itemset in itemsets)
    return sum(g * (g - 1) // 2 for g in groups.values())


def _memory_budget() -> float:
    """Half the memory available now (from /proc/meminfo; 4 GiB where it cannot be read)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 2
    except OSError:
        pass
    return 4 * 2**30 / 2


def mine_rules(
    baskets: Events | Iterable[Iterable[str]],
    min_support: float = 0.1,
    min_confidence: float = 0.8,
    min_len: int = 1,
    max_len: int = 10,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    force: bool = False,
    memory_budget: float | None = None,
) -> list[Rule]:
    """Mine association rules with one-item consequents, as arules' ``apriori`` does (same defaults).

    Args:
        baskets: ``Events`` (grouped by basket) or an iterable of baskets, each an iterable of item ids.
        min_support: minimum support of lhs ∪ rhs, a share of baskets in (0, 1]; see the module docstring for the
            rounding (count >= ceil(min_support * baskets)).
        min_confidence: minimum confidence in [0, 1].
        min_len: fewest items in lhs + rhs (1 allows an empty lhs).
        max_len: most items in lhs + rhs.
        progress: called as ``progress(stage, step, steps)``.
        force: mine even when :func:`estimate_mining` says the rules may not fit in ``memory_budget``.
        memory_budget: bytes the rules may take (default: half the memory available now).

    Returns:
        Rules sorted by lift, then confidence, then support (all descending), then lhs and rhs.

    Raises:
        InvalidInput: a threshold out of range, a malformed basket, or (without ``force``) a minimum support low
            enough that the estimated rules would not fit in memory; the message names a support that fits.

    Example:
        >>> rules = mine_rules([["a", "b"], ["a", "b"], ["a"]], min_support=0.5, min_confidence=0.9, min_len=2)
        >>> [(r.lhs, r.rhs, r.count) for r in rules]
        [(('b',), ('a',), 2)]
    """
    check_rule_options(min_support, min_confidence, min_len, max_len)
    import fim  # Borgelt's C miner; imported here so that importing semassoc stays light.

    if progress:
        progress("baskets", 1, 3)
    transactions = _transactions(baskets)
    n = len(transactions)
    if n == 0:
        return []
    min_count = _min_count(min_support, n)
    if not force:
        _check_memory(transactions, min_count, max_len, memory_budget or _memory_budget())
    if progress:
        progress("mining", 2, 3)
    # pyfim takes confidence in percent; ask for slightly less and apply the exact threshold on counts below.
    raw = fim.fpgrowth(
        transactions,
        target="r",
        supp=-min_count,
        conf=max(0.0, min_confidence * 100 * (1 - 1e-9)),
        zmin=min_len,
        zmax=max_len,
        report="ab",
        mode="o",
    )
    item_count = Counter(item for basket in transactions for item in basket)
    rules = rules_from_counts(
        ((body, head, both, body_count, item_count[head]) for head, body, both, body_count in raw),
        n,
        min_count,
        min_confidence,
    )
    if progress:
        progress("done", 3, 3)
    return rules


def _check_memory(transactions: list[list[str]], min_count: int, max_len: int, budget: float) -> None:
    estimate = estimate_mining(transactions, min_count, max_len, budget)
    if estimate.bytes <= budget:
        return
    n = len(transactions)
    fits = min_count
    while fits < n:  # a support that fits: double the count until the estimate does
        fits = min(n, fits * 2)
        if estimate_mining(transactions, fits, max_len, budget).bytes <= budget:
            break
    shape = ", ".join(f"{int(v):,} of length {k}" for k, v in sorted(estimate.by_length.items()))
    raise InvalidInput(
        f"min_support {min_count / n:.6g} (count {min_count}) may give {'about' if estimate.exact else 'up to'} "
        f"{estimate.rules:.3g} rules ({shape} frequent itemsets; ~{estimate.bytes / 2**30:.3g} GiB, over the "
        f"{budget / 2**30:.3g} GiB budget); use --min-support {fits / n:.6g} or more, a smaller --max-len, or --force"
    )


def _itemset_text(items: Sequence[str]) -> str:
    return "{" + ",".join(items) + "}"


def write_rules(rules: Sequence[Rule], path: str | Path, format: str | None = None) -> Path:
    """Write rules to CSV (arules style ``{a,b}`` item sets), Parquet (list columns) or JSON lines.

    Args:
        rules: rules from ``mine_rules``.
        path: output file; its parent directory is created.
        format: ``"csv"``, ``"parquet"`` or ``"jsonl"``; default from the suffix (.csv, .parquet/.pq, .jsonl/.ndjson).

    Returns:
        The path written. The file is written to a temporary name and renamed, so it is never half-written.

    Raises:
        InvalidInput: unknown format.

    Example:
        >>> # write_rules(mine_rules(baskets, 0.001, 0.5), "rules.parquet")
    """
    path = Path(path)
    if format is None:
        format = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(
            path.suffix.lower(), ""
        )
    if format not in ("csv", "parquet", "jsonl"):
        raise InvalidInput(f"{path}: cannot tell the rules format; use .csv, .parquet or .jsonl (or format=)")
    with atomic_output(path) as tmp:
        if format == "csv":
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["lhs", "rhs", "support", "confidence", "coverage", "lift", "count"])
                for r in rules:
                    writer.writerow(
                        [
                            _itemset_text(r.lhs),
                            _itemset_text(r.rhs),
                            repr(r.support),
                            repr(r.confidence),
                            repr(r.coverage),
                            repr(r.lift),
                            r.count,
                        ]
                    )
        elif format == "jsonl":
            with tmp.open("w", encoding="utf-8") as fh:
                for r in rules:
                    fh.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table(
                {
                    "lhs": pa.array([list(r.lhs) for r in rules], pa.list_(pa.string())),
                    "rhs": pa.array([list(r.rhs) for r in rules], pa.list_(pa.string())),
                    "support": pa.array([r.support for r in rules], pa.float64()),
                    "confidence": pa.array([r.confidence for r in rules], pa.float64()),
                    "coverage": pa.array([r.coverage for r in rules], pa.float64()),
                    "lift": pa.array([r.lift for r in rules], pa.float64()),
                    "count": pa.array([r.count for r in rules], pa.int64()),
                }
            )
            pq.write_table(table, tmp)
    return path
