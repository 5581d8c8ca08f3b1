"""Helpers shared by the benchmarks: real catalogs written as CSV, timing statistics, child-process measurement.

The data comes from ``../shared/data`` beside the checkout (override with ``SEMASSOC_DATA``); nothing from it is
copied into the repository: catalogs are written into a temporary directory for the run.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SEMASSOC_DATA") or REPO.parent / "shared" / "data")
OUT = REPO / "benchmarks" / "out"

#: Online Retail stock codes that are postage, fees, adjustments or samples, not products (see its PROVENANCE.md).
NON_PRODUCT = {"POST", "D", "M", "DOT", "BANK CHARGES", "AMAZONFEE", "C2", "CRUK", "PADS", "S", "B", "m"}
NON_PRODUCT_PREFIXES = ("DCGS", "gift_0001_")

#: Suffixes of the synthetic copies that take the Instacart catalog (49,688 products) past its real size.
VARIANT_SUFFIXES = ("(value pack)", "(family size)")
#: Id offset of each synthetic copy: copy k of product 123 gets id k * VARIANT_ID_STEP + 123.
VARIANT_ID_STEP = 1_000_000


# -- catalogs ---------------------------------------------------------------------------------------------------
def online_retail_catalog(dest: Path, limit: int | None = None) -> tuple[Path, int]:
    """Write the Online Retail II product catalog (StockCode, most frequent description) as CSV.

    Every invoice line counts towards the title vote; the string 'nan' and empty descriptions do not vote, and
    codes with no real description are left out. Returns (path, products).
    """
    import pyarrow.parquet as pq

    table = pq.read_table(
        DATA / "online_retail" / "online_retail_II_2009-2010.parquet", columns=["StockCode", "Description"]
    )
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for code, description in zip(table["StockCode"].to_pylist(), table["Description"].to_pylist(), strict=True):
        code = (code or "").strip()  # a few codes carry a trailing space ('47503J ' beside '47503J'): one product
        if not code or code in NON_PRODUCT or code.startswith(NON_PRODUCT_PREFIXES):
            continue
        text = (description or "").strip()
        if text and text.lower() != "nan":
            votes[code][text] += 1
    codes = sorted(votes)
    if limit is not None:
        codes = codes[:limit]
    path = dest / "online_retail_catalog.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["product_id", "title"])
        for code in codes:
            writer.writerow([code, votes[code].most_common(1)[0][0]])
    return path, len(codes)


@dataclass
class InstacartCatalog:
    path: Path
    products: int
    real: int
    synthetic: int
    ids: list[str] = field(repr=False)


def instacart_catalog(dest: Path, n: int, name: str | None = None) -> InstacartCatalog:
    """Write the first ``n`` products of the Instacart catalog as CSV (product_id, title, category).

    ``category`` is "department > aisle". Past the 49,688 real products, synthetic copies follow: the same products
    again with a suffix on the title ("... (value pack)", then "... (family size)") and new ids.
    """
    base = DATA / "instacart"
    aisles = _lookup(base / "aisles.csv", "aisle_id", "aisle")
    departments = _lookup(base / "departments.csv", "department_id", "department")
    real: list[tuple[str, str, str]] = []
    with (base / "products.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            category = f"{departments[row['department_id']]} > {aisles[row['aisle_id']]}"
            real.append((row["product_id"], row["product_name"], category))
    rows = real[:n]
    copy = 0
    while len(rows) < n:
        if copy >= len(VARIANT_SUFFIXES):
            raise ValueError(f"at most {len(real) * (1 + len(VARIANT_SUFFIXES))} Instacart products can be made")
        suffix = VARIANT_SUFFIXES[copy]
        copy += 1
        for pid, title, category in real[: n - len(rows)]:
            rows.append((str(copy * VARIANT_ID_STEP + int(pid)), f"{title} {suffix}", category))
    path = dest / (name or f"instacart_{n}.csv")
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["product_id", "title", "category"])
        writer.writerows(rows)
    n_real = min(n, len(real))
    return InstacartCatalog(path, len(rows), n_real, len(rows) - n_real, [r[0] for r in rows])


def _lookup(path: Path, key: str, value: str) -> dict[str, str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return {row[key]: row[value] for row in csv.DictReader(handle)}


# -- statistics -------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: list[float]) -> dict[str, float]:
    """min / p50 / p95 / max / mean of a list of timings (seconds), plus the count."""
    return {
        "n": len(values),
        "min": min(values),
        "p50": statistics.median(values),
        "p95": percentile(values, 95),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


# -- child processes --------------------------------------------------------------------------------------------
@dataclass
class ChildRun:
    """One finished child process: exit code, wall time, peak RSS, CPU time and an RSS timeline."""

    returncode: int
    seconds: float  # from just before the child's fork to its exit, measured by the launcher
    max_rss_bytes: int  # the child's own peak RSS (ru_maxrss), not inflated by this process's size
    cpu_seconds: float  # user + system CPU time of the child (ru_utime + ru_stime)
    stdout: str
    stderr: str
    rss_timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, RSS bytes)


# Why a launcher: on Linux a child's ru_maxrss starts from its parent's RSS high-water mark, because fork (or vfork)
# shares the parent's memory and exec records that mm's high-water mark into the child's maxrss. A benchmark
# process holding a 0.8 GB model would make every child look at least 0.8 GB big. The launcher is a bare Python
# process (about 10 MB): it starts the command, waits for it with wait4 and writes the command's rusage to a file.
_LAUNCHER = """
import json, os, subprocess, sys, time
report = sys.argv[1]
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
with open(report + ".pid", "w") as handle:
    handle.write(str(proc.pid))
_, status, usage = os.wait4(proc.pid, 0)
seconds = time.perf_counter() - started
with open(report, "w") as handle:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "seconds": seconds, "maxrss_kib": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime}, handle)
"""


def run_child(argv: list[str], *, env: dict[str, str] | None = None, sample_rss: float | None = None) -> ChildRun:
    """Run ``argv`` to completion (through a lean launcher, see above) and measure it.

    With ``sample_rss`` the child's current RSS is also read from /proc every ``sample_rss`` seconds.
    """
    import tempfile

    with (
        tempfile.TemporaryDirectory() as scratch,
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        report = Path(scratch) / "rusage.json"
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(report), *argv]
        started = time.perf_counter()
        proc = subprocess.Popen(launcher, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL)
        timeline: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            page = os.sysconf("SC_PAGE_SIZE")
            pid_file = Path(f"{report}.pid")
            while not stop.is_set() and not pid_file.is_file():
                stop.wait(0.01)
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                return
            while not stop.is_set():
                try:
                    resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
                except (OSError, IndexError, ValueError):
                    return
                timeline.append((time.perf_counter() - started, resident))
                stop.wait(sample_rss)

        sampler = threading.Thread(target=sample, daemon=True) if sample_rss else None
        if sampler is not None:
            sampler.start()
        proc.wait()
        stop.set()
        if sampler is not None:
            sampler.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        try:
            usage = json.loads(report.read_text())
        except (OSError, ValueError):
            raise RuntimeError(f"the launcher failed ({proc.returncode}): {stderr[-2000:]}") from None
        return ChildRun(
            usage["rc"], usage["seconds"], usage["maxrss_kib"] * 1024, usage["cpu"], stdout, stderr, timeline
        )


def semassoc_cli() -> str:
    """The ``semassoc`` console script of the running interpreter's environment."""
    script = Path(sys.executable).parent / "semassoc"
    if not script.exists():
        raise SystemExit(f"{script} not found: install semassoc in this environment (pip install -e .)")
    return str(script)


class CpuMeter:
    """Wall time, this process's CPU time, and the CPU time other processes took, over a block.

    ``utilisation`` is this process's (and its finished children's) CPU / (wall x cores). ``others_share`` is the
    share of all cores that *other* processes used meanwhile (from /proc/stat): on a shared machine a block timed
    while others_share is high ran on fewer cores than it had, and its timing is suspect.
    """

    def __enter__(self) -> CpuMeter:
        self._wall = time.perf_counter()
        self._cpu = _own_cpu()
        self._busy = _system_busy()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = _own_cpu() - self._cpu
        cores = os.cpu_count() or 1
        capacity = self.wall * cores
        self.utilisation = self.cpu / capacity if capacity > 0 else 0.0
        busy = _system_busy() - self._busy
        self.others_share = max(0.0, busy - self.cpu) / capacity if capacity > 0 else 0.0


def _own_cpu() -> float:
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _system_busy() -> float:
    """CPU seconds all processes of the machine have used since boot (busy jiffies of /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    values = [int(v) for v in fields]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_busy(seconds: float = 3.0) -> float:
    """Share of all cores that other processes use right now, measured over ``seconds`` while this one sleeps."""
    with CpuMeter() as meter:
        time.sleep(seconds)
    return meter.others_share


class Quiet:
    """Waits, within a total budget of seconds, until other processes leave the CPUs (shared machines)."""

    def __init__(self, budget_s: float, threshold: float, log: Any = None) -> None:
        self.budget_s = budget_s
        self.threshold = threshold
        self.log = log or (lambda message: None)
        self.waited_s = 0.0

    def wait(self) -> float:
        """Return the share of the cores other processes use, after waiting for it to drop (if budget is left)."""
        busy = others_busy(1)
        while busy > self.threshold and self.waited_s < self.budget_s:
            self.log(f"   other processes use {busy:.0%} of the CPUs; waiting for a quiet machine")
            time.sleep(15)
            self.waited_s += 17
            busy = others_busy(1)
        return busy


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages (they count other tenants' tasks too)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# -- environment ------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    versions: dict[str, str] = {}
    from importlib import metadata

    for dist in ("semassoc", "torch", "sentence-transformers", "transformers", "qdrant-edge-py", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_files_in_semassoc": _git("status", "--porcelain", "--", "semassoc").count("\n") + 1
        if _git("status", "--porcelain", "--", "semassoc")
        else 0,
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _git(*args: str) -> str:
    """Output of a read-only git command in the checkout ('' when git is unavailable)."""
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def write_json(data: dict[str, Any], name: str) -> Path:
    """Write ``data`` to benchmarks/out/NAME (the folder is git-ignored)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path
