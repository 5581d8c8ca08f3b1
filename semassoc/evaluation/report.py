"""The evaluation report: scores per method, query set and cut (and pooled over cuts), paired differences against
baselines, their JSON form and the chart."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semassoc.errors import InvalidInput, NotFound
from semassoc.evaluation.metrics import MetricValue
from semassoc.io import atomic_write_text

#: The ``cut`` of a result pooled over every cut's queries.
POOLED = "pooled"


@dataclass
class MethodScores:
    """One method on one query set at one cut (or ``pooled``).

    ``values`` keeps every query's value of each per-query metric (in ``query_ids`` order) for pooling and paired
    differences; it is not written to the JSON report.
    """

    method: str
    query_set: str
    queries: int
    metrics: dict[str, MetricValue]
    seconds: float
    cut: str = POOLED
    values: dict[str, list[float]] = field(default_factory=dict, repr=False)
    query_ids: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "query_set": self.query_set,
            "cut": self.cut,
            "queries": self.queries,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class PairedDifference:
    """``mean(metric(method) - metric(baseline))`` over the queries of one set (both judged on the same queries)."""

    method: str
    baseline: str
    query_set: str
    cut: str
    metric: str
    queries: int
    difference: MetricValue

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "baseline": self.baseline,
            "query_set": self.query_set,
            "cut": self.cut,
            "metric": self.metric,
            "queries": self.queries,
            "difference": self.difference.to_dict(),
        }


METRIC_DEFINITIONS = {
    "recall@K": "|top K ∩ relevant| / |relevant|",
    "ndcg@K": "DCG@K / IDCG@K, DCG@K = sum_{i<=K} grade(item_i) / log2(i + 1), grade = co-purchase count "
    "(users: judged baskets holding the product); IDCG = DCG of the relevant products sorted by grade",
    "mrr@K": "1 / rank of the first relevant product in the top K (0 if none)",
    "hit_rate@K": "1 if any relevant product is in the top K, else 0",
    "coverage@K": "distinct products recommended in any top K / catalog size (no standard error; pooled: the mean "
    "over cuts)",
    "se": "standard error over queries: sample std (n - 1) / sqrt(n)",
    "pooled": "every cut's queries together (a product asked at two cuts counts twice); mean and SE over them",
    "paired difference": "mean over the queries of a set of metric(method) - metric(baseline), with the SE of that "
    "mean (sample std of the differences / sqrt(n))",
    "exclusion": "the query product (a user's earlier products, by default) is removed from every list and from "
    "the truth before scoring; products outside the catalog are removed from lists and truth",
}


@dataclass
class EvaluationReport:
    """What ``evaluate`` found, with everything needed to reproduce and judge it.

    ``results`` holds every (method, query set) at every cut, plus the ``pooled`` rows when there are several cuts;
    ``cuts`` describes each cut's split (and the ranker fitted on its training side); ``paired`` holds the paired
    differences against the configured baselines.
    """

    config: dict[str, Any]
    truth_definition: str
    user_truth_definition: str
    query_set_definitions: dict[str, str]
    query_sets: dict[str, int]
    excluded_queries: dict[str, int]
    data: dict[str, Any]
    results: list[MethodScores]
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    metric_definitions: dict[str, str] = field(default_factory=lambda: dict(METRIC_DEFINITIONS))
    cuts: list[dict[str, Any]] = field(default_factory=list)
    paired: list[PairedDifference] = field(default_factory=list)

    @property
    def summary_cut(self) -> str:
        """The cut whose rows summarise the run: ``pooled`` with several cuts, else the only cut."""
        cuts = list(dict.fromkeys(r.cut for r in self.results))
        return POOLED if POOLED in cuts or not cuts else cuts[0]

    def score(self, method: str, query_set: str, metric: str, cut: str | None = None) -> MetricValue:
        """The value of one metric, e.g. ``report.score("similar", "new", "ndcg@10")`` (``cut`` None: the
        :attr:`summary_cut`).

        Raises:
            NotFound: the method was not run on that query set.
        """
        cut = cut or self.summary_cut
        for r in self.results:
            if r.method == method and r.query_set == query_set and r.cut == cut:
                if metric not in r.metrics:
                    raise NotFound(f"no metric {metric!r}; have {', '.join(r.metrics)}")
                return r.metrics[metric]
        raise NotFound(f"method {method!r} was not evaluated on {query_set!r} queries (cut {cut})")

    def difference(
        self, method: str, baseline: str, query_set: str, metric: str, cut: str | None = None
    ) -> MetricValue:
        """The paired difference ``method - baseline`` on one set.

        Raises:
            NotFound: that pair was not computed (the baseline is not in ``config.baselines``, or not run).
        """
        cut = cut or self.summary_cut
        for d in self.paired:
            if (d.method, d.baseline, d.query_set, d.metric, d.cut) == (method, baseline, query_set, metric, cut):
                return d.difference
        raise NotFound(f"no paired difference {method!r} - {baseline!r} on {query_set!r} {metric} (cut {cut})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "truth_definition": self.truth_definition,
            "user_truth_definition": self.user_truth_definition,
            "metric_definitions": self.metric_definitions,
            "query_set_definitions": self.query_set_definitions,
            "query_sets": self.query_sets,
            "excluded_queries": self.excluded_queries,
            "data": self.data,
            "cuts": self.cuts,
            "results": [r.to_dict() for r in self.results],
            "paired": [d.to_dict() for d in self.paired],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "notes": self.notes,
            "outputs": self.outputs,
        }


def write_report(report: EvaluationReport, path: str | Path, *, chart: bool = True) -> Path:
    """Write the JSON report, and the chart next to it (same name, ``.png``) unless ``chart`` is False."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    report.outputs["json"] = str(path)
    if chart:
        png = path.with_suffix(".png")
        write_chart(report, png, report.config.get("chart_metric", "ndcg@10"))
        report.outputs["chart"] = str(png)
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return path


#: Chart colour of each query set.
_COLOURS = {
    "established": "#d9822b",
    "new": "#3b78b5",
    "hidden": "#7a9a3a",
    "users": "#8e5ea2",
    "short users": "#b07aa1",
}


def write_chart(report: EvaluationReport, path: str | Path, metric: str = "ndcg@10") -> Path:
    """A PNG chart of ``metric`` by method, one panel per query set (never one "cold" number), with standard-error
    bars; the pooled result when there are several cuts."""
    from matplotlib.figure import Figure  # lazy: only the chart needs matplotlib (no pyplot, no global backend)

    cut = report.summary_cut
    rows = [r for r in report.results if r.cut == cut and metric in r.metrics]
    sets = [s for s in _COLOURS if any(r.query_set == s for r in rows)]
    if not sets:
        raise InvalidInput("nothing to chart: no queries were evaluated")
    heights = [len([r for r in rows if r.query_set == s]) for s in sets]
    figure = Figure(figsize=(9, 0.32 * sum(heights) + 0.9 * len(sets) + 0.6), layout="constrained")
    panels = figure.subplots(len(sets), 1, squeeze=False, height_ratios=[h + 1.5 for h in heights])[:, 0]
    for axes, query_set in zip(panels, sets, strict=True):
        chosen = [r for r in rows if r.query_set == query_set]
        y = np.arange(len(chosen))
        axes.barh(
            y,
            [r.metrics[metric].mean for r in chosen],
            xerr=[r.metrics[metric].se or 0.0 for r in chosen],
            color=_COLOURS[query_set],
            capsize=2,
        )
        axes.set_yticks(y, [r.method for r in chosen])
        axes.invert_yaxis()
        axes.set_title(f"{query_set} ({chosen[0].queries} queries)", loc="left", fontsize=10)
        axes.grid(axis="x", alpha=0.3)
    panels[-1].set_xlabel(f"{metric} (mean ± standard error)" + (", pooled over cuts" if cut == POOLED else ""))
    figure.savefig(path, dpi=110)
    return Path(path)
