"""Co-occurrence counting: the basket x product matrix ``X`` and every pair count at once, ``C = X^T X``.

No dense product x product table is ever built; scipy is imported inside the functions (queries never load it).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from semassoc.errors import InvalidInput

if TYPE_CHECKING:
    import scipy.sparse as sp

    from semassoc.behaviour.events import Events

__all__ = ["basket_item_matrix", "pair_counts"]


def basket_item_matrix(
    events: Events,
    item_ids: np.ndarray | None = None,
    *,
    weighted: bool = False,
    event_types: Sequence[str] | None = None,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Basket x product sparse matrix, one row per non-empty basket.

    Args:
        events: loaded events.
        item_ids: sorted product vocabulary giving the column order (default: ``events.item_ids``); must contain
            every product of ``events``.
        weighted: entries are the largest event weight of the product in the basket (a purchase outweighs views
            of the same product) instead of 1.
        event_types: keep only these event types (e.g. ``["purchase"]``); ``None`` keeps all.

    Returns:
        ``(X, basket_codes)``: CSR of shape (baskets, products) with int32 ones or float64 weights, and the
        ``events.basket_ids`` code of each row.

    Example:
        >>> from semassoc.behaviour.events import events_from_baskets
        >>> X, _ = basket_item_matrix(events_from_baskets([["a", "b"], ["b"]]))
        >>> X.toarray().tolist()
        [[1, 1], [0, 1]]
    """
    import scipy.sparse as sp

    columns = events.item_ids if item_ids is None else item_ids
    code_map = np.searchsorted(columns, events.item_ids) if events.item_ids.size else np.zeros(0, np.int64)
    if events.item_ids.size and not np.array_equal(columns[np.minimum(code_map, columns.size - 1)], events.item_ids):
        raise InvalidInput("item_ids must contain every product of the events")
    item = code_map[events.item].astype(np.int64)
    basket = events.basket
    weight = events.weight
    if event_types is not None:
        wanted = np.isin(events.event_types, np.array(list(event_types), dtype=object))
        keep = wanted[events.event_type]
        item, basket, weight = item[keep], basket[keep], weight[keep]
    n_items = int(columns.shape[0])
    key = basket.astype(np.int64) * max(n_items, 1) + item
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]]) if key_sorted.size else np.zeros(0, int)
    unique_key = key_sorted[starts]
    rows_basket = unique_key // max(n_items, 1)
    cols = (unique_key % max(n_items, 1)).astype(np.int32)
    basket_codes, rows = np.unique(rows_basket, return_inverse=True)
    if weighted:
        data = np.maximum.reduceat(weight[order], starts) if starts.size else np.zeros(0)
        data = data.astype(np.float64)
    else:
        data = np.ones(cols.shape[0], dtype=np.int32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(basket_codes.shape[0], n_items))
    matrix.sum_duplicates()
    return matrix, basket_codes


def pair_counts(matrix: sp.csr_matrix, workers: int | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """``X^T X`` split into the symmetric off-diagonal pair matrix and its diagonal.

    Computed in column blocks on a thread pool (scipy's sparse kernels release the GIL), each block cut so that they
    cost about the same. Block ``X^T X[:, a:b]`` comes out with unsorted indices; converting it to CSC sorts it with
    a linear-time counting pass, and because the result is symmetric, the column blocks stacked side by side are the
    rows of the CSR matrix already sorted, with no per-row sort. Presence counts run in the narrowest integer type
    that holds the largest product count (no pair count exceeds it), which speeds the products up.

    Args:
        matrix: basket x product matrix (binary or weighted).
        workers: threads to use (default: the CPUs this process may use).

    Returns:
        ``(pairs, diagonal)``: CSR product x product, sorted indices, no diagonal entries; and the diagonal
        (product counts for a binary matrix, squared weight norms for a weighted one).

    Example:
        >>> from semassoc.behaviour.events import events_from_baskets
        >>> pairs, counts = pair_counts(basket_item_matrix(events_from_baskets([["a", "b"], ["a"]]))[0])
        >>> pairs.toarray().tolist(), counts.tolist()
        ([[0, 1], [1, 0]], [2, 1])
    """
    import scipy.sparse as sp

    matrix = matrix.tocsr()
    n_items = matrix.shape[1]
    out_dtype = matrix.dtype
    if matrix.dtype.kind in "iub":
        most = int(np.diff(matrix.tocsc().indptr).max(initial=0))
        out_dtype = np.dtype(np.int32 if most < np.iinfo(np.int32).max else np.int64)
        if most <= np.iinfo(np.uint16).max:
            matrix = matrix.astype(np.uint16)
    transposed = matrix.T.tocsr()
    columns = matrix.tocsc()
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Cost of a product's column of the product: the sizes of the baskets holding it.
    sizes = np.diff(matrix.indptr).astype(np.float64)
    cost = np.cumsum(columns.astype(bool).T.astype(np.float64) @ sizes) if n_items else np.zeros(0)
    n_blocks = max(1, min(n_items, 4 * workers))
    targets = np.linspace(0, cost[-1] if cost.size else 0, n_blocks + 1)[1:-1]
    cuts = np.unique(np.r_[0, np.searchsorted(cost, targets), n_items]).tolist()

    def block(bounds: tuple[int, int]) -> sp.csc_matrix:
        start, stop = bounds
        return (transposed @ columns[:, start:stop].tocsr()).tocsc()

    ranges = list(itertools.pairwise(cuts))
    if workers > 1 and len(ranges) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(block, ranges))
    else:
        parts = [block(r) for r in ranges]
    if not parts:
        empty = sp.csr_matrix((n_items, n_items), dtype=out_dtype)
        return empty, np.zeros(n_items, dtype=out_dtype)
    gram = sp.hstack(parts, format="csc")  # column blocks of a symmetric matrix = its sorted CSR rows
    lengths = np.diff(gram.indptr)
    rows = np.repeat(np.arange(n_items, dtype=np.int64), lengths)
    on_diagonal = gram.indices == rows
    diagonal = np.zeros(n_items, dtype=out_dtype)
    diagonal[rows[on_diagonal]] = gram.data[on_diagonal]
    keep = ~on_diagonal
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=n_items), out=indptr[1:])
    pairs = sp.csr_matrix(
        (gram.data[keep].astype(out_dtype), gram.indices[keep].astype(np.int32), indptr), shape=(n_items, n_items)
    )
    pairs.has_sorted_indices = True
    return pairs, diagonal
