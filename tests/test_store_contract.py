"""One contract, two backends: the embedded Qdrant engine (qdrant-edge) and qdrant-client (its :memory: mode
speaks the same client API as a Qdrant server or cluster)."""

from __future__ import annotations

import numpy as np
import pytest

from semassoc.errors import InvalidInput, StoreBusy
from semassoc.store.base import ProductFilter, point_id
from semassoc.store.embedded import EmbeddedStore
from semassoc.store.remote import RemoteStore

DIM = 16


@pytest.fixture(params=["embedded", "remote"])
def store(request, tmp_path):
    if request.param == "embedded":
        s = EmbeddedStore(tmp_path / "qdrant")
    else:
        s = RemoteStore(":memory:", collection="contract")
    yield s
    s.close()


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"p{i}" for i in range(n)]
    payloads = [
        {
            "product_id": pid,
            "title": f"Product {i}",
            "category": ["a", "b", "c"][i % 3],
            "brand": ["x", "y"][i % 2],
            "price": float(i),
            "in_stock": i % 4 != 0,
        }
        for i, pid in enumerate(ids)
    ]
    return ids, vectors, payloads


def _brute_force(vectors, ids, payloads, query, k, keep=lambda p: True):
    scores = vectors @ query
    order = [i for i in np.argsort(-scores, kind="stable") if keep(payloads[i])]
    return [ids[i] for i in order[:k]], [float(scores[i]) for i in order[:k]]


def test_empty_store(store):
    assert store.count() == 0 and store.dim() is None
    assert store.retrieve(["nope"]) == {}
    assert store.search(np.ones(DIM, dtype=np.float32), limit=3) == []
    assert list(store.iter_payloads()) == []


def test_upsert_is_idempotent_and_retrieve_returns_vectors(store):
    ids, vectors, payloads = _data()
    store.upsert(ids, vectors, payloads)
    store.upsert(ids, vectors, payloads)
    assert store.count() == len(ids) and store.dim() == DIM
    got = store.retrieve(["p3", "p5", "missing"], with_vectors=True)
    assert set(got) == {"p3", "p5"}
    np.testing.assert_allclose(got["p3"].vector, vectors[3], atol=1e-6)
    assert got["p5"].payload["category"] == "c" and got["p5"].payload["price"] == 5.0


def test_exact_search_equals_brute_force(store):
    ids, vectors, payloads = _data()
    store.upsert(ids, vectors, payloads)
    query = vectors[7]
    expected_ids, expected_scores = _brute_force(vectors, ids, payloads, query, 10)
    hits = store.search(query, limit=10, exact=True)
    assert [h.product_id for h in hits] == expected_ids
    np.testing.assert_allclose([h.score for h in hits], expected_scores, atol=1e-5)


@pytest.mark.parametrize(
    ("flt", "keep"),
    [
        (ProductFilter(categories=("a",)), lambda p: p["category"] == "a"),
        (ProductFilter(categories=("a", "b"), brands=("y",)), lambda p: p["category"] in "ab" and p["brand"] == "y"),
        (ProductFilter(min_price=10, max_price=30), lambda p: 10 <= p["price"] <= 30),
        (ProductFilter(in_stock=True), lambda p: p["in_stock"]),
        (ProductFilter(exclude=("p7", "p1")), lambda p: p["product_id"] not in ("p7", "p1")),
    ],
)
def test_filters_match_brute_force(store, flt, keep):
    ids, vectors, payloads = _data()
    store.upsert(ids, vectors, payloads)
    expected_ids, _ = _brute_force(vectors, ids, payloads, vectors[7], 8, keep)
    assert [h.product_id for h in store.search(vectors[7], limit=8, filter=flt, exact=True)] == expected_ids
    assert all(flt.matches(p) == keep(p) for p in payloads)


def test_batch_search_equals_single_searches(store):
    ids, vectors, payloads = _data()
    store.upsert(ids, vectors, payloads)
    filters = [None, ProductFilter(categories=("b",)), ProductFilter(exclude=("p2",))]
    batch = store.search_batch(vectors[:3], limit=5, filters=filters, exact=True)
    single = [store.search(v, limit=5, filter=f, exact=True) for v, f in zip(vectors[:3], filters, strict=True)]
    assert [[h.product_id for h in r] for r in batch] == [[h.product_id for h in r] for r in single]


def test_batch_search_without_payloads_returns_the_same_hits_with_ids_only(store):
    ids, vectors, payloads = _data()
    store.upsert(ids, vectors, payloads)
    filters = [None, ProductFilter(categories=("b",)), ProductFilter(exclude=("p2",))]
    full = store.search_batch(vectors[:3], limit=8, filters=filters)
    light = store.search_batch(vectors[:3], limit=8, filters=filters, payloads=False)
    assert [[h.product_id for h in r] for r in light] == [[h.product_id for h in r] for r in full]
    # (the remote client's local mode may differ in the last float bits between two identical searches)
    assert [h.score for r in light for h in r] == pytest.approx([h.score for r in full for h in r], abs=1e-6)
    assert all(h.payload == {"product_id": h.product_id} for r in light for h in r)
    assert any(len(h.payload) > 1 for r in full for h in r)


def test_id_search_returns_the_hits_ids_and_cosines(store):
    ids, vectors, payloads = _data()
    store.upsert(ids, vectors, payloads)
    filters = [None, ProductFilter(categories=("b",)), ProductFilter(exclude=("p2",))]
    full = store.search_batch(vectors[:3], limit=8, filters=filters)
    rows = store.search_ids_batch(vectors[:3], limit=8, filters=filters)
    assert [names for names, _ in rows] == [[h.product_id for h in r] for r in full]
    assert [s for _, sims in rows for s in sims] == pytest.approx([h.score for r in full for h in r], abs=1e-6)
    assert store.search_ids_batch(vectors[:1], limit=3, filters=[None])[0][0][0] == ids[0]


def test_payload_update_delete_iterate_and_drop(store):
    ids, vectors, payloads = _data(10)
    store.upsert(ids, vectors, payloads)
    store.set_payloads(["p1"], [{"product_id": "p1", "title": "Renamed"}])
    got = store.retrieve(["p1"], with_vectors=True)["p1"]
    assert got.payload == {"product_id": "p1", "title": "Renamed"}  # overwritten, not merged
    np.testing.assert_allclose(got.vector, vectors[1], atol=1e-6)  # vector kept
    store.delete(["p2", "p3"])
    seen = sorted(p["product_id"] for p in store.iter_payloads(["title"], batch=3))
    assert seen == sorted(set(ids) - {"p2", "p3"})
    assert set(next(iter(store.iter_payloads(["title"])))) == {"product_id", "title"}
    store.drop()
    assert store.count() == 0 and store.dim() is None


def test_dimension_mismatch_is_refused(store):
    ids, vectors, payloads = _data(4)
    store.upsert(ids, vectors, payloads)
    with pytest.raises(InvalidInput, match="dimension"):
        store.upsert(["q"], np.ones((1, DIM + 1), dtype=np.float32), [{"product_id": "q"}])


def test_point_ids_are_deterministic_uuids():
    assert point_id("85123A") == point_id("85123A") != point_id("85123a")
    assert len(point_id("x")) == 36


def test_embedded_store_persists_and_refuses_a_second_opener(tmp_path):
    ids, vectors, payloads = _data(5)
    first = EmbeddedStore(tmp_path / "q")
    first.upsert(ids, vectors, payloads)
    with pytest.raises(StoreBusy, match="workspace is in use"):
        EmbeddedStore(tmp_path / "q")
    first.close()
    again = EmbeddedStore(tmp_path / "q")
    assert again.count() == 5 and again.dim() == DIM
    again.close()
