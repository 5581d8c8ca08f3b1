"""Query sets: the products and users an evaluation asks about, picked from the split and the truth."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from semassoc.behaviour.cooccurrence import basket_item_matrix
from semassoc.evaluation.splits import Split
from semassoc.evaluation.truth import Truth

# ====================================================================================================== query sets


#: The product query sets, in report order.
PRODUCT_SETS = ("established", "new", "hidden")


@dataclass(frozen=True)
class ProductQuerySets:
    """Query products, kept apart by what is known about them at the cut, and how many candidates each rule left out.

    Attributes:
        established: products in at least ``warm_min_baskets`` training baskets.
        new: products truly new: first seen after the cut (no event before it at all).
        hidden: established products whose training events were hidden (``--cold-share``): a simulation of cold
            start whose partners are mostly established products, so never reported together with ``new``.
    """

    established: list[str]
    new: list[str]
    hidden: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)

    def by_name(self) -> dict[str, list[str]]:
        """``{"established": [...], "new": [...], "hidden": [...]}``."""
        return {"established": self.established, "new": self.new, "hidden": self.hidden}


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
    put in exactly one set: ``new`` (first seen after the cut), ``hidden`` (events hidden by the split), or
    ``established`` (>= ``warm_min_baskets`` training baskets); products in 1 to ``warm_min_baskets - 1`` training
    baskets are in none.

    ``max_queries`` keeps a seeded random sample of each set.
    """
    train_matrix, _ = basket_item_matrix(split.train)
    train_counts = dict(zip(split.train.item_ids.tolist(), np.asarray(train_matrix.sum(axis=0)).ravel(), strict=True))
    sets: dict[str, list[str]] = {name: [] for name in PRODUCT_SETS}
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
        if pid in split.new_items:
            sets["new"].append(pid)
        elif pid in split.hidden_items:
            sets["hidden"].append(pid)
        elif baskets >= warm_min_baskets:
            sets["established"].append(pid)
        else:
            excluded[f"1 to {warm_min_baskets - 1} training baskets (neither established nor new)"] += 1
    return ProductQuerySets(
        _sample(sets["established"], max_queries, seed),
        _sample(sets["new"], max_queries, seed + 1),
        _sample(sets["hidden"], max_queries, seed + 2),
        dict(excluded),
    )


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
