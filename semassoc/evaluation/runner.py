"""Offline evaluation on your own catalog and events: a temporal split, an explicit ground truth, warm and cold
queries, baselines beside every related-items method, and a user-level task.

The pieces are reusable on their own, so that outside recommenders (implicit, LightFM...) are judged by exactly the
same split, truth and metric code (see ``benchmarks/bench_peers_eval.py``):

- :func:`temporal_split` cuts events by basket time (and optionally hides a seeded share of warm products);
- :func:`build_truth` turns the judged side into graded relevance (co-purchase count, beyond chance by lift);
- :func:`product_query_sets` and :func:`user_queries` pick the queries;
- :func:`score_lists` computes Recall, NDCG, MRR, hit rate and coverage at K with standard errors;
- :func:`evaluate` runs all of it against a semassoc workspace and returns an :class:`EvaluationReport`.

A method is named exactly as the CLI/API option that produces it (``similar``, ``complements --metric lift``...).
Add one in one line: ``METHODS["name"] = lambda engine, product_id, k: [...]`` (product ids, best first).

Example:
    >>> from semassoc.evaluation.runner import evaluate, EvaluationConfig
    >>> report = evaluate("examples/online_retail/catalog.csv", "examples/online_retail/invoices.parquet",
    ...                   options=LoadOptions(filters=EventFilters.online_retail()))  # doctest: +SKIP
    >>> report.score("similar", "cold", "ndcg@10").mean  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from semassoc.behaviour.events import Events, LoadOptions, file_sha256
from semassoc.behaviour.stats import BehaviourStats
from semassoc.catalog import CatalogColumns, read_catalog
from semassoc.errors import InvalidInput
from semassoc.evaluation.methods import (
    BATCH_METHODS,
    OPTIONAL_METHODS,
    OPTIONAL_USER_METHODS,
    Method,
    UserMethod,
    available_methods,
    available_user_methods,
)
from semassoc.evaluation.metrics import QUERY_METRICS, score_lists
from semassoc.evaluation.queries import ProductQuerySets, UserQuery, product_query_sets, user_queries
from semassoc.evaluation.report import EvaluationReport, MethodScores, write_report
from semassoc.evaluation.splits import Split, temporal_split
from semassoc.evaluation.truth import Truth, TruthConfig, build_truth
from semassoc.ranking.engine import RelatedEngine
from semassoc.text.encoder import Encoder
from semassoc.workspace import Workspace

#: Where ``evaluate`` keeps its own index and training-side behaviour (never the user's main workspace).
DEFAULT_WORKSPACE = ".semassoc-eval"

Progress = Callable[[str, int, int], None]

# ========================================================================================================= config


@dataclass(frozen=True)
class EvaluationConfig:
    """Every knob of an evaluation run (all recorded in the report).

    Attributes:
        split_date / split_fraction: the cut (see :func:`temporal_split`); default 80 % of the time range.
        cold_share / seed: hide all training events of this share of warm catalog products (seeded).
        truth: the ground-truth definition.
        warm_min_baskets: a warm query product is in at least this many training baskets.
        min_relevant: a query (product or user) needs at least this many relevant products.
        ks: cut-offs of every metric.
        methods: method names to run (product and user registries); None: all available.
        min_count: ``min_count`` of the training behaviour statistics (pairs seen fewer times are ignored).
        users: run the user-level task (needs a user column).
        exclude_history: leave a user's earlier products out of their truth and lists.
        short_history: users with at most this many distinct earlier products are reported apart.
        max_queries / max_users: seeded random sample of each product / user query set (None: all).
        chart_metric: metric of the PNG chart.
    """

    split_date: datetime | None = None
    split_fraction: float = 0.8
    cold_share: float = 0.0
    seed: int = 0
    truth: TruthConfig = field(default_factory=TruthConfig)
    warm_min_baskets: int = 5
    min_relevant: int = 1
    ks: tuple[int, ...] = (10, 50)
    methods: tuple[str, ...] | None = None
    min_count: int = 2
    users: bool = True
    exclude_history: bool = True
    short_history: int = 2
    max_queries: int | None = 1000
    max_users: int | None = 1000
    chart_metric: str = "ndcg@10"

    def validate(self) -> None:
        self.truth.validate()
        if not self.ks or any(k < 1 for k in self.ks):
            raise InvalidInput(f"--k values must be >= 1, not {list(self.ks)}")
        for name in ("warm_min_baskets", "min_relevant", "min_count"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"--{name.replace('_', '-')} must be >= 1, not {getattr(self, name)}")
        for name in ("max_queries", "max_users"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInput(f"--{name.replace('_', '-')} must be >= 1, not {value}")
        if self.short_history < 0:
            raise InvalidInput(f"--short-history must be >= 0, not {self.short_history}")
        metric, _, k = self.chart_metric.partition("@")
        if metric not in (*QUERY_METRICS, "coverage") or not k.isdigit() or int(k) not in self.ks:
            raise InvalidInput(
                f"--chart-metric {self.chart_metric!r}: use METRIC@K with METRIC one of "
                f"{', '.join((*QUERY_METRICS, 'coverage'))} and K one of {list(self.ks)}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["split_date"] = None if self.split_date is None else self.split_date.isoformat()
        data["ks"] = list(self.ks)
        data["methods"] = None if self.methods is None else list(self.methods)
        return data


def _selected(config: EvaluationConfig) -> tuple[dict[str, Method], dict[str, UserMethod], list[str]]:
    methods = available_methods()
    user_methods = available_user_methods()
    notes = []
    missing = [a for a in OPTIONAL_METHODS if not hasattr(RelatedEngine, a)]
    missing += [a for a in OPTIONAL_USER_METHODS if not hasattr(RelatedEngine, a)]
    if missing:
        notes.append(
            f"not in this build of semassoc, so not evaluated: RelatedEngine.{', RelatedEngine.'.join(missing)}"
        )
    if config.methods is None:
        return methods, user_methods, notes
    unknown = [m for m in config.methods if m not in methods and m not in user_methods]
    if unknown:
        known = sorted(set(methods) | set(user_methods))
        raise InvalidInput(f"unknown method(s) {unknown}; available: {', '.join(known)}")
    return (
        {m: methods[m] for m in config.methods if m in methods},
        {m: user_methods[m] for m in config.methods if m in user_methods},
        notes,
    )


# ==================================================================================================== preparation


@dataclass
class EvaluationData:
    """Everything an evaluation needs that does not depend on the recommender: split, truth and queries.

    Outside recommenders are judged on exactly this (``benchmarks/bench_peers_eval.py``).
    """

    config: EvaluationConfig
    catalog: frozenset[str]
    split: Split
    truth: Truth
    products: ProductQuerySets
    users: list[UserQuery]
    short_users: list[UserQuery]
    notes: list[str] = field(default_factory=list)

    def query_sets(self) -> dict[str, int]:
        return {
            "warm": len(self.products.warm),
            "cold": len(self.products.cold),
            "users": len(self.users),
            "short users": len(self.short_users),
        }

    def product_truths(self, queries: Sequence[str]) -> list[dict[str, float]]:
        return [self.truth.relevant(q) for q in queries]


def catalog_ids(catalog: str | Path, columns: CatalogColumns | None = None) -> frozenset[str]:
    """The product ids of a catalog file (validated like ``index``)."""
    return frozenset(p.product_id for p in read_catalog(catalog, columns).products)


def prepare(catalog: Collection[str], events: Events, config: EvaluationConfig | None = None) -> EvaluationData:
    """Split the events, build the truth and pick product and user queries (no workspace, no model)."""
    config = config or EvaluationConfig()
    config.validate()
    split = temporal_split(
        events,
        split_date=config.split_date,
        split_fraction=config.split_fraction,
        cold_share=config.cold_share,
        seed=config.seed,
        eligible=catalog,
    )
    truth = build_truth(split.test, config.truth, catalog)
    products = product_query_sets(
        split,
        truth,
        catalog,
        warm_min_baskets=config.warm_min_baskets,
        min_relevant=config.min_relevant,
        max_queries=config.max_queries,
        seed=config.seed,
    )
    notes: list[str] = []
    users: list[UserQuery] = []
    short: list[UserQuery] = []
    if config.users:
        if events.user is None:
            notes.append("the events have no user column: the user-level task was skipped")
        else:
            everyone = user_queries(
                split, catalog, exclude_history=config.exclude_history, min_relevant=config.min_relevant
            )
            users = [u for u in everyone if len(u.history) > config.short_history]
            short = [u for u in everyone if len(u.history) <= config.short_history]
            users = _sample_users(users, config.max_users, config.seed)
            short = _sample_users(short, config.max_users, config.seed + 1)
    if split.dropped_baskets:
        notes.append(f"{split.dropped_baskets} baskets without a timestamp are in neither side")
    return EvaluationData(config, frozenset(catalog), split, truth, products, users, short, notes)


def _sample_users(users: list[UserQuery], limit: int | None, seed: int) -> list[UserQuery]:
    if limit is None or len(users) <= limit:
        return users
    picked = np.random.default_rng(seed).choice(len(users), size=limit, replace=False)
    return [users[i] for i in sorted(picked.tolist())]


# ========================================================================================================= runner


def _has_related_batch() -> bool:
    return hasattr(RelatedEngine, "related_batch")


def _run_products(
    engine: RelatedEngine,
    name: str,
    method: Method,
    queries: Sequence[str],
    k: int,
) -> list[list[str]]:
    batch = BATCH_METHODS.get(name)
    if batch is not None and available_methods().get(name) is method and (name == "similar" or _has_related_batch()):
        return batch(engine, queries, k)
    return [method(engine, q, k) for q in queries]


def run_methods(
    engine: RelatedEngine,
    data: EvaluationData,
    methods: Mapping[str, Method],
    user_methods: Mapping[str, UserMethod],
    progress: Progress | None = None,
) -> list[MethodScores]:
    """Run every method on every query set of ``data`` and score the lists."""
    ks = data.config.ks
    fetch = max(ks) + 1  # one more than needed: the query product is dropped when a method returns it
    results: list[MethodScores] = []
    steps = len(methods) * 2 + len(user_methods) * 2
    step = 0
    for query_set, queries in (("warm", data.products.warm), ("cold", data.products.cold)):
        truths = data.product_truths(queries)
        for name, method in methods.items():
            step += 1
            if progress:
                progress(f"{name} on {query_set}", step, steps)
            if not queries:
                continue
            started = time.perf_counter()
            lists = _run_products(engine, name, method, queries, fetch)
            seconds = time.perf_counter() - started
            scores = score_lists(lists, truths, ks, exclude=[{q} for q in queries], catalog=data.catalog)
            results.append(MethodScores(name, query_set, len(queries), scores, seconds))
    for query_set, users in (("users", data.users), ("short users", data.short_users)):
        truths = [u.truth for u in users]
        exclude = [set(u.history) if data.config.exclude_history else set() for u in users]
        for name, user_method in user_methods.items():
            step += 1
            if progress:
                progress(f"{name} on {query_set}", step, steps)
            if not users:
                continue
            started = time.perf_counter()
            lists = [user_method(engine, u.history, max(ks)) for u in users]
            seconds = time.perf_counter() - started
            scores = score_lists(lists, truths, ks, exclude=exclude, catalog=data.catalog)
            results.append(MethodScores(name, query_set, len(users), scores, seconds))
    return results


def evaluate(
    catalog: str | Path,
    events: str | Path,
    *,
    config: EvaluationConfig | None = None,
    options: LoadOptions | None = None,
    workspace: str | Path = DEFAULT_WORKSPACE,
    columns: CatalogColumns | None = None,
    model: str | None = None,
    encoder: Encoder | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
) -> EvaluationReport:
    """Evaluate every method on a temporal split of ``events`` against ``catalog``.

    The catalog is indexed in ``workspace`` (idempotent: re-runs encode nothing new; the workspace is made to hold
    exactly this catalog), behaviour is learnt from the training side only, and every method runs through one
    :class:`RelatedEngine`.

    Args:
        catalog: catalog file (as for ``semassoc index``).
        events: events file with timestamps (as for ``semassoc behavior build``).
        config: split, truth, queries, cut-offs and methods (default :class:`EvaluationConfig`).
        options: how to read the events (columns, cleaning, ``EventFilters.online_retail()``...).
        workspace: the evaluation's own workspace directory (default ``./.semassoc-eval``).
        columns: catalog column mapping.
        model: encoder for the catalog (``hashing:64`` for a fast lexical baseline); default: the workspace's, else
            the bundled all-MiniLM-L6-v2.
        encoder: an already-built encoder (overrides ``model``).
        out: write the JSON report here and the chart next to it (``.png``).
        progress: called as ``progress(stage, step, steps)``.

    Returns:
        EvaluationReport.

    Raises:
        InvalidInput: bad options, events without timestamps, a cut leaving one side empty.
    """
    from semassoc import api  # api imports heavy-ish modules; keep this module importable on its own

    config = config or EvaluationConfig()
    config.validate()
    options = options or LoadOptions()
    methods, user_methods, notes = _selected(config)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def stage(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        return now

    if progress:
        progress("loading events", 0, 1)
    loaded = options.load(events)
    ids = catalog_ids(catalog, columns)
    t = stage("load", started)
    if progress:
        progress("split and truth", 0, 1)
    data = prepare(ids, loaded, config)
    t = stage("split_and_truth", t)

    if progress:
        progress("indexing the catalog", 0, 1)
    index_report = api.index_catalog(
        catalog, workspace=workspace, columns=columns, model=model, encoder=encoder, replace=True
    )
    t = stage("index", t)
    if progress:
        progress("behaviour from the training side", 0, 1)
    with Workspace.create_or_open(workspace) as ws:
        stats = BehaviourStats.build(data.split.train, ws.behaviour_dir, min_count=config.min_count)
        ws.manifest.behaviour = {
            "load_options": options.to_dict(),
            "evaluation": {
                "training_side_before": data.split.cut.isoformat(),
                "hidden_products": len(data.split.hidden_items),
            },
        }
        ws.save()
        behaviour_info = stats.info()
    t = stage("behaviour", t)

    with Workspace.open(workspace) as ws:
        engine = RelatedEngine(ws)
        results = run_methods(engine, data, methods, user_methods, progress)
        encoder_id = ws.manifest.encoder_id
    t = stage("methods", t)
    timings["total"] = time.perf_counter() - started

    split = data.split
    time_range = loaded.time_range
    report = EvaluationReport(
        config={**config.to_dict(), "workspace": str(workspace), "load_options": options.to_dict()},
        truth_definition=config.truth.describe(),
        user_truth_definition=(
            "for a user with products before the cut, relevant = catalog products they bought after it; grade = "
            "number of their after-cut baskets holding the product; "
            + (
                "products they bought before the cut are excluded from the truth and from every list"
                if config.exclude_history
                else "products they bought before the cut stay in the truth and lists (repeat purchases count)"
            )
        ),
        query_set_definitions={
            "warm": f"catalog products in >= {config.warm_min_baskets} training baskets with >= "
            f"{config.min_relevant} relevant products",
            "cold": f"catalog products with no training events (first seen after the cut, or hidden by "
            f"--cold-share) with >= {config.min_relevant} relevant products",
            "users": f"users with > {config.short_history} distinct products before the cut and >= "
            f"{config.min_relevant} relevant products after it",
            "short users": f"users with 1 to {config.short_history} distinct products before the cut and >= "
            f"{config.min_relevant} relevant products after it",
        },
        query_sets=data.query_sets(),
        excluded_queries=data.products.excluded,
        data={
            "catalog": str(catalog),
            "catalog_sha256": file_sha256(Path(catalog)),
            "catalog_products": len(ids),
            "events": str(events),
            "events_sha256": loaded.digests[0] if loaded.digests else None,
            "events_rows_read": loaded.rows_read,
            "events_rows_used": len(loaded),
            "events_filtered": dict(loaded.filtered),
            "events_time_range": None if time_range is None else [moment.isoformat() for moment in time_range],
            "cut": split.cut.isoformat(),
            "train_rows": len(split.train),
            "train_baskets": split.train.n_baskets,
            "train_products": split.train.n_items,
            "test_rows": len(split.test),
            "test_baskets": split.test.n_baskets,
            "test_products": split.test.n_items,
            "truth_baskets": data.truth.baskets,
            "truth_baskets_skipped_as_too_large": data.truth.skipped_baskets,
            "truth_pairs": int(data.truth.grades.nnz),
            "new_products_after_cut": len(split.new_items),
            "hidden_products": len(split.hidden_items),
            "behaviour_baskets": behaviour_info.baskets,
            "behaviour_pairs": behaviour_info.pairs,
            "encoder": encoder_id,
            "encoded": index_report.encoded,
        },
        results=results,
        timings=timings,
        notes=notes + data.notes,
    )
    if out is not None:
        write_report(report, out)
    return report
