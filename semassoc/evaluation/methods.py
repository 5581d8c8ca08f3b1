"""The methods an evaluation compares, named exactly as the CLI/API option that produces them.

Add one in one line: ``METHODS["name"] = lambda engine, product_id, k: [...]`` (product ids, best first)."""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from semassoc.errors import NotFound
from semassoc.ranking.engine import RelatedEngine
from semassoc.ranking.fusion import FusionWeights
from semassoc.store.base import ProductFilter

#: (engine, query product, k) -> product ids, best first.
Method = Callable[[RelatedEngine, str, int], list[str]]
#: (engine, query products, k) -> one list per query; must equal a loop of the single-query method.
BatchMethod = Callable[[RelatedEngine, Sequence[str], int], list[list[str]]]
#: (engine, the user's history oldest first, k) -> product ids, best first.
UserMethod = Callable[[RelatedEngine, Sequence[str], int], list[str]]

# ========================================================================================================= methods

#: Pair weightings evaluated as behaviour-only methods (``complements --metric X``).
BEHAVIOUR_WEIGHTINGS = ("count", "lift", "npmi", "cosine", "confidence")
_SUM_HISTORY = 50  # the complements-sum user baseline aggregates the most recent 50 distinct products
_SUM_NEIGHBOURS = 100  # ... and each one's top 100 complements by lift


def _popularity(engine: RelatedEngine, product_id: str, k: int) -> list[str]:
    return [item.product_id for item in engine.popular(k=k, filter=ProductFilter(exclude=(product_id,)))]


def _similar(engine: RelatedEngine, product_id: str, k: int) -> list[str]:
    return [item.product_id for item in engine.similar(product_id, k=k)]


def _chunked(run: BatchMethod, engine: RelatedEngine, product_ids: Sequence[str], k: int) -> list[list[str]]:
    """A batched engine call in chunks of 256 queries (bounded memory per store query)."""
    out: list[list[str]] = []
    for start in range(0, len(product_ids), 256):
        out.extend(run(engine, list(product_ids[start : start + 256]), k))
    return out


def _similar_batch(engine: RelatedEngine, product_ids: Sequence[str], k: int) -> list[list[str]]:
    return _chunked(
        lambda e, ids, n: [[i.product_id for i in row] for row in e.similar_batch(ids, k=n)], engine, product_ids, k
    )


def _complements(metric: str) -> Method:
    def rank(engine: RelatedEngine, product_id: str, k: int) -> list[str]:
        try:
            return [item.product_id for item in engine.complements(product_id, k=k, metric=metric)]
        except NotFound:  # no training behaviour for this product (cold): behaviour alone has nothing to say
            return []

    return rank


def _ranker_off(engine: RelatedEngine) -> dict[str, Any]:
    """``{"ranker": False}`` when this build's engine can switch a fitted ranker off (else there is no ranker)."""
    return {"ranker": False} if "ranker" in inspect.signature(engine.related_batch).parameters else {}


def _related_batch(mode: str, *, fusion: bool = False) -> BatchMethod:
    def run(engine: RelatedEngine, ids: Sequence[str], k: int) -> list[list[str]]:
        extra = _ranker_off(engine) if fusion else {}
        return [[i.product_id for i in row] for row in engine.related_batch(ids, mode=mode, k=k, **extra)]

    def rank(engine: RelatedEngine, product_ids: Sequence[str], k: int) -> list[list[str]]:
        return _chunked(run, engine, product_ids, k)

    return rank


def _single(batch: BatchMethod) -> Method:
    """The one-query form of a batched method (queries unknown to the workspace get an empty list)."""

    def rank(engine: RelatedEngine, product_id: str, k: int) -> list[str]:
        try:
            return batch(engine, [product_id], k)[0]
        except NotFound:
            return []

    return rank


#: Candidates each signal of ``hybrid-naive`` contributes.
NAIVE_POOL = 100
#: Baskets at which ``hybrid-naive`` weighs behaviour and text equally (weight n / (n + 20) on behaviour).
NAIVE_HALF_POINT = 20.0


def count_log_lift(engine: RelatedEngine, product_id: str, pool: int = NAIVE_POOL) -> dict[str, float]:
    """The product's co-occurrence neighbours scored ``count x max(ln lift, 0)`` (the strongest ``pool``); empty
    for a product without training behaviour."""
    stats = engine.behaviour
    if stats is None or product_id not in stats:
        return {}
    codes, pair, right = stats.neighbour_codes(product_id)
    if codes.size == 0:
        return {}
    lift = pair * stats.info().baskets / (stats.item_count(product_id) * right.astype(np.float64))
    score = pair * np.log(np.maximum(lift, 1.0))
    keep = np.flatnonzero(score > 0)
    if keep.size > pool:
        keep = keep[np.argpartition(-score[keep], pool - 1)[:pool]]
    return dict(zip(stats.names_of(codes[keep]), score[keep].tolist(), strict=True))


def _ranked(scores: dict[str, float], k: int) -> list[str]:
    return [p for p, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def _count_log_lift(engine: RelatedEngine, product_id: str, k: int) -> list[str]:
    return _ranked(count_log_lift(engine, product_id, max(k, NAIVE_POOL)), k)


def _min_max(scores: dict[str, float]) -> dict[str, float]:
    """Scores scaled to [0, 1] over one query's candidates (all equal: all 1)."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    return {p: (v - lo) / (hi - lo) if hi > lo else 1.0 for p, v in scores.items()}


def hybrid_naive(text: dict[str, float], behaviour: dict[str, float], baskets: int) -> dict[str, float]:
    """The naive hybrid of issue 10: text similarity and ``count x log-lift``, each min-max scaled over the query's
    candidates (a candidate missing from a signal scores 0 there), mixed with weight ``n / (n + 20)`` on behaviour,
    ``n`` = the query's training baskets.

    Example:
        >>> hybrid_naive({"a": 0.9, "b": 0.5}, {"b": 10.0, "c": 2.0}, 20)  # weight 0.5 on each
        {'a': 0.5, 'b': 0.5, 'c': 0.0}
    """
    w = baskets / (baskets + NAIVE_HALF_POINT)
    t, b = _min_max(text), _min_max(behaviour)
    return {p: (1 - w) * t.get(p, 0.0) + w * b.get(p, 0.0) for p in sorted({*t, *b})}


def _hybrid_naive_batch(engine: RelatedEngine, product_ids: Sequence[str], k: int) -> list[list[str]]:
    found = engine.vectors(product_ids) if engine.has_catalog else {}
    with_text = [p for p in product_ids if p in found]
    text_rows = dict(zip(with_text, _similar_scores(engine, with_text, NAIVE_POOL), strict=True))
    out = []
    for pid in product_ids:
        scores = hybrid_naive(text_rows.get(pid, {}), count_log_lift(engine, pid), engine.basket_count(pid))
        scores.pop(pid, None)
        out.append(_ranked(scores, k))
    return out


def _similar_scores(engine: RelatedEngine, product_ids: list[str], k: int) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    for start in range(0, len(product_ids), 256):
        rows = engine.similar_batch(product_ids[start : start + 256], k=k)
        out.extend({i.product_id: i.score for i in row} for row in rows)
    return out


#: Batched forms of methods (each equals a loop of its single-query method).
BATCH_METHODS: dict[str, BatchMethod] = {
    "similar": _similar_batch,
    "related": _related_batch("auto"),
    "related-fusion": _related_batch("auto", fusion=True),
    "related --mode substitutes": _related_batch("substitutes"),
    "related --mode complements": _related_batch("complements"),
    "hybrid-naive": _hybrid_naive_batch,
}

#: Product-to-product methods: named as the CLI option that produces them, or as in docs/evaluation.md.
METHODS: dict[str, Method] = {
    "popularity": _popularity,
    "similar": _similar,
    **{f"complements --metric {m}": _complements(m) for m in BEHAVIOUR_WEIGHTINGS},
    "count x log-lift": _count_log_lift,
    "related": _single(BATCH_METHODS["related"]),
    "related-fusion": _single(BATCH_METHODS["related-fusion"]),
    "related --mode substitutes": _single(BATCH_METHODS["related --mode substitutes"]),
    "related --mode complements": _single(BATCH_METHODS["related --mode complements"]),
    "hybrid-naive": _single(BATCH_METHODS["hybrid-naive"]),
}
#: The behaviour-only methods (the "best behaviour-only list" of a comparison is the best of these).
BEHAVIOUR_ONLY = (*(f"complements --metric {m}" for m in BEHAVIOUR_WEIGHTINGS), "count x log-lift")


def _user_popularity(engine: RelatedEngine, history: Sequence[str], k: int) -> list[str]:
    return [item.product_id for item in engine.popular(k=k, filter=ProductFilter(exclude=tuple(history)))]


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


#: ``recommend`` with text alone: the engine's own user profile (mean of the history's vectors), nothing else.
_TEXT_ONLY = FusionWeights(text=1.0, text_warm=1.0, behaviour=0.0, transfer=0.0, popularity=0.0)


def _user_text_profile(engine: RelatedEngine, history: Sequence[str], k: int) -> list[str]:
    result = engine.recommend(history=list(reversed(history)), k=k, weights=_TEXT_ONLY)
    return [item.product_id for item in result.items]


def _user_recommend(engine: RelatedEngine, history: Sequence[str], k: int) -> list[str]:
    # recommend() takes the history most recent first and returns a Recommendation (items plus the path taken).
    return [item.product_id for item in engine.recommend(history=list(reversed(history)), k=k).items]


def _user_recommend_fusion(engine: RelatedEngine, history: Sequence[str], k: int) -> list[str]:
    # recommend on the profile fusion even when a ranker was fitted (the comparison for recommend's ranked path).
    result = engine.recommend(history=list(reversed(history)), k=k, ranker=False)
    return [item.product_id for item in result.items]


#: User-level methods: (engine, history oldest first, k) -> product ids.
USER_METHODS: dict[str, UserMethod] = {
    "popularity": _user_popularity,
    "complements-sum --metric lift": _user_complements_sum,
    "text-profile": _user_text_profile,
    "recommend": _user_recommend,
    "recommend-fusion": _user_recommend_fusion,
}


def available_methods() -> dict[str, Method]:
    """The product methods (:data:`METHODS`, including any added at run time)."""
    return dict(METHODS)


def available_user_methods() -> dict[str, UserMethod]:
    """The user methods (:data:`USER_METHODS`, including any added at run time)."""
    return dict(USER_METHODS)
