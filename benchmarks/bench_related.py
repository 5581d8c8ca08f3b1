"""`related` and `recommend` on a 10k-product workspace: whole-process latency and batch throughput.

    python benchmarks/bench_related.py [--products 10000] [--runs 15] [--workdir DIR] [--baseline SRC]

Workspace: the first N Instacart products (name, aisle and department as category; ../shared/data/instacart,
non-commercial terms: read there, never copied into the project) indexed with the bundled model, behaviour from the
593-user prior-orders sample (with bench_peers_eval's synthetic order times) and a ranker fitted on it (`semassoc fit`);
`related` is measured with the ranker and with `--no-ranker` (the hand-set fusion) side by side. Prints medians of
the whole `semassoc related` / `semassoc recommend` processes (start to exit) and batch throughput; writes
benchmarks/out/bench_related.json.

``--baseline SRC`` (a checkout of the code to compare with, e.g. ``git worktree add /tmp/before COMMIT``) also
measures `related` with the ranker under that code and under this one, interleaved run by run on the same workspace
(whole process, wall and CPU; ``batch related --all``; ``batch recommend --all``), and prints this code's figures as
ratios of the baseline's. Measured processes start in an empty directory with PYTHONPATH set to their tree (started
inside a checkout, ``python -m`` would import that checkout instead), and each batch run reports which tree it imported.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEMASSOC_SHARED_DATA") or REPO.parent / "shared" / "data") / "instacart"


def build(workdir: Path, n_products: int, reuse: bool = False) -> tuple[Path, list[str], list[str]]:
    """The workspace (``reuse``: the one a previous run left in ``workdir``, as it is), its first 50 products with
    behaviour and first 50 users."""
    from semassoc import api

    workspace = workdir / "ws"
    if reuse and (workspace / "ranker" / "lineage.json").is_file():
        ids = [row["product_id"] for row in csv.DictReader((workdir / "catalog.csv").open())]
        print(f"reusing the workspace {workspace} (catalog, behaviour and ranker as they are)")
        return _sample(workspace, ids)

    aisles = {r["aisle_id"]: r["aisle"] for r in csv.DictReader((DATA / "aisles.csv").open())}
    departments = {r["department_id"]: r["department"] for r in csv.DictReader((DATA / "departments.csv").open())}
    catalog = workdir / "catalog.csv"
    ids = []
    with (DATA / "products.csv").open() as src, catalog.open("w", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(["product_id", "title", "category", "department"])
        for row in csv.DictReader(src):
            if len(ids) == n_products:
                break
            ids.append(row["product_id"])
            writer.writerow(
                [row["product_id"], row["product_name"], aisles[row["aisle_id"]], departments[row["department_id"]]]
            )
    start = time.perf_counter()
    report = api.index_catalog(catalog, workspace=workspace)
    print(f"indexed {report.products_total:,} products in {time.perf_counter() - start:.1f} s")
    sys.path.insert(0, str(REPO))
    from benchmarks.bench_peers_eval import instacart

    _, events = instacart(workdir)  # the same orders with a synthetic time (the sample has none), so `fit` can run
    start = time.perf_counter()
    behaviour = api.build_behavior(events, workspace=workspace)
    took = time.perf_counter() - start
    print(f"behaviour: {behaviour.baskets:,} orders, {behaviour.items:,} products in {took:.1f} s")
    start = time.perf_counter()
    fitted = api.fit(workspace)
    print(f"fit: {fitted.message} in {time.perf_counter() - start:.1f} s")
    return _sample(workspace, ids)


def _sample(workspace: Path, ids: list[str]) -> tuple[Path, list[str], list[str]]:
    from semassoc.ranking.engine import RelatedEngine
    from semassoc.workspace import Workspace

    with Workspace.open(workspace) as ws:
        engine = RelatedEngine(ws)
        warm = [p for p in ids if engine.basket_count(p) >= 5][:50]
        users = engine.histories.user_ids()[:50] if engine.histories is not None else []
    return workspace, warm or ids[:50], users


def _neutral_dir() -> str:
    """An empty directory to start measured processes in: ``python -m``/``-c`` put the current directory first on
    ``sys.path``, so a process started inside a checkout imports that checkout's code, whatever PYTHONPATH says."""
    global _NEUTRAL
    if _NEUTRAL is None:
        _NEUTRAL = tempfile.mkdtemp(prefix="bench-related-cwd-")
    return _NEUTRAL


_NEUTRAL: str | None = None


def _env(source: Path | None) -> dict[str, str]:
    """The environment of a measured process: the code tree ``source`` (default this one) first on the path."""
    return {**os.environ, "PYTHONPATH": str((source or REPO).resolve())}


def whole_process(args: list[str], runs: int, source: Path | None = None) -> list[float]:
    """Wall times of whole CLI processes (``source``: the code tree to run, default this one)."""
    times = []
    for i in range(runs):
        command = [sys.executable, "-m", "semassoc.cli.app", *[a.format(i=i) for a in args]]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=_env(source), cwd=_neutral_dir())
        times.append(time.perf_counter() - start)
    return times


BATCH = """
import csv, resource, sys, shutil
from pathlib import Path
import semassoc
from semassoc import api
task, out, limit = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
ids = [row["product_id"] for row in csv.DictReader(open(sys.argv[5]))][:limit] if limit else None
if task == "related":
    report = api.batch_related(out, workspace=sys.argv[1], products=ids, all_products=ids is None)
else:
    report = api.batch_recommend(out, workspace=sys.argv[1], all_users=True)
shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)
out.unlink()
used = resource.getrusage(resource.RUSAGE_SELF)
print(Path(semassoc.__file__).resolve().parents[1], report.per_second, report.queries / (used.ru_utime + used.ru_stime))
"""


def _joined(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def compare(
    baseline: Path, workspace: Path, workdir: Path, products: list[str], runs: int, limit: int = 0
) -> dict[str, float]:
    """`related` with the ranker (and batch `recommend`) under ``baseline``'s code and this one's, interleaved (see
    the module). Each measured process is checked to have imported the tree it stands for."""
    trees = {"baseline": baseline.resolve(), "this": REPO.resolve()}
    process: dict[str, list[float]] = {name: [] for name in trees}
    process_cpu: dict[str, list[float]] = {name: [] for name in trees}
    batch: dict[str, dict[str, list[float]]] = {task: {name: [] for name in trees} for task in ("related", "recommend")}
    cpu: dict[str, dict[str, list[float]]] = {task: {name: [] for name in trees} for task in ("related", "recommend")}
    for i in range(runs):
        for name, tree in trees.items():
            argv = ["related", products[i % len(products)], "-w", str(workspace), "--json"]
            before = _children_cpu()
            process[name] += whole_process(argv, 1, tree)
            process_cpu[name].append(_children_cpu() - before)
    for _ in range(max(3, runs // 3)):
        for task in ("related", "recommend"):
            for name, tree in trees.items():
                out = workdir / f"compare-{name}.parquet"
                done = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        BATCH,
                        str(workspace),
                        task,
                        str(out),
                        str(limit),
                        str(workdir / "catalog.csv"),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=_env(tree),
                    cwd=_neutral_dir(),
                )
                imported, wall, per_cpu = done.stdout.split()[-3:]
                if Path(imported) != tree:
                    sys.exit(f"the {name} run imported semassoc from {imported}, not {tree}")
                batch[task][name].append(float(wall))
                cpu[task][name].append(float(per_cpu))
    out: dict[str, float] = {}
    for name in trees:
        out[f"compare_{name}_related_process_median_s"] = statistics.median(process[name])
        out[f"compare_{name}_related_process_cpu_median_s"] = statistics.median(process_cpu[name])
        print(
            f"{name} ({trees[name]}): `related` process median {statistics.median(process[name]):.3f} s wall, "
            f"{statistics.median(process_cpu[name]):.3f} s CPU ({len(process[name])} runs)"
        )
        for task, unit in (("related", "products"), ("recommend", "users")):
            out[f"compare_{name}_batch_{task}_per_s"] = statistics.median(batch[task][name])
            out[f"compare_{name}_batch_{task}_per_cpu_s"] = statistics.median(cpu[task][name])
            print(
                f"    batch {task} --all median {statistics.median(batch[task][name]):,.0f} {unit}/s (runs: "
                f"{_joined(batch[task][name])}); per CPU second of the process (load-proof) "
                f"median {statistics.median(cpu[task][name]):,.0f} (runs: {_joined(cpu[task][name])})"
            )
    out["compare_process_ratio"] = out["compare_this_related_process_median_s"] / max(
        out["compare_baseline_related_process_median_s"], 1e-9
    )
    out["compare_process_cpu_ratio"] = out["compare_this_related_process_cpu_median_s"] / max(
        out["compare_baseline_related_process_cpu_median_s"], 1e-9
    )
    line = (
        f"this / baseline: `related` process time x{out['compare_process_ratio']:.2f} wall, "
        f"x{out['compare_process_cpu_ratio']:.2f} CPU"
    )
    for task in ("related", "recommend"):
        out[f"compare_batch_{task}_ratio"] = out[f"compare_this_batch_{task}_per_s"] / max(
            out[f"compare_baseline_batch_{task}_per_s"], 1e-9
        )
        out[f"compare_batch_{task}_cpu_ratio"] = statistics.median(cpu[task]["this"]) / max(
            statistics.median(cpu[task]["baseline"]), 1e-9
        )
        pairs = sorted(a / b for a, b in zip(batch[task]["this"], batch[task]["baseline"], strict=True))
        out[f"compare_batch_{task}_pair_ratio_median"] = statistics.median(pairs)
        line += (
            f"; batch {task} throughput x{out[f'compare_batch_{task}_ratio']:.2f} "
            f"(run by run: {', '.join(f'x{r:.2f}' for r in pairs)}), "
            f"per CPU second x{out[f'compare_batch_{task}_cpu_ratio']:.2f}"
        )
    print(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=None, help="Reuse this folder (its vector cache) across runs.")
    parser.add_argument("--baseline", type=Path, default=None, help="Code tree to compare `related` with (see above).")
    parser.add_argument("--compare-products", type=int, default=0, help="Batch comparison on the first N products.")
    parser.add_argument(
        "--compare-only",
        action="store_true",
        help="With --baseline: only the comparison, on the workspace --workdir holds if it has one.",
    )
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"Instacart data not found at {DATA}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-related-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workspace, products, users = build(workdir, args.products, reuse=args.compare_only)
    results: dict[str, object] = {"products": args.products, "command": " ".join(sys.argv)}
    if args.baseline is not None:
        results.update(compare(args.baseline, workspace, workdir, products, args.runs, args.compare_products))
        if args.compare_only:
            _write(results)
            return
    for name, argv in (
        ("related", ["related", "{p}", "-w", str(workspace), "--json"]),
        ("related --no-ranker", ["related", "{p}", "-w", str(workspace), "--json", "--no-ranker"]),
        ("similar", ["similar", "{p}", "-w", str(workspace), "--json"]),
        ("recommend", ["recommend", "{u}", "-w", str(workspace), "--json"]),
    ):
        pool = users if name == "recommend" else products
        if not pool:
            continue
        times = []
        for i in range(args.runs):
            filled = [a.replace("{p}", pool[i % len(pool)]).replace("{u}", pool[i % len(pool)]) for a in argv]
            times += whole_process(filled, 1)
        times.sort()
        results[f"{name}_process_median_s"] = statistics.median(times)
        results[f"{name}_process_p90_s"] = times[int(0.9 * (len(times) - 1))]
        print(f"semassoc {name}: median {statistics.median(times):.3f} s, max {times[-1]:.3f} s ({len(times)} runs)")
    from semassoc import api

    for task, kwargs in (
        ("related", {"all_products": True}),
        ("related --no-ranker", {"all_products": True, "ranker": False}),
        ("recommend", {"all_users": True}),
    ):
        out = workdir / f"{task.replace(' ', '')}.parquet"
        run = api.batch_related if task.startswith("related") else api.batch_recommend
        report = run(out, workspace=workspace, **kwargs)
        results[f"batch_{task}_per_s"] = report.per_second
        print(f"batch {task}: {report.queries:,} in {report.seconds:.1f} s = {report.per_second:,.0f}/s")
    _write(results)


def _write(results: dict[str, object]) -> None:
    out_dir = REPO / "benchmarks" / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "bench_related.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
