"""Product vectors in Qdrant: the store protocol and the types both backends share.

- :class:`EmbeddedStore`: the real Qdrant engine in-process (``qdrant-edge-py``), files inside the workspace.
  All calls to that 0.x API live in this module.
- :class:`RemoteStore`: a Qdrant server or distributed cluster through ``qdrant-client`` (also its ``:memory:``
  mode, which speaks the same client API and is what the contract tests use).

Points get deterministic UUIDs derived from the product id; the product id and its attributes are the payload.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from semassoc.errors import InvalidInput

VECTOR_NAME = "text"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/semassoc/semassoc/product")
#: Payload fields that get an index (and so can be filtered on cheaply).
PAYLOAD_INDEXES = {
    "category": "keyword",
    "brand": "keyword",
    "price": "float",
    "in_stock": "bool",
}


@functools.lru_cache(maxsize=1 << 16)
def point_id(product_id: str) -> str:
    """The Qdrant point id of a product: a UUID5 of its id, the same on every machine and run."""
    return str(uuid.uuid5(_NAMESPACE, product_id))


@dataclass(frozen=True)
class ProductFilter:
    """Conditions a returned product must meet. Empty fields do not filter."""

    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise InvalidInput(f"--min-price {self.min_price:g} is above --max-price {self.max_price:g}")

    def without_exclusions(self) -> ProductFilter:
        """The same conditions on attributes, excluding no product."""
        return ProductFilter(self.categories, self.brands, self.min_price, self.max_price, self.in_stock)

    def with_excluded(self, product_ids: Sequence[str]) -> ProductFilter:
        """The same filter also excluding ``product_ids``."""
        merged = tuple(dict.fromkeys((*self.exclude, *product_ids)))
        return ProductFilter(self.categories, self.brands, self.min_price, self.max_price, self.in_stock, merged)

    def matches(self, payload: dict[str, Any]) -> bool:
        """Whether a payload passes the filter (used where candidates come from outside the vector store)."""
        if self.categories and payload.get("category") not in self.categories:
            return False
        if self.brands and payload.get("brand") not in self.brands:
            return False
        price = payload.get("price")
        if self.min_price is not None and (price is None or price < self.min_price):
            return False
        if self.max_price is not None and (price is None or price > self.max_price):
            return False
        if self.in_stock is not None and payload.get("in_stock") is not self.in_stock:
            return False
        return payload.get("product_id") not in self.exclude


@dataclass(frozen=True)
class StoredProduct:
    """A product as stored: payload, and the vector when asked for."""

    product_id: str
    payload: dict[str, Any]
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Hit:
    """A search result: product id, cosine similarity and payload."""

    product_id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


class VectorStore(Protocol):
    """What semassoc needs from a vector store. Both backends pass the same contract tests."""

    location: str

    def dim(self) -> int | None:
        """Vector dimension of the collection, or None before the first upsert."""
        ...

    def count(self) -> int: ...

    def upsert(self, product_ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        """Insert or replace products (idempotent: the same call twice leaves the same state)."""
        ...

    def set_payloads(self, product_ids: Sequence[str], payloads: Sequence[dict[str, Any]]) -> None:
        """Replace the payload of existing products, keeping their vectors."""
        ...

    def delete(self, product_ids: Sequence[str]) -> None: ...

    def retrieve(self, product_ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, StoredProduct]:
        """The stored products among ``product_ids`` (unknown ids are absent from the result)."""
        ...

    def search(
        self, vector: np.ndarray, *, limit: int, filter: ProductFilter | None = None, exact: bool = False
    ) -> list[Hit]:
        """Nearest products by cosine similarity, best first."""
        ...

    def search_batch(
        self,
        vectors: np.ndarray,
        *,
        limit: int,
        filters: Sequence[ProductFilter | None],
        exact: bool = False,
        payloads: bool = True,
    ) -> list[list[Hit]]:
        """One :meth:`search` per row of ``vectors``, planned together. ``payloads=False``: each hit's payload holds
        only its ``product_id`` (same hits and scores; for callers that look payloads up themselves)."""
        ...

    def search_ids_batch(
        self, vectors: np.ndarray, *, limit: int, filters: Sequence[ProductFilter | None], exact: bool = False
    ) -> list[tuple[list[str], list[float]]]:
        """:meth:`search_batch` reduced to each row's product ids and cosines, best first (no payloads, no
        :class:`Hit` objects: what serving's text searches need)."""
        ...

    def exact_by_default(self) -> bool:
        """Whether every search is exact even without ``exact=True`` (no approximate index built: each search scans
        every vector). Then the nearest ``limit + n`` products under a filter, less ``n`` products dropped
        afterwards, are the nearest ``limit`` under the filter excluding them (up to which of the products tied at
        the limit are kept)."""
        ...

    def iter_payloads(self, keys: Sequence[str] | None = None, batch: int = 2048) -> Iterator[dict[str, Any]]:
        """Every product's payload (only ``keys`` when given), in no particular order."""
        ...

    def optimize(self) -> bool:
        """Build the HNSW index (embedded store); returns whether anything was done."""
        ...

    def drop(self) -> None:
        """Delete every product and the collection itself (used when the encoder, and so the dimension, changes)."""
        ...

    def close(self) -> None: ...


def _check_dim(dim: int | None, vectors: np.ndarray) -> None:
    if dim is not None and vectors.shape[1] != dim:
        raise InvalidInput(f"vectors have dimension {vectors.shape[1]} but the collection holds {dim}-d vectors")


def _stored(payload: dict[str, Any], vector: Any, with_vectors: bool) -> StoredProduct:
    if not with_vectors:
        return StoredProduct(payload["product_id"], payload)
    raw = vector[VECTOR_NAME] if isinstance(vector, dict) else vector
    return StoredProduct(payload["product_id"], payload, np.asarray(raw, dtype=np.float32))
