"""The one result shape every query returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semassoc.behaviour.stats import Neighbour
    from semassoc.store.base import Hit

#: Payload keys that are semassoc's bookkeeping, not product attributes.
INTERNAL_KEYS = frozenset({"_text_hash"})


@dataclass(frozen=True)
class ScoredItem:
    """A recommended or related product.

    Attributes:
        product_id: The product.
        title: Its title, for display.
        score: The final score the list is ranked by (higher is better).
        signals: Per-signal scores that produced ``score`` (e.g. ``{"text": 0.83}``).
        explanation: One line saying why the product is here.
        attributes: The product's stored fields (category, brand, price, in_stock and other columns).
    """

    product_id: str
    title: str
    score: float
    signals: dict[str, float] = field(default_factory=dict)
    explanation: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``--json`` prints)."""
        return {
            "product_id": self.product_id,
            "title": self.title,
            "score": round(self.score, 6),
            "signals": {k: round(v, 6) for k, v in self.signals.items()},
            "explanation": self.explanation,
            "attributes": self.attributes,
        }


class DeferredItem:
    """A row of a list whose :class:`ScoredItem` (title, signals, explanation, attributes) is built only when asked
    for: ``recommend`` ranks many related rows and shows a few."""

    __slots__ = ("_built", "_make", "product_id", "score")

    def __init__(self, product_id: str, score: float, make: Callable[[], ScoredItem]) -> None:
        self.product_id = product_id
        self.score = score
        self._make = make
        self._built: ScoredItem | None = None

    @classmethod
    def of(cls, item: ScoredItem) -> DeferredItem:
        """An item already built."""
        deferred = cls(item.product_id, item.score, lambda: item)
        deferred._built = item
        return deferred

    def item(self) -> ScoredItem:
        if self._built is None:
            self._built = self._make()
        return self._built


def public_attributes(payload: dict[str, Any]) -> dict[str, Any]:
    """A stored payload as flat attributes: without the id, the title and semassoc's bookkeeping keys, with the
    catalog's extra columns (stored under ``attributes``) beside the standard fields."""
    flat = dict(payload.get("attributes") or {})
    flat.update(
        (k, v) for k, v in payload.items() if k not in INTERNAL_KEYS and k not in ("product_id", "title", "attributes")
    )
    return flat


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
