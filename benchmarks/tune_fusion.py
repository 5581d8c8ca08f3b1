"""Choose the defaults of `related` with the evaluation harness, on a validation split that never sees the test period.

The Online Retail evaluation in docs/evaluation.md judges events after the 0.8 cut of 2009-12..2010-12. Tuning uses
only the events before that cut, split again at 0.75 (train before, validate after), so the defaults are chosen
without looking at the period the final numbers come from.

    python benchmarks/tune_fusion.py CATALOG.csv ../shared/data/online_retail/online_retail_II_2009-2010.parquet \
        --workspace /tmp/tune_ws

CATALOG.csv: every Online Retail product (`python benchmarks/bench_peers_eval.py data /tmp/evaldata` writes one).
Prints NDCG@10 and Recall@10 (warm, cold) for every variant; the winner's settings become FusionWeights' defaults.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from semassoc.behaviour.events import EventFilters, LoadOptions
from semassoc.errors import NotFound
from semassoc.evaluation import methods, runner
from semassoc.ranking.fusion import FusionWeights


def variant(mode: str, weights: FusionWeights) -> methods.Method:
    def rank(engine, product_id, k):  # type: ignore[no-untyped-def]
        try:
            return [i.product_id for i in engine.related(product_id, mode=mode, k=k, weights=weights)]
        except NotFound:
            return []

    return rank


def grid() -> dict[str, FusionWeights]:
    base = FusionWeights()
    out = {"default": base}
    for association, half, text_warm, transfer in itertools.product(
        ("count", "lift", "npmi", "cosine"), (5.0, 20.0, 80.0), (0.1, 0.3, 0.6), (0.0, 0.3)
    ):
        name = f"{association} half={half:g} text_warm={text_warm:g} transfer={transfer:g}"
        out[name] = replace(base, association=association, half_point=half, text_warm=text_warm, transfer=transfer)
    return out


def fine_grid() -> dict[str, FusionWeights]:
    """Around the coarse winner (count, half point 20, text_warm 0.3, transfer 0.3)."""
    base = FusionWeights(association="count", half_point=20.0, text_warm=0.3, transfer=0.3)
    out = {"coarse winner": base, "rrf": replace(base, method="rrf")}
    for transfer, popularity in itertools.product((0.15, 0.3, 0.6, 1.0), (0.0, 0.05, 0.2)):
        out[f"count transfer={transfer:g} popularity={popularity:g}"] = replace(
            base, transfer=transfer, popularity=popularity
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("catalog")
    parser.add_argument("events")
    parser.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "semassoc-tune"))
    parser.add_argument("--max-queries", type=int, default=600)
    parser.add_argument("--final-fraction", type=float, default=0.8)
    parser.add_argument("--fraction", type=float, default=0.75)
    parser.add_argument("--grid", choices=("coarse", "fine"), default="coarse")
    args = parser.parse_args()

    # Keep only the events before the final evaluation's cut.
    table = pq.read_table(args.events)
    times = np.array(table["InvoiceDate"].to_pylist(), dtype="datetime64[s]")
    cut = times.min() + (times.max() - times.min()) * args.final_fraction
    early = Path(tempfile.mkdtemp()) / "before_final_cut.parquet"
    pq.write_table(table.filter(np.asarray(times < cut)), early)
    print(f"validation events: before {cut} ({int((times < cut).sum()):,} of {len(times):,} rows)")

    variants = grid() if args.grid == "coarse" else fine_grid()
    for name, weights in variants.items():
        methods.METHODS[f"auto [{name}]"] = variant("auto", weights)
    config = runner.EvaluationConfig(
        split_fraction=args.fraction,
        cold_share=0.1,
        max_queries=args.max_queries,
        users=False,
        ks=(10,),
        chart_metric="ndcg@10",
        methods=("popularity", "similar", "complements --metric count", *(f"auto [{n}]" for n in variants)),
    )
    report = runner.evaluate(
        args.catalog,
        early,
        config=config,
        options=LoadOptions(filters=EventFilters.online_retail()),
        workspace=args.workspace,
    )
    rows = []
    for method in config.methods or ():
        warm = report.score(method, "established", "ndcg@10").mean
        cold = report.score(method, "hidden", "ndcg@10").mean
        rows.append(
            (
                method,
                warm,
                cold,
                report.score(method, "established", "recall@10").mean,
                report.score(method, "hidden", "recall@10").mean,
            )
        )
    print(f"queries: {report.query_sets}")
    print(f"{'method':70s} {'warm ndcg':>9s} {'cold ndcg':>9s} {'warm rec':>9s} {'cold rec':>9s} {'min gain':>9s}")
    best_warm = max(r[1] for r in rows if not r[0].startswith("auto"))
    best_cold = max(r[2] for r in rows if not r[0].startswith("auto"))
    for method, warm, cold, rwarm, rcold in sorted(rows, key=lambda r: -(r[1] + r[2])):
        gain = min(warm - best_warm, cold - best_cold)
        print(f"{method:70s} {warm:9.4f} {cold:9.4f} {rwarm:9.4f} {rcold:9.4f} {gain:+9.4f}")


if __name__ == "__main__":
    main()
