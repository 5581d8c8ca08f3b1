"""The command line: Typer + rich over :mod:`semassoc.api`."""

from semassoc.cli.app import main

__all__ = ["main"]
