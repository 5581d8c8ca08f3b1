"""The measurements of issue 10's "Done when": the fitted `related` against the best single methods, per query set,
at several cut dates, with paired per-query differences and standard errors. One command reproduces the tables:

    python benchmarks/eval_cuts.py                # Online Retail at three cuts + Instacart, real bundled model
    python benchmarks/eval_cuts.py --only or      # one data set (or, ic, or ic3: Instacart at three cuts)
    python benchmarks/eval_cuts.py --no-fit       # related on the hand-set fusion (no `fit` per cut)
    python benchmarks/eval_cuts.py --only or-check --only ic-check   # confirmation cuts, see DATA_SETS

For each cut, `semassoc evaluate` builds the training side from the events before the cut only, fits the ranker of
`related` on that training workspace (`api.fit`), and judges the events from the cut to the next cut (the last cut: to
the end of the events). Query sets are kept apart: `established` (>= 5 training baskets) and `new` (first event after
the cut); products are sampled (seeded, ``--max-queries`` per set and cut). Users are not evaluated here.

Data: Online Retail II 2009-2010 (catalog: every stock code with a real description, as ``bench_peers_eval.py data``
writes it) and the Instacart 593-user sample with synthetic times (same writer; one cut at 0.8 of its time range).
Writes ``benchmarks/out/eval_cuts_<set>.json`` (the full evaluation reports) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import DATA, OUT  # noqa: E402

from semassoc.behaviour.events import EventFilters, LoadOptions  # noqa: E402
from semassoc.errors import NotFound  # noqa: E402
from semassoc.evaluation.methods import BEHAVIOUR_ONLY  # noqa: E402
from semassoc.evaluation.report import EvaluationReport  # noqa: E402
from semassoc.evaluation.runner import EvaluationConfig, evaluate  # noqa: E402

#: The compared lists (issue 10's table), then the behaviour-only candidates for "best behaviour-only list".
COMPARED = ("related", "similar", "popularity", "related-fusion", "hybrid-naive")
METHODS = (*COMPARED, *BEHAVIOUR_ONLY)
SETS = ("established", "new")

DATA_SETS: dict[str, dict[str, Any]] = {
    "or": {
        "name": "Online Retail II 2009-2010",
        "cuts": (datetime(2010, 6, 1), datetime(2010, 8, 1), datetime(2010, 10, 1)),
        "options": LoadOptions(filters=EventFilters.online_retail()),
    },
    "ic": {"name": "Instacart sample (593 users, synthetic times)", "cuts": (0.8,), "options": LoadOptions()},
    "ic3": {
        "name": "Instacart sample, three cuts (0.6, 0.7, 0.8 of the time range)",
        "cuts": (0.6, 0.7, 0.8),
        "options": LoadOptions(),
        "workspace": "ic",  # the same index as "ic"
    },
    # Confirmation cuts: never looked at while the ranker's configuration was chosen (that was done on "or" and
    # "ic3"), so they check that the choices carry to other moments of the same stores.
    "or-check": {
        "name": "Online Retail II 2009-2010, confirmation cuts (not used to choose the configuration)",
        "cuts": (datetime(2010, 5, 1), datetime(2010, 7, 1), datetime(2010, 9, 1)),
        "options": LoadOptions(filters=EventFilters.online_retail()),
        "workspace": "or",
        "data": "or",
    },
    "ic-check": {
        "name": "Instacart sample, confirmation cuts 0.55, 0.65, 0.75 (not used to choose the configuration)",
        "cuts": (0.55, 0.65, 0.75),
        "options": LoadOptions(),
        "workspace": "ic",
        "data": "ic",
    },
}
#: Run when no --only is given.
DEFAULT_SETS = ("or", "ic")


def files(key: str, data_dir: Path) -> tuple[Path, Path]:
    """The catalog and events of a data set, written by bench_peers_eval's writers when missing."""
    import bench_peers_eval as peers

    data_dir.mkdir(parents=True, exist_ok=True)
    if key == "or":
        catalog = data_dir / "online_retail_catalog.csv"
        if not catalog.is_file():
            peers.online_retail_catalog(data_dir)
        return catalog, DATA / "online_retail" / "online_retail_II_2009-2010.parquet"
    catalog, events = data_dir / "instacart_catalog.csv", data_dir / "instacart_events.csv"
    if not (catalog.is_file() and events.is_file()):
        peers.instacart(data_dir)
    return catalog, events


def cell(report: EvaluationReport, method: str, query_set: str, metric: str, cut: str | None) -> str:
    try:
        v = report.score(method, query_set, metric, cut)
    except NotFound:
        return "-"
    return f"{v.mean:.3f} ± {v.se:.3f}" if v.se is not None else f"{v.mean:.3f}"


def diff(report: EvaluationReport, method: str, baseline: str, query_set: str, metric: str, cut: str | None) -> str:
    if method == baseline:
        return "-"
    try:
        d = report.difference(method, baseline, query_set, metric, cut)
    except NotFound:
        return "-"
    return f"{d.mean:+.3f} ± {d.se:.3f}" if d.se is not None else f"{d.mean:+.3f}"


def best_behaviour(report: EvaluationReport) -> str:
    """The behaviour-only list with the highest NDCG@10 on established products (summary cut). Chosen on the same
    data it is then compared on, which favours it, not the ranker."""
    scored = []
    for m in BEHAVIOUR_ONLY:
        try:
            scored.append((report.score(m, "established", "ndcg@10").mean, m))
        except NotFound:
            continue
    return max(scored)[1]


def tables(report: EvaluationReport, title: str) -> str:
    best = best_behaviour(report)
    rows = ["related", best, "similar", "popularity", "related-fusion", "hybrid-naive"]
    labels = {best: f"{best} (best behaviour-only)"}
    cuts = [c["cut"] for c in report.cuts] + (["pooled"] if len(report.cuts) > 1 else [])
    lines = [f"## {title}", ""]
    for c in report.cuts:
        ranker = c.get("ranker") or {}
        fitted = "fitted" if ranker.get("saved") else f"none ({ranker.get('message', 'not fitted')})"
        lines.append(
            f"- cut {c['cut'][:10]}" + (f" to {c['judged_until'][:10]}" if c["judged_until"] else " to the end")
            + f": {c['train_baskets']:,} training baskets, {c['test_baskets']:,} judged; queries "
            + ", ".join(f"{s} {c['query_sets'][s]}" for s in SETS)
            + f"; ranker: {fitted}"
        )  # fmt: skip
    lines.append("")
    for cut in cuts:
        where = "pooled over the cuts" if cut == "pooled" else f"cut {cut[:10]}"
        for query_set in SETS:
            n = next((r.queries for r in report.results if r.query_set == query_set and r.cut == cut), 0)
            lines += [
                f"**{query_set}** products, {where} ({n} queries)",
                "",
                "| list | NDCG@10 | Recall@10 | related − list, NDCG@10 | related − list, Recall@10 |",
                "|---|---|---|---|---|",
            ]
            for m in rows:
                lines.append(
                    f"| `{labels.get(m, m)}` | {cell(report, m, query_set, 'ndcg@10', cut)} | "
                    f"{cell(report, m, query_set, 'recall@10', cut)} | "
                    f"{diff(report, 'related', m, query_set, 'ndcg@10', cut)} | "
                    f"{diff(report, 'related', m, query_set, 'recall@10', cut)} |"
                )
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(DATA_SETS), action="append", help="Data sets to run (default: all).")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/eval_cuts"), help="Workspaces and data files.")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evaldata"), help="Catalog/events files.")
    parser.add_argument("--max-queries", type=int, default=500, help="Seeded sample of each set at each cut.")
    parser.add_argument("--model", default=None, help="Encoder (default: the bundled all-MiniLM-L6-v2).")
    parser.add_argument("--no-fit", action="store_true", help="Do not fit the ranker per cut.")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for key in args.only or DEFAULT_SETS:
        spec = DATA_SETS[key]
        catalog, events = files(spec.get("data", key), args.data_dir)
        config = EvaluationConfig(
            cuts=spec["cuts"],
            methods=METHODS,
            users=False,
            ks=(10,),
            max_queries=args.max_queries,
            baselines=METHODS,
            fit=not args.no_fit,
        )
        started = time.perf_counter()
        report = evaluate(
            catalog,
            events,
            config=config,
            options=spec["options"],
            workspace=args.dir / f"ws_{spec.get('workspace', key)}",
            model=args.model,
            out=args.out / f"eval_cuts_{key}.json",
            progress=lambda stage, step, steps: print(f"  {stage}", file=sys.stderr, flush=True),
        )
        seconds = time.perf_counter() - started
        print(tables(report, f"{spec['name']} ({seconds / 60:.1f} min, encoder {report.data['encoder']})"), flush=True)
        print(f"timings: {json.dumps({k: round(v, 1) for k, v in report.timings.items()})}\n", flush=True)


if __name__ == "__main__":
    main()
