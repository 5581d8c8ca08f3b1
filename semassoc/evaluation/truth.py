"""The ground truth: graded relevance read off the judged side's baskets (co-purchase beyond chance)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from semassoc.behaviour import weightings
from semassoc.behaviour.cooccurrence import basket_item_matrix, pair_counts
from semassoc.behaviour.events import Events
from semassoc.errors import InvalidInput

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
        lift = weightings.lift(pair, counts[pairs.row], counts[pairs.col], n)
        keep &= lift >= config.min_lift
    if catalog is not None:
        in_catalog = np.isin(judged.item_ids, np.array(sorted(catalog), dtype=object))
        keep &= in_catalog[pairs.col]
    grades = sp.csr_matrix(
        (pair[keep], (pairs.row[keep], pairs.col[keep])), shape=(judged.n_items, judged.n_items), dtype=np.float64
    )
    grades.sort_indices()
    return Truth(judged.item_ids, grades, n, int((~keep_rows).sum()))
