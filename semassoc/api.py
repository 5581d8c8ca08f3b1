"""The Python API behind every CLI command. Each function returns data; nothing here prints.

``evaluate`` and ``train`` are :func:`semassoc.evaluation.runner.evaluate` and
:func:`semassoc.training.trainer.train_encoder` themselves, imported on first use.

Example:
    >>> from semassoc import api
    >>> report = api.index_catalog("examples/online_retail/catalog.csv", workspace="/tmp/ws")  # doctest: +SKIP
    >>> [item.title for item in api.similar("85123A", workspace="/tmp/ws", k=3)]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semassoc import privacy
from semassoc.behaviour.stats import BehaviourStats
from semassoc.behaviour.users import UserHistories
from semassoc.catalog import CatalogColumns, OnError, read_catalog
from semassoc.errors import InvalidInput, NotFound, RowProblem
from semassoc.ranking import batch as batch
from semassoc.ranking.batch import BatchReport
from semassoc.ranking.engine import Recommendation, RelatedEngine, check_k, text_item
from semassoc.ranking.fusion import FusionWeights
from semassoc.ranking.ranker import FitConfig, FitReport, Ranker
from semassoc.results import ScoredItem
from semassoc.store.base import ProductFilter
from semassoc.text.encoder import Encoder, LazyEncoder
from semassoc.text.indexing import IndexProgress, IndexReport, index_products
from semassoc.text.prompts import PromptSet
from semassoc.workspace import MANIFEST, Workspace, resolve_workspace_path

if TYPE_CHECKING:  # the events reader and the rule miner load pyarrow/pyfim: imported where they are used
    from semassoc.behaviour.events import Events, LoadOptions
    from semassoc.behaviour.rules import Rule
    from semassoc.behaviour.spark import SparkSettings
    from semassoc.evaluation.runner import evaluate as evaluate
    from semassoc.training.trainer import train_encoder as train  # noqa: F401  (api.train, for type checkers)


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


# ---------------------------------------------------------------------------------------------------------------
# Behaviour: pair statistics, complements, rules


@dataclass
class BehaviorReport:
    """What ``behavior build`` / ``behavior update`` did."""

    workspace: str
    sources: list[str]
    rows_read: int
    rows_used: int
    skipped_rows: int
    skipped: list[RowProblem]
    filtered: dict[str, int]
    baskets: int
    items: int
    pairs: int
    seconds: float
    notes: list[str] = field(default_factory=list)  # things the user should know (histories kept or dropped)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["skipped"] = [str(p) for p in self.skipped]
        return data


def _load_all(
    paths: Sequence[str | Path], options: LoadOptions, engine: str = "local", spark: SparkSettings | None = None
) -> list[Events]:
    """Read every events file with ``options``: in this process (``engine="local"``) or with Spark, whose loads
    stay in Spark (``SparkEvents``: the same counts for reports, the rows as a DataFrame)."""
    if engine not in ("local", "spark"):
        raise InvalidInput(f"unknown engine {engine!r}; use local or spark")
    if not paths:
        raise InvalidInput("no events file given")
    if engine == "spark":
        from semassoc.behaviour import spark as spark_engine

        if options.pseudonymise_users:
            raise InvalidInput("--pseudonymise-users is not supported with --engine spark yet; use --engine local")
        return spark_engine.load(spark, [str(p) for p in paths], options)  # type: ignore[return-value]
    return [options.load(p) for p in paths]


def _behavior_report(
    ws: Workspace, parts: list[Events], stats: BehaviourStats, started: float, notes: list[str] | None = None
) -> BehaviorReport:
    b = stats.info()
    return BehaviorReport(
        workspace=str(ws.path),
        sources=[s for p in parts for s in p.sources],
        rows_read=sum(p.rows_read for p in parts),
        rows_used=sum(len(p) for p in parts),
        skipped_rows=sum(p.skipped.rows for p in parts),
        skipped=[problem for p in parts for problem in p.skipped.problems],
        filtered={k: sum(p.filtered.get(k, 0) for p in parts) for p in parts for k in p.filtered},
        baskets=b.baskets,
        items=b.items,
        pairs=b.pairs,
        seconds=time.perf_counter() - started,
        notes=list(notes or []),
    )


def build_behavior(
    events: str | Path | Sequence[str | Path],
    *,
    workspace: str | Path | None = None,
    options: LoadOptions | None = None,
    min_count: int = 2,
    top_k: int | None = None,
    weighted: bool = False,
    event_types: Sequence[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    engine: str = "local",
    spark: SparkSettings | None = None,
) -> BehaviorReport:
    """Count every product pair in one or more events files and store the statistics in the workspace.

    Replaces earlier statistics. All files are validated before anything is written (strict mode).

    Args:
        events: events file(s): CSV, JSONL or Parquet with a product id and a basket/order/session id (or a user id
            and a timestamp, cut into sessions by inactivity).
        workspace: workspace directory (created when missing).
        options: how to read the files (columns, filters, weights, session gap); stored for ``update_behavior``.
        min_count: default minimum number of shared baskets for a pair to count.
        top_k: keep only each product's top-k neighbours (very large catalogs); None keeps every pair.
        weighted: cosine uses event weights instead of presence.
        event_types: count only these event types (e.g. ``["purchase"]``).
        progress: called as ``progress(stage, step, steps)``.
        engine: ``local`` (this process) or ``spark`` (Apache Spark: events may also be directories, Hive-style
            partitions and globs; the statistics written are the same, see docs/spark.md).
        spark: where Spark runs (``SparkSettings``: master, conf); only with ``engine="spark"``.
    """
    from semassoc.behaviour.events import LoadOptions

    started = time.perf_counter()
    options = options or LoadOptions()
    parts = _load_all([events] if isinstance(events, (str, Path)) else list(events), options, engine, spark)
    notes: list[str] = []
    with Workspace.create_or_open(workspace) as ws:
        build = BehaviourStats.build
        if engine == "spark":
            from semassoc.behaviour.spark import build_stats_spark as build  # type: ignore[assignment]
        stats = build(
            parts,
            ws.behaviour_dir,
            min_count=min_count,
            top_k=top_k,
            weighted=weighted,
            event_types=event_types,
            progress=progress,
            extra=_behaviour_extras(ws, parts, options, notes, replace=True, engine=engine),
        )
        _after_behaviour_write(ws)
        ws.manifest.behaviour = {"load_options": options.to_dict()}
        if options.pseudonymise_users:
            ws.manifest.behaviour["user_key_check"] = privacy.key_check(privacy.user_key())
        ws.save()
        _release(parts)
        return _behavior_report(ws, parts, stats, started, notes)


def _release(parts: Sequence[object]) -> None:
    """Let Spark drop what it cached for its loads (no-op for local ``Events``)."""
    for part in parts:
        release = getattr(part, "release", None)
        if release is not None:
            release()


_LOAD_OPTIONS = "load_options.json"


def _behaviour_extras(
    ws: Workspace,
    parts: Sequence[Any],
    options: LoadOptions,
    notes: list[str],
    *,
    replace: bool,
    engine: str = "local",
) -> Callable[[Path], None]:
    """What goes into the behaviour directory with the statistics, in the same atomic write: the per-user histories
    (when the events name users) and the options the events were read with. Statistics and histories therefore
    change together or not at all."""
    from semassoc.behaviour.users import copy_histories, histories_writer

    current = ws.users_dir if UserHistories.exists(ws.users_dir) else None
    without_users = [s for p in parts if not _has_users(p) for s in p.sources]
    histories: Callable[[Path], None] | None
    if without_users:
        histories = None
        if current is not None and not replace:
            histories = copy_histories(current)
            notes.append(f"{', '.join(without_users)}: no user column; the stored user histories are kept unchanged")
        elif current is not None:
            notes.append(
                f"{', '.join(without_users)}: no user column; the new statistics have no user histories "
                "(the previous ones described other events)"
            )
    elif engine == "spark":
        from semassoc.behaviour.spark import spark_histories_writer

        histories = spark_histories_writer(parts, None if replace or current is None else UserHistories(current))
    elif replace or current is None:
        histories = histories_writer(list(parts))
    else:
        histories = histories_writer(list(parts), UserHistories(current))

    def write(tmp: Path) -> None:
        if histories is not None:
            histories(tmp / "users")
        (tmp / _LOAD_OPTIONS).write_text(json.dumps(options.to_dict(), indent=2) + "\n", encoding="utf-8")

    return write


def _has_users(part: Any) -> bool:
    has = getattr(part, "has_user", None)  # Spark loads say so; local Events carry the column or None
    return bool(has) if has is not None else part.user is not None


def _after_behaviour_write(ws: Workspace) -> None:
    """Histories now live inside the behaviour directory: drop the copy an older release kept beside it."""
    legacy = ws.path / "users"
    if legacy.exists() and ws.users_dir != legacy:
        shutil.rmtree(legacy, ignore_errors=True)


def _stored_load_options(ws: Workspace) -> dict[str, Any] | None:
    path = ws.behaviour_dir / _LOAD_OPTIONS
    if path.is_file():
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            pass
    return ws.manifest.behaviour.get("load_options")


def update_behavior(
    events: str | Path | Sequence[str | Path],
    *,
    workspace: str | Path | None = None,
    options: LoadOptions | None = None,
    on_error: OnError | None = None,
    pseudonymise_users: bool | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    engine: str = "local",
    spark: SparkSettings | None = None,
) -> BehaviorReport:
    """Add new events files to the statistics; the result equals a build on all files together.

    Args:
        events: the new file(s). A file already counted (same content) is refused.
        options: how to read them; default: the options the statistics were built with.
        on_error: ``strict`` or ``skip`` instead of the stored setting.
        engine, spark: as in :func:`build_behavior` (statistics built by either engine can be updated by either).
        pseudonymise_users: None follows the build; True/False must match it (mixing raw and hashed ids is refused).
    """
    from dataclasses import replace

    from semassoc.behaviour.events import LoadOptions

    started = time.perf_counter()
    with Workspace.open(workspace, writer=True) as ws:
        stats = BehaviourStats.open(ws.behaviour_dir)
        stored = _stored_load_options(ws)
        options = options or (LoadOptions.from_dict(stored) if stored else LoadOptions())
        if on_error is not None:
            options = replace(options, on_error=on_error)
        if pseudonymise_users is not None:
            options = replace(options, pseudonymise_users=pseudonymise_users)
        pseudonymised = bool((stored or {}).get("pseudonymise_users"))
        if options.pseudonymise_users != pseudonymised:
            state = "pseudonymised" if pseudonymised else "raw"
            raise InvalidInput(
                f"the user ids of {ws.path} are {state}; update with the same --pseudonymise-users setting as the "
                "build (or rebuild)"
            )
        privacy.stored_key(ws.manifest.behaviour, ws.path)  # the same key as the build, or a one-line refusal
        parts = _load_all([events] if isinstance(events, (str, Path)) else list(events), options, engine, spark)
        notes: list[str] = []
        extras = _behaviour_extras(ws, parts, options, notes, replace=False, engine=engine)
        if engine == "spark":
            from semassoc.behaviour.spark import update_stats_spark

            stats = update_stats_spark(
                ws.behaviour_dir,
                parts,  # type: ignore[arg-type]
                progress=progress,
                extra=extras,
            )
        else:
            stats = stats.update(parts, progress=progress, extra=extras)
        _after_behaviour_write(ws)
        ws.save()
        _release(parts)
        return _behavior_report(ws, parts, stats, started, notes)


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


@dataclass
class ForgetReport:
    """What ``forget_user`` removed, and what still holds data derived from the user."""

    user_id: str
    stored_as: str
    products: int
    events: int
    remaining: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def forget_user(user_id: str, *, workspace: str | Path | None = None) -> ForgetReport:
    """Remove a user's history from the workspace (``semassoc forget-user``).

    The history (which products, how often, when) is deleted at once. The pair counts of the behaviour statistics
    were summed over every basket, this user's included: they cannot be taken apart, so they still count the user's
    baskets until the next ``behavior build`` from events files without the user. The report says so, with the
    number of events concerned.

    Args:
        user_id: the id as in the events file (hashed with ``$SEMASSOC_USER_KEY`` when the workspace pseudonymises).

    Raises:
        NotFound: no history is stored for this user.
    """
    with Workspace.open(workspace, writer=True) as ws:
        key = privacy.stored_key(ws.manifest.behaviour, ws.path)
        stored = privacy.pseudonymise(user_id, key) if key is not None else user_id
        if not UserHistories.exists(ws.users_dir):
            raise NotFound(f"no user histories in {ws.path} (the events had no user column)")
        products, events = UserHistories(ws.users_dir).forget(stored)
        if products == 0:
            raise NotFound(f"no history for user {user_id!r} in {ws.path}")
        remaining = [
            f"the behaviour statistics (pair counts, basket log) still count this user's {events} event(s) until "
            "the next `semassoc behavior build` from events files without them",
            "the events files the workspace was built from still hold them",
        ]
        return ForgetReport(user_id, stored, products, events, remaining)


@dataclass
class RulesReport:
    """Rules mined by ``rules``, and where they were written."""

    rules: list[Rule]
    baskets: int
    out: str | None
    seconds: float


def rules(
    events: str | Path | Sequence[str | Path],
    *,
    options: LoadOptions | None = None,
    min_support: float = 0.01,
    min_confidence: float = 0.5,
    min_len: int = 2,
    max_len: int = 10,
    out: str | Path | None = None,
    sort_by: str = "lift",
    engine: str = "local",
    spark: SparkSettings | None = None,
    force: bool = False,
) -> RulesReport:
    """Association rules of any length (arules semantics) from events files, optionally written to a file.

    Args:
        events: events file(s), read with ``options``.
        min_support, min_confidence, min_len, max_len: as in arules' ``apriori`` (min_len counts lhs and rhs).
        out: write the rules here (.csv, .parquet or .jsonl); None writes nothing.
        sort_by: ``lift``, ``confidence``, ``support``, ``count`` or ``coverage`` (descending).
        engine, spark: as in :func:`build_behavior`; with ``spark``, itemsets come from Spark ML's FP-growth and the
            rules are the same.
        force: mine even when the rules are estimated not to fit in memory (see ``rules.estimate_mining``).
    """
    from semassoc.behaviour.events import Events, LoadOptions
    from semassoc.behaviour.rules import mine_rules, write_rules

    started = time.perf_counter()
    if sort_by not in ("lift", "confidence", "support", "count", "coverage"):
        raise InvalidInput(f"cannot sort rules by {sort_by!r}; use lift, confidence, support, count or coverage")
    paths = [events] if isinstance(events, (str, Path)) else list(events)
    parts = _load_all(paths, options or LoadOptions(), engine, spark)
    if engine == "spark":
        from semassoc.behaviour.spark import mine_rules_and_count_spark

        found, baskets = mine_rules_and_count_spark(parts, min_support, min_confidence, min_len, max_len)  # type: ignore[arg-type]
        _release(parts)
    else:
        joined = Events.concat(parts)
        found, baskets = (
            mine_rules(joined, min_support, min_confidence, min_len, max_len, force=force),
            joined.n_baskets,
        )
    found.sort(key=lambda r: (-getattr(r, sort_by), -r.lift, r.lhs, r.rhs))
    written = str(write_rules(found, out)) if out is not None else None
    return RulesReport(rules=found, baskets=baskets, out=written, seconds=time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------------------
# evaluate and train: the evaluation runner's and the trainer's own functions, imported on first use (they load
# scipy, torch...), so that `import semassoc.api` stays light. ``api.evaluate is evaluation.runner.evaluate``.
_LAZY = {
    "evaluate": ("semassoc.evaluation.runner", "evaluate"),
    "train": ("semassoc.training.trainer", "train_encoder"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
