"""The fitted ranker of ``related`` against its baselines, with no leak: the workspace holds only the events before
a held-out evaluation cut, ``fit`` replays those alone, and every method is judged on the baskets after the cut with
``evaluate``'s truth and query sets (established: >= 5 baskets before the cut; new: first bought after it).

Prints NDCG@10 per method and query set, and the paired per-query difference of the fitted ``related`` against each
other method, with standard errors; writes the numbers to ``benchmarks/out/bench_ranker.json``.

    python benchmarks/bench_ranker.py /tmp/bench_ranker            # Online Retail 2009-2010, cut 2010-09-26
    python benchmarks/bench_ranker.py /tmp/br --cut 2010-08-01 --model hashing:256
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import DATA, OUT, online_retail_catalog  # noqa: E402
from semassoc import api  # noqa: E402
from semassoc.behaviour.events import EventFilters, LoadOptions  # noqa: E402
from semassoc.behaviour.stats import BehaviourStats  # noqa: E402
from semassoc.errors import NotFound  # noqa: E402
from semassoc.evaluation.metrics import ndcg_at_k  # noqa: E402
from semassoc.evaluation.preparation import EvaluationConfig, catalog_ids, prepare  # noqa: E402
from semassoc.ranking.engine import RelatedEngine  # noqa: E402
from semassoc.ranking.ranker import FitConfig  # noqa: E402
from semassoc.workspace import Workspace  # noqa: E402


def mean_se(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else 0.0


def lists_for(engine: RelatedEngine, method: str, queries: list[str], k: int) -> list[list[str]]:
    out: list[list[str]] = []
    popular = [i.product_id for i in engine.popular(k=k + 1)]
    for start in range(0, len(queries), 256):
        chunk = queries[start : start + 256]
        if method == "related":
            rows = [[i.product_id for i in r] for r in engine.related_batch(chunk, k=k)]
        elif method == "related-fusion":
            rows = [[i.product_id for i in r] for r in engine.related_batch(chunk, k=k, ranker=False)]
        elif method == "similar":
            rows = [[i.product_id for i in r] for r in engine.similar_batch(chunk, k=k)]
        elif method == "popularity":
            rows = [[p for p in popular if p != q][:k] for q in chunk]
        else:  # behaviour only: shared baskets (the best single behaviour list in docs/fusion.md), else popularity
            rows = []
            for q in chunk:
                try:
                    items = [i.product_id for i in engine.complements(q, k=k, metric="count")]
                except NotFound:
                    items = []
                rows.append(items or [p for p in popular if p != q][:k])
        out.extend(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--cut", default="2010-09-26")
    parser.add_argument("--model", default=None, help="encoder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--max-queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    catalog, _ = online_retail_catalog(args.workdir)
    events_path = DATA / "online_retail" / "online_retail_II_2009-2010.parquet"
    options = LoadOptions(filters=EventFilters.online_retail())
    events = options.load(events_path)
    ids = catalog_ids(catalog)
    config = EvaluationConfig(
        split_date=datetime.fromisoformat(args.cut), users=False, max_queries=args.max_queries, seed=args.seed
    )
    data = prepare(ids, events, config)
    ws_path = args.workdir / "ws"
    started = time.perf_counter()
    api.index_catalog(catalog, workspace=ws_path, model=args.model, replace=True)
    index_s = time.perf_counter() - started
    with Workspace.create_or_open(ws_path) as ws:  # only the events before the cut: the same as evaluate's
        BehaviourStats.build(data.split.train, ws.behaviour_dir, min_count=config.min_count)
        ws.manifest.behaviour = {"load_options": options.to_dict()}
        ws.save()
    started = time.perf_counter()
    fit = api.fit(ws_path, config=FitConfig(seed=args.seed))
    fit_s = time.perf_counter() - started
    print(f"fit: {fit.message} ({fit_s:.1f} s, {fit.rows} rows)")
    methods = ["related", "related-fusion", "similar", "behaviour", "popularity"]
    results: dict[str, dict[str, object]] = {}
    with Workspace.open(ws_path) as ws:
        engine = RelatedEngine(ws)
        for name, queries in (("established", data.products.established), ("new", data.products.new)):
            truths = data.product_truths(queries)
            per_method = {}
            for method in methods:
                lists = lists_for(engine, method, queries, 11)
                per_method[method] = [
                    ndcg_at_k([p for p in ranked if p != q], {p: g for p, g in truth.items() if p != q}, 10)
                    for q, ranked, truth in zip(queries, lists, truths, strict=True)
                ]
            rows = {}
            for method in methods:
                m, se = mean_se(per_method[method])
                diff = [a - b for a, b in zip(per_method["related"], per_method[method], strict=True)]
                dm, dse = mean_se(diff)
                rows[method] = {
                    "ndcg@10": round(m, 4),
                    "se": round(se, 4),
                    "related - this": round(dm, 4),
                    "diff se": round(dse, 4),
                }
            results[name] = {"queries": len(queries), "methods": rows}
    print(f"cut {data.split.cut.date()}; index {index_s:.0f} s; fit {fit_s:.1f} s")
    for name, block in results.items():
        print(f"\n{name} products ({block['queries']} queries): NDCG@10 ± se; paired related - method ± se")
        for method, row in block["methods"].items():  # type: ignore[union-attr]
            ndcg = f"{row['ndcg@10']:.3f} ± {row['se']:.3f}"
            print(f"  {method:16s} {ndcg}   {row['related - this']:+.3f} ± {row['diff se']:.3f}")
    OUT.mkdir(parents=True, exist_ok=True)
    out = {"cut": args.cut, "model": args.model, "fit": fit.to_dict(), "fit_seconds": fit_s, "results": results}
    (OUT / "bench_ranker.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
