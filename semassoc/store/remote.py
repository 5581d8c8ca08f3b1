"""The remote backend: a Qdrant server or distributed cluster through ``qdrant-client`` (also its ``:memory:``
mode, which speaks the same client API and is what the contract tests use)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from semassoc.errors import StoreUnavailable
from semassoc.store.base import (
    PAYLOAD_INDEXES,
    VECTOR_NAME,
    Hit,
    ProductFilter,
    StoredProduct,
    _check_dim,
    _stored,
    point_id,
)
from semassoc.store.location import split_qdrant_url


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
        url, url_key = split_qdrant_url(url)  # messages and reports never show credentials
        api_key = api_key or url_key
        self.location = url
        self.collection = collection
        self.shards = shards
        self.replicas = replicas
        self._owns_client = client is None  # a client passed in belongs to the caller, who closes it
        if client is None:
            if url == ":memory:":
                client = QdrantClient(location=":memory:")
            else:
                # No version check: against an unreachable server it only adds a warning before the one-line error.
                client = QdrantClient(url=url, api_key=api_key, timeout=int(timeout), check_compatibility=False)
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

    def _request(
        self, vector: np.ndarray, limit: int, filter: ProductFilter | None, exact: bool, payloads: bool = True
    ) -> Any:
        m = self._models
        return m.QueryRequest(
            query=np.asarray(vector, dtype=np.float32).tolist(),
            using=VECTOR_NAME,
            limit=limit,
            filter=self._filter(filter),
            with_payload=True if payloads else ["product_id"],
            params=m.SearchParams(exact=True) if exact else None,
        )

    def search(
        self, vector: np.ndarray, *, limit: int, filter: ProductFilter | None = None, exact: bool = False
    ) -> list[Hit]:
        return self.search_batch(np.asarray([vector]), limit=limit, filters=[filter], exact=exact)[0]

    def search_batch(
        self,
        vectors: np.ndarray,
        *,
        limit: int,
        filters: Sequence[ProductFilter | None],
        exact: bool = False,
        payloads: bool = True,
    ) -> list[list[Hit]]:
        if self._dim is None:
            return [[] for _ in range(len(vectors))]
        requests = [self._request(v, limit, f, exact, payloads) for v, f in zip(vectors, filters, strict=True)]
        responses = self._client.query_batch_points(self.collection, requests=requests)
        return [[Hit(p.payload["product_id"], float(p.score), p.payload) for p in r.points] for r in responses]

    def search_ids_batch(
        self, vectors: np.ndarray, *, limit: int, filters: Sequence[ProductFilter | None], exact: bool = False
    ) -> list[tuple[list[str], list[float]]]:
        rows = self.search_batch(vectors, limit=limit, filters=filters, exact=exact, payloads=False)
        return [([h.product_id for h in row], [h.score for h in row]) for row in rows]

    def exact_by_default(self) -> bool:
        """False: a server builds its HNSW index on its own schedule, so a search may turn approximate at any time."""
        return False

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


def _remote_errors() -> tuple[type[BaseException], ...]:
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    return (ResponseHandlingException, UnexpectedResponse)
