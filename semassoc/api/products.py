"""``index``, ``similar``, ``search``, ``remove``, ``info``: the catalog side of the API."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semassoc.behaviour.stats import BehaviourStats
from semassoc.catalog import CatalogColumns, OnError, read_catalog
from semassoc.errors import InvalidInput, NotFound
from semassoc.ranking.engine import RelatedEngine, check_k
from semassoc.ranking.ranker import Ranker
from semassoc.results import ScoredItem, text_item
from semassoc.store.base import ProductFilter
from semassoc.text.encoder import Encoder, LazyEncoder
from semassoc.text.indexing import IndexProgress, IndexReport, index_products
from semassoc.text.prompts import PromptSet
from semassoc.workspace import MANIFEST, Workspace, resolve_workspace_path


def index_catalog(
    catalog: str | Path,
    *,
    workspace: str | Path | None = None,
    columns: CatalogColumns | None = None,
    on_error: OnError = "strict",
    delimiter: str | None = None,
    model: str | None = None,
    prompts: str | Path | None = None,
    replace: bool = False,
    rebuild: bool = False,
    batch_size: int = 64,
    optimize: bool = False,
    qdrant_url: str | None = None,
    collection: str | None = None,
    shards: int | None = None,
    replicas: int | None = None,
    device: str | None = None,
    encoder: Encoder | None = None,
    store_client: Any = None,
    progress: IndexProgress | None = None,
) -> IndexReport:
    """Add or update the products of a catalog file in the workspace (create it if needed).

    The file is validated first: in strict mode a bad row raises InvalidInput and nothing is written. Products whose
    rendered text is unchanged are not encoded again; with ``replace`` the workspace ends up holding exactly the
    products of the file.

    Args:
        catalog: CSV, JSONL or Parquet file.
        workspace: Workspace directory (default ``$SEMASSOC_WORKSPACE`` or ``./.semassoc``).
        columns: Column mapping (unmapped fields are detected).
        on_error: ``"strict"`` or ``"skip"`` (index the good rows, report the others in ``skipped``).
        delimiter: CSV delimiter (default: detected among ``,``, ``;``, tab and ``|``).
        model: sentence-transformers model name or directory; default: the model that built the workspace, else
            the bundled all-MiniLM-L6-v2. A different model than the workspace's re-encodes every product.
        prompts: Directory of prompt templates (default: the bundled ``prompts/``).
        replace: Remove products absent from the file.
        rebuild: Rebuild the vector store from scratch with exactly the products of the file, taking vectors from
            the vector cache (only texts never encoded by this encoder are encoded): the repair for a damaged store.
        batch_size: Encoder batch size.
        optimize: Build the HNSW index afterwards (embedded store; slow on big catalogs, makes queries faster).
        qdrant_url: Use a Qdrant server or cluster instead of the embedded store (new workspaces only).
        collection, shards, replicas: Remote collection settings, applied when the collection is created.
        device: Encoder device (default: CUDA when available, else CPU).
        encoder: An already-built encoder (tests, notebooks); overrides ``model``.
        store_client: An existing ``QdrantClient`` for the remote store (tests share one ``:memory:`` client).
        progress: Called as products are processed.

    Returns:
        IndexReport.
    """
    started = time.perf_counter()
    result = read_catalog(catalog, columns, on_error=on_error, delimiter=delimiter)
    prompt_set = PromptSet.load(prompts)
    created = not (resolve_workspace_path(workspace) / MANIFEST).is_file()
    ws = Workspace.create_or_open(
        workspace,
        qdrant_url=qdrant_url,
        collection=collection,
        shards=shards,
        replicas=replicas,
        store_client=store_client,
    )
    finished = False
    try:
        report = index_products(
            ws,
            result.products,
            prompt_set,
            prompts,
            model,
            encoder,
            device,
            replace or rebuild,
            rebuild,
            batch_size,
            progress,
        )
        report.catalog = str(catalog)
        report.rows_read = result.rows_read
        report.skipped = result.problems
        if optimize:
            report.optimized = ws.store.optimize()
        ws.manifest.last_index = {
            k: getattr(report, k) for k in ("catalog", "added", "updated", "unchanged", "removed", "reencoded")
        }
        ws.save()
        finished = True
    finally:
        path = ws.path
        ws.close()
        if created and not finished:
            shutil.rmtree(path, ignore_errors=True)  # a workspace that never got a manifest is no workspace
    report.seconds = time.perf_counter() - started
    return report


# ---------------------------------------------------------------------------------------------------------------
# Queries


def similar(
    product_id: str,
    *,
    workspace: str | Path | None = None,
    k: int = 10,
    filter: ProductFilter | None = None,
    exact: bool = False,
    qdrant_url: str | None = None,
    store_client: Any = None,
) -> list[ScoredItem]:
    """Products whose text is closest to ``product_id``'s (the product itself excluded).

    Needs no encoder: the product's stored vector is the query.

    Raises:
        NotFound: the product is not in the workspace.
    """
    with Workspace.open(workspace, qdrant_url=qdrant_url, store_client=store_client) as ws:
        return RelatedEngine(ws).similar(product_id, k=k, filter=filter, exact=exact)


def search(
    query: str,
    *,
    workspace: str | Path | None = None,
    k: int = 10,
    filter: ProductFilter | None = None,
    model: str | None = None,
    exact: bool = False,
    encoder: Encoder | None = None,
    qdrant_url: str | None = None,
    store_client: Any = None,
) -> list[ScoredItem]:
    """Products matching free text, rendered through the query template and encoded by the workspace's encoder.

    Raises:
        EncoderMismatch: ``model`` (or ``encoder``) is not the encoder that built the workspace.
    """
    check_k(k)
    if not query.strip():
        raise InvalidInput("the search text is empty")
    if encoder is None and model is not None:
        encoder = LazyEncoder(model)
    with Workspace.open(workspace, qdrant_url=qdrant_url, store_client=store_client) as ws:
        engine = RelatedEngine(ws, encoder)  # no encoder given: the workspace's, loaded on first use
        text = PromptSet.load(ws.manifest.prompts_dir).render_query(query, ws.manifest.max_seq_length)
        vector = engine.encode_text([text])[0]
        hits = ws.store.search(vector, limit=k, filter=filter, exact=exact)
    return [text_item(h, f"matches the query (text {h.score:.2f})") for h in hits]


@dataclass
class RemoveReport:
    """Products removed by ``remove``."""

    removed: list[str]
    products_total: int


def remove(
    product_ids: Sequence[str],
    *,
    workspace: str | Path | None = None,
    qdrant_url: str | None = None,
    store_client: Any = None,
) -> RemoveReport:
    """Remove products. All ids must exist; otherwise NotFound is raised and nothing is removed."""
    ids = list(dict.fromkeys(product_ids))
    if not ids:
        raise InvalidInput("no product id given")
    with Workspace.open(workspace, qdrant_url=qdrant_url, store_client=store_client, writer=True) as ws:
        store = ws.stage_store(fresh=False)
        found = store.retrieve(ids)
        missing = [p for p in ids if p not in found]
        if missing:
            raise NotFound(f"not in the workspace {ws.path}: {', '.join(missing[:10])}; nothing was removed")
        store.delete(ids)
        ws.manifest.products = store.count()
        ws.save()
        return RemoveReport(removed=ids, products_total=ws.manifest.products)


@dataclass
class WorkspaceInfo:
    """What ``info`` shows."""

    workspace: str
    store: str
    store_location: str
    collection: str | None
    encoder_id: str | None
    encoder_model: str | None
    dim: int | None
    max_seq_length: int | None
    prompts_digest: str | None
    products: int
    created: str
    updated: str | None
    last_index: dict[str, Any]
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def info(
    *, workspace: str | Path | None = None, qdrant_url: str | None = None, store_client: Any = None
) -> WorkspaceInfo:
    """Describe the workspace: store, encoder, template digest, counts, and behaviour statistics when built."""
    with Workspace.open(workspace, qdrant_url=qdrant_url, store_client=store_client) as ws:
        m = ws.manifest
        sections: dict[str, dict[str, Any]] = {}
        if (ws.behaviour_dir / "manifest.json").is_file():
            b = BehaviourStats.open(ws.behaviour_dir).info()
            sections["behaviour"] = {
                "baskets": b.baskets,
                "items": b.items,
                "pairs": b.pairs,
                "min_count": b.min_count,
                "event_types": ",".join(b.event_types) if b.event_types else "all",
                "sources": len(b.sources),
                "last update": b.last_update.replace(microsecond=0).isoformat(),
            }
            fitted = Ranker.open(ws.path)
            sections["ranker"] = (
                {"in use": "fitted ranker (semassoc fit)", **fitted.summary()}
                if fitted is not None
                else {"in use": "hand-set fusion (no fitted ranker: run `semassoc fit`)"}
            )
        return WorkspaceInfo(
            workspace=str(ws.path),
            store=m.store.kind,
            store_location=ws.store.location,
            collection=m.store.collection if m.store.url else None,
            encoder_id=m.encoder_id,
            encoder_model=m.encoder_model,
            dim=m.dim,
            max_seq_length=m.max_seq_length,
            prompts_digest=m.prompts_digest,
            products=ws.store.count(),
            created=m.created,
            updated=m.updated,
            last_index=m.last_index,
            sections=sections,
        )
