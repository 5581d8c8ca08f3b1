"""What an evaluation needs before any recommender runs: its configuration, and the split, truth and queries
(:func:`prepare`), shared with outside recommenders (``benchmarks/bench_peers_eval.py``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from semassoc.behaviour.events import Events
from semassoc.catalog import CatalogColumns, read_catalog
from semassoc.errors import InvalidInput
from semassoc.evaluation.methods import Method, UserMethod, available_methods, available_user_methods
from semassoc.evaluation.metrics import QUERY_METRICS
from semassoc.evaluation.queries import ProductQuerySets, UserQuery, product_query_sets, user_queries
from semassoc.evaluation.splits import Split, temporal_split
from semassoc.evaluation.truth import Truth, TruthConfig, build_truth


@dataclass(frozen=True)
class EvaluationConfig:
    """Every knob of an evaluation run (all recorded in the report).

    Attributes:
        split_date / split_fraction: the cut (see :func:`temporal_split`); default 80 % of the time range.
        cuts: several cuts (dates, or fractions of the time range) for a rolling origin; each is evaluated on its
            own (training side = events before it; judged side = events from it to the next cut, or to the end
            for the last, or ``window_days`` long) and the report pools them. Overrides ``split_date``.
        window_days: length of each judged side in days (None: up to the next cut / the end of the events).
        cold_share / seed: hide all training events of this share of established catalog products (seeded).
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
        baselines: paired per-query differences of every method against each of these (those that were run).
        fit: fit the ranker of ``related`` (``api.fit``) on each cut's training workspace before scoring, when
            ``related`` is among the methods; False: ``related`` runs on the hand-set fusion.
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
    cuts: tuple[datetime | float, ...] | None = None
    window_days: float | None = None
    baselines: tuple[str, ...] = ("similar",)
    fit: bool = True

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
        if self.window_days is not None and self.window_days <= 0:
            raise InvalidInput(f"--window must be > 0 days, not {self.window_days}")
        if self.cuts is not None and not self.cuts:
            raise InvalidInput("--cuts needs at least one cut")
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
        data["cuts"] = (
            None if self.cuts is None else [c.isoformat() if isinstance(c, datetime) else c for c in self.cuts]
        )
        data["baselines"] = list(self.baselines)
        return data


def selected_methods(config: EvaluationConfig) -> tuple[dict[str, Method], dict[str, UserMethod]]:
    """The product and user methods ``config.methods`` names (all by default).

    Raises:
        InvalidInput: an unknown method name.
    """
    methods = available_methods()
    user_methods = available_user_methods()
    if config.methods is None:
        return methods, user_methods
    unknown = [m for m in config.methods if m not in methods and m not in user_methods]
    if unknown:
        known = sorted(set(methods) | set(user_methods))
        raise InvalidInput(f"unknown method(s) {unknown}; available: {', '.join(known)}")
    return (
        {m: methods[m] for m in config.methods if m in methods},
        {m: user_methods[m] for m in config.methods if m in user_methods},
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
        """Queries per set: ``established``, ``new``, ``hidden``, ``users``, ``short users``."""
        sizes = {name: len(ids) for name, ids in self.products.by_name().items()}
        return {**sizes, "users": len(self.users), "short users": len(self.short_users)}

    def product_truths(self, queries: Sequence[str]) -> list[dict[str, float]]:
        return [self.truth.relevant(q) for q in queries]


def catalog_ids(catalog: str | Path, columns: CatalogColumns | None = None) -> frozenset[str]:
    """The product ids of a catalog file (validated like ``index``)."""
    return frozenset(p.product_id for p in read_catalog(catalog, columns).products)


def prepare(
    catalog: Collection[str],
    events: Events,
    config: EvaluationConfig | None = None,
    *,
    cut: datetime | None = None,
    end: datetime | None = None,
) -> EvaluationData:
    """Split the events, build the truth and pick product and user queries (no workspace, no model).

    ``cut`` and ``end`` (one cut of a rolling origin, and the end of its judged side) override the config's cut.
    """
    config = config or EvaluationConfig()
    config.validate()
    split = temporal_split(
        events,
        split_date=cut or config.split_date,
        end=end,
        hide_min_baskets=config.warm_min_baskets,
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
