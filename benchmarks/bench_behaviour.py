"""Benchmark pair statistics against peers, side by side in one run.

    python benchmarks/bench_behaviour.py    # Online Retail vs implicit and mlxtend, then the 1M-basket scale run
    python benchmarks/bench_behaviour.py --skip-scale

Peers are measured only if installed (``pip install implicit mlxtend pandas``); they are not dependencies of semassoc.
Times are the median of ``--repeat`` runs (wall clock). Data: ../shared/data (or $SEMASSOC_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from semassoc.behaviour.cooccurrence import basket_item_matrix, pair_counts
from semassoc.behaviour.events import DEFAULT_EVENT_TYPE, EventFilters, Events, load_events
from semassoc.behaviour.stats import BehaviourStats
from semassoc.workspace import Workspace


def shared_data() -> Path:
    env = os.environ.get("SEMASSOC_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def online_retail(repeat: int, mlxtend_support: float) -> None:
    path = shared_data() / "online_retail" / "online_retail_II_2009-2010.parquet"
    if not path.is_file():
        print(f"skipped: {path} not found")
        return
    load_s, events = timed(lambda: load_events(path, filters=EventFilters.online_retail()), repeat)
    assert isinstance(events, Events)
    matrix, _ = basket_item_matrix(events)
    shape = f"{matrix.shape[0]:,} baskets x {matrix.shape[1]:,} items"
    print(f"Online Retail II 2009-2010: {len(events):,} rows -> {shape}")
    print(f"  load + validate + filter events        {load_s:8.3f} s")

    def compute() -> object:
        return pair_counts(basket_item_matrix(events)[0])

    compute_s, (pairs, _) = timed(compute, repeat)
    directory = Path(tempfile.mkdtemp()) / "behaviour"
    build_s, _ = timed(lambda: BehaviourStats.build(events, directory), repeat)
    stats = BehaviourStats.open(directory)
    query_s, _ = timed(lambda: stats.neighbours("85123A", k=10, metric="lift"), 200)
    print(f"  ours: all {pairs.nnz // 2:,} pair counts (matrix + X^T X)  {compute_s:8.3f} s")
    print(f"  ours: BehaviourStats.build incl. atomic write   {build_s:8.3f} s")
    print(f"  ours: neighbours('85123A', k=10) after open     {query_s * 1e3:8.3f} ms")

    try:
        from implicit.nearest_neighbours import CosineRecommender
    except ImportError:
        print("  implicit: not installed")
    else:
        user_items = matrix.astype(np.float32).tocsr()

        def fit() -> object:
            model = CosineRecommender(K=100)
            model.fit(user_items, show_progress=False)
            return model

        implicit_s, _ = timed(fit, repeat)
        print(f"  implicit CosineRecommender(K=100).fit         {implicit_s:8.3f} s")
        print(
            f"    ratio ours compute / implicit = {compute_s / implicit_s:.2f}x; "
            f"ours build / implicit = {build_s / implicit_s:.2f}x"
        )

    try:
        import pandas as pd
        from mlxtend.frequent_patterns import association_rules, fpgrowth
    except ImportError:
        print("  mlxtend: not installed")
        return
    onehot = pd.DataFrame.sparse.from_spmatrix(matrix.astype(bool), columns=events.item_ids.tolist())

    def mlxtend_pairs() -> object:
        itemsets = fpgrowth(onehot, min_support=mlxtend_support, use_colnames=True, max_len=2)
        return association_rules(itemsets, metric="confidence", min_threshold=0.0)

    mlxtend_s, rules = timed(mlxtend_pairs, 1)
    print(
        f"  mlxtend fpgrowth(min_support={mlxtend_support}, max_len=2) + association_rules: {mlxtend_s:8.3f} s "
        f"({len(rules):,} directed pair rules; ours covers all pairs at any support)"
    )
    print(f"    ratio mlxtend / ours build = {mlxtend_s / build_s:.1f}x")


def zipf_events(n_baskets: int, n_items: int, seed: int = 0) -> Events:
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.poisson(3.0, n_baskets)
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    p = 1.0 / ranks
    p /= p.sum()
    item = rng.choice(n_items, size=int(sizes.sum()), p=p).astype(np.int32)
    basket = np.repeat(np.arange(n_baskets, dtype=np.int64), sizes)
    item_ids = np.array([f"p{i:06d}" for i in range(n_items)], dtype=object)
    basket_ids = np.array([f"b{i:08d}" for i in range(n_baskets)], dtype=object)
    return Events(
        item_ids=item_ids,
        item=item,
        basket_ids=basket_ids,
        basket=basket,
        weight=np.ones(item.shape[0]),
        event_types=np.array([DEFAULT_EVENT_TYPE], dtype=object),
        event_type=np.zeros(item.shape[0], np.int16),
        sources=("<zipf>",),
        digests=(f"zipf-{n_baskets}-{n_items}-{seed}",),
        rows_read=int(item.shape[0]),
    )


def scale_child(n_baskets: int, n_items: int) -> None:
    events = zipf_events(n_baskets, n_items)
    rss_events = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workspace = Path(tempfile.mkdtemp()) / "ws"
    with Workspace.create_or_open(workspace) as ws:  # a behaviour-only workspace, for the CLI timing below
        ws.save()
        directory = ws.behaviour_dir
    start = time.perf_counter()
    stats = BehaviourStats.build(events, directory)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    stats = BehaviourStats.open(directory)
    rows = stats.neighbours("p000100", k=10)
    query_ms = (time.perf_counter() - start) * 1e3
    info = stats.info()
    size = sum(p.stat().st_size for p in directory.iterdir())
    print(
        json.dumps(
            {
                "rows": len(events),
                "baskets": info.baskets,
                "items": info.items,
                "pairs": info.pairs,
                "build_s": build_s,
                "open_and_query_ms": query_ms,
                "neighbours": len(rows),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_after_generating_events_mb": rss_events / 1024,
                "disk_mb": size / 2**20,
                "workspace": str(workspace),
            }
        )
    )


def scale(n_baskets: int, n_items: int) -> None:
    print(f"Scale: synthetic Zipf log, {n_baskets:,} baskets over {n_items:,} products (separate process)")
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(n_baskets), str(n_items)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    workspace = result.pop("workspace")
    for key, value in result.items():
        print(f"  {key:32s} {value:,.3f}" if isinstance(value, float) else f"  {key:32s} {value:,}")
    # `semassoc complements` as a whole process (start to exit) on that workspace, varied products.
    times = []
    for i in range(15):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "semassoc.cli.app", "complements", f"p{i * 37:06d}", "-w", workspace, "--json"],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
    times.sort()
    print(f"  complements whole process: median {times[len(times) // 2]:.3f} s, max {times[-1]:.3f} s (15 runs)")
    shutil.rmtree(Path(workspace).parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mlxtend-support", type=float, default=0.001)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--baskets", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        scale_child(*args.child)
        return
    print(f"CPUs available: {len(os.sched_getaffinity(0))}")
    online_retail(args.repeat, args.mlxtend_support)
    if not args.skip_scale:
        scale(args.baskets, args.items)


if __name__ == "__main__":
    main()
