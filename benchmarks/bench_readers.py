"""Readers during an index: ``semassoc similar`` and ``related`` answered while ``index`` rewrites a big catalog.

    python benchmarks/bench_readers.py            # 100k products (Instacart + synthetic copies)
    python benchmarks/bench_readers.py --n 20000  # quicker

Steps, all as whole processes (the way an analyst's query meets the nightly job):
1. ``index`` the catalog (encoder ``hashing:384``: the same store size as the bundled 384-d model, minutes less
   encoding; the store, not the encoder, is what readers and the writer share).
2. Start ``index`` again on the catalog with every title changed (all products re-encoded and rewritten) and, while
   it runs, issue ``similar`` and ``related`` one after the other, timing each whole process. Each answer must equal
   the one before the index started (readers see the last committed state).
3. When the index ends: its counts must be exact, and a reader's answer now comes from the new state.
Also timed: copying the committed store generation (what every embedded ``index`` does first) and an in-process
``api.similar`` during the index. Results go to benchmarks/out/readers.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

MODEL = "hashing:384"


def cli(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(common.REPO)}
    return subprocess.run(
        [sys.executable, "-m", "semassoc.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=3600
    )


def _in_process_similar(ws: Path, seed: str) -> float:
    """Open the workspace and answer one ``similar`` in this process (what a serving process pays per call)."""
    from semassoc import api

    t = time.perf_counter()
    api.similar(seed, workspace=ws, k=10)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_readers-"))
    try:
        result = run(tmp, args.n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    common.write_json(result, "readers.json")


def run(tmp: Path, n: int) -> dict:
    catalog = common.instacart_catalog(tmp, n)
    ws = tmp / "ws"
    started = time.perf_counter()
    first = cli("index", catalog.path, "--workspace", ws, "--model", MODEL, "--json")
    assert first.returncode == 0, first.stderr
    first_seconds = time.perf_counter() - started
    seed = catalog.ids[123]
    queries = [("similar", seed, "--json"), ("related", seed, "--mode", "substitutes", "--json")]
    before = {q[0]: cli(*q, "--workspace", ws).stdout for q in queries}
    baseline: list[float] = []  # the same whole-process query with no index running, on the same machine
    for _ in range(5):
        t = time.perf_counter()
        assert cli(*queries[0], "--workspace", ws).returncode == 0
        baseline.append(time.perf_counter() - t)
    in_process_idle = [_in_process_similar(ws, seed) for _ in range(5)]

    generation = next(ws.glob("qdrant.*"))
    t = time.perf_counter()
    shutil.copytree(generation, tmp / "copy")
    copy_seconds = time.perf_counter() - t
    shutil.rmtree(tmp / "copy")

    changed = tmp / "changed.csv"
    with catalog.path.open(encoding="utf-8", newline="") as src, changed.open("w", encoding="utf-8", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        for row in reader:
            writer.writerow([row[0], row[1] + " (new label)", *row[2:]])

    env = {**os.environ, "PYTHONPATH": str(common.REPO)}
    command = [sys.executable, "-m", "semassoc.cli", "index", str(changed), "--workspace", str(ws), "--model", MODEL]
    index_started = time.perf_counter()
    writer_proc = subprocess.Popen(
        [*command, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    latencies: dict[str, list[float]] = {"similar": [], "related": [], "api.similar in-process": []}
    failures: list[str] = []
    stale = 0
    time.sleep(2)  # let the writer take its lock and start its copy
    while writer_proc.poll() is None:
        for q in queries:
            t = time.perf_counter()
            answer = cli(*q, "--workspace", ws)
            elapsed = time.perf_counter() - t
            if writer_proc.poll() is not None:
                break  # the index finished meanwhile: this answer may come from either state
            if answer.returncode != 0:
                failures.append(answer.stderr.strip())
                continue
            latencies[q[0]].append(elapsed)
            stale += answer.stdout != before[q[0]]
        if writer_proc.poll() is None:
            latencies["api.similar in-process"].append(_in_process_similar(ws, seed))
    out, err = writer_proc.communicate()
    index_seconds = time.perf_counter() - index_started
    assert writer_proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    after = cli("similar", seed, "--json", "--workspace", ws).stdout
    return {
        "machine": common.machine(),
        "products": catalog.products,
        "encoder": MODEL,
        "first_index_seconds": round(first_seconds, 1),
        "store_generation_copy_seconds": round(copy_seconds, 2),
        "reindex_seconds": round(index_seconds, 1),
        "reindex_counts": {k: report[k] for k in ("updated", "added", "unchanged", "products_total")},
        "reindex_exact": report["updated"] == catalog.products and report["products_total"] == catalog.products,
        "readers_served": sum(len(v) for v in latencies.values()),
        "readers_failed": len(failures),
        "failures": failures[:5],
        "answers_differing_from_committed_state": stale,
        "latency_seconds": {k: common.summary(v) for k, v in latencies.items() if v},
        "idle_latency_seconds": {
            "similar": common.summary(baseline),
            "api.similar in-process": common.summary(in_process_idle),
        },
        "load_average_after": common.loadavg(),
        "answer_changed_after_commit": after != before["similar"],
    }


if __name__ == "__main__":
    main()
