"""User histories: which products each user interacted with, how often and when last, stored beside the behaviour
statistics so that ``recommend USER_ID`` reads one user's row (memory-mapped), never the whole event log.

Files (one directory, written atomically): ``user_ids.npy`` (sorted), ``indptr.npy``, ``items.npy`` (codes into
``item_ids.npy``), ``counts.npy``, ``last_seen.npy`` (int64 microseconds since the epoch, ``MISSING`` when unknown).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semassoc.errors import InvalidInput, StoreDamaged
from semassoc.io import replace_directory

if TYPE_CHECKING:
    from semassoc.behaviour.events import Events

MISSING = np.iinfo(np.int64).min


@dataclass(frozen=True)
class HistoryItem:
    """One product in a user's history."""

    product_id: str
    count: int = 1
    last_seen: datetime | None = None


class UserHistories:
    """Per-user product histories. Build from events with :meth:`build`, extend with :meth:`update`.

    Example:
        >>> # UserHistories.build(load_events("orders.csv"), ".semassoc/users").history("u17")
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

        def load(name: str) -> np.ndarray:
            try:
                return np.load(self.directory / name, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                detail = " ".join(str(exc).split())[:200]
                raise StoreDamaged(
                    f"{self.directory / name}: damaged user history file ({detail}); "
                    "repair: rebuild with `semassoc behavior build EVENTS...`"
                ) from None

        self._user_ids = load("user_ids.npy")
        self._indptr = load("indptr.npy")
        self._items = load("items.npy")
        self._item_ids = load("item_ids.npy")
        self._counts = load("counts.npy")
        self._last = load("last_seen.npy")

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / "user_ids.npy").is_file()

    @classmethod
    def build(cls, events: Events | list[Events], directory: str | Path) -> UserHistories:
        """Aggregate events per (user, product) and write them, replacing what was there.

        Raises:
            InvalidInput: the events have no user column.
        """
        _write(Path(directory), _aggregate(_columns(events)))
        return cls(directory)

    def update(self, events: Events | list[Events]) -> UserHistories:
        """Add new events; the result equals a build on all events together."""
        _write(self.directory, _aggregate(_concat([self._columns(), _columns(events)])))
        return type(self)(self.directory)

    def forget(self, user_id: str) -> tuple[int, int]:
        """Remove one user's history (rewritten atomically); returns (products, events) removed, (0, 0) if absent."""
        row = self._row(user_id)
        if row is None:
            return 0, 0
        start, end = int(self._indptr[row]), int(self._indptr[row + 1])
        events = int(np.asarray(self._counts[start:end]).sum())
        users, items, counts, last = self._columns()
        keep = users != user_id
        _write(self.directory, _aggregate((users[keep], items[keep], counts[keep], last[keep])))
        self.__init__(self.directory)  # type: ignore[misc]  # reopen the new files
        return end - start, events

    def __len__(self) -> int:
        return int(self._user_ids.shape[0])

    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, str) and self._row(user_id) is not None

    def _row(self, user_id: str) -> int | None:
        ids = self._user_ids
        position = int(np.searchsorted(ids, np.array(user_id, dtype=ids.dtype)))
        if position < ids.shape[0] and ids[position] == user_id and len(user_id) <= ids.dtype.itemsize // 4:
            return position
        return None

    def history(self, user_id: str) -> list[HistoryItem]:
        """The user's products, most recent first (then most frequent); empty for an unknown user."""
        row = self._row(user_id)
        if row is None:
            return []
        start, end = int(self._indptr[row]), int(self._indptr[row + 1])
        codes = np.asarray(self._items[start:end], dtype=np.int64)
        counts = np.asarray(self._counts[start:end], dtype=np.int64)
        last = np.asarray(self._last[start:end], dtype=np.int64)
        names = self._item_ids[codes].tolist()
        order = np.lexsort((names, -counts, -last))
        return [
            HistoryItem(
                str(names[i]),
                int(counts[i]),
                None if last[i] == MISSING else datetime.fromtimestamp(last[i] / 1e6, tz=timezone.utc),
            )
            for i in order.tolist()
        ]

    def user_ids(self) -> list[str]:
        """Every user with a history."""
        return [str(u) for u in np.asarray(self._user_ids).tolist()]

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        lengths = np.diff(np.asarray(self._indptr))
        users = np.repeat(np.asarray(self._user_ids).astype(object), lengths)
        items = np.asarray(self._item_ids).astype(object)[np.asarray(self._items, dtype=np.int64)]
        return users, items, np.asarray(self._counts, dtype=np.int64), np.asarray(self._last, dtype=np.int64)


def _columns(events: Events | list[Events]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    parts = events if isinstance(events, list) else [events]
    out = []
    for part in parts:
        if part.user is None or part.user_ids is None:
            raise InvalidInput(f"{', '.join(part.sources)}: no user column, so no user histories")
        known = part.user >= 0
        users = part.user_ids[part.user[known]]
        items = part.item_ids[part.item[known]]
        if part.timestamp is None:
            last = np.full(users.shape[0], MISSING, dtype=np.int64)
        else:
            stamps = part.timestamp[known]
            last = np.where(np.isnat(stamps), MISSING, stamps.astype("datetime64[us]").astype(np.int64))
        out.append((users, items, np.ones(users.shape[0], dtype=np.int64), last))
    return _concat(out)


def _concat(parts: Sequence[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    users, items, counts, last = (np.concatenate([p[i] for p in parts]) for i in range(4))
    return users, items, counts, last


@dataclass
class _Table:
    user_ids: np.ndarray
    indptr: np.ndarray
    item_ids: np.ndarray
    items: np.ndarray
    counts: np.ndarray
    last: np.ndarray


def _aggregate(columns: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> _Table:
    """One row per (user, product): summed counts, latest time; rows grouped by user in id order."""
    users, items, counts, last = columns
    user_ids, user_codes = np.unique(users.astype(str), return_inverse=True)
    item_ids, item_codes = np.unique(items.astype(str), return_inverse=True)
    width = max(item_ids.shape[0], 1)
    unique, inverse = np.unique(user_codes.astype(np.int64) * width + item_codes, return_inverse=True)
    latest = np.full(unique.shape[0], MISSING, dtype=np.int64)
    np.maximum.at(latest, inverse, last)
    indptr = np.zeros(user_ids.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(unique // width, minlength=user_ids.shape[0]), out=indptr[1:])
    return _Table(
        user_ids=user_ids,
        indptr=indptr,
        item_ids=item_ids,
        items=(unique % width).astype(np.int32),
        counts=np.bincount(inverse, weights=counts, minlength=unique.shape[0]).astype(np.int64),
        last=latest,
    )


def histories_writer(events: Events | list[Events], existing: UserHistories | None = None) -> Callable[[Path], None]:
    """Aggregate the histories now (``existing`` plus ``events``) and return a function that saves them into a
    directory being written: the behaviour statistics' temporary directory, so both change together.

    Raises:
        InvalidInput: the events have no user column.
    """
    new = _columns(events)
    table = _aggregate(_concat([existing._columns(), new]) if existing is not None else new)
    return lambda directory: _save(directory, table)


def copy_histories(source: str | Path) -> Callable[[Path], None]:
    """A function that puts the stored histories of ``source``, unchanged, into a directory being written (hard
    links: written files are never modified in place)."""
    source = Path(source)

    def copy(directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name in _FILES:
            try:
                os.link(source / name, directory / name)
            except OSError:
                shutil.copy2(source / name, directory / name)

    return copy


_FILES = ("user_ids.npy", "item_ids.npy", "indptr.npy", "items.npy", "counts.npy", "last_seen.npy")


def _save(directory: Path, table: _Table) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "user_ids.npy", table.user_ids.astype(str))
    np.save(directory / "item_ids.npy", table.item_ids.astype(str))
    np.save(directory / "indptr.npy", table.indptr)
    np.save(directory / "items.npy", table.items)
    np.save(directory / "counts.npy", table.counts)
    np.save(directory / "last_seen.npy", table.last)


def _write(directory: Path, table: _Table) -> None:
    replace_directory(directory, lambda tmp: _save(tmp, table))
