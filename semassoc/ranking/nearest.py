"""The nearest products of query products by text, as ids and cosines in an order that does not depend on how the store
stored them (ties by id): the text candidates of ranked lists."""

from __future__ import annotations

import numpy as np

from semassoc.store.base import ProductFilter, VectorStore


def by_score(ids: list[str], sims: list[float], limit: int) -> tuple[list[str], list[float]]:
    """The first ``limit`` of a store's hits by cosine, ties by id (a store orders tied hits as it stored them)."""
    pairs = sorted(zip(ids, sims, strict=True), key=lambda t: (-t[1], t[0]))[:limit]
    return [i for i, _ in pairs], [s for _, s in pairs]


def nearest_ids(
    store: VectorStore, part: list[str], vectors: dict[str, np.ndarray], base: ProductFilter, limit: int
) -> list[tuple[list[str], list[float]]]:
    """The ``limit`` nearest products of each of ``part`` under ``base``, the product itself and ``base``'s
    exclusions left out: (ids, cosines), best first, ties by id.

    On a store whose searches are exact (no HNSW index), searched without the exclusions for ``limit`` + their
    number and the excluded dropped afterwards: Qdrant's exclusion filter made each search about twice as slow.
    That gives the same nearest products as a search with the exclusions, except perhaps which of the products
    tied with the last one are kept, and ranked lists drop those (``serve.cut_ties``). A product tied with the
    query itself (a duplicate, cosine 1) is kept either way; the query product is dropped by id wherever it
    falls, and when ties put it beyond the searched ones, the searched ones are the nearest without it."""
    vecs = np.stack([vectors[p] for p in part])
    if not store.exact_by_default():
        rows = store.search_ids_batch(vecs, limit=limit, filters=[base.with_excluded([p]) for p in part])
        return [by_score(ids, sims, limit) for ids, sims in rows]
    excluded = set(base.exclude)
    flt = base.without_exclusions()
    rows = store.search_ids_batch(
        vecs, limit=limit + len(excluded) + 1, filters=[None if flt == ProductFilter() else flt] * len(part)
    )
    out = []
    for pid, (ids, sims) in zip(part, rows, strict=True):
        keep = [i for i, name in enumerate(ids) if name != pid and name not in excluded]
        if len(keep) < len(ids):
            ids, sims = [ids[i] for i in keep], [sims[i] for i in keep]
        out.append(by_score(ids, sims, limit))
    return out
