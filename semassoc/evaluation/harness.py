"""Offline evaluation on your own catalog and events: a temporal split, an explicit ground truth, warm and cold
queries, baselines beside every related-items method, and a user-level task.

The pieces are reusable on their own, so that outside recommenders (implicit, LightFM...) are judged by exactly the
same split, truth and metric code (see ``benchmarks/bench_peers_eval.py``):

- :func:`temporal_split` cuts events by basket time (and optionally hides a seeded share of warm products);
- :func:`build_truth` turns the judged side into graded relevance (co-purchase count, beyond chance by lift);
- :func:`product_query_sets` and :func:`user_queries` pick the queries;
- :func:`score_lists` computes Recall, NDCG, MRR, hit rate and coverage at K with standard errors;
- :func:`evaluate` runs all of it against a semassoc workspace and returns an :class:`EvaluationReport`.

A method is named exactly as the CLI/API option that produces it (``similar``, ``complements --metric lift``...).
Add one in one line: ``METHODS["name"] = lambda engine, product_id, k: [...]`` (product ids, best first).

Example:
    >>> from semassoc.evaluation.harness import evaluate, EvaluationConfig
    >>> report = evaluate("examples/online_retail/catalog.csv", "examples/online_retail/invoices.parquet",
    ...                   options=LoadOptions(filters=EventFilters.online_retail()))  # doctest: +SKIP
    >>> report.score("similar", "cold", "ndcg@10").mean  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from semassoc.behaviour.events import Events, LoadOptions, file_sha256
from semassoc.behaviour.stats import BehaviourStats, basket_item_matrix, pair_counts
from semassoc.catalog import CatalogColumns, read_catalog
from semassoc.errors import InvalidInput, NotFound
from semassoc.ranking.engine import RelatedEngine
from semassoc.text.encoder import Encoder
from semassoc.workspace import Workspace

__all__ = [
    "BATCH_METHODS",
    "BEHAVIOUR_WEIGHTINGS",
    "DEFAULT_WORKSPACE",
    "METHODS",
    "OPTIONAL_METHODS",
    "OPTIONAL_USER_METHODS",
    "USER_METHODS",
    "EvaluationConfig",
    "EvaluationData",
    "EvaluationReport",
    "MethodScores",
    "MetricValue",
    "ProductQuerySets",
    "Split",
    "Truth",
    "TruthConfig",
    "UserQuery",
    "available_methods",
    "available_user_methods",
    "build_truth",
    "catalog_coverage",
    "evaluate",
    "hit_rate_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "prepare",
    "product_query_sets",
    "recall_at_k",
    "score_lists",
    "standard_error",
    "temporal_split",
    "user_queries",
    "write_chart",
    "write_report",
]

#: Where ``evaluate`` keeps its own index and training-side behaviour (never the user's main workspace).
DEFAULT_WORKSPACE = ".semassoc-eval"

Progress = Callable[[str, int, int], None]
#: (engine, query product, k) -> product ids, best first.
Method = Callable[[RelatedEngine, str, int], list[str]]
#: (engine, query products, k) -> one list per query; must equal a loop of the single-query method.
BatchMethod = Callable[[RelatedEngine, Sequence[str], int], list[list[str]]]
#: (engine, the user's history oldest first, k) -> product ids, best first.
UserMethod = Callable[[RelatedEngine, Sequence[str], int], list[str]]


# =============================================================================================== metric functions


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant products found in the top ``k``: ``|top_k ∩ relevant| / |relevant|`` (0 when none).

    Example:
        >>> recall_at_k(["a", "x", "b"], {"a", "b", "c", "d"}, 2)
        0.25
    """
    if not relevant:
        return 0.0
    return sum(1 for p in ranked[:k] if p in relevant) / len(relevant)


def ndcg_at_k(ranked: Sequence[str], grades: Mapping[str, float], k: int) -> float:
    """Graded NDCG: ``DCG@k / IDCG@k`` with ``DCG@k = sum_{i=1..k} grade(p_i) / log2(i + 1)`` and IDCG the DCG of the
    relevant products sorted by grade (0 when nothing is relevant).

    Example:
        >>> round(ndcg_at_k(["b", "a"], {"a": 3, "b": 1}, 2), 4)  # (1 + 3/log2 3) / (3 + 1/log2 3)
        0.8597
    """
    if not grades:
        return 0.0
    dcg = sum(grades.get(p, 0.0) / math.log2(i + 2) for i, p in enumerate(ranked[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Reciprocal rank of the first relevant product in the top ``k`` (0 when there is none).

    Example:
        >>> mrr_at_k(["x", "y", "a"], {"a"}, 10)
        0.3333333333333333
    """
    for i, p in enumerate(ranked[:k]):
        if p in relevant:
            return 1.0 / (i + 1)
    return 0.0


def hit_rate_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1 when any relevant product is in the top ``k``, else 0."""
    return 1.0 if any(p in relevant for p in ranked[:k]) else 0.0


def catalog_coverage(lists: Sequence[Sequence[str]], catalog_size: int, k: int) -> float:
    """Share of the catalog recommended at least once in the top ``k`` of any list.

    Example:
        >>> catalog_coverage([["a", "b"], ["b", "c"]], 10, 1)
        0.2
    """
    if catalog_size <= 0:
        return 0.0
    return len({p for ranked in lists for p in ranked[:k]}) / catalog_size


def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean: sample standard deviation (n - 1) over sqrt(n); None for fewer than 2 values.

    Example:
        >>> round(standard_error([0.0, 1.0, 0.0, 1.0]), 4)
        0.2887
    """
    n = len(values)
    if n < 2:
        return None
    return float(np.std(np.asarray(values, dtype=np.float64), ddof=1) / math.sqrt(n))


@dataclass(frozen=True)
class MetricValue:
    """A metric's mean over queries and its standard error (None for coverage, or fewer than 2 queries)."""

    mean: float
    se: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"mean": round(self.mean, 6), "se": None if self.se is None else round(self.se, 6)}

    def __str__(self) -> str:
        return f"{self.mean:.4f}" + ("" if self.se is None else f" ± {self.se:.4f}")


#: Metrics per query (averaged, with standard errors); ``coverage`` is computed over all lists.
QUERY_METRICS: Mapping[str, Callable[[Sequence[str], Mapping[str, float], int], float]] = {
    "recall": lambda ranked, grades, k: recall_at_k(ranked, grades, k),
    "ndcg": ndcg_at_k,
    "mrr": lambda ranked, grades, k: mrr_at_k(ranked, grades, k),
    "hit_rate": lambda ranked, grades, k: hit_rate_at_k(ranked, grades, k),
}


def score_lists(
    lists: Sequence[Sequence[str]],
    truths: Sequence[Mapping[str, float]],
    ks: Sequence[int],
    *,
    exclude: Sequence[Collection[str]] | None = None,
    catalog: Collection[str] | None = None,
) -> dict[str, MetricValue]:
    """Score ranked lists against graded truth: ``{"recall@10": MetricValue, ..., "coverage@10": ...}``.

    Each list is cleaned first: duplicates dropped, products outside ``catalog`` dropped, and the query's own
    ``exclude`` set (the query product itself; a user's history) removed from the list AND from its truth, so a
    product never counts as its own recommendation.

    Args:
        lists: one ranked list of product ids per query.
        truths: one ``{product: grade}`` per query (grade > 0).
        ks: cut-offs.
        exclude: per query, products that are neither recommendable nor relevant (e.g. ``[{query}]``).
        catalog: the products that exist; coverage is measured against its size (without it, no coverage).

    Example:
        >>> s = score_lists([["q", "a", "b"]], [{"q": 5, "a": 1}], [1], exclude=[{"q"}])
        >>> s["recall@1"].mean, s["hit_rate@1"].mean
        (1.0, 1.0)
    """
    if len(lists) != len(truths) or (exclude is not None and len(exclude) != len(lists)):
        raise InvalidInput("score_lists: lists, truths and exclude must have one entry per query")
    if not ks or any(k < 1 for k in ks):
        raise InvalidInput(f"cut-offs must be integers >= 1, not {list(ks)}")
    cleaned: list[list[str]] = []
    graded: list[dict[str, float]] = []
    for i, (ranked, truth) in enumerate(zip(lists, truths, strict=True)):
        skip = set(exclude[i]) if exclude is not None else set()
        seen: set[str] = set()
        keep = []
        for p in ranked:
            if p in skip or p in seen or (catalog is not None and p not in catalog):
                continue
            seen.add(p)
            keep.append(p)
        cleaned.append(keep)
        graded.append({p: float(g) for p, g in truth.items() if p not in skip and g > 0})
    out: dict[str, MetricValue] = {}
    for k in ks:
        for name, fn in QUERY_METRICS.items():
            values = [fn(ranked, grades, k) for ranked, grades in zip(cleaned, graded, strict=True)]
            out[f"{name}@{k}"] = MetricValue(float(np.mean(values)) if values else 0.0, standard_error(values))
        if catalog is not None:
            out[f"coverage@{k}"] = MetricValue(catalog_coverage(cleaned, len(catalog), k))
    return out


# ============================================================================================================ split


@dataclass(frozen=True)
class Split:
    """Events cut at a date into a training side (behaviour is learnt from it) and a judged side.

    Attributes:
        train: events of baskets that started before ``cut``, less the events of ``hidden_items``.
        test: events of baskets that started at or after ``cut`` (all of them).
        cut: the cut time (UTC).
        new_items: products first seen after the cut (cold by construction).
        hidden_items: warm products whose training events were hidden (``cold_share``).
        dropped_baskets: baskets without any known time (in neither side).
    """

    train: Events
    test: Events
    cut: datetime
    new_items: frozenset[str]
    hidden_items: frozenset[str]
    dropped_baskets: int = 0

    @property
    def cold_items(self) -> frozenset[str]:
        """Products with no training events: new after the cut or hidden."""
        return self.new_items | self.hidden_items


def _utc_naive(moment: datetime) -> np.datetime64:
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return np.datetime64(moment, "us")


def temporal_split(
    events: Events,
    *,
    split_date: datetime | None = None,
    split_fraction: float = 0.8,
    cold_share: float = 0.0,
    seed: int = 0,
    eligible: Collection[str] | None = None,
) -> Split:
    """Cut events by time: whole baskets go to one side by their first event time.

    Args:
        events: loaded events with a timestamp column.
        split_date: the cut (naive means UTC); default: ``split_fraction`` of the way through the time range.
        split_fraction: where to cut when there is no ``split_date``, in (0, 1).
        cold_share: share of warm products (in ``eligible``) whose training events are all hidden, drawn with
            ``seed``, so that cold products exist on any data set.
        seed: random seed of the cold share.
        eligible: products that may be hidden (e.g. the catalog); default: every product of the training side.

    Raises:
        InvalidInput: no timestamps, a bad fraction or share, or a cut leaving one side empty.
    """
    if events.timestamp is None:
        raise InvalidInput(
            "a temporal split needs event times, and these events have no timestamp column "
            "(name it with --timestamp-column)"
        )
    if not 0.0 < split_fraction < 1.0:
        raise InvalidInput(f"--split-fraction must be between 0 and 1 (exclusive), not {split_fraction}")
    if not 0.0 <= cold_share < 1.0:
        raise InvalidInput(f"--cold-share must be in [0, 1), not {cold_share}")
    ts = events.timestamp.astype("datetime64[us]")
    known = ~np.isnat(ts)
    if not known.any():
        raise InvalidInput("a temporal split needs event times, and every timestamp is missing")
    as_int = ts.astype(np.int64)
    big = np.iinfo(np.int64).max
    basket_start = np.full(events.n_baskets, big, dtype=np.int64)
    np.minimum.at(basket_start, events.basket[known], as_int[known])
    if split_date is None:
        lo, hi = int(as_int[known].min()), int(as_int[known].max())
        cut64 = np.datetime64(lo + round(split_fraction * (hi - lo)), "us")
    else:
        cut64 = _utc_naive(split_date)
    cut_int = int(cut64.astype(np.int64))
    row_start = basket_start[events.basket]
    timed = row_start != big
    train_rows = timed & (row_start < cut_int)
    test_rows = timed & (row_start >= cut_int)
    cut = datetime(1970, 1, 1, tzinfo=timezone.utc) + (cut64 - np.datetime64(0, "us")).item()
    if not train_rows.any() or not test_rows.any():
        side = "before" if not train_rows.any() else "at or after"
        raise InvalidInput(f"the cut {cut.isoformat()} leaves no events {side} it; choose another split date")
    train = events.select(train_rows)
    test = events.select(test_rows)
    warm = set(train.item_ids.tolist())
    new_items = frozenset(test.item_ids.tolist()) - warm
    hidden: frozenset[str] = frozenset()
    if cold_share > 0:
        candidates = sorted(warm if eligible is None else warm & set(eligible))
        n_hidden = round(cold_share * len(candidates))
        if n_hidden:
            rng = np.random.default_rng(seed)
            picked = rng.choice(len(candidates), size=n_hidden, replace=False)
            hidden = frozenset(candidates[i] for i in picked.tolist())
            hidden_codes = np.isin(train.item_ids, np.array(sorted(hidden), dtype=object))
            train = train.select(~hidden_codes[train.item])
    dropped = int((basket_start == big).sum())
    return Split(train=train, test=test, cut=cut, new_items=new_items, hidden_items=hidden, dropped_baskets=dropped)


# ============================================================================================================ truth


@dataclass(frozen=True)
class TruthConfig:
    """How relevance is read off the judged side.

    Attributes:
        kind: ``"lift"`` (default): products bought together with the query in at least ``min_count`` judged
            baskets of at most ``max_basket_size`` distinct products, with lift >= ``min_lift`` over those baskets;
            ``"raw"``: every product bought together in at least ``min_count`` baskets of any size (no lift).
        min_count: fewest shared judged baskets.
        min_lift: lowest lift (``kind="lift"`` only).
        max_basket_size: largest basket counted (``kind="lift"`` only; None: no bound).
    """

    kind: Literal["lift", "raw"] = "lift"
    min_count: int = 2
    min_lift: float = 2.0
    max_basket_size: int | None = 50

    def validate(self) -> None:
        if self.kind not in ("lift", "raw"):
            raise InvalidInput(f"--truth must be 'lift' or 'raw', not {self.kind!r}")
        if self.min_count < 1:
            raise InvalidInput(f"--truth-min-count must be >= 1, not {self.min_count}")
        if self.min_lift < 0:
            raise InvalidInput(f"--truth-min-lift must be >= 0, not {self.min_lift}")
        if self.max_basket_size is not None and self.max_basket_size < 2:
            raise InvalidInput(f"--max-basket-size must be >= 2, not {self.max_basket_size}")

    def describe(self) -> str:
        """The definition printed in every report."""
        if self.kind == "raw":
            return (
                f"raw co-purchase: for a query product p, relevant = catalog products bought together with p in "
                f">= {self.min_count} judged baskets (baskets of any size, no lift threshold); grade = that count. "
                "p itself is never relevant."
            )
        bound = f"<= {self.max_basket_size}" if self.max_basket_size is not None else "any number of"
        return (
            f"beyond-chance co-purchase: for a query product p, relevant = catalog products q with count(p, q) >= "
            f"{self.min_count} and lift(p, q) >= {self.min_lift:g}, both computed over the judged (after-cut) baskets "
            f"holding {bound} distinct products (lift = count(p, q) * N / (count(p) * count(q)), N = those "
            "baskets); grade = count(p, q). p itself is never relevant."
        )


@dataclass(frozen=True)
class Truth:
    """Graded relevance per query product, as a sparse product x product matrix over ``item_ids``.

    Attributes:
        item_ids: sorted product ids (the judged side's products).
        grades: CSR matrix; entry (p, q) > 0 is q's grade for query p (the co-purchase count).
        baskets: judged baskets the statistics were computed on.
        skipped_baskets: judged baskets left out for being larger than the bound.
    """

    item_ids: np.ndarray
    grades: sp.csr_matrix
    baskets: int
    skipped_baskets: int = 0

    def relevant(self, product_id: str) -> dict[str, float]:
        """``{product: grade}`` for a query product (empty when it has none)."""
        position = int(np.searchsorted(self.item_ids, product_id))
        if position >= self.item_ids.shape[0] or self.item_ids[position] != product_id:
            return {}
        start, end = self.grades.indptr[position], self.grades.indptr[position + 1]
        cols = self.grades.indices[start:end]
        return dict(zip(self.item_ids[cols].tolist(), self.grades.data[start:end].astype(float).tolist(), strict=True))


def build_truth(judged: Events, config: TruthConfig | None = None, catalog: Collection[str] | None = None) -> Truth:
    """Relevance from the judged side's baskets (see :meth:`TruthConfig.describe`).

    Lift is computed on the bounded baskets of the judged side (all its products, catalog or not, count in N and
    in the product counts); products outside ``catalog`` are then dropped from the truth.
    """
    config = config or TruthConfig()
    config.validate()
    matrix, _ = basket_item_matrix(judged)
    sizes = np.diff(matrix.indptr)
    bound = config.max_basket_size if config.kind == "lift" else None
    keep_rows = sizes <= bound if bound is not None else np.ones(sizes.shape[0], dtype=bool)
    bounded = matrix[keep_rows]
    n = int(bounded.shape[0])
    pairs, counts = pair_counts(bounded, workers=1)
    pairs = pairs.tocoo()
    pair = pairs.data.astype(np.float64)
    keep = pair >= config.min_count
    if config.kind == "lift" and n:
        lift = pair * n / (counts[pairs.row].astype(np.float64) * counts[pairs.col])
        keep &= lift >= config.min_lift
    if catalog is not None:
        in_catalog = np.isin(judged.item_ids, np.array(sorted(catalog), dtype=object))
        keep &= in_catalog[pairs.col]
    grades = sp.csr_matrix(
        (pair[keep], (pairs.row[keep], pairs.col[keep])), shape=(judged.n_items, judged.n_items), dtype=np.float64
    )
    grades.sort_indices()
    return Truth(judged.item_ids, grades, n, int((~keep_rows).sum()))


# ====================================================================================================== query sets


@dataclass(frozen=True)
class ProductQuerySets:
    """Warm and cold query products, and how many candidates each rule left out."""

    warm: list[str]
    cold: list[str]
    excluded: dict[str, int] = field(default_factory=dict)


def _sample(ids: list[str], limit: int | None, seed: int) -> list[str]:
    if limit is None or len(ids) <= limit:
        return ids
    picked = np.random.default_rng(seed).choice(len(ids), size=limit, replace=False)
    return sorted(ids[i] for i in picked.tolist())


def product_query_sets(
    split: Split,
    truth: Truth,
    catalog: Collection[str],
    *,
    warm_min_baskets: int = 5,
    min_relevant: int = 1,
    max_queries: int | None = None,
    seed: int = 0,
) -> ProductQuerySets:
    """Query products: catalog products with >= ``min_relevant`` relevant products in the truth (itself excluded),
    and either >= ``warm_min_baskets`` training baskets (warm) or none at all (cold).

    ``max_queries`` keeps a seeded random sample of each set.
    """
    train_matrix, _ = basket_item_matrix(split.train)
    train_counts = dict(zip(split.train.item_ids.tolist(), np.asarray(train_matrix.sum(axis=0)).ravel(), strict=True))
    warm: list[str] = []
    cold: list[str] = []
    excluded: dict[str, int] = defaultdict(int)
    catalog_set = set(catalog)
    relevant_per_row = np.diff(truth.grades.indptr)
    for position, pid in enumerate(truth.item_ids.tolist()):
        if pid not in catalog_set:
            excluded["not in the catalog"] += 1
            continue
        if relevant_per_row[position] < min_relevant:
            excluded[f"fewer than {min_relevant} relevant products"] += 1
            continue
        baskets = int(train_counts.get(pid, 0))
        if baskets == 0:
            cold.append(pid)
        elif baskets >= warm_min_baskets:
            warm.append(pid)
        else:
            excluded[f"1 to {warm_min_baskets - 1} training baskets (neither warm nor cold)"] += 1
    return ProductQuerySets(_sample(warm, max_queries, seed), _sample(cold, max_queries, seed + 1), dict(excluded))


@dataclass(frozen=True)
class UserQuery:
    """A user with history before the cut and purchases after it.

    Attributes:
        user: the user id.
        history: distinct products bought before the cut, oldest first (by first purchase).
        truth: ``{product: judged baskets holding it}`` (catalog products; history excluded unless asked not to).
    """

    user: str
    history: tuple[str, ...]
    truth: dict[str, float]


def user_queries(
    split: Split, catalog: Collection[str], *, exclude_history: bool = True, min_relevant: int = 1
) -> list[UserQuery]:
    """Users with a training history and at least ``min_relevant`` relevant products after the cut.

    Returns an empty list when the events have no user column.
    """
    train, test = split.train, split.test
    if train.user is None or test.user is None or train.user_ids is None or test.user_ids is None:
        return []
    catalog_set = set(catalog)
    histories: dict[str, list[str]] = {}
    known = train.user >= 0
    ts = train.timestamp
    order_key = ts.astype(np.int64) if ts is not None else np.arange(len(train))
    rows = np.flatnonzero(known)
    rows = rows[np.lexsort((order_key[rows], train.user[rows]))]
    for user_code, item_code in zip(train.user[rows].tolist(), train.item[rows].tolist(), strict=True):
        items = histories.setdefault(str(train.user_ids[user_code]), [])
        items.append(str(train.item_ids[item_code]))
    judged: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    test_known = np.flatnonzero(test.user >= 0)
    for user_code, item_code, basket in zip(
        test.user[test_known].tolist(), test.item[test_known].tolist(), test.basket[test_known].tolist(), strict=True
    ):
        judged[str(test.user_ids[user_code])][str(test.item_ids[item_code])].add(basket)
    out = []
    for user in sorted(histories):
        if user not in judged:
            continue
        history = tuple(dict.fromkeys(histories[user]))
        skip = set(history) if exclude_history else set()
        truth = {p: float(len(b)) for p, b in judged[user].items() if p in catalog_set and p not in skip}
        if len(truth) >= min_relevant:
            out.append(UserQuery(user, history, truth))
    return out


# ========================================================================================================= methods

#: Pair weightings evaluated as behaviour-only methods (``complements --metric X``).
BEHAVIOUR_WEIGHTINGS = ("count", "lift", "npmi", "cosine", "confidence")
_SUM_HISTORY = 50  # the complements-sum user baseline aggregates the most recent 50 distinct products
_SUM_NEIGHBOURS = 100  # ... and each one's top 100 complements by lift
_popular_cache: weakref.WeakKeyDictionary[RelatedEngine, list[str]] = weakref.WeakKeyDictionary()


def _popular_ids(engine: RelatedEngine, k: int) -> list[str]:
    cached = _popular_cache.get(engine)
    if cached is None or len(cached) < k:
        cached = [item.product_id for item in engine.popular(k=max(k, 64))]
        _popular_cache[engine] = cached
    return cached[:k]


def _popularity(engine: RelatedEngine, product_id: str, k: int) -> list[str]:
    return [p for p in _popular_ids(engine, k + 1) if p != product_id][:k]


def _similar(engine: RelatedEngine, product_id: str, k: int) -> list[str]:
    return [item.product_id for item in engine.similar(product_id, k=k)]


def _similar_batch(engine: RelatedEngine, product_ids: Sequence[str], k: int) -> list[list[str]]:
    out: list[list[str]] = []
    for start in range(0, len(product_ids), 256):
        rows = engine.similar_batch(list(product_ids[start : start + 256]), k=k)
        out.extend([item.product_id for item in row] for row in rows)
    return out


def _complements(metric: str) -> Method:
    def rank(engine: RelatedEngine, product_id: str, k: int) -> list[str]:
        try:
            return [item.product_id for item in engine.complements(product_id, k=k, metric=metric)]
        except NotFound:  # no training behaviour for this product (cold): behaviour alone has nothing to say
            return []

    return rank


def _related(mode: str) -> Method:
    def rank(engine: RelatedEngine, product_id: str, k: int) -> list[str]:
        try:
            return [item.product_id for item in engine.related(product_id, mode=mode, k=k)]  # type: ignore[attr-defined]
        except NotFound:
            return []

    return rank


#: Product-to-product methods, named as the CLI option that produces them.
METHODS: dict[str, Method] = {
    "popularity": _popularity,
    "similar": _similar,
    **{f"complements --metric {m}": _complements(m) for m in BEHAVIOUR_WEIGHTINGS},
}


def _related_batch(mode: str) -> BatchMethod:
    def rank(engine: RelatedEngine, product_ids: Sequence[str], k: int) -> list[list[str]]:
        out: list[list[str]] = []
        for start in range(0, len(product_ids), 256):
            rows = engine.related_batch(list(product_ids[start : start + 256]), mode=mode, k=k)  # type: ignore[attr-defined]
            out.extend([item.product_id for item in row] for row in rows)
        return out

    return rank


#: Batched forms of methods (optional; each must equal a loop of its single-query method).
BATCH_METHODS: dict[str, BatchMethod] = {
    "similar": _similar_batch,
    **{f"related --mode {mode}": _related_batch(mode) for mode in ("auto", "complements", "substitutes")},
}
#: Methods needing a RelatedEngine feature that this build may lack: ``{attribute: {name: method}}``.
OPTIONAL_METHODS: dict[str, dict[str, Method]] = {
    "related": {f"related --mode {mode}": _related(mode) for mode in ("auto", "complements", "substitutes")},
}


def _user_popularity(engine: RelatedEngine, history: Sequence[str], k: int) -> list[str]:
    skip = set(history)
    return [p for p in _popular_ids(engine, k + len(skip)) if p not in skip][:k]


def _user_complements_sum(engine: RelatedEngine, history: Sequence[str], k: int) -> list[str]:
    stats = engine.behaviour
    if stats is None:
        return []
    scores: dict[str, float] = defaultdict(float)
    for product in history[-_SUM_HISTORY:]:
        if product in stats:
            for n in stats.neighbours(product, k=_SUM_NEIGHBOURS, metric="lift"):
                scores[n.item] += n.lift
    skip = set(history)
    ranked = sorted((p for p in scores if p not in skip), key=lambda p: (-scores[p], p))
    return ranked[:k]


def _user_text_profile(engine: RelatedEngine, history: Sequence[str], k: int) -> list[str]:
    vectors = engine.vectors(history)
    if not vectors:
        return []
    profile = np.mean(np.stack([vectors[p] for p in history if p in vectors]), axis=0)
    norm = float(np.linalg.norm(profile))
    if norm == 0:
        return []
    skip = set(history)
    hits = engine.search_vector(profile / norm, k=k + len(skip))
    return [h.product_id for h in hits if h.product_id not in skip][:k]


def _user_recommend(engine: RelatedEngine, history: Sequence[str], k: int) -> list[str]:
    # recommend() takes the history most recent first and returns a Recommendation (items plus the path taken).
    result = engine.recommend(history=list(reversed(history)), k=k)  # type: ignore[attr-defined]
    return [item.product_id for item in getattr(result, "items", result)]


#: User-level methods: (engine, history oldest first, k) -> product ids.
USER_METHODS: dict[str, UserMethod] = {
    "popularity": _user_popularity,
    "complements-sum --metric lift": _user_complements_sum,
    "text-profile": _user_text_profile,
}
OPTIONAL_USER_METHODS: dict[str, dict[str, UserMethod]] = {"recommend": {"recommend": _user_recommend}}


def available_methods() -> dict[str, Method]:
    """:data:`METHODS` plus the optional methods whose RelatedEngine feature exists in this build."""
    methods = dict(METHODS)
    for attribute, extra in OPTIONAL_METHODS.items():
        if hasattr(RelatedEngine, attribute):
            methods.update(extra)
    return methods


def available_user_methods() -> dict[str, UserMethod]:
    """:data:`USER_METHODS` plus the optional ones whose RelatedEngine feature exists in this build."""
    methods = dict(USER_METHODS)
    for attribute, extra in OPTIONAL_USER_METHODS.items():
        if hasattr(RelatedEngine, attribute):
            methods.update(extra)
    return methods


# ========================================================================================================= config


@dataclass(frozen=True)
class EvaluationConfig:
    """Every knob of an evaluation run (all recorded in the report).

    Attributes:
        split_date / split_fraction: the cut (see :func:`temporal_split`); default 80 % of the time range.
        cold_share / seed: hide all training events of this share of warm catalog products (seeded).
        truth: the ground-truth definition.
        warm_min_baskets: a warm query product is in at least this many training baskets.
        min_relevant: a query (product or user) needs at least this many relevant products.
        ks: cut-offs of every metric.
        methods: method names to run (product and user registries); None: all available.
        min_count: ``min_count`` of the training behaviour statistics (pairs seen fewer times are ignored).
        users: run the user-level task (needs a user column).
        exclude_history: leave a user's earlier products out of their truth and lists.
        short_history: users with at most this many distinct earlier products are reported apart.
        max_queries / max_users: seeded random sample of each product / user query set (None: all).
        chart_metric: metric of the PNG chart.
    """

    split_date: datetime | None = None
    split_fraction: float = 0.8
    cold_share: float = 0.0
    seed: int = 0
    truth: TruthConfig = field(default_factory=TruthConfig)
    warm_min_baskets: int = 5
    min_relevant: int = 1
    ks: tuple[int, ...] = (10, 50)
    methods: tuple[str, ...] | None = None
    min_count: int = 2
    users: bool = True
    exclude_history: bool = True
    short_history: int = 2
    max_queries: int | None = 1000
    max_users: int | None = 1000
    chart_metric: str = "ndcg@10"

    def validate(self) -> None:
        self.truth.validate()
        if not self.ks or any(k < 1 for k in self.ks):
            raise InvalidInput(f"--k values must be >= 1, not {list(self.ks)}")
        for name in ("warm_min_baskets", "min_relevant", "min_count"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"--{name.replace('_', '-')} must be >= 1, not {getattr(self, name)}")
        for name in ("max_queries", "max_users"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInput(f"--{name.replace('_', '-')} must be >= 1, not {value}")
        if self.short_history < 0:
            raise InvalidInput(f"--short-history must be >= 0, not {self.short_history}")
        metric, _, k = self.chart_metric.partition("@")
        if metric not in (*QUERY_METRICS, "coverage") or not k.isdigit() or int(k) not in self.ks:
            raise InvalidInput(
                f"--chart-metric {self.chart_metric!r}: use METRIC@K with METRIC one of "
                f"{', '.join((*QUERY_METRICS, 'coverage'))} and K one of {list(self.ks)}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["split_date"] = None if self.split_date is None else self.split_date.isoformat()
        data["ks"] = list(self.ks)
        data["methods"] = None if self.methods is None else list(self.methods)
        return data


def _selected(config: EvaluationConfig) -> tuple[dict[str, Method], dict[str, UserMethod], list[str]]:
    methods = available_methods()
    user_methods = available_user_methods()
    notes = []
    missing = [a for a in OPTIONAL_METHODS if not hasattr(RelatedEngine, a)]
    missing += [a for a in OPTIONAL_USER_METHODS if not hasattr(RelatedEngine, a)]
    if missing:
        notes.append(
            f"not in this build of semassoc, so not evaluated: RelatedEngine.{', RelatedEngine.'.join(missing)}"
        )
    if config.methods is None:
        return methods, user_methods, notes
    unknown = [m for m in config.methods if m not in methods and m not in user_methods]
    if unknown:
        known = sorted(set(methods) | set(user_methods))
        raise InvalidInput(f"unknown method(s) {unknown}; available: {', '.join(known)}")
    return (
        {m: methods[m] for m in config.methods if m in methods},
        {m: user_methods[m] for m in config.methods if m in user_methods},
        notes,
    )


# ==================================================================================================== preparation


@dataclass
class EvaluationData:
    """Everything an evaluation needs that does not depend on the recommender: split, truth and queries.

    Outside recommenders are judged on exactly this (``benchmarks/bench_peers_eval.py``).
    """

    config: EvaluationConfig
    catalog: frozenset[str]
    split: Split
    truth: Truth
    products: ProductQuerySets
    users: list[UserQuery]
    short_users: list[UserQuery]
    notes: list[str] = field(default_factory=list)

    def query_sets(self) -> dict[str, int]:
        return {
            "warm": len(self.products.warm),
            "cold": len(self.products.cold),
            "users": len(self.users),
            "short users": len(self.short_users),
        }

    def product_truths(self, queries: Sequence[str]) -> list[dict[str, float]]:
        return [self.truth.relevant(q) for q in queries]


def catalog_ids(catalog: str | Path, columns: CatalogColumns | None = None) -> frozenset[str]:
    """The product ids of a catalog file (validated like ``index``)."""
    return frozenset(p.product_id for p in read_catalog(catalog, columns).products)


def prepare(catalog: Collection[str], events: Events, config: EvaluationConfig | None = None) -> EvaluationData:
    """Split the events, build the truth and pick product and user queries (no workspace, no model)."""
    config = config or EvaluationConfig()
    config.validate()
    split = temporal_split(
        events,
        split_date=config.split_date,
        split_fraction=config.split_fraction,
        cold_share=config.cold_share,
        seed=config.seed,
        eligible=catalog,
    )
    truth = build_truth(split.test, config.truth, catalog)
    products = product_query_sets(
        split,
        truth,
        catalog,
        warm_min_baskets=config.warm_min_baskets,
        min_relevant=config.min_relevant,
        max_queries=config.max_queries,
        seed=config.seed,
    )
    notes: list[str] = []
    users: list[UserQuery] = []
    short: list[UserQuery] = []
    if config.users:
        if events.user is None:
            notes.append("the events have no user column: the user-level task was skipped")
        else:
            everyone = user_queries(
                split, catalog, exclude_history=config.exclude_history, min_relevant=config.min_relevant
            )
            users = [u for u in everyone if len(u.history) > config.short_history]
            short = [u for u in everyone if len(u.history) <= config.short_history]
            users = _sample_users(users, config.max_users, config.seed)
            short = _sample_users(short, config.max_users, config.seed + 1)
    if split.dropped_baskets:
        notes.append(f"{split.dropped_baskets} baskets without a timestamp are in neither side")
    return EvaluationData(config, frozenset(catalog), split, truth, products, users, short, notes)


def _sample_users(users: list[UserQuery], limit: int | None, seed: int) -> list[UserQuery]:
    if limit is None or len(users) <= limit:
        return users
    picked = np.random.default_rng(seed).choice(len(users), size=limit, replace=False)
    return [users[i] for i in sorted(picked.tolist())]


# ========================================================================================================= report


@dataclass
class MethodScores:
    """One method on one query set."""

    method: str
    query_set: str
    queries: int
    metrics: dict[str, MetricValue]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "query_set": self.query_set,
            "queries": self.queries,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "seconds": round(self.seconds, 3),
        }


METRIC_DEFINITIONS = {
    "recall@K": "|top K ∩ relevant| / |relevant|",
    "ndcg@K": "DCG@K / IDCG@K, DCG@K = sum_{i<=K} grade(item_i) / log2(i + 1), grade = co-purchase count "
    "(users: judged baskets holding the product); IDCG = DCG of the relevant products sorted by grade",
    "mrr@K": "1 / rank of the first relevant product in the top K (0 if none)",
    "hit_rate@K": "1 if any relevant product is in the top K, else 0",
    "coverage@K": "distinct products recommended in any top K / catalog size (no standard error)",
    "se": "standard error over queries: sample std (n - 1) / sqrt(n)",
    "exclusion": "the query product (a user's earlier products, by default) is removed from every list and from "
    "the truth before scoring; products outside the catalog are removed from lists and truth",
}


@dataclass
class EvaluationReport:
    """What ``evaluate`` found, with everything needed to reproduce and judge it."""

    config: dict[str, Any]
    truth_definition: str
    user_truth_definition: str
    query_set_definitions: dict[str, str]
    query_sets: dict[str, int]
    excluded_queries: dict[str, int]
    data: dict[str, Any]
    results: list[MethodScores]
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    metric_definitions: dict[str, str] = field(default_factory=lambda: dict(METRIC_DEFINITIONS))

    def score(self, method: str, query_set: str, metric: str) -> MetricValue:
        """The value of one metric, e.g. ``report.score("similar", "cold", "ndcg@10")``.

        Raises:
            NotFound: the method was not run on that query set.
        """
        for r in self.results:
            if r.method == method and r.query_set == query_set:
                if metric not in r.metrics:
                    raise NotFound(f"no metric {metric!r}; have {', '.join(r.metrics)}")
                return r.metrics[metric]
        raise NotFound(f"method {method!r} was not evaluated on {query_set!r} queries")

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "truth_definition": self.truth_definition,
            "user_truth_definition": self.user_truth_definition,
            "metric_definitions": self.metric_definitions,
            "query_set_definitions": self.query_set_definitions,
            "query_sets": self.query_sets,
            "excluded_queries": self.excluded_queries,
            "data": self.data,
            "results": [r.to_dict() for r in self.results],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "notes": self.notes,
            "outputs": self.outputs,
        }


def write_report(report: EvaluationReport, path: str | Path, *, chart: bool = True) -> Path:
    """Write the JSON report, and the chart next to it (same name, ``.png``) unless ``chart`` is False."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    report.outputs["json"] = str(path)
    if chart:
        png = path.with_suffix(".png")
        write_chart(report, png, report.config.get("chart_metric", "ndcg@10"))
        report.outputs["chart"] = str(png)
    path.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_chart(report: EvaluationReport, path: str | Path, metric: str = "ndcg@10") -> Path:
    """A PNG bar chart of ``metric`` by method, warm beside cold, with standard-error bars."""
    from matplotlib.figure import Figure  # lazy: only the chart needs matplotlib (no pyplot, no global backend)

    sets = [s for s in ("warm", "cold") if report.query_sets.get(s)]
    methods = list(dict.fromkeys(r.method for r in report.results if r.query_set in sets))
    if not methods or not sets:
        raise InvalidInput("nothing to chart: no product queries were evaluated")
    figure = Figure(figsize=(9, 0.45 * len(methods) + 1.6), layout="constrained")
    axes = figure.add_subplot()
    height = 0.8 / len(sets)
    colours = {"warm": "#d9822b", "cold": "#3b78b5"}
    y = np.arange(len(methods))
    for j, query_set in enumerate(sets):
        values, errors = [], []
        for m in methods:
            try:
                v = report.score(m, query_set, metric)
            except NotFound:
                v = MetricValue(0.0)
            values.append(v.mean)
            errors.append(v.se or 0.0)
        axes.barh(
            y + (j - (len(sets) - 1) / 2) * height,
            values,
            height,
            xerr=errors,
            label=f"{query_set} ({report.query_sets[query_set]} queries)",
            color=colours[query_set],
            capsize=2,
        )
    axes.set_yticks(y, methods)
    axes.invert_yaxis()
    axes.set_xlabel(f"{metric} (mean ± standard error)")
    axes.set_title(f"{metric} by method, warm vs cold products", loc="left")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(sets), frameon=False)
    axes.grid(axis="x", alpha=0.3)
    figure.savefig(path, dpi=110)
    return Path(path)


# ========================================================================================================= runner


def _has_related_batch() -> bool:
    return hasattr(RelatedEngine, "related_batch")


def _run_products(
    engine: RelatedEngine,
    name: str,
    method: Method,
    queries: Sequence[str],
    k: int,
) -> list[list[str]]:
    batch = BATCH_METHODS.get(name)
    if batch is not None and available_methods().get(name) is method and (name == "similar" or _has_related_batch()):
        return batch(engine, queries, k)
    return [method(engine, q, k) for q in queries]


def run_methods(
    engine: RelatedEngine,
    data: EvaluationData,
    methods: Mapping[str, Method],
    user_methods: Mapping[str, UserMethod],
    progress: Progress | None = None,
) -> list[MethodScores]:
    """Run every method on every query set of ``data`` and score the lists."""
    ks = data.config.ks
    fetch = max(ks) + 1  # one more than needed: the query product is dropped when a method returns it
    results: list[MethodScores] = []
    steps = len(methods) * 2 + len(user_methods) * 2
    step = 0
    for query_set, queries in (("warm", data.products.warm), ("cold", data.products.cold)):
        truths = data.product_truths(queries)
        for name, method in methods.items():
            step += 1
            if progress:
                progress(f"{name} on {query_set}", step, steps)
            if not queries:
                continue
            started = time.perf_counter()
            lists = _run_products(engine, name, method, queries, fetch)
            seconds = time.perf_counter() - started
            scores = score_lists(lists, truths, ks, exclude=[{q} for q in queries], catalog=data.catalog)
            results.append(MethodScores(name, query_set, len(queries), scores, seconds))
    for query_set, users in (("users", data.users), ("short users", data.short_users)):
        truths = [u.truth for u in users]
        exclude = [set(u.history) if data.config.exclude_history else set() for u in users]
        for name, user_method in user_methods.items():
            step += 1
            if progress:
                progress(f"{name} on {query_set}", step, steps)
            if not users:
                continue
            started = time.perf_counter()
            lists = [user_method(engine, u.history, max(ks)) for u in users]
            seconds = time.perf_counter() - started
            scores = score_lists(lists, truths, ks, exclude=exclude, catalog=data.catalog)
            results.append(MethodScores(name, query_set, len(users), scores, seconds))
    return results


def evaluate(
    catalog: str | Path,
    events: str | Path,
    *,
    config: EvaluationConfig | None = None,
    options: LoadOptions | None = None,
    workspace: str | Path = DEFAULT_WORKSPACE,
    columns: CatalogColumns | None = None,
    model: str | None = None,
    encoder: Encoder | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
) -> EvaluationReport:
    """Evaluate every method on a temporal split of ``events`` against ``catalog``.

    The catalog is indexed in ``workspace`` (idempotent: re-runs encode nothing new; the workspace is made to hold
    exactly this catalog), behaviour is learnt from the training side only, and every method runs through one
    :class:`RelatedEngine`.

    Args:
        catalog: catalog file (as for ``semassoc index``).
        events: events file with timestamps (as for ``semassoc behavior build``).
        config: split, truth, queries, cut-offs and methods (default :class:`EvaluationConfig`).
        options: how to read the events (columns, cleaning, ``EventFilters.online_retail()``...).
        workspace: the evaluation's own workspace directory (default ``./.semassoc-eval``).
        columns: catalog column mapping.
        model: encoder for the catalog (``hashing:64`` for a fast lexical baseline); default: the workspace's, else
            the bundled all-MiniLM-L6-v2.
        encoder: an already-built encoder (overrides ``model``).
        out: write the JSON report here and the chart next to it (``.png``).
        progress: called as ``progress(stage, step, steps)``.

    Returns:
        EvaluationReport.

    Raises:
        InvalidInput: bad options, events without timestamps, a cut leaving one side empty.
    """
    from semassoc import api  # api imports heavy-ish modules; keep this module importable on its own

    config = config or EvaluationConfig()
    config.validate()
    options = options or LoadOptions()
    methods, user_methods, notes = _selected(config)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def stage(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        return now

    if progress:
        progress("loading events", 0, 1)
    loaded = options.load(events)
    ids = catalog_ids(catalog, columns)
    t = stage("load", started)
    if progress:
        progress("split and truth", 0, 1)
    data = prepare(ids, loaded, config)
    t = stage("split_and_truth", t)

    if progress:
        progress("indexing the catalog", 0, 1)
    index_report = api.index_catalog(
        catalog, workspace=workspace, columns=columns, model=model, encoder=encoder, replace=True
    )
    t = stage("index", t)
    if progress:
        progress("behaviour from the training side", 0, 1)
    with Workspace.create_or_open(workspace) as ws:
        stats = BehaviourStats.build(data.split.train, ws.behaviour_dir, min_count=config.min_count)
        ws.manifest.behaviour = {
            "load_options": options.to_dict(),
            "evaluation": {
                "training_side_before": data.split.cut.isoformat(),
                "hidden_products": len(data.split.hidden_items),
            },
        }
        ws.save()
        behaviour_info = stats.info()
    t = stage("behaviour", t)

    with Workspace.open(workspace) as ws:
        engine = RelatedEngine(ws)
        results = run_methods(engine, data, methods, user_methods, progress)
        encoder_id = ws.manifest.encoder_id
    t = stage("methods", t)
    timings["total"] = time.perf_counter() - started

    split = data.split
    time_range = loaded.time_range
    report = EvaluationReport(
        config={**config.to_dict(), "workspace": str(workspace), "load_options": options.to_dict()},
        truth_definition=config.truth.describe(),
        user_truth_definition=(
            "for a user with products before the cut, relevant = catalog products they bought after it; grade = "
            "number of their after-cut baskets holding the product; "
            + (
                "products they bought before the cut are excluded from the truth and from every list"
                if config.exclude_history
                else "products they bought before the cut stay in the truth and lists (repeat purchases count)"
            )
        ),
        query_set_definitions={
            "warm": f"catalog products in >= {config.warm_min_baskets} training baskets with >= "
            f"{config.min_relevant} relevant products",
            "cold": f"catalog products with no training events (first seen after the cut, or hidden by "
            f"--cold-share) with >= {config.min_relevant} relevant products",
            "users": f"users with > {config.short_history} distinct products before the cut and >= "
            f"{config.min_relevant} relevant products after it",
            "short users": f"users with 1 to {config.short_history} distinct products before the cut and >= "
            f"{config.min_relevant} relevant products after it",
        },
        query_sets=data.query_sets(),
        excluded_queries=data.products.excluded,
        data={
            "catalog": str(catalog),
            "catalog_sha256": file_sha256(Path(catalog)),
            "catalog_products": len(ids),
            "events": str(events),
            "events_sha256": loaded.digests[0] if loaded.digests else None,
            "events_rows_read": loaded.rows_read,
            "events_rows_used": len(loaded),
            "events_filtered": dict(loaded.filtered),
            "events_time_range": None if time_range is None else [moment.isoformat() for moment in time_range],
            "cut": split.cut.isoformat(),
            "train_rows": len(split.train),
            "train_baskets": split.train.n_baskets,
            "train_products": split.train.n_items,
            "test_rows": len(split.test),
            "test_baskets": split.test.n_baskets,
            "test_products": split.test.n_items,
            "truth_baskets": data.truth.baskets,
            "truth_baskets_skipped_as_too_large": data.truth.skipped_baskets,
            "truth_pairs": int(data.truth.grades.nnz),
            "new_products_after_cut": len(split.new_items),
            "hidden_products": len(split.hidden_items),
            "behaviour_baskets": behaviour_info.baskets,
            "behaviour_pairs": behaviour_info.pairs,
            "encoder": encoder_id,
            "encoded": index_report.encoded,
        },
        results=results,
        timings=timings,
        notes=notes + data.notes,
    )
    if out is not None:
        write_report(report, out)
    return report
