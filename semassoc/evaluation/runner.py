"""Offline evaluation on your own catalog and events: temporal cuts (one, or several for a rolling origin), an
explicit ground truth, query sets kept apart (established products, truly new products, established products with
hidden events, users), baselines beside every related-items method, and paired differences with standard errors.

The pieces are reusable on their own, so that outside recommenders (implicit, LightFM...) are judged by exactly the
same split, truth and metric code (see ``benchmarks/bench_peers_eval.py``):

- :mod:`~semassoc.evaluation.splits` cuts events by basket time (and optionally hides some established products);
- :mod:`~semassoc.evaluation.truth` turns the judged side into graded relevance (co-purchase beyond chance);
- :mod:`~semassoc.evaluation.queries` picks the queries; :mod:`~semassoc.evaluation.preparation` does all three;
- :mod:`~semassoc.evaluation.metrics` computes Recall, NDCG, MRR, hit rate and coverage at K, SEs, paired differences;
- :func:`evaluate` runs all of it against a semassoc workspace and returns an
  :class:`~semassoc.evaluation.report.EvaluationReport`.

Any ranker ``related`` uses is fitted (``api.fit``) on each cut's training workspace, i.e. on events before that cut
only; a ranker left in the evaluation workspace by an earlier run is removed first.

Example:
    >>> from semassoc.evaluation.runner import evaluate, EvaluationConfig
    >>> report = evaluate("examples/online_retail/catalog.csv", "examples/online_retail/invoices.parquet",
    ...                   options=LoadOptions(filters=EventFilters.online_retail()))  # doctest: +SKIP
    >>> report.score("similar", "new", "ndcg@10").mean  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from semassoc.behaviour.events import LoadOptions, file_sha256
from semassoc.behaviour.stats import BehaviourStats
from semassoc.catalog import CatalogColumns
from semassoc.evaluation.methods import BATCH_METHODS, Method, UserMethod, available_methods
from semassoc.evaluation.metrics import MetricValue, paired_difference, per_query_scores, summarise
from semassoc.evaluation.preparation import (
    EvaluationConfig,
    EvaluationData,
    catalog_ids,
    prepare,
    selected_methods,
)
from semassoc.evaluation.report import POOLED, EvaluationReport, MethodScores, PairedDifference, write_report
from semassoc.evaluation.splits import resolve_cuts
from semassoc.evaluation.truth import TruthConfig
from semassoc.ranking.engine import RelatedEngine
from semassoc.text.encoder import Encoder
from semassoc.workspace import Workspace

__all__ = [
    "DEFAULT_WORKSPACE",
    "EvaluationConfig",
    "EvaluationData",
    "TruthConfig",
    "catalog_ids",
    "evaluate",
    "paired_differences",
    "pool_cuts",
    "prepare",
    "run_methods",
]

#: Where ``evaluate`` keeps its own index and training-side behaviour (never the user's main workspace).
DEFAULT_WORKSPACE = ".semassoc-eval"
#: Methods that use a fitted ranker when the workspace has one (``api.fit`` runs per cut for them).
FITTED_METHODS = ("related", "recommend")
#: The workspace folder where ``api.fit`` saves the ranker.
RANKER_DIR = "ranker"

Progress = Callable[[str, int, int], None]


def _run_products(engine: RelatedEngine, name: str, method: Method, queries: Sequence[str], k: int) -> list[list[str]]:
    batch = BATCH_METHODS.get(name)
    if batch is not None and available_methods().get(name) is method:
        return batch(engine, queries, k)
    return [method(engine, q, k) for q in queries]


def _run_users(engine: RelatedEngine, method: UserMethod, histories: Sequence[Any], k: int) -> list[list[str]]:
    return [method(engine, history, k) for history in histories]


def _scores(
    name: str, query_set: str, cut: str, queries: list[str], lists: list[list[str]], truths: list[Any], exclude: Any,
    data: EvaluationData, seconds: float,
) -> MethodScores:  # fmt: skip
    values, coverage = per_query_scores(lists, truths, data.config.ks, exclude=exclude, catalog=data.catalog)
    metrics = {name_: summarise(v) for name_, v in values.items()}
    ordered = {}
    for k in data.config.ks:
        ordered.update({m: v for m, v in metrics.items() if m.endswith(f"@{k}")})
        if f"coverage@{k}" in coverage:
            ordered[f"coverage@{k}"] = MetricValue(coverage[f"coverage@{k}"])
    return MethodScores(name, query_set, len(queries), ordered, seconds, cut, values, queries)


def run_methods(
    engine: RelatedEngine,
    data: EvaluationData,
    methods: Mapping[str, Method],
    user_methods: Mapping[str, UserMethod],
    progress: Progress | None = None,
    cut: str | None = None,
) -> list[MethodScores]:
    """Run every method on every query set of ``data`` and score the lists (rows labelled with ``cut``)."""
    ks = data.config.ks
    label = cut or data.split.cut.isoformat()
    fetch = max(ks) + 1  # one more than needed: the query product is dropped when a method returns it
    # One job per (method, query set): its name, query set, query ids, how to run it, truths and exclusions.
    jobs: list[tuple[str, str, list[str], Callable[[], list[list[str]]], list[Any], Any]] = []
    for query_set, queries in data.products.by_name().items():
        truths = data.product_truths(queries)
        for name, method in methods.items():
            run = functools.partial(_run_products, engine, name, method, queries, fetch)
            jobs.append((name, query_set, queries, run, truths, [{q} for q in queries]))
    for query_set, users in (("users", data.users), ("short users", data.short_users)):
        user_truths: list[Any] = [u.truth for u in users]
        exclude = [set(u.history) if data.config.exclude_history else set() for u in users]
        for name, user_method in user_methods.items():
            run = functools.partial(_run_users, engine, user_method, [u.history for u in users], max(ks))
            jobs.append((name, query_set, [u.user for u in users], run, user_truths, exclude))
    results: list[MethodScores] = []
    for step, (name, query_set, ids, job, truths, exclude) in enumerate(jobs, start=1):
        if progress:
            progress(f"{name} on {query_set}", step, len(jobs))
        if not ids:
            continue
        started = time.perf_counter()
        lists = job()
        seconds = time.perf_counter() - started
        results.append(_scores(name, query_set, label, ids, lists, truths, exclude, data, seconds))
    return results


def pool_cuts(results: Sequence[MethodScores]) -> list[MethodScores]:
    """One ``pooled`` row per (method, query set): every cut's queries together, mean and SE over them; coverage is
    the mean of the cuts' coverage."""
    groups: dict[tuple[str, str], list[MethodScores]] = {}
    for r in results:
        if r.cut != POOLED:
            groups.setdefault((r.method, r.query_set), []).append(r)
    pooled = []
    for (method, query_set), rows in groups.items():
        values = {m: [v for r in rows for v in r.values[m]] for m in rows[0].values}
        metrics: dict[str, MetricValue] = {}
        for name in rows[0].metrics:
            if name in values:
                metrics[name] = summarise(values[name])
            else:
                metrics[name] = MetricValue(float(np.mean([r.metrics[name].mean for r in rows])))
        ids = [f"{r.cut}/{q}" for r in rows for q in r.query_ids]
        seconds = sum(r.seconds for r in rows)
        pooled.append(MethodScores(method, query_set, len(ids), metrics, seconds, POOLED, values, ids))
    return pooled


def paired_differences(
    results: Sequence[MethodScores], baselines: Sequence[str], metrics: Sequence[str]
) -> list[PairedDifference]:
    """Per (cut, query set) and baseline: every other method's paired difference on each of ``metrics``."""
    by_key: dict[tuple[str, str], dict[str, MethodScores]] = {}
    for r in results:
        by_key.setdefault((r.cut, r.query_set), {})[r.method] = r
    out = []
    for (cut, query_set), rows in by_key.items():
        for baseline in baselines:
            base = rows.get(baseline)
            if base is None:
                continue
            for method, row in rows.items():
                if method == baseline:
                    continue
                assert row.query_ids == base.query_ids, "paired differences need the same queries in the same order"
                for metric in metrics:
                    if metric in row.values and metric in base.values:
                        d = paired_difference(row.values[metric], base.values[metric])
                        out.append(PairedDifference(method, baseline, query_set, cut, metric, row.queries, d))
    return out


def _judged_ends(cuts: list[datetime], window_days: float | None) -> list[datetime | None]:
    """The end of each cut's judged side: the window, else the next cut, else the end of the events (None)."""
    if window_days is not None:
        return [c + timedelta(days=window_days) for c in cuts]
    return [*cuts[1:], None]


def _fit(workspace: str | Path) -> dict[str, Any]:
    """Fit the ranker on the workspace's training side, if this build has ``api.fit``; what happened, as a dict."""
    from semassoc import api

    fit = getattr(api, "fit", None)
    if fit is None:
        return {"saved": False, "message": "this build of semassoc has no api.fit: related uses the hand-set fusion"}
    report = fit(workspace)
    return report.to_dict() if hasattr(report, "to_dict") else {"saved": bool(getattr(report, "saved", False))}


def _cut_data(data: EvaluationData, behaviour: Any, fitted: dict[str, Any] | None) -> dict[str, Any]:
    split = data.split
    return {
        "cut": split.cut.isoformat(),
        "judged_until": None if split.end is None else split.end.isoformat(),
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
        "behaviour_baskets": behaviour.baskets,
        "behaviour_pairs": behaviour.pairs,
        "query_sets": data.query_sets(),
        "excluded_queries": data.products.excluded,
        "ranker": fitted,
    }


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
    """Evaluate every method at one or several temporal cuts of ``events`` against ``catalog``.

    The catalog is indexed once in ``workspace`` (idempotent: re-runs encode nothing new; the workspace is made to
    hold exactly this catalog). For each cut, behaviour is learnt from the events before the cut only, the ranker of
    ``related`` is fitted on that training side (when ``related`` runs and ``config.fit``), and every method runs
    through one :class:`RelatedEngine`; with several cuts the report also pools them.

    Args:
        catalog: catalog file (as for ``semassoc index``).
        events: events file with timestamps (as for ``semassoc behavior build``).
        config: cuts, truth, queries, cut-offs, methods and baselines (default :class:`EvaluationConfig`).
        options: how to read the events (columns, cleaning, ``EventFilters.online_retail()``...).
        workspace: the evaluation's own workspace directory (default ``./.semassoc-eval``).
        columns: catalog column mapping.
        model: encoder for the catalog (``hashing:64`` for a fast lexical baseline); default: the workspace's, else
            the bundled all-MiniLM-L6-v2.
        encoder: an already-built encoder (overrides ``model``).
        out: write the JSON report here and the chart next to it (``.png``).
        progress: called as ``progress(stage, step, steps)``.

    Raises:
        InvalidInput: bad options, events without timestamps, a cut leaving one side empty.
    """
    from semassoc import api  # api imports heavy-ish modules; keep this module importable on its own

    config = config or EvaluationConfig()
    config.validate()
    options = options or LoadOptions()
    methods, user_methods = selected_methods(config)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def stage(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - since
        return now

    if progress:
        progress("loading events", 0, 1)
    loaded = options.load(events)
    ids = catalog_ids(catalog, columns)
    cuts = resolve_cuts(loaded, config.cuts or [config.split_date or config.split_fraction])
    ends = _judged_ends(cuts, config.window_days)
    t = stage("load", started)
    if progress:
        progress("indexing the catalog", 0, 1)
    index_report = api.index_catalog(
        catalog, workspace=workspace, columns=columns, model=model, encoder=encoder, replace=True
    )
    t = stage("index", t)

    results: list[MethodScores] = []
    cut_reports: list[dict[str, Any]] = []
    notes: list[str] = []
    do_fit = config.fit and any(m in methods or m in user_methods for m in FITTED_METHODS)
    for number, (cut, end) in enumerate(zip(cuts, ends, strict=True), start=1):
        label = f"cut {number}/{len(cuts)}"
        if progress:
            progress(f"{label}: split and truth", 0, 1)
        data = prepare(ids, loaded, config, cut=cut, end=end)
        notes += [n for n in data.notes if n not in notes]
        t = stage("split_and_truth", t)
        if progress:
            progress(f"{label}: behaviour from the training side", 0, 1)
        shutil.rmtree(Path(workspace) / RANKER_DIR, ignore_errors=True)  # never a ranker fitted on another cut
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
        fitted = None
        if do_fit:
            if progress:
                progress(f"{label}: fitting the ranker on the training side", 0, 1)
            fitted = _fit(workspace)
            t = stage("fit", t)
        with Workspace.open(workspace) as ws:
            engine = RelatedEngine(ws)
            results += run_methods(engine, data, methods, user_methods, progress, data.split.cut.isoformat())
            encoder_id = ws.manifest.encoder_id
        t = stage("methods", t)
        cut_reports.append(_cut_data(data, behaviour_info, fitted))
    if do_fit and not any((c["ranker"] or {}).get("saved") for c in cut_reports):
        notes.append("no ranker was saved at any cut: `related` ran on the hand-set fusion (see cuts[].ranker)")
    if len(cuts) > 1:
        results += pool_cuts(results)
    ks = config.ks
    paired = paired_differences(results, config.baselines, [f"{m}@{k}" for k in ks for m in ("ndcg", "recall")])
    timings["total"] = time.perf_counter() - started

    sizes: dict[str, int] = {}
    excluded: dict[str, int] = {}
    for c in cut_reports:
        for name, n in c["query_sets"].items():
            sizes[name] = sizes.get(name, 0) + n
        for name, n in c["excluded_queries"].items():
            excluded[name] = excluded.get(name, 0) + n
    time_range = loaded.time_range
    data_info = {
        "catalog": str(catalog),
        "catalog_sha256": file_sha256(Path(catalog)),
        "catalog_products": len(ids),
        "events": str(events),
        "events_sha256": loaded.digests[0] if loaded.digests else None,
        "events_rows_read": loaded.rows_read,
        "events_rows_used": len(loaded),
        "events_filtered": dict(loaded.filtered),
        "events_time_range": None if time_range is None else [moment.isoformat() for moment in time_range],
        "encoder": encoder_id,
        "encoded": index_report.encoded,
    }
    if len(cut_reports) == 1:
        data_info.update({k: v for k, v in cut_reports[0].items() if k not in ("query_sets", "excluded_queries")})
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
        query_set_definitions=_definitions(config),
        query_sets=sizes,
        excluded_queries=excluded,
        data=data_info,
        results=results,
        timings=timings,
        notes=notes,
        cuts=cut_reports,
        paired=paired,
    )
    if out is not None:
        write_report(report, out)
    return report


def _definitions(config: EvaluationConfig) -> dict[str, str]:
    relevant = f"with >= {config.min_relevant} relevant products"
    return {
        "established": f"catalog products in >= {config.warm_min_baskets} training baskets (events before the cut) "
        f"{relevant}",
        "new": f"catalog products first seen after the cut (no event at all before it) {relevant}",
        "hidden": f"established products (>= {config.warm_min_baskets} training baskets) whose training events were "
        f"all hidden by --cold-share {config.cold_share:g} {relevant}; a simulation, never pooled with new",
        "users": f"users with > {config.short_history} distinct products before the cut {relevant} after it",
        "short users": f"users with 1 to {config.short_history} distinct products before the cut {relevant} after it",
    }
