"""Judge outside recommenders with semassoc's own evaluation: same split, same truth, same query sets, same metric code.

Peers (optional, not runtime dependencies; ``pip install implicit rectools-lightfm``):

- implicit ``BM25Recommender`` (item-item, K1=1.2, B=0.75, K=100) and ``AlternatingLeastSquares`` (64 factors,
  15 iterations), trained on the training side's basket x product matrix; ``similar_items`` per query product.
  Products without training events are unknown to them: an empty list (the honest number for cold products).
- LightFM (``rectools-lightfm``, the maintained fork; WARP loss, 64 components, 10 epochs) with item features =
  identity (products seen in training only) + lower-cased title words, trained on the same matrix (baskets as
  users). Every product, cold ones included, is represented by its features; neighbours by cosine of the item
  representations.

Commands:

    python benchmarks/bench_peers_eval.py data /tmp/evaldata          # catalogs and events for docs/evaluation.md
    python benchmarks/bench_peers_eval.py peers /tmp/evaldata/online_retail_catalog.csv \\
        ../shared/data/online_retail/online_retail_II_2009-2010.parquet --preset online-retail
    python benchmarks/bench_peers_eval.py peers /tmp/evaldata/instacart_catalog.csv \\
        /tmp/evaldata/instacart_events.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from statistics import median

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from semassoc.behaviour.cooccurrence import basket_item_matrix  # noqa: E402
from semassoc.behaviour.events import EventFilters, LoadOptions  # noqa: E402
from semassoc.evaluation.metrics import score_lists  # noqa: E402
from semassoc.evaluation.runner import EvaluationConfig, EvaluationData, catalog_ids, prepare  # noqa: E402

DATA = REPO.parent / "shared" / "data"
NON_PRODUCT = {"POST", "D", "M", "DOT", "BANK CHARGES", "AMAZONFEE", "C2", "CRUK", "PADS", "S", "B", "m"}


# ------------------------------------------------------------------------------------------------------- data sets
def online_retail_catalog(dest: Path) -> Path:
    """Every Online Retail 2009-2010 product, as examples/make_online_retail_subset.py builds the 3,000 (title =
    most frequent description, median price, base-code group), without the cut to 3,000."""
    import pyarrow.parquet as pq

    rows = pq.read_table(DATA / "online_retail" / "online_retail_II_2009-2010.parquet").to_pylist()
    titles: dict[str, Counter[str]] = defaultdict(Counter)
    prices: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        code, desc = r["StockCode"].strip(), (r["Description"] or "").strip()
        if code in NON_PRODUCT or code.startswith(("DCGS", "gift_0001_")):
            continue
        if r["Invoice"].startswith("C") or r["Quantity"] <= 0:
            continue
        if desc and desc != "nan" and r["Price"] > 0:
            titles[code][desc] += 1
            prices[code].append(r["Price"])
    path = dest / "online_retail_catalog.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["product_id", "title", "price", "group"])
        for code in sorted(titles):
            group = re.sub(r"[A-Za-z]+$", "", code) or code
            w.writerow([code, titles[code].most_common(1)[0][0], round(median(prices[code]), 2), group])
    return path


def instacart(dest: Path) -> tuple[Path, Path]:
    """The Instacart sample as a catalog (only the products in the sample: 14,190 of 49,688, to keep encoding
    short; category = aisle, department kept as a column) and events with a synthetic time.

    The sample has no timestamps, only ``order_number`` and ``days_since_prior_order``. Each user's orders get a
    synthetic time: their last order on 2017-12-31, every earlier one ``days_since_prior_order`` days before the next
    (plus ``order_hour_of_day``). A global cut then judges every user's most recent orders.
    """
    src = DATA / "instacart"
    aisles = {r["aisle_id"]: r["aisle"] for r in csv.DictReader((src / "aisles.csv").open())}
    departments = {r["department_id"]: r["department"] for r in csv.DictReader((src / "departments.csv").open())}
    orders: dict[str, dict[int, tuple[str, int, float]]] = defaultdict(dict)  # user -> number -> (order, hour, gap)
    lines = []
    for r in csv.DictReader((src / "prior_orders_593users_sample.csv").open()):
        gap = float(r["days_since_prior_order"]) if r["days_since_prior_order"] else 0.0
        orders[r["user_id"]][int(r["order_number"])] = (r["order_id"], int(r["order_hour_of_day"]), gap)
        lines.append((r["order_id"], r["user_id"], r["product_id"]))
    when: dict[str, np.datetime64] = {}
    end = np.datetime64("2017-12-31T00:00", "m")
    for by_number in orders.values():
        numbers = sorted(by_number)
        days_after_first = np.cumsum([0.0] + [by_number[n][2] for n in numbers[1:]])
        for n, offset in zip(numbers, days_after_first, strict=True):
            order_id, hour, _ = by_number[n]
            minutes = round(float(offset - days_after_first[-1]) * 24 * 60) + hour * 60
            when[order_id] = end + np.timedelta64(minutes, "m")
    used = {p for _, _, p in lines}
    catalog = dest / "instacart_catalog.csv"
    with catalog.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["product_id", "title", "category", "department"])
        for r in csv.DictReader((src / "products.csv").open()):
            if r["product_id"] in used:
                w.writerow([r["product_id"], r["product_name"], aisles[r["aisle_id"]], departments[r["department_id"]]])
    events = dest / "instacart_events.csv"
    with events.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["order_id", "user_id", "product_id", "timestamp"])
        for order_id, user, product in lines:
            w.writerow([order_id, user, product, str(when[order_id]) + ":00"])
    return catalog, events


# ----------------------------------------------------------------------------------------------------------- peers
def _training_matrix(data: EvaluationData, catalog: list[str]) -> sp.csr_matrix:
    """Training baskets x catalog products (binary)."""
    matrix, _ = basket_item_matrix(data.split.train)
    train_ids = data.split.train.item_ids
    position = {p: i for i, p in enumerate(catalog)}
    cols = np.array([position.get(p, -1) for p in train_ids.tolist()])
    keep = cols >= 0
    mapped = sp.csr_matrix(
        (np.ones(keep.sum()), (np.flatnonzero(keep), cols[keep])), shape=(len(train_ids), len(catalog))
    )
    return (matrix.astype(np.float32) @ mapped).tocsr().astype(np.float32)


def _neighbours(vectors: np.ndarray, catalog: list[str], queries: list[str], k: int) -> list[list[str]]:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    position = {p: i for i, p in enumerate(catalog)}
    out = []
    for start in range(0, len(queries), 512):
        rows = [position[q] for q in queries[start : start + 512]]
        scores = unit[rows] @ unit.T
        scores[np.arange(len(rows)), rows] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        for r, cand in enumerate(top):
            order = cand[np.argsort(-scores[r, cand])]
            out.append([catalog[i] for i in order])
    return out


def implicit_lists(model_name: str, matrix: sp.csr_matrix, catalog: list[str], queries: list[str], k: int):
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import BM25Recommender

    model = BM25Recommender(K=100) if model_name == "bm25" else AlternatingLeastSquares(factors=64, iterations=15)
    started = time.perf_counter()
    model.fit(matrix, show_progress=False)
    fit = time.perf_counter() - started
    seen = np.asarray(matrix.sum(axis=0)).ravel() > 0
    position = {p: i for i, p in enumerate(catalog)}
    lists = []
    for q in queries:
        i = position[q]
        if not seen[i]:
            lists.append([])  # never seen in training: the model knows nothing about it
            continue
        ids, _ = model.similar_items(i, N=k + 1)
        lists.append([catalog[j] for j in ids.tolist() if j != i and seen[j]][:k])
    return lists, fit


def lightfm_lists(matrix: sp.csr_matrix, titles: dict[str, str], catalog: list[str], queries: list[str], k: int):
    from lightfm import LightFM

    seen = np.asarray(matrix.sum(axis=0)).ravel() > 0
    vocab: dict[str, int] = {}
    rows, cols = [], []
    identity = {i: n for n, i in enumerate(np.flatnonzero(seen).tolist())}
    offset = len(identity)
    for i, p in enumerate(catalog):
        if i in identity:
            rows.append(i)
            cols.append(identity[i])
        for word in set(re.findall(r"[a-z0-9]+", titles.get(p, "").lower())):
            rows.append(i)
            cols.append(offset + vocab.setdefault(word, len(vocab)))
    features = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(catalog), offset + len(vocab)))
    # Normalise each product's features to sum to 1 (LightFM's usual practice with many features per item).
    features = sp.diags(1.0 / np.maximum(np.asarray(features.sum(axis=1)).ravel(), 1)) @ features
    model = LightFM(no_components=64, loss="warp", random_state=0)
    started = time.perf_counter()
    model.fit(matrix.tocoo(), item_features=features.tocsr().astype(np.float32), epochs=10, num_threads=2)
    fit = time.perf_counter() - started
    _, embeddings = model.get_item_representations(features.tocsr().astype(np.float32))
    return _neighbours(embeddings, catalog, queries, k), fit


def peers(args: argparse.Namespace) -> None:
    options = LoadOptions(filters=EventFilters.online_retail() if args.preset == "online-retail" else EventFilters())
    config = EvaluationConfig(
        split_fraction=args.split_fraction,
        cold_share=args.cold_share,
        seed=args.seed,
        max_queries=args.max_queries,
        users=False,
    )
    started = time.perf_counter()
    ids = catalog_ids(args.catalog)
    data = prepare(ids, options.load(args.events), config)
    prepared = time.perf_counter() - started
    catalog = sorted(ids)
    with open(args.catalog, encoding="utf-8") as fh:
        titles = {r["product_id"]: r["title"] for r in csv.DictReader(fh)}
    matrix = _training_matrix(data, catalog)
    k = max(config.ks) + 1
    results = []
    queries = data.products.by_name()
    everything = [q for qs in queries.values() for q in qs]
    for name in ("implicit bm25", "implicit als", "lightfm warp + title words"):
        t = time.perf_counter()
        if name.startswith("implicit"):
            lists, fit = implicit_lists(name.split()[1], matrix, catalog, everything, k)
        else:
            lists, fit = lightfm_lists(matrix, titles, catalog, everything, k)
        total = time.perf_counter() - t
        by_query = dict(zip(everything, lists, strict=True))
        for query_set, qs in queries.items():
            if not qs:
                continue
            scores = score_lists(
                [by_query[q] for q in qs], data.product_truths(qs), config.ks, exclude=[{q} for q in qs], catalog=ids
            )
            results.append(
                {
                    "method": name,
                    "query_set": query_set,
                    "queries": len(qs),
                    "fit_s": round(fit, 2),
                    "total_s": round(total, 2),
                    "metrics": {m: v.to_dict() for m, v in scores.items()},
                }
            )
            print(
                f"{name:28s} {query_set:5s} n={len(qs):5d} ndcg@10 {scores['ndcg@10']}  recall@10 {scores['recall@10']}"
                f"  (fit {fit:.1f} s, total {total:.1f} s)",
                flush=True,
            )
    summary = {
        "catalog": str(args.catalog),
        "events": str(args.events),
        "prepare_s": round(prepared, 2),
        "query_sets": data.query_sets(),
        "cut": data.split.cut.isoformat(),
        "results": results,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("data", help="write the evaluation catalogs and events into a directory")
    d.add_argument("dest", type=Path)
    p = sub.add_parser("peers", help="evaluate implicit and LightFM on semassoc's split and truth")
    p.add_argument("catalog", type=Path)
    p.add_argument("events", type=Path)
    p.add_argument("--preset", default=None)
    p.add_argument("--split-fraction", type=float, default=0.8)
    p.add_argument("--cold-share", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-queries", type=int, default=1000)
    p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "data":
        args.dest.mkdir(parents=True, exist_ok=True)
        print(online_retail_catalog(args.dest))
        print(*instacart(args.dest))
    else:
        peers(args)


if __name__ == "__main__":
    main()
