"""Files on disk: the one family of atomic writers every part of semassoc uses.

A file or directory written here is visible whole or not at all, and durable once the call returns: the data goes to a
temporary sibling, is fsynced, renamed over the target, and the parent directory is fsynced so the rename itself
survives a power cut. A ``kill -9`` at any point leaves the old content (or none) plus, at worst, a temporary
``.NAME.tmp-*`` sibling that the next write of the same target ignores.

Example:
    >>> from semassoc.io import atomic_write_json
    >>> atomic_write_json("/tmp/settings.json", {"k": 10})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from semassoc.errors import SemassocError
from semassoc.faults import fault_point


class WriteFailed(SemassocError):
    """A file could not be written (permissions, read-only or full filesystem, a directory in the way)."""


def _failed(path: Path, exc: OSError) -> WriteFailed:
    return WriteFailed(f"{path}: cannot write: {exc.strerror or exc}")


def fsync_directory(directory: str | Path) -> None:
    """Make the creations, renames and deletions inside ``directory`` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # some filesystems cannot open a directory for reading; the rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. a filesystem without directory fsync: nothing more can be done
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """Flush one file's data to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to (by any writer: pyarrow, numpy, open()); when the block
    ends without an exception it is fsynced and renamed over ``path``; otherwise it is removed.

    Raises:
        WriteFailed: the file or its directory cannot be written.

    Example:
        >>> with atomic_output("out.parquet") as tmp:  # doctest: +SKIP
        ...     pyarrow.parquet.write_table(table, tmp)
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _failed(path, exc) from None
    tmp = Path(name)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _failed(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (see the module docstring)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and durably."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``data`` as JSON (UTF-8, newline-terminated) to ``path`` atomically and durably."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False, default=str)
    return atomic_write_text(path, text + "\n")


def replace_directory(directory: str | Path, write: Callable[[Path], None]) -> None:
    """Write a whole directory (behaviour statistics, user histories, a tuned model) into a temporary sibling,
    fsync every file in it, then swap it in: a failure or a kill leaves the old directory (or none), never half of
    one.

    ``write(tmp)`` fills the (empty) temporary directory ``tmp``.

    A crash between the two renames of a replacement leaves the old content under ``.NAME.old-*`` and no ``NAME``;
    :func:`recover_directory` (called here first, under the writer's lock) puts it back.
    """
    directory = Path(directory).absolute()
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        recover_directory(directory)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    except OSError as exc:
        raise _failed(directory, exc) from None
    try:
        write(tmp)
        for entry in sorted(tmp.rglob("*")):  # data on disk before the rename makes it visible
            if entry.is_file():
                fsync_file(entry)
        for sub in [p for p in tmp.rglob("*") if p.is_dir()] + [tmp]:
            fsync_directory(sub)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _failed(directory, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fault_point("replace_directory.written")
    if directory.exists():
        old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex}"
        os.replace(directory, old)
        fault_point("replace_directory.swap")
        os.replace(tmp, directory)
        fsync_directory(directory.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    fsync_directory(directory.parent)
    clean_temporaries(directory)


def recover_directory(directory: str | Path) -> None:
    """Undo a replacement interrupted between its two renames: ``NAME`` missing and ``.NAME.old-*`` present means
    the old content is the committed one; put it back."""
    directory = Path(directory)
    if directory.exists():
        return
    olds = sorted(directory.parent.glob(f".{directory.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], directory)
        fsync_directory(directory.parent)


def clean_temporaries(target: str | Path) -> None:
    """Remove what interrupted writes of ``target`` left behind (``.NAME.tmp-*``, ``.NAME.old-*`` siblings)."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
