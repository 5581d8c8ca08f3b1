"""Metric functions at a cut-off K (Recall, NDCG, MRR, hit rate, coverage), standard errors, and scoring
many ranked lists against graded truth. No dependency on semassoc beyond errors: outside recommenders are scored by
exactly this code (``benchmarks/bench_peers_eval.py``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from semassoc.errors import InvalidInput

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


def per_query_scores(
    lists: Sequence[Sequence[str]],
    truths: Sequence[Mapping[str, float]],
    ks: Sequence[int],
    *,
    exclude: Sequence[Collection[str]] | None = None,
    catalog: Collection[str] | None = None,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each query's value of every metric at every cut-off (``{"ndcg@10": [one value per query], ...}``), and the
    coverage of all lists at each cut-off (``{"coverage@10": share}``; empty without ``catalog``).

    Lists are cleaned as :func:`score_lists` describes. Keeping the values per query is what makes pooling over
    cuts and paired differences between methods possible (:func:`paired_difference`).
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
    values: dict[str, list[float]] = {}
    coverage: dict[str, float] = {}
    for k in ks:
        for name, fn in QUERY_METRICS.items():
            values[f"{name}@{k}"] = [fn(ranked, grades, k) for ranked, grades in zip(cleaned, graded, strict=True)]
        if catalog is not None:
            coverage[f"coverage@{k}"] = catalog_coverage(cleaned, len(catalog), k)
    return values, coverage


def summarise(values: Sequence[float]) -> MetricValue:
    """Mean over queries and its standard error (mean 0 over no queries).

    Example:
        >>> str(summarise([0.0, 1.0, 0.0, 1.0]))
        '0.5000 ± 0.2887'
    """
    return MetricValue(float(np.mean(values)) if len(values) else 0.0, standard_error(values))


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> MetricValue:
    """Mean of the per-query differences ``values[i] - baseline[i]`` and the standard error of that mean.

    Both methods are judged on the same queries, so the query-to-query spread cancels out: the standard error of
    the difference is usually far smaller than either method's own.

    Example:
        >>> d = paired_difference([0.5, 0.7, 0.9], [0.4, 0.5, 0.9])  # differences 0.1, 0.2, 0.0
        >>> round(d.mean, 4), round(d.se, 4)  # sd(0.1, 0.2, 0) = 0.1; 0.1 / sqrt(3)
        (0.1, 0.0577)

    Raises:
        InvalidInput: the two lists are not over the same number of queries.
    """
    if len(values) != len(baseline):
        raise InvalidInput(f"paired difference needs the same queries: {len(values)} values vs {len(baseline)}")
    diff = np.asarray(values, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    return summarise(diff.tolist())


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
    values, coverage = per_query_scores(lists, truths, ks, exclude=exclude, catalog=catalog)
    out: dict[str, MetricValue] = {}
    for k in ks:
        for name in QUERY_METRICS:
            out[f"{name}@{k}"] = summarise(values[f"{name}@{k}"])
        if f"coverage@{k}" in coverage:
            out[f"coverage@{k}"] = MetricValue(coverage[f"coverage@{k}"])
    return out
