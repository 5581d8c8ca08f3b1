"""The evaluation report: scores per method and query set, their JSON form and the chart."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semassoc.errors import InvalidInput, NotFound
from semassoc.evaluation.metrics import MetricValue
from semassoc.io import atomic_write_text

# ========================================================================================================= report


@dataclass
class MethodScores:
    """One method on one query set."""

    method: str
    query_set: str
    queries: int
    metrics: dict[str, MetricValue]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "query_set": self.query_set,
            "queries": self.queries,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "seconds": round(self.seconds, 3),
        }


METRIC_DEFINITIONS = {
    "recall@K": "|top K ∩ relevant| / |relevant|",
    "ndcg@K": "DCG@K / IDCG@K, DCG@K = sum_{i<=K} grade(item_i) / log2(i + 1), grade = co-purchase count "
    "(users: judged baskets holding the product); IDCG = DCG of the relevant products sorted by grade",
    "mrr@K": "1 / rank of the first relevant product in the top K (0 if none)",
    "hit_rate@K": "1 if any relevant product is in the top K, else 0",
    "coverage@K": "distinct products recommended in any top K / catalog size (no standard error)",
    "se": "standard error over queries: sample std (n - 1) / sqrt(n)",
    "exclusion": "the query product (a user's earlier products, by default) is removed from every list and from "
    "the truth before scoring; products outside the catalog are removed from lists and truth",
}


@dataclass
class EvaluationReport:
    """What ``evaluate`` found, with everything needed to reproduce and judge it."""

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

    def score(self, method: str, query_set: str, metric: str) -> MetricValue:
        """The value of one metric, e.g. ``report.score("similar", "cold", "ndcg@10")``.

        Raises:
            NotFound: the method was not run on that query set.
        """
        for r in self.results:
            if r.method == method and r.query_set == query_set:
                if metric not in r.metrics:
                    raise NotFound(f"no metric {metric!r}; have {', '.join(r.metrics)}")
                return r.metrics[metric]
        raise NotFound(f"method {method!r} was not evaluated on {query_set!r} queries")

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
            "results": [r.to_dict() for r in self.results],
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


def write_chart(report: EvaluationReport, path: str | Path, metric: str = "ndcg@10") -> Path:
    """A PNG bar chart of ``metric`` by method, warm beside cold, with standard-error bars."""
    from matplotlib.figure import Figure  # lazy: only the chart needs matplotlib (no pyplot, no global backend)

    sets = [s for s in ("warm", "cold") if report.query_sets.get(s)]
    methods = list(dict.fromkeys(r.method for r in report.results if r.query_set in sets))
    if not methods or not sets:
        raise InvalidInput("nothing to chart: no product queries were evaluated")
    figure = Figure(figsize=(9, 0.45 * len(methods) + 1.6), layout="constrained")
    axes = figure.add_subplot()
    height = 0.8 / len(sets)
    colours = {"warm": "#d9822b", "cold": "#3b78b5"}
    y = np.arange(len(methods))
    for j, query_set in enumerate(sets):
        values, errors = [], []
        for m in methods:
            try:
                v = report.score(m, query_set, metric)
            except NotFound:
                v = MetricValue(0.0)
            values.append(v.mean)
            errors.append(v.se or 0.0)
        axes.barh(
            y + (j - (len(sets) - 1) / 2) * height,
            values,
            height,
            xerr=errors,
            label=f"{query_set} ({report.query_sets[query_set]} queries)",
            color=colours[query_set],
            capsize=2,
        )
    axes.set_yticks(y, methods)
    axes.invert_yaxis()
    axes.set_xlabel(f"{metric} (mean ± standard error)")
    axes.set_title(f"{metric} by method, warm vs cold products", loc="left")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(sets), frameon=False)
    axes.grid(axis="x", alpha=0.3)
    figure.savefig(path, dpi=110)
    return Path(path)
