"""Related-product queries over one open workspace: text neighbours (Qdrant), behavioural neighbours (pair
statistics), popularity, and their fusion (see :mod:`semassoc.fusion`).

:class:`RelatedEngine` keeps the store and the behaviour statistics open, so batch jobs and the evaluation harness
run many queries without reopening anything; :mod:`semassoc.api` opens a workspace per call and delegates here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from semassoc.behaviour import METRICS, BehaviourStats, Neighbour
from semassoc.errors import InvalidInput, NotFound
from semassoc.results import ScoredItem, public_attributes
from semassoc.store import Hit, ProductFilter
from semassoc.workspace import Workspace


def check_k(k: int) -> None:
    """Refuse a non-positive list length."""
    if k < 1:
        raise InvalidInput(f"--k must be at least 1, not {k}")


def text_item(hit: Hit, explanation: str | None = None) -> ScoredItem:
    """A text-similarity hit as a result."""
    return ScoredItem(
        product_id=hit.product_id,
        title=str(hit.payload.get("title", "")),
        score=hit.score,
        signals={"text": hit.score},
        explanation=explanation or f"text similarity {hit.score:.2f}",
        attributes=public_attributes(hit.payload),
    )


def behaviour_item(n: Neighbour, metric: str, payload: dict[str, Any] | None) -> ScoredItem:
    """A bought-together neighbour as a result."""
    return ScoredItem(
        product_id=n.item,
        title=str((payload or {}).get("title", "")),
        score=float(getattr(n, metric)),
        signals={"count": float(n.count), "confidence": n.confidence, "lift": n.lift, "npmi": n.npmi},
        explanation=f"bought together in {n.count} baskets (lift {n.lift:.1f}, confidence {n.confidence:.2f})",
        attributes=public_attributes(payload or {}),
    )


class RelatedEngine:
    """Queries on an open workspace.

    Example:
        >>> with Workspace.open(".semassoc") as ws:  # doctest: +SKIP
        ...     engine = RelatedEngine(ws)
        ...     engine.similar("85123A", k=5)
    """

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._stats: BehaviourStats | None = None
        self._stats_checked = False

    # -- parts ----------------------------------------------------------------------------------------------------
    @property
    def has_catalog(self) -> bool:
        """Whether a catalog was indexed (there are product vectors)."""
        return self.ws.manifest.encoder_id is not None

    @property
    def behaviour(self) -> BehaviourStats | None:
        """The behaviour statistics, or None when none were built."""
        if not self._stats_checked:
            self._stats_checked = True
            if (self.ws.behaviour_dir / "manifest.json").is_file():
                self._stats = BehaviourStats.open(self.ws.behaviour_dir)
        return self._stats

    def require_behaviour(self) -> BehaviourStats:
        stats = self.behaviour
        if stats is None:
            raise NotFound(f"no behaviour statistics in {self.ws.path} (run `semassoc behavior build EVENTS` first)")
        return stats

    def vectors(self, product_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of the products that are indexed."""
        stored = self.ws.store.retrieve(list(product_ids), with_vectors=True)
        return {pid: p.vector for pid, p in stored.items() if p.vector is not None}

    def payloads(self, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored payloads of the products that are indexed (empty without a catalog)."""
        if not self.has_catalog or not product_ids:
            return {}
        return {pid: p.payload for pid, p in self.ws.store.retrieve(list(product_ids)).items()}

    def basket_count(self, product_id: str) -> int:
        """Baskets holding the product in the behaviour statistics (0 when unknown or not built)."""
        stats = self.behaviour
        return stats.item_count(product_id) if stats is not None and product_id in stats else 0

    # -- text -----------------------------------------------------------------------------------------------------
    def similar(
        self, product_id: str, *, k: int = 10, filter: ProductFilter | None = None, exact: bool = False
    ) -> list[ScoredItem]:
        """Products whose text is closest to ``product_id``'s (itself excluded)."""
        return self.similar_batch([product_id], k=k, filter=filter, exact=exact)[0]

    def similar_batch(
        self, product_ids: Sequence[str], *, k: int = 10, filter: ProductFilter | None = None, exact: bool = False
    ) -> list[list[ScoredItem]]:
        """:meth:`similar` for many products in one batched store query (same results as a loop)."""
        check_k(k)
        found = self.vectors(product_ids)
        missing = [p for p in product_ids if p not in found]
        if missing:
            raise NotFound(f"product '{missing[0]}' is not in the workspace {self.ws.path}")
        base = filter or ProductFilter()
        hits = self.ws.store.search_batch(
            np.stack([found[p] for p in product_ids]),
            limit=k,
            filters=[base.with_excluded([p]) for p in product_ids],
            exact=exact,
        )
        return [[text_item(h) for h in row] for row in hits]

    def search_vector(
        self, vector: np.ndarray, *, k: int = 10, filter: ProductFilter | None = None, exact: bool = False
    ) -> list[Hit]:
        """Nearest products to any vector (a query, a user profile)."""
        return self.ws.store.search(vector, limit=k, filter=filter, exact=exact)

    # -- behaviour ------------------------------------------------------------------------------------------------
    def complements(
        self,
        product_id: str,
        *,
        k: int = 10,
        metric: str = "lift",
        min_count: int | None = None,
        filter: ProductFilter | None = None,
    ) -> list[ScoredItem]:
        """Products bought together with ``product_id``, best first by ``metric``.

        Filters on category, brand, price or stock use the indexed catalog: products without those attributes fail.
        """
        check_k(k)
        if metric not in METRICS:
            raise InvalidInput(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        stats = self.require_behaviour()
        flt = (filter or ProductFilter()).with_excluded([product_id])
        needs_payload = flt != ProductFilter(exclude=flt.exclude)
        wanted = stats.info().items if needs_payload else k + len(flt.exclude)
        candidates = [
            n
            for n in stats.neighbours(product_id, k=wanted, metric=metric, min_count=min_count)
            if n.item not in flt.exclude
        ]
        payloads = self.payloads([n.item for n in (candidates if needs_payload else candidates[:k])])
        if needs_payload:
            candidates = [n for n in candidates if flt.matches(payloads.get(n.item, {"product_id": n.item}))]
        return [behaviour_item(n, metric, payloads.get(n.item)) for n in candidates[:k]]

    def popular(self, *, k: int = 10, filter: ProductFilter | None = None) -> list[ScoredItem]:
        """The products in most baskets (the popularity baseline and the cold-user fallback)."""
        check_k(k)
        stats = self.require_behaviour()
        ids, counts = stats.item_ids_and_counts()
        order = np.lexsort((ids, -counts))
        flt = filter or ProductFilter()
        needs_payload = flt != ProductFilter(exclude=flt.exclude)
        out: list[ScoredItem] = []
        chunk = max(4 * k, 64)
        for start in range(0, order.shape[0], chunk):
            block = [str(ids[i]) for i in order[start : start + chunk].tolist()]
            block = [p for p in block if p not in flt.exclude]
            payloads = self.payloads(block)
            for pid in block:
                payload = payloads.get(pid, {"product_id": pid})
                if needs_payload and not flt.matches(payload):
                    continue
                count = float(counts[int(np.searchsorted(ids, pid))])
                out.append(
                    ScoredItem(
                        pid,
                        str(payload.get("title", "")),
                        count,
                        {"popularity": count},
                        f"in {count:.0f} baskets",
                        public_attributes(payload),
                    )
                )
                if len(out) == k:
                    return out
        return out
