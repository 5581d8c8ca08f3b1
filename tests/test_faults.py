"""Fault injection: ``kill -9`` at fixed points of every writing command, and every workspace file damaged.

Kills are deterministic: ``SEMASSOC_FAULT_AT=POINT[:N]`` makes the command SIGKILL itself the N-th time it reaches
``fault_point(POINT)`` (semassoc/faults.py). After each kill the rerun must finish with exact counts; after each
damaged file a command must fail with one line naming the file and the repair (never a traceback), and the repair
must restore a workspace that ``check`` passes. The fast cases run in CI; ``-m slow`` adds the full file matrix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from semassoc import api
from semassoc.check import check
from semassoc.errors import SemassocError

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "examples" / "online_retail" / "catalog.csv"
INVOICES = ROOT / "examples" / "online_retail" / "invoices.parquet"
MODEL = "hashing:64"  # deterministic, no model download: the faults are in the pipeline, not the encoder
_LIVE: set[str] = set()  # store files a damage case may target (filled by the matrix)


def cli(*args: object, fault: str | None = None, wait: bool = True, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    environment.pop("SEMASSOC_FAULT_AT", None)
    if fault:
        environment["SEMASSOC_FAULT_AT"] = fault
    command = [sys.executable, "-m", "semassoc.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


def index_json(ws: Path, *extra: object, catalog: Path = CATALOG, model: str = MODEL) -> dict:
    result = cli("index", catalog, "--workspace", ws, "--model", model, "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode in (1, 2), (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def first_id() -> str:
    return CATALOG.read_text(encoding="utf-8").splitlines()[1].split(",")[0].strip('"')


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted index, behaviour build and update: what every recovered run must equal."""
    base = tmp_path_factory.mktemp("reference")
    halves = _event_halves(base)
    ws = base / "ws"
    report = index_json(ws)
    build = cli("behavior", "build", halves[0], "--preset", "online-retail", "--workspace", ws, "--json")
    assert build.returncode == 0, build.stderr
    update = cli("behavior", "update", halves[1], "--workspace", ws, "--json")
    assert update.returncode == 0, update.stderr
    return {
        "index": report,
        "halves": halves,
        "behaviour": _behaviour_state(ws),
        "ws": ws,
    }


def _event_halves(directory: Path) -> tuple[Path, Path]:
    """Two events files of whole invoices (no basket spans them), so build(a) + update(b) == build(a + b)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(INVOICES)
    invoices = sorted(set(table.column("Invoice").to_pylist()))[:6000]
    first, second = set(invoices[:3000]), set(invoices[3000:])
    out = []
    for name, keep in (("a.parquet", first), ("b.parquet", second)):
        mask = pc.is_in(table.column("Invoice"), value_set=__import__("pyarrow").array(sorted(keep)))
        path = directory / name
        pq.write_table(table.filter(mask), path)
        out.append(path)
    return out[0], out[1]


def _behaviour_state(ws: Path) -> dict:
    from semassoc.workspace import Workspace

    with Workspace.open(ws) as opened:  # a reader: finds the committed statistics wherever a kill left them
        directory = opened.behaviour_dir
    manifest = json.loads((directory / "manifest.json").read_text())
    users = directory / "users"
    return {
        "baskets": manifest["baskets"],
        "pairs": manifest["pairs"],
        "items": manifest["items"],
        "counts": np.load(directory / "pairs_counts.npy").sum(),
        "users": int(np.load(users / "user_ids.npy").shape[0]) if users.exists() else 0,
        "history_rows": int(np.load(users / "counts.npy").sum()) if users.exists() else 0,
    }


def assert_clean(ws: Path) -> None:
    report = check(ws)
    assert report.ok, report.problems


# ---------------------------------------------------------------------------------------------------------------
# kill -9 at fixed points


@pytest.mark.parametrize("point", ["index.chunk:1", "index.chunk:2", "store.before_commit", "store.after_commit"])
def test_kill_during_first_index_then_rerun(tmp_path: Path, reference: dict, point: str) -> None:
    ws = tmp_path / "ws"
    killed = cli("index", CATALOG, "--workspace", ws, "--model", MODEL, fault=point)
    assert killed.returncode == -signal.SIGKILL
    report = index_json(ws)  # not "exists and is not a semassoc workspace"
    assert report["products_total"] == reference["index"]["products_total"]
    if point != "store.after_commit":
        assert report["added"] == reference["index"]["added"]
    else:  # the kill came after the commit: the rerun finds everything in place
        assert report["unchanged"] == reference["index"]["products_in_file"]
    assert_clean(ws)
    assert sorted(p.name for p in ws.glob("qdrant*")) == [f"qdrant.{_generation(ws)}"]


def _generation(ws: Path) -> int:
    return json.loads((ws / "manifest.json").read_text())["store"]["generation"]


def test_kill_during_encoder_change_keeps_the_old_encoder_until_the_rerun(tmp_path: Path, reference: dict) -> None:
    ws = tmp_path / "ws"
    index_json(ws)
    pid = first_id()
    before = cli("similar", pid, "--workspace", ws, "--json")
    killed = cli("index", CATALOG, "--workspace", ws, "--model", "hashing:32", fault="index.chunk:2")
    assert killed.returncode == -signal.SIGKILL
    manifest = json.loads((ws / "manifest.json").read_text())
    assert (manifest["encoder_id"], manifest["dim"]) == (MODEL, 64)
    assert cli("similar", pid, "--workspace", ws, "--json").stdout == before.stdout  # the old state, whole
    assert_clean(ws)
    report = index_json(ws, model="hashing:32")
    assert report["products_total"] == reference["index"]["products_total"]
    assert report["updated"] == reference["index"]["products_in_file"]
    manifest = json.loads((ws / "manifest.json").read_text())
    assert (manifest["encoder_id"], manifest["dim"]) == ("hashing:32", 32)
    assert_clean(ws)


def test_kill_during_reindex_of_a_changed_catalog(tmp_path: Path, reference: dict) -> None:
    ws = tmp_path / "ws"
    index_json(ws)
    import csv

    with CATALOG.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    for row in rows[1:1501]:
        row[1] += " NEW EDITION"  # the title: 1,500 products get a new text
    changed = tmp_path / "changed.csv"
    with changed.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    killed = cli("index", changed, "--workspace", ws, "--model", MODEL, fault="index.chunk:1")
    assert killed.returncode == -signal.SIGKILL
    assert_clean(ws)
    report = index_json(ws, catalog=changed)
    assert (report["updated"], report["added"], report["products_total"]) == (
        1500,
        0,
        reference["index"]["products_total"],
    )


def test_two_first_runs_at_once_the_second_is_told_in_use(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEMASSOC_FAULT_AT": "index.chunk:1:stop"}
    first = subprocess.Popen(
        [sys.executable, "-m", "semassoc.cli", "index", str(CATALOG), "--workspace", str(ws), "--model", MODEL],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_stopped(first.pid)
        second = cli("index", CATALOG, "--workspace", ws, "--model", MODEL)
        assert "in use" in one_line_error(second)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert index_json(ws)["products_total"] > 0


def _wait_stopped(pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split(") ", 1)[1].startswith("T"):
                return
        time.sleep(0.05)
    raise AssertionError("the writer never reached its fault point")


def test_readers_answer_from_the_committed_state_during_an_index(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    index_json(ws)
    pid = first_id()
    before = cli("similar", pid, "--workspace", ws, "--json")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEMASSOC_FAULT_AT": "index.chunk:1:stop"}
    writer = subprocess.Popen(
        [sys.executable, "-m", "semassoc.cli", "index", str(CATALOG), "--workspace", str(ws), "--model", "hashing:32"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_stopped(writer.pid)  # stopped mid-index, holding the workspace lock and its new store generation
        started = time.perf_counter()
        during = cli("similar", pid, "--workspace", ws, "--json")
        assert during.returncode == 0, during.stderr
        assert during.stdout == before.stdout
        assert time.perf_counter() - started < 10  # a whole process start; docs/reliability.md has the latency
        os.kill(writer.pid, signal.SIGCONT)
        assert writer.wait(timeout=300) == 0
    finally:
        if writer.poll() is None:
            os.kill(writer.pid, signal.SIGKILL)
    after = cli("similar", pid, "--workspace", ws, "--json")
    assert after.returncode == 0 and after.stdout != before.stdout  # the new encoder's answer
    assert_clean(ws)


@pytest.mark.parametrize("point", ["replace_directory.written", "replace_directory.swap"])
def test_kill_during_behaviour_build_and_update(tmp_path: Path, reference: dict, point: str) -> None:
    a, b = reference["halves"]
    ws = tmp_path / "ws"
    # A first build has no directory to swap out: it dies after writing its temporary directory.
    killed = cli(
        "behavior", "build", a, "--preset", "online-retail", "--workspace", ws, fault="replace_directory.written"
    )
    assert killed.returncode == -signal.SIGKILL
    built = cli("behavior", "build", a, "--preset", "online-retail", "--workspace", ws)
    assert built.returncode == 0, built.stderr
    killed = cli("behavior", "update", b, "--workspace", ws, fault=point)
    assert killed.returncode == -signal.SIGKILL
    state = _behaviour_state(ws)  # the kill left the statistics and histories of the build, together
    assert state["baskets"] < reference["behaviour"]["baskets"]
    updated = cli("behavior", "update", b, "--workspace", ws)  # not refused as "already counted"
    assert updated.returncode == 0, updated.stderr
    assert _behaviour_state(ws) == reference["behaviour"]
    assert not list(ws.glob(".behaviour.*"))


def test_update_without_user_column_keeps_histories(tmp_path: Path, reference: dict) -> None:
    import pyarrow.parquet as pq

    a, b = reference["halves"]
    ws = tmp_path / "ws"
    assert cli("behavior", "build", a, "--preset", "online-retail", "--workspace", ws).returncode == 0
    users_before = _behaviour_state(ws)["history_rows"]
    anonymous = tmp_path / "anonymous.parquet"
    pq.write_table(pq.read_table(b).drop(["Customer ID"]), anonymous)
    result = cli("behavior", "update", anonymous, "--workspace", ws)
    assert result.returncode == 0, result.stderr
    assert "kept unchanged" in result.stderr
    state = _behaviour_state(ws)
    assert state["history_rows"] == users_before > 0
    assert state["baskets"] == reference["behaviour"]["baskets"]


def test_kill_during_batch_then_resume_and_refuse_another_workspace(tmp_path: Path, reference: dict) -> None:
    ws = reference["ws"]
    out = tmp_path / "out.jsonl"
    args = ("batch", "related", "--all", "--workspace", ws, "--out", out, "--chunk-size", "500")
    killed = cli(*args, fault="batch.chunk:2")
    assert killed.returncode == -signal.SIGKILL
    other = tmp_path / "other"
    shutil.copytree(ws, other, ignore=shutil.ignore_patterns("lock"))
    index_json(other, catalog=_subset(tmp_path, 100), model=MODEL)  # a changed copy: another state
    refused = cli("batch", "related", "--all", "--workspace", other, "--out", out, "--chunk-size", "500")
    assert "another workspace" in one_line_error(refused)
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    full = tmp_path / "full.jsonl"
    assert cli("batch", "related", "--all", "--workspace", ws, "--out", full, "--chunk-size", "500").returncode == 0
    assert out.read_text() == full.read_text()


def _subset(directory: Path, rows: int) -> Path:
    lines = CATALOG.read_text(encoding="utf-8").splitlines()
    path = directory / "subset.csv"
    path.write_text("\n".join(lines[: rows + 1]).replace("Sack", "Bag") + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Workspace creation and options


def test_workspace_that_is_a_file_and_damaged_manifest_are_one_line(tmp_path: Path) -> None:
    file = tmp_path / "plain"
    file.write_text("x")
    assert "is a file" in one_line_error(cli("index", CATALOG, "--workspace", file, "--model", MODEL))
    ws = tmp_path / "ws"
    index_json(ws)
    for damage in ("", "{", "[]", '{"store": 3}', '{"products": "many"}', "\xff\xfe"):
        (ws / "manifest.json").write_bytes(damage.encode("latin-1"))
        line = one_line_error(cli("similar", first_id(), "--workspace", ws))
        assert "manifest.json" in line and ("damaged" in line or "no semassoc workspace" in line)


def test_memory_url_is_refused(tmp_path: Path) -> None:
    line = one_line_error(cli("index", CATALOG, "--workspace", tmp_path / "ws", "--qdrant-url", ":memory:"))
    assert ":memory:" in line
    assert not (tmp_path / "ws" / "manifest.json").exists()


def test_leftovers_of_an_old_killed_first_run_are_adopted(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "qdrant" / "wal").mkdir(parents=True)  # what a first run of an older release left when killed
    (ws / "cache.sqlite").write_bytes(b"")
    (ws / "lock").write_text("")
    assert index_json(ws)["products_total"] > 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert "not a semassoc workspace" in one_line_error(cli("index", CATALOG, "--workspace", tmp_path / "mine"))


# ---------------------------------------------------------------------------------------------------------------
# Damaged files


def _store_file(ws: Path, kind: str) -> Path:
    generation = ws / f"qdrant.{_generation(ws)}"
    patterns = {
        "vectors": "segments/*/vector_storage-text/vectors/chunk_0.mmap",
        "vector_status": "segments/*/vector_storage-text/vectors/status.dat",
        "deleted_flags": "segments/*/vector_storage-text/deleted/status.dat",
        "payloads": "segments/*/payload_storage/page_0.dat",
        "payload_tracker": "segments/*/payload_storage/tracker.dat",
        "segment": "segments/*/segment.json",
        "config": "edge_config.json",
        "wal": "wal/open-1",
    }
    found = sorted(generation.glob(patterns[kind]))
    assert found, kind
    return found[0]


def _damage(path: Path, mode: str) -> None:
    if mode == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    elif mode == "empty":
        os.truncate(path, 0)
    elif mode == "delete":
        path.unlink()
    else:
        rng = np.random.default_rng(7)
        with path.open("r+b") as fh:
            fh.write(rng.integers(0, 256, min(path.stat().st_size, 1 << 20), dtype=np.uint8).tobytes())


STORE_FILES = ["vectors", "vector_status", "deleted_flags", "payloads", "payload_tracker", "segment", "config", "wal"]
MODES = ["truncate", "empty", "delete", "overwrite"]
FAST = {("vectors", m) for m in MODES} | {("segment", "overwrite"), ("config", "delete"), ("payloads", "empty")}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("indexed") / "ws"
    api.index_catalog(CATALOG, workspace=ws, model=MODEL)
    return ws


@pytest.mark.parametrize(
    ("kind", "mode"),
    [pytest.param(k, m, marks=() if (k, m) in FAST else pytest.mark.slow) for k in STORE_FILES for m in MODES],
)
def test_damaged_store_file_is_named_and_rebuilt(tmp_path: Path, indexed: Path, kind: str, mode: str) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(indexed, ws)
    _damage(_store_file(ws, kind), mode)
    outcomes = []
    for call in (
        lambda: api.similar(first_id(), workspace=ws, k=5),
        lambda: api.index_catalog(CATALOG, workspace=ws, model=MODEL),
    ):
        try:
            found = call()
            outcomes.append("ok")
            if isinstance(found, list):
                assert all(-1.001 <= item.score <= 1.001 for item in found)  # never absurd scores
        except SemassocError as exc:
            message = str(exc)
            assert "\n" not in message and "qdrant." in message and "--rebuild" in message, message
            outcomes.append("refused")
    report = check(ws)
    if outcomes[-1] == "ok":  # the damage was harmless to qdrant (e.g. a WAL already applied): nothing lost
        assert report.ok, report.problems
    else:
        assert not report.ok and all("\n" not in p for p in report.problems)
        rebuilt = api.index_catalog(CATALOG, workspace=ws, model=MODEL, rebuild=True)
        assert rebuilt.encoded == 0  # every vector came from the cache
        assert rebuilt.products_total == check(ws).products
    assert_clean(ws)
    assert api.similar(first_id(), workspace=ws, k=5)


BEHAVIOUR_FILES = ["manifest.json", "item_ids.npy", "pairs_indptr.npy", "pairs_counts.npy", "users/indptr.npy"]


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        pytest.param(n, m, marks=() if n == "pairs_indptr.npy" else pytest.mark.slow)
        for n in BEHAVIOUR_FILES
        for m in MODES
    ],
)
def test_damaged_behaviour_file_is_named(tmp_path: Path, reference: dict, name: str, mode: str) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(reference["ws"], ws, ignore=shutil.ignore_patterns("lock"))
    _damage(ws / "behaviour" / name, mode)
    report = check(ws)
    assert not report.ok
    assert all("\n" not in p and "behavior build" in p for p in report.problems), report.problems
    result = cli("complements", first_id(), "--workspace", ws)
    assert "Traceback" not in result.stderr, result.stderr
    a, b = reference["halves"]
    rebuilt = cli("behavior", "build", a, b, "--preset", "online-retail", "--workspace", ws)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert_clean(ws)


def test_a_reader_waits_briefly_for_another_reader(tmp_path: Path, indexed: Path) -> None:
    import threading

    from semassoc.errors import StoreBusy
    from semassoc.workspace import Workspace

    ws = tmp_path / "ws"
    shutil.copytree(indexed, ws)
    holder = Workspace.open(ws)
    assert holder.store.count() > 0  # a long reader (batch, evaluate) holds the committed store
    release = threading.Timer(0.5, holder.close)
    release.start()
    started = time.perf_counter()
    assert api.similar(first_id(), workspace=ws, k=3)  # waits for it instead of failing at once
    assert 0.4 < time.perf_counter() - started < 10
    release.join()
    with Workspace.open(ws) as again:
        assert again.store.count() > 0
        os.environ["SEMASSOC_BUSY_WAIT"] = "0.1"
        try:
            with pytest.raises(StoreBusy, match="readers wait SEMASSOC_BUSY_WAIT"):
                api.similar(first_id(), workspace=ws, k=3)
        finally:
            del os.environ["SEMASSOC_BUSY_WAIT"]
