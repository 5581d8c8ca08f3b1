"""Local engine vs Spark for ``behavior build``: wall time and peak memory on synthetic Zipf baskets.

    python benchmarks/bench_spark.py                          # 1M and 10M baskets, local capped at 4 GB, Spark local[2]
    python benchmarks/bench_spark.py --sizes 1000000 --cap-gb 0

Each run is a separate process (``api.build_behavior`` into a fresh workspace, ``engine=local`` or ``engine=spark``)
whose whole process tree (for Spark: the Python driver and the JVM) is sampled every 0.2 s for its summed resident
memory; the peak is reported. Two caps: ``--cgroup-gb`` puts each run (either engine, the JVM included) in a memory
cgroup of that size (cgroup v1, needs a writable ``/sys/fs/cgroup/memory``; the kernel reclaims page cache first and
kills the run when its own memory does not fit), the fair cap for both engines; ``--cap-gb`` caps the local
engine's address space (``RLIMIT_AS``, which a JVM cannot run under) so that it fails with ``MemoryError``. Spark runs
with a fixed JVM heap (``--spark-driver-memory``) and spills its shuffles to disk. The events are the Zipf log of
``bench_behaviour.py`` (50,000 products, basket size
1 + Poisson(3)), written once per size as Parquet with integer ids.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def write_events(path: Path, n_baskets: int, n_items: int, seed: int = 0, chunk: int = 1_000_000) -> int:
    """The Zipf log as Parquet (basket_id int64, product_id int32), generated and written in chunks of baskets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1, dtype=np.float64)
    p /= p.sum()
    cumulative = np.cumsum(p)
    rows = 0
    schema = pa.schema([("basket_id", pa.int64()), ("product_id", pa.int32())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n_baskets, chunk):
            count = min(chunk, n_baskets - start)
            sizes = 1 + rng.poisson(3.0, count)
            items = np.searchsorted(cumulative, rng.random(int(sizes.sum())), side="right").astype(np.int32)
            baskets = np.repeat(np.arange(start, start + count, dtype=np.int64), sizes)
            writer.write_table(pa.table({"basket_id": baskets, "product_id": np.minimum(items, n_items - 1)}))
            rows += int(sizes.sum())
    return rows


def child(engine: str, events: str, workspace: str, master: str, conf: dict[str, str]) -> None:
    from semassoc import api
    from semassoc.behaviour.event_options import EventFilters, LoadOptions

    options = LoadOptions(filters=EventFilters(drop_nonpositive_quantity=False))
    spark = None
    if engine == "spark":
        from semassoc.behaviour.spark_input import SparkSettings, spark_session

        spark = SparkSettings(master, conf)
        spark_session(spark).sparkContext.setLogLevel("ERROR")  # started here so that the timing below excludes it
    start = time.perf_counter()
    report = api.build_behavior(events, workspace=workspace, options=options, engine=engine, spark=spark)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "baskets": report.baskets, "items": report.items, "pairs": report.pairs}))


def tree_rss(root: int) -> int:
    """Summed RSS (bytes) of ``root`` and its descendants, from /proc. A child that runs its parent's program (a
    fork not yet replaced by ``exec``: the JVM starts ``bash`` for Hadoop's file commands that way) shares its
    parent's pages and is left out, or each such moment would count the JVM twice."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    family, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child_pid, parent in parents.items():
            if parent == pid and child_pid not in family:
                family.add(child_pid)
                frontier.append(child_pid)

    def program(pid: int) -> str | None:
        try:
            return os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return None

    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in family:
        if pid != root and program(pid) is not None and program(pid) == program(parents.get(pid, -1)):
            continue
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


def memory_cgroup(name: str, cap_gb: float) -> Path:
    """A new cgroup-v1 memory group of ``cap_gb`` under this process's own (removed by the caller)."""
    own = next(
        line.split(":", 2)[2].strip()
        for line in Path("/proc/self/cgroup").read_text().splitlines()
        if line.split(":", 2)[1] == "memory"
    )
    group = Path("/sys/fs/cgroup/memory") / own.lstrip("/") / name
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(int(cap_gb * 2**30)))
    return group


def run(
    engine: str, events: Path, cap_gb: float, cgroup_gb: float, master: str, conf: dict[str, str], nice: int
) -> dict:
    workspace = Path(tempfile.mkdtemp(prefix=f"bench-spark-{engine}-")) / "ws"
    group = memory_cgroup(f"semassoc-bench-{os.getpid()}-{engine}", cgroup_gb) if cgroup_gb > 0 else None

    def limit() -> None:
        os.nice(nice)
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        if engine == "local" and cap_gb > 0:
            cap = int(cap_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    command = [sys.executable, __file__, "--child", engine, str(events), str(workspace), master, json.dumps(conf)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    peak = 0
    loads: list[float] = []
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(process.pid))
            loads.append(os.getloadavg()[0])
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    shutil.rmtree(workspace.parent, ignore_errors=True)
    result: dict = {"engine": engine, "peak_rss_gb": peak / 2**30, "process_s": wall}
    result["load_avg"] = round(sum(loads) / max(len(loads), 1), 1)  # mean 1-minute load average during the run
    if group is not None:
        # The group's own peak counts page cache too (reclaimable: the kernel drops it before killing anything).
        result["cgroup_gb"] = cgroup_gb
        result["cgroup_peak_gb"] = int((group / "memory.max_usage_in_bytes").read_text()) / 2**30
        oom = (group / "memory.oom_control").read_text().split()
        result["oom_kills"] = int(oom[oom.index("oom_kill") + 1]) if "oom_kill" in oom else None
        for _ in range(50):  # the group can be removed once its last process is gone
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.2)
    if process.returncode == 0:
        result.update(json.loads(out.strip().splitlines()[-1]))
    else:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        # The first error line says why (a JVM's stack trace ends with its least useful line); all of it goes to a file.
        cause = [line for line in lines if "Error" in line or "Exception" in line][:1] or lines[-1:] or ["?"]
        result["failed"] = f"exit {process.returncode}: {cause[0].strip()[:300]}"
        log = Path(tempfile.gettempdir()) / f"bench-spark-{engine}-{os.getpid()}-{process.pid}.stderr"
        log.write_text(err, encoding="utf-8")
        result["stderr"] = str(log)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--cap-gb", type=float, default=4.0, help="RLIMIT_AS of the local runs (0: none).")
    parser.add_argument("--cgroup-gb", type=float, default=0.0, help="Memory cgroup of every run (0: none).")
    parser.add_argument("--engines", nargs="+", default=["local", "spark"])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--spark-driver-memory", default="2g")
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="More Spark settings (repeatable)."
    )
    parser.add_argument("--nice", type=int, default=10, help="Niceness of the runs (the machine is shared).")
    parser.add_argument("--dir", type=Path, default=None, help="Where to write the events (default: a temp dir).")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, events, workspace, master, conf = args.child
        child(engine, events, workspace, master, json.loads(conf))
        return
    conf = {
        "spark.driver.memory": args.spark_driver_memory,
        "spark.sql.shuffle.partitions": str(args.shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.local.dir": tempfile.gettempdir(),
        **dict(item.split("=", 1) for item in args.conf),
    }
    print(f"CPUs available: {len(os.sched_getaffinity(0))}; load average now {os.getloadavg()[0]:.1f}")
    print(
        f"local engine capped at {args.cap_gb} GB (RLIMIT_AS); every run in a {args.cgroup_gb} GB memory cgroup; "
        f"Spark {args.master}, conf {conf}"
    )
    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench-spark-events-"))
    directory.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        events = directory / f"zipf_{size}.parquet"
        if not events.is_file():
            start = time.perf_counter()
            rows = write_events(events, size, args.items)
            print(
                f"{size:,} baskets: wrote {rows:,} rows ({events.stat().st_size / 2**20:.0f} MB) in "
                f"{time.perf_counter() - start:.1f} s"
            )
        for engine in args.engines:
            result = run(engine, events, args.cap_gb, args.cgroup_gb, args.master, conf, args.nice)
            print(json.dumps({"baskets_generated": size, **result}), flush=True)


if __name__ == "__main__":
    main()
