"""Product vectors in Qdrant: one interface, two backends.

- :class:`EmbeddedStore`: the real Qdrant engine in-process (``qdrant-edge-py``), files inside the workspace.
  All calls to that 0.x API live in this module.
- :class:`RemoteStore`: a Qdrant server or distributed cluster through ``qdrant-client`` (also its ``:memory:``
  mode, which speaks the same client API and is what the contract tests use).

Points get deterministic UUIDs derived from the product id; the product id and its attributes are the payload.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from semassoc.errors import InvalidInput, StoreBusy, StoreUnavailable

VECTOR_NAME = "text"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/semassoc/semassoc/product")
#: Payload fields that get an index (and so can be filtered on cheaply).
PAYLOAD_INDEXES = {
    "category": "keyword",
    "brand": "keyword",
    "price": "float",
    "in_stock": "bool",
}


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
        self, vectors: np.ndarray, *, limit: int, filters: Sequence[ProductFilter | None], exact: bool = False
    ) -> list[list[Hit]]:
        """One :meth:`search` per row of ``vectors``, planned together."""
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


# ---------------------------------------------------------------------------------------------------------------
# Embedded: qdrant-edge-py

# qdrant-edge-py 0.9.0 passes a Python bool in MatchValue as an integer, so a condition on a boolean payload field
# never matches (checked: MatchValue(True) on {"in_stock": true} returns nothing, indexed or not). The embedded
# store therefore keeps a hidden integer copy of in_stock, filters on it, and strips it from what it returns.
_EDGE_FLAG = "_in_stock"


def _to_edge(payload: dict[str, Any]) -> dict[str, Any]:
    flag = payload.get("in_stock")
    return {**payload, _EDGE_FLAG: int(flag)} if isinstance(flag, bool) else payload


def _from_edge(payload: dict[str, Any]) -> dict[str, Any]:
    if _EDGE_FLAG in payload:
        payload = {k: v for k, v in payload.items() if k != _EDGE_FLAG}
    return payload


class EmbeddedStore:
    """Qdrant's engine in-process, storing its files under ``path``. A single process may open it at a time."""

    def __init__(self, path: str | Path, *, dim: int | None = None) -> None:
        import qdrant_edge as qe

        self._qe = qe
        self.path = Path(path)
        self.location = str(self.path)
        self._shard: Any = None
        self._dim = dim
        self._dirty = False
        if (self.path / "edge_config.json").exists():
            self._shard = self._open(lambda: qe.EdgeShard.load(str(self.path)))
            params = self._shard_dim()
            self._dim = params
        elif dim is not None:
            self._create(dim)

    def _open(self, opener: Any) -> Any:
        try:
            return opener()
        except Exception as exc:  # qdrant-edge raises bare Exception; the text tells a held lock from the rest
            if "WouldBlock" in str(exc):
                raise StoreBusy(
                    f"workspace is in use: {self.path} is open in another semassoc process (one writer at a time)"
                ) from None
            raise StoreUnavailable(f"{self.path}: cannot open the embedded Qdrant store: {exc}") from None

    def _shard_dim(self) -> int | None:
        import json

        config = json.loads((self.path / "edge_config.json").read_text())
        vectors = config.get("vectors", {})
        params = vectors.get(VECTOR_NAME) if isinstance(vectors, dict) else None
        return int(params["size"]) if params and "size" in params else self._dim

    def _create(self, dim: int) -> None:
        qe = self._qe
        self.path.mkdir(parents=True, exist_ok=True)
        config = qe.EdgeConfig(vectors={VECTOR_NAME: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)})
        self._shard = self._open(lambda: qe.EdgeShard.create(str(self.path), config))
        kinds = {"keyword": qe.PayloadSchemaType.Keyword, "float": qe.PayloadSchemaType.Float}
        for name, kind in PAYLOAD_INDEXES.items():
            if kind == "bool":  # filtered through its integer copy (see _EDGE_FLAG)
                name, schema = _EDGE_FLAG, qe.PayloadSchemaType.Integer
            else:
                schema = kinds[kind]
            self._shard.update(qe.UpdateOperation.create_field_index(name, schema))
        self._dirty = True
        self._dim = dim

    def dim(self) -> int | None:
        return self._dim

    def _require(self, dim: int | None = None) -> Any:
        if self._shard is None:
            if dim is None:
                raise StoreUnavailable(f"{self.path}: the store is empty; index a catalog first")
            self._create(dim)
        return self._shard

    def count(self) -> int:
        if self._shard is None:
            return 0
        return int(self._shard.count(self._qe.CountRequest(exact=True)))

    def upsert(self, product_ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        if not len(product_ids):
            return
        shard = self._require(int(vectors.shape[1]))
        _check_dim(self._dim, vectors)
        qe = self._qe
        points = [
            qe.Point(id=point_id(pid), vector={VECTOR_NAME: vec}, payload=_to_edge(payload))
            for pid, vec, payload in zip(
                product_ids, np.asarray(vectors, dtype=np.float32).tolist(), payloads, strict=True
            )
        ]
        shard.update(qe.UpdateOperation.upsert_points(points))
        self._dirty = True

    def set_payloads(self, product_ids: Sequence[str], payloads: Sequence[dict[str, Any]]) -> None:
        shard = self._require()
        for pid, payload in zip(product_ids, payloads, strict=True):
            shard.update(self._qe.UpdateOperation.overwrite_payload([point_id(pid)], _to_edge(payload)))
        self._dirty = True

    def delete(self, product_ids: Sequence[str]) -> None:
        if self._shard is not None and len(product_ids):
            self._shard.update(self._qe.UpdateOperation.delete_points([point_id(p) for p in product_ids]))
            self._dirty = True

    def retrieve(self, product_ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, StoredProduct]:
        if self._shard is None or not len(product_ids):
            return {}
        records = self._shard.retrieve(
            [point_id(p) for p in product_ids], with_payload=True, with_vector=[VECTOR_NAME] if with_vectors else False
        )
        return {r.payload["product_id"]: _stored(_from_edge(r.payload), r.vector, with_vectors) for r in records}

    def _filter(self, filter: ProductFilter | None) -> Any:
        if filter is None:
            return None
        qe = self._qe
        must: list[Any] = []
        if filter.categories:
            must.append(qe.FieldCondition(key="category", match=qe.MatchAny(list(filter.categories))))
        if filter.brands:
            must.append(qe.FieldCondition(key="brand", match=qe.MatchAny(list(filter.brands))))
        if filter.min_price is not None or filter.max_price is not None:
            must.append(qe.FieldCondition(key="price", range=qe.RangeFloat(gte=filter.min_price, lte=filter.max_price)))
        if filter.in_stock is not None:
            must.append(qe.FieldCondition(key=_EDGE_FLAG, match=qe.MatchValue(int(filter.in_stock))))
        must_not = [qe.HasIdCondition({point_id(p) for p in filter.exclude})] if filter.exclude else None
        if not must and not must_not:
            return None
        return qe.Filter(must=must or None, must_not=must_not)

    def _request(self, vector: np.ndarray, limit: int, filter: ProductFilter | None, exact: bool) -> Any:
        qe = self._qe
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=VECTOR_NAME),
            with_payload=True,
            filter=self._filter(filter),
            params=qe.SearchParams(exact=True) if exact else None,
        )

    def search(
        self, vector: np.ndarray, *, limit: int, filter: ProductFilter | None = None, exact: bool = False
    ) -> list[Hit]:
        if self._shard is None:
            return []
        points = self._shard.query(self._request(vector, limit, filter, exact))
        return [_edge_hit(p) for p in points]

    def search_batch(
        self, vectors: np.ndarray, *, limit: int, filters: Sequence[ProductFilter | None], exact: bool = False
    ) -> list[list[Hit]]:
        if self._shard is None:
            return [[] for _ in range(len(vectors))]
        requests = [self._request(v, limit, f, exact) for v, f in zip(vectors, filters, strict=True)]
        results = self._shard.query_batch(self._qe.QueryBatchRequest(requests))
        return [[_edge_hit(p) for p in points] for points in results]

    def iter_payloads(self, keys: Sequence[str] | None = None, batch: int = 2048) -> Iterator[dict[str, Any]]:
        if self._shard is None:
            return
        qe = self._qe
        selector: Any = list({"product_id", *keys}) if keys is not None else True
        offset = None
        while True:
            records, offset = self._shard.scroll(
                qe.ScrollRequest(offset=offset, limit=batch, with_payload=selector, with_vector=False)
            )
            for record in records:
                yield _from_edge(record.payload)
            if offset is None:
                return

    def optimize(self) -> bool:
        self._dirty = self._shard is not None
        return bool(self._shard.optimize()) if self._shard is not None else False

    def drop(self) -> None:
        import shutil

        if self._shard is not None:
            self._shard.close()
            self._shard = None
        shutil.rmtree(self.path, ignore_errors=True)
        self._dim = None

    def close(self) -> None:
        if self._shard is not None:
            if self._dirty:  # a read-only session has nothing to flush (it cost ~10 ms per query process)
                self._shard.flush()
            self._shard.close()
            self._shard = None


# ---------------------------------------------------------------------------------------------------------------
# Remote: qdrant-client (server, cluster, or its in-process ":memory:" mode)


class RemoteStore:
    """A Qdrant collection on a server or cluster, through qdrant-client.

    Args:
        url: ``http(s)://host:port``, or ``:memory:`` for qdrant-client's in-process mode.
        collection: Collection name.
        api_key: API key (Qdrant Cloud or a secured server).
        shards: Shard count, applied when the collection is created.
        replicas: Replication factor, applied when the collection is created.
        client: An existing ``QdrantClient`` to use instead of connecting (tests share one ``:memory:`` client).
    """

    def __init__(
        self,
        url: str,
        *,
        collection: str = "semassoc_products",
        api_key: str | None = None,
        shards: int | None = None,
        replicas: int | None = None,
        timeout: float = 30.0,
        client: Any = None,
    ) -> None:
        from qdrant_client import QdrantClient, models

        self._models = models
        self.location = url
        self.collection = collection
        self.shards = shards
        self.replicas = replicas
        self._owns_client = client is None  # a client passed in belongs to the caller, who closes it
        if client is None:
            if url == ":memory:":
                client = QdrantClient(location=":memory:")
            else:
                client = QdrantClient(url=url, api_key=api_key, timeout=int(timeout))
        self._client = client
        self._dim: int | None = None
        try:
            exists = client.collection_exists(collection)
            if exists:
                info = client.get_collection(collection)
                self._dim = int(info.config.params.vectors[VECTOR_NAME].size)
        except (OSError, ConnectionError) as exc:
            raise StoreUnavailable(f"Qdrant at {url} is not reachable: {exc}") from None
        except _remote_errors() as exc:
            raise StoreUnavailable(f"Qdrant at {url}: {exc}") from None

    def _create(self, dim: int) -> None:
        m = self._models
        self._client.create_collection(
            self.collection,
            vectors_config={VECTOR_NAME: m.VectorParams(size=dim, distance=m.Distance.COSINE)},
            shard_number=self.shards,
            replication_factor=self.replicas,
        )
        kinds = {
            "keyword": m.PayloadSchemaType.KEYWORD,
            "float": m.PayloadSchemaType.FLOAT,
            "bool": m.PayloadSchemaType.BOOL,
        }
        for name, kind in PAYLOAD_INDEXES.items():
            self._client.create_payload_index(self.collection, name, field_schema=kinds[kind])
        self._dim = dim

    def dim(self) -> int | None:
        return self._dim

    def count(self) -> int:
        if self._dim is None:
            return 0
        return int(self._client.count(self.collection, exact=True).count)

    def upsert(self, product_ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        if not len(product_ids):
            return
        if self._dim is None:
            self._create(int(vectors.shape[1]))
        _check_dim(self._dim, vectors)
        m = self._models
        points = [
            m.PointStruct(id=point_id(pid), vector={VECTOR_NAME: vec.tolist()}, payload=payload)
            for pid, vec, payload in zip(product_ids, vectors, payloads, strict=True)
        ]
        self._client.upsert(self.collection, points=points, wait=True)

    def set_payloads(self, product_ids: Sequence[str], payloads: Sequence[dict[str, Any]]) -> None:
        for pid, payload in zip(product_ids, payloads, strict=True):
            self._client.overwrite_payload(self.collection, payload=payload, points=[point_id(pid)], wait=True)

    def delete(self, product_ids: Sequence[str]) -> None:
        if self._dim is None or not len(product_ids):
            return
        selector = self._models.PointIdsList(points=[point_id(p) for p in product_ids])
        self._client.delete(self.collection, points_selector=selector, wait=True)

    def retrieve(self, product_ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, StoredProduct]:
        if self._dim is None or not len(product_ids):
            return {}
        records = self._client.retrieve(
            self.collection,
            [point_id(p) for p in product_ids],
            with_payload=True,
            with_vectors=[VECTOR_NAME] if with_vectors else False,
        )
        return {r.payload["product_id"]: _stored(r.payload, r.vector, with_vectors) for r in records}

    def _filter(self, filter: ProductFilter | None) -> Any:
        if filter is None:
            return None
        m = self._models
        must: list[Any] = []
        if filter.categories:
            must.append(m.FieldCondition(key="category", match=m.MatchAny(any=list(filter.categories))))
        if filter.brands:
            must.append(m.FieldCondition(key="brand", match=m.MatchAny(any=list(filter.brands))))
        if filter.min_price is not None or filter.max_price is not None:
            must.append(m.FieldCondition(key="price", range=m.Range(gte=filter.min_price, lte=filter.max_price)))
        if filter.in_stock is not None:
            must.append(m.FieldCondition(key="in_stock", match=m.MatchValue(value=filter.in_stock)))
        must_not = [m.HasIdCondition(has_id=[point_id(p) for p in filter.exclude])] if filter.exclude else None
        if not must and not must_not:
            return None
        return m.Filter(must=must or None, must_not=must_not)

    def _request(self, vector: np.ndarray, limit: int, filter: ProductFilter | None, exact: bool) -> Any:
        m = self._models
        return m.QueryRequest(
            query=np.asarray(vector, dtype=np.float32).tolist(),
            using=VECTOR_NAME,
            limit=limit,
            filter=self._filter(filter),
            with_payload=True,
            params=m.SearchParams(exact=True) if exact else None,
        )

    def search(
        self, vector: np.ndarray, *, limit: int, filter: ProductFilter | None = None, exact: bool = False
    ) -> list[Hit]:
        return self.search_batch(np.asarray([vector]), limit=limit, filters=[filter], exact=exact)[0]

    def search_batch(
        self, vectors: np.ndarray, *, limit: int, filters: Sequence[ProductFilter | None], exact: bool = False
    ) -> list[list[Hit]]:
        if self._dim is None:
            return [[] for _ in range(len(vectors))]
        requests = [self._request(v, limit, f, exact) for v, f in zip(vectors, filters, strict=True)]
        responses = self._client.query_batch_points(self.collection, requests=requests)
        return [[Hit(p.payload["product_id"], float(p.score), p.payload) for p in r.points] for r in responses]

    def iter_payloads(self, keys: Sequence[str] | None = None, batch: int = 2048) -> Iterator[dict[str, Any]]:
        if self._dim is None:
            return
        selector: Any = list({"product_id", *keys}) if keys is not None else True
        offset = None
        while True:
            records, offset = self._client.scroll(
                self.collection, limit=batch, offset=offset, with_payload=selector, with_vectors=False
            )
            for record in records:
                yield record.payload
            if offset is None:
                return

    def optimize(self) -> bool:
        return False  # a server builds its HNSW index in the background

    def drop(self) -> None:
        if self._dim is not None:
            self._client.delete_collection(self.collection)
        self._dim = None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _edge_hit(point: Any) -> Hit:
    payload = _from_edge(point.payload)
    return Hit(payload["product_id"], float(point.score), payload)


def _remote_errors() -> tuple[type[BaseException], ...]:
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    return (ResponseHandlingException, UnexpectedResponse)


def _check_dim(dim: int | None, vectors: np.ndarray) -> None:
    if dim is not None and vectors.shape[1] != dim:
        raise InvalidInput(f"vectors have dimension {vectors.shape[1]} but the collection holds {dim}-d vectors")


def _stored(payload: dict[str, Any], vector: Any, with_vectors: bool) -> StoredProduct:
    if not with_vectors:
        return StoredProduct(payload["product_id"], payload)
    raw = vector[VECTOR_NAME] if isinstance(vector, dict) else vector
    return StoredProduct(payload["product_id"], payload, np.asarray(raw, dtype=np.float32))
