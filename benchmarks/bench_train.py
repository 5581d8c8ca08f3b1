"""Does fine-tuning the encoder on co-purchase pairs help? Base vs tuned all-MiniLM-L6-v2 on Online Retail 2009-2010.

Honest protocol (nothing of the judged side reaches training):

1. the catalog: every Online Retail 2009-2010 product (StockCode, most frequent non-'nan' description; postage,
   fees and other non-product codes dropped), written by ``benchmarks/_common.online_retail_catalog``;
2. ``semassoc.evaluate.evaluate`` with the base encoder in its own workspace: it cuts the events at 80 % of the time
   range, hides the training events of a seeded 10 % of warm products (``--cold-share 0.1``), and builds the
   behaviour statistics of that workspace from the training side only;
3. ``semassoc.train.train_encoder`` on that workspace: its pairs come from those training-side statistics, so no
   judged basket and no hidden product is ever seen by training;
4. ``evaluate`` again with ``--model <tuned dir>`` in a second workspace (same split, truth and queries);
5. per-query paired differences (tuned - base) with standard errors, for ``similar`` and ``related --mode auto``.

Run (about 20 minutes on 2 CPU cores, most of it training):

    python benchmarks/bench_train.py --dir /tmp/bench_train            # writes benchmarks/out/bench_train.json
    python benchmarks/bench_train.py --dir /tmp/bench_train --skip-train  # reuse the tuned model of a former run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import DATA, OUT, online_retail_catalog  # noqa: E402

from semassoc.behaviour.events import EventFilters, LoadOptions  # noqa: E402
from semassoc.evaluation.methods import BATCH_METHODS  # noqa: E402
from semassoc.evaluation.metrics import ndcg_at_k, recall_at_k  # noqa: E402
from semassoc.evaluation.runner import EvaluationConfig, catalog_ids, evaluate, prepare  # noqa: E402
from semassoc.ranking.engine import RelatedEngine  # noqa: E402
from semassoc.workspace import Workspace  # noqa: E402

EVENTS = DATA / "online_retail" / "online_retail_II_2009-2010.parquet"
METHODS = ("popularity", "similar", "complements --metric lift", "related")
PAIRED = ("similar", "related")
K = 10


def config(max_queries: int | None) -> EvaluationConfig:
    return EvaluationConfig(
        split_fraction=0.8, cold_share=0.1, seed=0, ks=(10, 50), methods=METHODS, users=False, max_queries=max_queries
    )


def per_query(workspace: Path, data: Any, method: str, queries: list[str]) -> dict[str, list[float]]:
    """NDCG@10 and Recall@10 of each query (the query product itself dropped from its list, as the harness does)."""
    with Workspace.open(workspace) as ws:
        engine = RelatedEngine(ws)
        lists = BATCH_METHODS[method](engine, queries, K + 1)
    out: dict[str, list[float]] = {"ndcg@10": [], "recall@10": []}
    for query, ranked in zip(queries, lists, strict=True):
        ranked = [p for p in ranked if p != query][:K]
        grades = data.truth.relevant(query)
        grades.pop(query, None)
        out["ndcg@10"].append(ndcg_at_k(ranked, grades, K))
        out["recall@10"].append(recall_at_k(ranked, grades, K))
    return out


def mean_se(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    se = float(array.std(ddof=1) / math.sqrt(array.size)) if array.size > 1 else float("nan")
    return {"mean": round(float(array.mean()), 4), "se": round(se, 4), "n": int(array.size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench_train"), help="Working directory.")
    parser.add_argument("--skip-train", action="store_true", help="Reuse the tuned model of a former run.")
    parser.add_argument("--max-queries", type=int, default=None, help="Sample each query set (default: all).")
    parser.add_argument("--time-budget", type=float, default=None, help="Training time budget in minutes.")
    parser.add_argument("--model-name", default="tuned", help="Name of the tuned model directory.")
    parser.add_argument("--epochs", type=int, default=None, help="TrainConfig.epochs (default: its default).")
    parser.add_argument("--learning-rate", type=float, default=None, help="TrainConfig.learning_rate.")
    parser.add_argument("--out", type=Path, default=OUT / "bench_train.json")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    catalog, n_products = online_retail_catalog(args.dir)
    options = LoadOptions(filters=EventFilters.online_retail())
    cfg = config(args.max_queries)
    ws_base, ws_tuned = args.dir / "ws_base", args.dir / f"ws_{args.model_name}"
    result: dict[str, Any] = {"catalog_products": n_products, "events": str(EVENTS), "config": cfg.to_dict()}

    started = time.perf_counter()
    base = evaluate(catalog, EVENTS, config=cfg, options=options, workspace=ws_base)
    result["base_eval_seconds"] = round(time.perf_counter() - started, 1)
    result["split"] = {k: base.data[k] for k in ("cut", "train_baskets", "test_baskets", "hidden_products")}
    result["query_sets"] = base.query_sets
    print(f"base evaluated in {result['base_eval_seconds']} s; queries {base.query_sets}", flush=True)

    model_dir = ws_base / "models" / args.model_name
    if not args.skip_train:
        from semassoc.training.pairs import TrainConfig
        from semassoc.training.trainer import train_encoder

        overrides = {
            "time_budget_minutes": args.time_budget,
            "epochs": args.epochs,
            "learning_rate": args.learning_rate,
        }
        train_cfg = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})

        def progress(update: Any) -> None:
            if update.step % 50 == 0 or update.stage != "train":
                print(
                    f"  {update.stage} epoch {update.epoch} step {update.step}/{update.total_steps} "
                    f"loss {update.loss or 0:.4f} eta {update.eta_seconds or 0:.0f} s val {update.validation}",
                    flush=True,
                )

        report = train_encoder(workspace=ws_base, name=args.model_name, config=train_cfg, progress=progress)
        result["training"] = report.to_dict()
        print(f"trained in {report.seconds:.0f} s on {report.device}: {report.metrics}", flush=True)
    lineage = json.loads((model_dir / "lineage.json").read_text(encoding="utf-8"))
    result["lineage"] = lineage

    started = time.perf_counter()
    tuned = evaluate(catalog, EVENTS, config=cfg, options=options, workspace=ws_tuned, model=str(model_dir))
    result["tuned_eval_seconds"] = round(time.perf_counter() - started, 1)
    result["harness"] = {}
    for name, report in (("base", base), ("tuned", tuned)):
        result["harness"][name] = {
            f"{r.method} / {r.query_set}": {m: r.metrics[m].to_dict() for m in ("ndcg@10", "recall@10")}
            for r in report.results
        }

    data = prepare(catalog_ids(catalog), options.load(EVENTS), cfg)
    paired: dict[str, Any] = {}
    for query_set, queries in data.products.by_name().items():
        for method in PAIRED:
            b = per_query(ws_base, data, method, queries)
            t = per_query(ws_tuned, data, method, queries)
            entry = {}
            for metric in ("ndcg@10", "recall@10"):
                diff = [y - x for x, y in zip(b[metric], t[metric], strict=True)]
                entry[metric] = {"base": mean_se(b[metric]), "tuned": mean_se(t[metric]), "tuned - base": mean_se(diff)}
            paired[f"{method} / {query_set}"] = entry
            print(f"{method:22s} {query_set:11s} {json.dumps(entry)}", flush=True)
    result["paired"] = paired
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
