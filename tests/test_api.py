"""The Python API on the embedded store with the deterministic hashing encoder (the real model has its own test)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from semassoc import api
from semassoc.errors import EncoderMismatch, InvalidInput, NotFound, StoreBusy
from semassoc.store.base import ProductFilter
from semassoc.text.encoder import HashingEncoder
from semassoc.text.prompts import default_prompts_dir
from semassoc.workspace import Workspace


class CountingEncoder(HashingEncoder):
    """The hashing encoder, counting the texts it is asked to encode."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__(dim)
        self.texts: list[str] = []

    def encode(self, texts, *, batch_size=64):
        self.texts.extend(texts)
        return super().encode(texts, batch_size=batch_size)


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


def test_index_then_reindex_unchanged_encodes_nothing(catalog_csv, ws):
    enc = CountingEncoder()
    first = api.index_catalog(catalog_csv, workspace=ws, encoder=enc)
    assert (first.added, first.updated, first.unchanged, first.removed, first.encoded) == (8, 0, 0, 0, 8)
    assert first.products_total == 8
    enc.texts.clear()
    again = api.index_catalog(catalog_csv, workspace=ws, encoder=enc)
    assert (again.added, again.updated, again.unchanged, again.encoded, again.from_cache) == (0, 0, 8, 0, 0)
    assert enc.texts == []
    assert api.info(workspace=ws).products == 8


def test_daily_delta_updates_only_changed_products(catalog_csv, ws, tmp_path):
    enc = CountingEncoder()
    api.index_catalog(catalog_csv, workspace=ws, encoder=enc)
    enc.texts.clear()
    delta = tmp_path / "delta.csv"
    delta.write_text(
        "product_id,title,price\n"
        "m1,Red enamel mug,4.50\n"  # description/category/brand gone: payload and text change
        "n1,Glass tumbler,2.00\n"  # new
    )
    report = api.index_catalog(delta, workspace=ws, encoder=enc)
    assert (report.added, report.updated, report.unchanged, report.removed) == (1, 1, 0, 0)
    assert sorted(enc.texts) == ["Glass tumbler", "Red enamel mug"]
    assert report.products_total == 9  # other products are kept


def test_price_change_updates_payload_without_encoding(catalog_csv, ws, tmp_path):
    enc = CountingEncoder()
    api.index_catalog(catalog_csv, workspace=ws, encoder=enc)
    enc.texts.clear()
    changed = tmp_path / "changed.csv"
    changed.write_text(catalog_csv.read_text().replace("Acme,4.50,yes", "Acme,3.99,no"))
    report = api.index_catalog(changed, workspace=ws, encoder=enc)
    assert (report.updated, report.unchanged, report.encoded) == (1, 7, 0)
    assert enc.texts == []
    hits = api.similar("m2", workspace=ws, k=10, filter=ProductFilter(max_price=4.0))
    assert {h.product_id for h in hits} == {"m1", "t1", "l1", "l2"}  # m1 now costs 3.99
    m1 = next(h for h in api.similar("m2", workspace=ws, k=10) if h.product_id == "m1")
    assert m1.attributes["price"] == 3.99 and m1.attributes["in_stock"] is False


def test_replace_removes_absent_products_and_reports_counts(catalog_csv, ws, tmp_path):
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(64))
    subset = tmp_path / "subset.csv"
    lines = catalog_csv.read_text().splitlines()
    subset.write_text("\n".join(lines[:3]) + "\n")  # header, m1, m2
    report = api.index_catalog(subset, workspace=ws, encoder=HashingEncoder(64), replace=True)
    assert (report.added, report.updated, report.unchanged, report.removed, report.products_total) == (0, 0, 2, 6, 2)
    with pytest.raises(NotFound):
        api.similar("c1", workspace=ws)


def test_template_change_reencodes_affected_products(catalog_csv, ws, tmp_path):
    enc = CountingEncoder()
    api.index_catalog(catalog_csv, workspace=ws, encoder=enc)
    prompts = tmp_path / "prompts"
    shutil.copytree(default_prompts_dir(), prompts)
    # Only products with a brand render differently under the new template.
    (prompts / "document.txt").write_text("{title}\nMade by {brand}\n")
    enc.texts.clear()
    delta = tmp_path / "one.csv"
    delta.write_text("product_id,title\nn1,Glass tumbler\n")
    report = api.index_catalog(delta, workspace=ws, encoder=enc, prompts=prompts)
    assert report.added == 1 and report.reencoded == 8  # every old product had a brand or a description
    assert "Red enamel mug\nMade by Acme" in enc.texts
    assert api.info(workspace=ws).prompts_digest != api.PromptSet.load().digest


def test_strict_bad_input_writes_nothing(ws, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,title,price\na,Mug,1\nb,Cup,cheap\n")
    with pytest.raises(InvalidInput, match="row 3, field 'price'"):
        api.index_catalog(bad, workspace=ws, encoder=HashingEncoder(8))
    assert not ws.exists()


def test_strict_bad_input_leaves_existing_workspace_untouched(catalog_csv, ws, tmp_path):
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(64))
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,title\nz1,New thing\nm1,\n")
    with pytest.raises(InvalidInput):
        api.index_catalog(bad, workspace=ws, encoder=HashingEncoder(64), replace=True)
    assert api.info(workspace=ws).products == 8


def test_skip_mode_indexes_good_rows(ws, tmp_path):
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("product_id,title,price\na,Mug,1\nb,,2\nc,Cup,x\nd,Jar,3\n")
    report = api.index_catalog(mixed, workspace=ws, encoder=HashingEncoder(8), on_error="skip")
    assert report.added == 2 and [p.row for p in report.skipped] == [3, 4]


def test_similar_excludes_itself_and_applies_filters(catalog_csv, ws):
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(256))
    hits = api.similar("l1", workspace=ws, k=3)
    assert hits[0].product_id == "l2" and "l1" not in [h.product_id for h in hits]
    assert hits[0].signals == {"text": hits[0].score} and hits[0].explanation.startswith("text similarity")
    in_kitchen = api.similar("m1", workspace=ws, k=10, filter=ProductFilter(categories=("kitchen",), in_stock=True))
    assert {h.product_id for h in in_kitchen} == {"m2", "t1"}
    excluded = api.similar("m1", workspace=ws, k=10, filter=ProductFilter(exclude=("m2",), brands=("Acme", "Potter")))
    assert [h.product_id for h in excluded] == ["m3"]


def test_similar_scores_equal_cosine_of_stored_vectors(catalog_csv, ws):
    enc = HashingEncoder(64)
    api.index_catalog(catalog_csv, workspace=ws, encoder=enc)
    with Workspace.open(ws) as w:
        stored = w.store.retrieve(["m1", "m2", "m3"], with_vectors=True)
    hits = {h.product_id: h.score for h in api.similar("m1", workspace=ws, k=10, exact=True)}
    for other in ("m2", "m3"):
        assert hits[other] == pytest.approx(float(np.dot(stored["m1"].vector, stored[other].vector)), abs=1e-5)


def test_unknown_product_and_missing_workspace(catalog_csv, ws, tmp_path):
    with pytest.raises(NotFound, match="no semassoc workspace"):
        api.similar("m1", workspace=tmp_path / "none")
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(8))
    with pytest.raises(NotFound, match="product 'zz' is not in the workspace"):
        api.similar("zz", workspace=ws)


def test_search_refuses_another_encoder(catalog_csv, ws):
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(64))
    hits = api.search("enamel mug", workspace=ws, k=2)  # the workspace's own encoder, loaded by its id
    assert {h.product_id for h in hits} <= {"m1", "m2", "m3"}
    with pytest.raises(EncoderMismatch, match="built with encoder 'hashing:64'"):
        api.search("enamel mug", workspace=ws, model="hashing:32")


def test_index_with_another_encoder_rebuilds_the_collection(catalog_csv, ws):
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(64))
    report = api.index_catalog(catalog_csv, workspace=ws, model="hashing:32")
    assert report.updated == 8 and report.encoded == 8
    info = api.info(workspace=ws)
    assert (info.encoder_id, info.dim, info.products) == ("hashing:32", 32, 8)


def test_remove_is_all_or_nothing(catalog_csv, ws):
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(8))
    with pytest.raises(NotFound, match="nothing was removed"):
        api.remove(["m1", "nope"], workspace=ws)
    assert api.info(workspace=ws).products == 8
    report = api.remove(["m1", "m2"], workspace=ws)
    assert report.products_total == 6


def test_second_writer_gets_workspace_in_use(catalog_csv, ws):
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(8))
    with Workspace.open(ws, writer=True) as holder:
        assert holder.store.count() == 8
        with pytest.raises(StoreBusy, match="workspace is in use"):
            api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(8))
        with pytest.raises(StoreBusy, match="workspace is in use"):
            api.similar("m1", workspace=ws)


def test_remote_backend_through_the_api(catalog_csv, ws):
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    report = api.index_catalog(
        catalog_csv, workspace=ws, encoder=HashingEncoder(256), qdrant_url=":memory:", store_client=client
    )
    assert report.added == 8 and report.store == ":memory:"
    again = api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(256), store_client=client)
    assert again.unchanged == 8 and again.encoded == 0
    hits = api.similar("l1", workspace=ws, k=3, store_client=client)
    assert hits[0].product_id == "l2"
    info = api.info(workspace=ws, store_client=client)
    assert (info.store, info.collection, info.products) == ("remote", "semassoc_products", 8)
    with pytest.raises(InvalidInput, match="keeps its vectors at :memory:"):
        api.similar("l1", workspace=ws, store_client=client, qdrant_url="http://elsewhere:6333")


def test_embedded_workspace_refuses_a_qdrant_url(catalog_csv, ws):
    api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(8))
    with pytest.raises(InvalidInput, match="embedded store"):
        api.index_catalog(catalog_csv, workspace=ws, encoder=HashingEncoder(8), qdrant_url="http://localhost:6333")
