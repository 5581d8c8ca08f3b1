"""The exception family of semassoc.

The library raises only these; the CLI turns them into a one-line message on stderr and an exit code
(1 for a runtime error, 2 for bad input or usage).
"""

from __future__ import annotations


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


class EncoderMismatch(SemassocError):
    """The encoder asked for differs from the one that built the workspace."""

    exit_code = 2
