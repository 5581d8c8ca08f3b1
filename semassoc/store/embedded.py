"""The embedded backend: Qdrant's engine in-process (``qdrant-edge-py``), files inside the workspace.

All calls to that 0.x API live in this module.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from semassoc.errors import InvalidInput, NotFound, StoreBusy, StoreDamaged, StoreUnavailable
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

_OWN_ERRORS = (InvalidInput, NotFound, StoreBusy, StoreUnavailable)

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

    def __init__(self, path: str | Path, *, dim: int | None = None, create: bool = True) -> None:
        """Open the store at ``path``; with ``create`` (and ``dim``) create it when it does not exist. Readers pass
        ``create=False``: a missing store then reads as empty and refuses writes."""
        import qdrant_edge as qe

        self._qe = qe
        self.path = Path(path)
        self.location = str(self.path)
        self._shard: Any = None
        self._dim = dim
        self._dirty = False
        self._create_allowed = create
        self._exact: bool | None = None  # whether searches are full scans (no HNSW index); None: not looked up
        self._names: dict[int, str] = {}  # point id (an integer) -> product id (a uuid5 of it: never stale)
        if (self.path / "edge_config.json").exists():
            self._shard = self._open(lambda: qe.EdgeShard.load(str(self.path)))
            params = self._shard_dim()
            self._dim = params
        elif dim is not None and create:
            self._create(dim)

    def _open(self, opener: Any) -> Any:
        try:
            return opener()
        except BaseException as exc:  # qdrant-edge raises bare Exception (or a Rust panic); the text tells a lock
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if "WouldBlock" in str(exc):
                raise StoreBusy(
                    f"workspace is in use: {self.path} is open in another semassoc process (a query, batch or "
                    "evaluate holds it while it runs; readers wait SEMASSOC_BUSY_WAIT seconds, default 2)"
                ) from None
            if "Read-only file system" in str(exc) or "os error 30" in str(exc):
                raise StoreUnavailable(
                    f"{self.path}: the embedded store needs a writable filesystem (Qdrant updates its files on open); "
                    "copy the workspace to a writable place"
                ) from None
            raise self.damaged(exc) from None

    def damaged(self, exc: BaseException | str) -> StoreDamaged:
        """The one-line error for a damaged store: what failed, where, and the repair."""
        detail = " ".join(str(exc).split())[:240] or type(exc).__name__
        return StoreDamaged(
            f"{self.path}: the vector store is damaged ({detail}); repair: `semassoc index CATALOG --rebuild "
            f"--workspace {self.path.parent}` (vectors come from the vector cache, nothing is re-encoded)"
        )

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Any failure inside qdrant-edge (an exception, a Rust panic) on a loaded store means damaged files."""
        try:
            yield
        except (*_OWN_ERRORS, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:
            raise self.damaged(exc) from None

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
        self._exact = None
        self._dim = dim

    def dim(self) -> int | None:
        return self._dim

    def _require(self, dim: int | None = None) -> Any:
        if self._shard is None:
            if dim is None or not self._create_allowed:
                raise StoreUnavailable(f"{self.path}: the store is empty; index a catalog first")
            self._create(dim)
        return self._shard

    def count(self) -> int:
        if self._shard is None:
            return 0
        with self._guard():
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
        with self._guard():
            shard.update(self._qe.UpdateOperation.upsert_points(points))
        self._dirty = True
        self._exact = None

    def set_payloads(self, product_ids: Sequence[str], payloads: Sequence[dict[str, Any]]) -> None:
        shard = self._require()
        with self._guard():
            for pid, payload in zip(product_ids, payloads, strict=True):
                shard.update(self._qe.UpdateOperation.overwrite_payload([point_id(pid)], _to_edge(payload)))
        self._dirty = True
        self._exact = None

    def delete(self, product_ids: Sequence[str]) -> None:
        if self._shard is not None and len(product_ids):
            with self._guard():
                self._shard.update(self._qe.UpdateOperation.delete_points([point_id(p) for p in product_ids]))
            self._dirty = True
            self._exact = None

    def retrieve(self, product_ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, StoredProduct]:
        if self._shard is None or not len(product_ids):
            return {}
        with self._guard():
            records = self._shard.retrieve(
                [point_id(p) for p in product_ids],
                with_payload=True,
                with_vector=[VECTOR_NAME] if with_vectors else False,
            )
            found = {r.payload["product_id"]: _stored(_from_edge(r.payload), r.vector, with_vectors) for r in records}
        if with_vectors:
            for pid, item in found.items():
                self.check_vector(item.vector, pid)
        return found

    def check_vector(self, vector: Any, product_id: str) -> None:
        """Stored vectors are unit length (cosine distance normalises them on insert): anything else, or a wrong
        dimension, means the vector file was overwritten."""
        array = np.asarray(vector, dtype=np.float64)
        norm = float(np.linalg.norm(array)) if array.size else 0.0
        if (self._dim is not None and array.shape != (self._dim,)) or not math.isfinite(norm) or abs(norm - 1) > 1e-2:
            raise self.damaged(f"the stored vector of {product_id!r} has length {norm:.3g}, not 1")

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

    def _request(
        self, vector: np.ndarray, limit: int, filter: ProductFilter | None, exact: bool, payloads: bool = True
    ) -> Any:
        qe = self._qe
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=VECTOR_NAME),
            with_payload=bool(payloads),
            filter=self._filter(filter),
            params=qe.SearchParams(exact=True) if exact else None,
        )

    def search(
        self, vector: np.ndarray, *, limit: int, filter: ProductFilter | None = None, exact: bool = False
    ) -> list[Hit]:
        if self._shard is None:
            return []
        with self._guard():
            points = self._shard.query(self._request(vector, limit, filter, exact))
            return [self._hit(p) for p in points]

    def search_batch(
        self,
        vectors: np.ndarray,
        *,
        limit: int,
        filters: Sequence[ProductFilter | None],
        exact: bool = False,
        payloads: bool = True,
    ) -> list[list[Hit]]:
        if not payloads:
            rows = self.search_ids_batch(vectors, limit=limit, filters=filters, exact=exact)
            return [[Hit(n, s, {"product_id": n}) for n, s in zip(*row, strict=True)] for row in rows]
        if self._shard is None:
            return [[] for _ in range(len(vectors))]
        requests = [self._request(v, limit, f, exact) for v, f in zip(vectors, filters, strict=True)]
        with self._guard():
            results = self._shard.query_batch(self._qe.QueryBatchRequest(requests))
            return [[self._hit(p) for p in points] for points in results]

    def search_ids_batch(
        self, vectors: np.ndarray, *, limit: int, filters: Sequence[ProductFilter | None], exact: bool = False
    ) -> list[tuple[list[str], list[float]]]:
        if self._shard is None:
            return [([], []) for _ in range(len(vectors))]
        requests = [self._request(v, limit, f, exact, False) for v, f in zip(vectors, filters, strict=True)]
        with self._guard():
            results = self._shard.query_batch(self._qe.QueryBatchRequest(requests))
            return self._id_rows(results)

    def _id_rows(self, results: list[Any]) -> list[tuple[list[str], list[float]]]:
        """(product ids, cosines) of points searched without payload: point ids turned into product ids through a
        map kept by the store (the ids it has not seen looked up in one call); reading a payload per hit cost more
        than the search. Keyed by the id's integer (hashing ``uuid.UUID`` objects runs Python code)."""
        names = self._names
        keys = [[p.id.int for p in points] for points in results]
        ids = [[names.get(i) for i in row] for row in keys]
        missing = [j for j, row in enumerate(ids) if None in row]
        if missing:  # ids not seen yet: looked up in one call, then remembered
            unknown = {i for j in missing for i, name in zip(keys[j], ids[j], strict=True) if name is None}
            points = [uuid.UUID(int=i) for i in unknown]
            records = self._shard.retrieve(points, with_payload=["product_id"], with_vector=False)
            names.update((r.id.int, r.payload["product_id"]) for r in records)
            for j in missing:
                ids[j] = [names.get(i) for i in keys[j]]
        out: list[tuple[list[Any], list[float]]] = []
        for row_keys, row_ids, points in zip(keys, ids, results, strict=True):
            scores = [p.score for p in points]
            if None in row_ids or not (np.abs(np.asarray(scores)) <= 1.001).all():  # cosine in [-1, 1]; NaN fails
                j = next(j for j, s in enumerate(scores) if row_ids[j] is None or not abs(s) <= 1.001)
                raise self.damaged(
                    f"a search returned the point {uuid.UUID(int=row_keys[j])} with cosine {scores[j]:.3g}"
                )
            out.append((row_ids, scores))
        return out

    def exact_by_default(self) -> bool:
        """True while no HNSW index is built (``index --optimize``): Qdrant then scans every vector."""
        if self._exact is None:
            if self._shard is None:
                return True
            with self._guard():
                self._exact = int(self._shard.info().indexed_vectors_count) == 0
        return self._exact

    def _hit(self, point: Any) -> Hit:
        hit = _edge_hit(point)
        if not math.isfinite(hit.score) or abs(hit.score) > 1.001:  # cosine lies in [-1, 1]
            raise self.damaged(f"a search returned the impossible cosine {hit.score:.3g} for {hit.product_id!r}")
        return hit

    def iter_payloads(self, keys: Sequence[str] | None = None, batch: int = 2048) -> Iterator[dict[str, Any]]:
        if self._shard is None:
            return
        qe = self._qe
        selector: Any = list({"product_id", *keys}) if keys is not None else True
        offset = None
        while True:
            with self._guard():
                records, offset = self._shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=batch, with_payload=selector, with_vector=False)
                )
                payloads = [_from_edge(record.payload) for record in records]
            yield from payloads
            if offset is None:
                return

    def sample_vectors(self, size: int = 256, seed: int = 0) -> list[tuple[str, np.ndarray]]:
        """(product id, stored vector) for about ``size`` points from a few places of the id space (ids are
        uuid5, so these are products spread over the store's files)."""
        import uuid

        if self._shard is None:
            return []
        qe = self._qe
        rng = np.random.default_rng(seed)
        out: list[tuple[str, np.ndarray]] = []
        windows = 4
        starts = [None, *(str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64)) for _ in range(windows - 1))]
        for start in starts:
            with self._guard():
                records, _ = self._shard.scroll(
                    qe.ScrollRequest(
                        offset=start, limit=max(1, size // windows), with_payload=True, with_vector=[VECTOR_NAME]
                    )
                )
                out.extend((r.payload["product_id"], np.asarray(r.vector[VECTOR_NAME])) for r in records)
        return out

    def iter_vectors(self, batch: int = 2048) -> Iterator[tuple[str, np.ndarray]]:
        """Every (product id, stored vector), in id order."""
        if self._shard is None:
            return
        qe = self._qe
        offset = None
        while True:
            with self._guard():
                records, offset = self._shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=batch, with_payload=["product_id"], with_vector=[VECTOR_NAME])
                )
                rows = [(r.payload["product_id"], np.asarray(r.vector[VECTOR_NAME])) for r in records]
            yield from rows
            if offset is None:
                return

    def optimize(self) -> bool:
        self._dirty = self._shard is not None
        self._exact = None
        if self._shard is None:
            return False
        with self._guard():
            return bool(self._shard.optimize())

    def drop(self) -> None:
        import shutil

        if self._shard is not None:
            self._shard.close()
            self._shard = None
        shutil.rmtree(self.path, ignore_errors=True)
        self._dim = None

    def close(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            with self._guard():
                if self._dirty:  # a read-only session has nothing to flush (it cost ~10 ms per query process)
                    shard.flush()
                shard.close()


# ---------------------------------------------------------------------------------------------------------------


def _edge_hit(point: Any) -> Hit:
    payload = _from_edge(point.payload)
    return Hit(payload["product_id"], float(point.score), payload)
