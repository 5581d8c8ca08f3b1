"""Integrity checks of a workspace: ``semassoc check`` (everything) and the quick check ``index`` runs first.

A damaged file is reported as one line naming it and the repair; nothing here changes the workspace.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semassoc.errors import SemassocError, StoreDamaged
from semassoc.store.embedded import EmbeddedStore
from semassoc.workspace import Workspace

REBUILD = "semassoc index CATALOG --rebuild --workspace {ws}"
BEHAVIOUR = "semassoc behavior build EVENTS... --workspace {ws}"


@dataclass
class CheckReport:
    """What ``check`` found: ``problems`` empty means every check passed."""

    workspace: str
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    products: int = 0
    vectors_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def verify_store(ws: Workspace, sample: int = 256) -> None:
    """The quick check: the committed store opens, holds the manifest's number of products, and a sample of its
    vectors has the manifest's dimension and unit length.

    Raises:
        StoreDamaged: one line naming the file or directory and the repair.
    """
    store = ws.store  # a writer's staged copy, or the committed generation
    if not isinstance(store, EmbeddedStore) or not ws.manifest.encoder_id:
        return
    committed = str(ws.store_path(ws.manifest.store.generation))
    try:
        count = store.count()
        if count != ws.manifest.products:
            raise store.damaged(
                f"{count} products stored, the manifest {ws.path / 'manifest.json'} says {ws.manifest.products}"
            )
        for pid, vector in store.sample_vectors(sample):
            store.check_vector(vector, pid)
    except StoreDamaged as exc:  # name the committed files, not the copy being written
        raise StoreDamaged(str(exc).replace(str(store.path), committed)) from None


def check(workspace: str | Path | None = None, *, full: bool = True) -> CheckReport:
    """Check the manifest, the vector store (count, dimension, every vector's length when ``full``), the vector
    cache, the behaviour statistics and the user histories.

    Returns:
        CheckReport; each problem is one line naming the file and the repair.
    """
    with Workspace.open(workspace) as ws:
        report = CheckReport(workspace=str(ws.path), products=ws.manifest.products)
        report.checks.append("manifest")
        _check_store(ws, report, full)
        _check_cache(ws, report)
        _check_behaviour(ws, report)
        return report


def _check_store(ws: Workspace, report: CheckReport, full: bool) -> None:
    if ws.manifest.store.url is not None or not ws.manifest.encoder_id:
        return
    report.checks.append("store")
    try:
        store = ws.store
        assert isinstance(store, EmbeddedStore)
        count = store.count()
        if count != ws.manifest.products:
            raise store.damaged(f"{count} products stored, the manifest says {ws.manifest.products}")
        rows = store.iter_vectors() if full else iter(store.sample_vectors())
        for pid, vector in rows:
            store.check_vector(vector, pid)
            report.vectors_checked += 1
    except SemassocError as exc:
        report.problems.append(str(exc))


def _check_cache(ws: Workspace, report: CheckReport) -> None:
    path = ws.path / "cache.sqlite"
    if not path.exists():
        return
    report.checks.append("vector cache")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            db.close()
        if result != "ok":
            raise sqlite3.DatabaseError(result)
    except sqlite3.Error as exc:
        report.problems.append(
            f"{path}: the vector cache is damaged ({exc}); repair: delete it (the next index re-encodes what it needs)"
        )


def _check_behaviour(ws: Workspace, report: CheckReport) -> None:
    directory = ws.behaviour_dir
    if not directory.exists():
        return
    report.checks.append("behaviour")
    repair = BEHAVIOUR.format(ws=ws.path)
    try:
        problem = _behaviour_problem(directory)
    except (OSError, ValueError, KeyError, EOFError, SemassocError) as exc:
        problem = f"{directory}: unreadable ({' '.join(str(exc).split())[:200]})"
    if problem:
        report.problems.append(f"{problem}; repair: `{repair}`")
        return
    users = ws.users_dir
    if users.exists():
        report.checks.append("user histories")
        try:
            problem = _users_problem(users)
        except (OSError, ValueError, EOFError) as exc:
            problem = f"{users}: unreadable ({' '.join(str(exc).split())[:200]})"
        if problem:
            report.problems.append(f"{problem}; repair: `{repair}`")


def _load(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _behaviour_problem(directory: Path) -> str | None:
    import json

    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    ids = _load(directory / "item_ids.npy")
    counts = _load(directory / "item_counts.npy")
    indptr = _load(directory / "pairs_indptr.npy")
    indices = _load(directory / "pairs_indices.npy")
    pair_counts = _load(directory / "pairs_counts.npy")
    n = ids.shape[0]
    if manifest.get("items") != n or counts.shape != (n,):
        return f"{directory / 'item_counts.npy'}: {counts.shape[0]} item counts for {n} items"
    if indptr.shape != (n + 1,) or int(indptr[-1]) != indices.shape[0] or indices.shape != pair_counts.shape:
        return f"{directory / 'pairs_indptr.npy'}: the pair arrays do not fit together"
    if indices.shape[0] and int(np.max(indices)) >= n:
        return f"{directory / 'pairs_indices.npy'}: product codes beyond the {n} items"
    if int(manifest.get("pairs", -1)) * 2 != indices.shape[0] and manifest.get("top_k") is None:
        return f"{directory / 'manifest.json'}: {manifest.get('pairs')} pairs, the arrays hold {indices.shape[0] // 2}"
    if np.any(np.diff(np.asarray(indptr)) < 0):
        return f"{directory / 'pairs_indptr.npy'}: offsets go backwards"
    return None


def _users_problem(directory: Path) -> str | None:
    users = _load(directory / "user_ids.npy")
    indptr = _load(directory / "indptr.npy")
    items = _load(directory / "items.npy")
    item_ids = _load(directory / "item_ids.npy")
    counts = _load(directory / "counts.npy")
    last = _load(directory / "last_seen.npy")
    if indptr.shape != (users.shape[0] + 1,) or int(indptr[-1]) != items.shape[0]:
        return f"{directory / 'indptr.npy'}: offsets do not fit {users.shape[0]} users and {items.shape[0]} rows"
    if counts.shape != items.shape or last.shape != items.shape:
        return f"{directory / 'counts.npy'}: {counts.shape[0]} counts for {items.shape[0]} rows"
    if items.shape[0] and int(np.max(items)) >= item_ids.shape[0]:
        return f"{directory / 'items.npy'}: product codes beyond the {item_ids.shape[0]} products"
    return None


__all__ = ["CheckReport", "StoreDamaged", "check", "verify_store"]
