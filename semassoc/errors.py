"""The exception family of semassoc.

The library raises only these; the CLI turns them into a one-line message on stderr and an exit code
(1 for a runtime error, 2 for bad input or usage).
"""

from __future__ import annotations

from dataclasses import dataclass


class SemassocError(Exception):
    """Base class of every error semassoc raises on purpose."""

    exit_code = 1


class InvalidInput(SemassocError):
    """Bad input from the user: a malformed file, row or field, or a bad option value.

    The message names the file, the row (1-based, counting the header as row 1 for CSV) and the field.
    """

    exit_code = 2


class NotFound(SemassocError):
    """A product, user or workspace that was asked for does not exist."""


class StoreBusy(SemassocError):
    """Another process holds the workspace (embedded Qdrant allows a single writer)."""


class StoreUnavailable(SemassocError):
    """The vector store cannot be reached or opened (remote server down, wrong URL, corrupt files)."""


class EngineUnavailable(SemassocError):
    """An optional compute engine cannot run here (e.g. ``--engine spark`` without PySpark or without Java)."""


class StoreDamaged(StoreUnavailable):
    """A file of the workspace is missing, truncated or overwritten; the message names it and the repair."""


class EncoderMismatch(SemassocError):
    """The encoder asked for differs from the one that built the workspace."""

    exit_code = 2


@dataclass(frozen=True)
class RowProblem:
    """One bad input row: where it is and what is wrong.

    ``row`` is 1-based: the line number for CSV (the header is row 1) and JSON lines, the data row for Parquet;
    ``None`` when the whole file is affected.
    """

    file: str
    row: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "file"
        return f"{self.file}: {where}, field '{self.field}': {self.message}"
