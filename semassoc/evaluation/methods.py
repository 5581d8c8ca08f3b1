"""The methods an evaluation compares, named exactly as the CLI/API option that produces them.

Add one in one line: ``METHODS["name"] = lambda engine, product_id, k: [...]`` (product ids, best first)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

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
    return [item.product_id for item in engine.popular(k=k, filter=ProductFilter(exclude=[product_id]))]


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
        return _chunked(
            lambda e, ids, n: [[i.product_id for i in row] for row in e.related_batch(ids, mode=mode, k=n)],
            engine,
            product_ids,
            k,
        )

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
    return [item.product_id for item in engine.popular(k=k, filter=ProductFilter(exclude=list(history)))]


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
