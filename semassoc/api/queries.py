"""``complements``, ``related``, ``fit``, ``recommend`` and the batch jobs: queries on an open workspace."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from semassoc import privacy
from semassoc.errors import InvalidInput, NotFound
from semassoc.ranking import batch
from semassoc.ranking.batch import BatchReport
from semassoc.ranking.engine import RelatedEngine
from semassoc.ranking.fusion import FusionWeights
from semassoc.ranking.ranker import FitConfig, FitReport
from semassoc.ranking.recommend import Recommendation
from semassoc.results import ScoredItem
from semassoc.store.base import ProductFilter
from semassoc.workspace import Workspace


def complements(
    product_id: str,
    *,
    workspace: str | Path | None = None,
    k: int = 10,
    metric: str = "lift",
    min_count: int | None = None,
    filter: ProductFilter | None = None,
    qdrant_url: str | None = None,
    store_client: Any = None,
) -> list[ScoredItem]:
    """Products bought together with ``product_id`` ("bought A, also bought B"), best first by ``metric``.

    Reads one row of the stored pair statistics; titles and attributes come from the indexed catalog when there is
    one. Filters on category, brand, price or stock need the catalog: products without those attributes fail them.

    Raises:
        NotFound: no behaviour statistics, or the product is in no counted basket.
    """
    with Workspace.open(workspace, qdrant_url=qdrant_url, store_client=store_client) as ws:
        return RelatedEngine(ws).complements(product_id, k=k, metric=metric, min_count=min_count, filter=filter)


def related(
    product_id: str,
    *,
    workspace: str | Path | None = None,
    mode: str = "auto",
    k: int = 10,
    filter: ProductFilter | None = None,
    collapse: str | None = None,
    weights: FusionWeights | None = None,
    ranker: bool = True,
    qdrant_url: str | None = None,
    store_client: Any = None,
) -> list[ScoredItem]:
    """Related products for any product, with per-signal scores and a one-line reason each.

    ``mode``: ``substitutes`` (text), ``complements`` (own and borrowed behaviour, near-duplicates left out) or
    ``auto`` (fused by the product's behavioural evidence: a new product leans on text and on the behaviour of its
    text neighbours, a bestseller on its own behaviour); in mode ``auto`` the ranker fitted by :func:`fit` orders
    the list when the workspace has one (``ranker=False``: the hand-set fusion). See :meth:`RelatedEngine.related`.
    """
    with Workspace.open(workspace, qdrant_url=qdrant_url, store_client=store_client) as ws:
        return RelatedEngine(ws).related(
            product_id, mode=mode, k=k, filter=filter, collapse=collapse, weights=weights, ranker=ranker
        )


def fit(
    workspace: str | Path | None = None,
    *,
    qdrant_url: str | None = None,
    config: FitConfig | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    store_client: Any = None,
) -> FitReport:
    """Learn the ranker of ``related`` for this workspace from its own basket log and save it in the workspace.

    Self-simulation at cuts inside the log (features from the baskets before each cut, labels from the baskets
    after it, the catalog as it was then); reads only the log, the stored vectors and the catalog payloads. With too
    few events nothing is saved and the report says why (the hand-set fusion stays in use). Refit after
    ``behavior update``. See :mod:`semassoc.ranking.ranker`.

    Raises:
        NotFound: no catalog or no behaviour statistics. SemassocError: statistics built without a basket log.
    """
    from semassoc.ranking.ranker import fit as fit_ranker

    with Workspace.open(workspace, qdrant_url=qdrant_url, store_client=store_client, writer=True) as ws:
        return fit_ranker(ws, config, progress)


def recommend(
    user_id: str | None = None,
    *,
    workspace: str | Path | None = None,
    history: Sequence[str] | None = None,
    interests: str | None = None,
    k: int = 10,
    allow_repeat: bool = False,
    negatives: Sequence[str] = (),
    filter: ProductFilter | None = None,
    profile: str = "vectors",
    qdrant_url: str | None = None,
    store_client: Any = None,
    ranker: bool = True,
) -> Recommendation:
    """Products for a user: from the stored history (or ``history``), ``interests`` text, or popularity; the result
    says which path it took. ``ranker=False``: the profile fusion even when the workspace has a fitted ranker.
    See :meth:`RelatedEngine.recommend`."""
    with Workspace.open(workspace, qdrant_url=qdrant_url, store_client=store_client) as ws:
        key = privacy.stored_key(ws.manifest.behaviour, ws.path) if user_id is not None else None
        return RelatedEngine(ws).recommend(
            privacy.pseudonymise(user_id, key) if key is not None and user_id is not None else user_id,
            history=history,
            interests=interests,
            k=k,
            allow_repeat=allow_repeat,
            negatives=negatives,
            filter=filter,
            profile=profile,
            ranker=ranker,
        )


def batch_related(
    out: str | Path,
    *,
    workspace: str | Path | None = None,
    products: str | Path | Sequence[str] | None = None,
    cold: int | None = None,
    all_products: bool = False,
    mode: str = "auto",
    k: int = 10,
    filter: ProductFilter | None = None,
    collapse: str | None = None,
    chunk_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    ranker: bool = True,
) -> BatchReport:
    """Related products for a list of products (a file or ids), the cold ones (fewer than ``cold`` baskets), or
    all, written to ``out`` (.parquet, .jsonl, .csv). Resumable: rerun the same call after an interruption.
    ``ranker=False``: the hand-set fusion even when the workspace has a fitted ranker."""
    if sum(x is not None and x is not False for x in (products, cold, all_products)) != 1:
        raise InvalidInput("choose exactly one of --products FILE, --cold N, --all")
    with Workspace.open(workspace) as ws:
        engine = RelatedEngine(ws)
        if all_products:
            ids = batch.all_products(engine)
        elif cold is not None:
            ids = batch.cold_products(engine, cold)
        else:
            ids = batch.read_ids(products) if isinstance(products, (str, Path)) else list(products or [])
        return batch.batch_related(
            engine,
            ids,
            out,
            mode=mode,
            k=k,
            filter=filter,
            collapse=collapse,
            chunk_size=chunk_size,
            progress=progress,
            ranker=ranker,
        )


def batch_recommend(
    out: str | Path,
    *,
    workspace: str | Path | None = None,
    users: str | Path | Sequence[str] | None = None,
    all_users: bool = False,
    k: int = 10,
    allow_repeat: bool = False,
    filter: ProductFilter | None = None,
    profile: str = "vectors",
    chunk_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    ranker: bool = True,
) -> BatchReport:
    """Recommendations for a list of users (a file or ids) or every user with a history, written to ``out``.
    ``ranker=False``: the profile fusion even when the workspace has a fitted ranker."""
    if (users is None) == (not all_users):
        raise InvalidInput("choose exactly one of --users FILE, --all")
    with Workspace.open(workspace) as ws:
        engine = RelatedEngine(ws)
        if all_users:
            if engine.histories is None:
                raise NotFound(f"no user histories in {ws.path} (the events had no user column)")
            ids = engine.histories.user_ids()
        else:
            ids = batch.read_ids(users) if isinstance(users, (str, Path)) else list(users or [])
            key = privacy.stored_key(ws.manifest.behaviour, ws.path)
            if key is not None:  # the output names users by their pseudonym, as the workspace does
                ids = [privacy.pseudonymise(i, key) for i in ids]
        return batch.batch_recommend(
            engine,
            ids,
            out,
            k=k,
            allow_repeat=allow_repeat,
            filter=filter,
            profile=profile,
            chunk_size=chunk_size,
            progress=progress,
            ranker=ranker,
        )
