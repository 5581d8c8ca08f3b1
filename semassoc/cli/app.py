"""The ``semassoc`` command line: the Typer app, its error handler and the list of commands.

Each command lives in the module of its group (:mod:`.index`, :mod:`.query`, :mod:`.behaviour`, :mod:`.related`,
:mod:`.evaluate`, :mod:`.train`): it parses options, calls one function of :mod:`semassoc.api` and prints the
result through :mod:`.output`. Exit codes: 0 ok, 1 runtime error (unknown product, workspace in use...), 2 bad input
or usage.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from semassoc.cli import behaviour, evaluate, fit, index, query, related, train
from semassoc.cli.output import error
from semassoc.errors import SemassocError


def _click_exceptions() -> Any:
    try:  # recent typer ships its own copy of click
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover - older typer uses click itself
        return importlib.import_module("click.exceptions")


_click = _click_exceptions()
ClickException, NoArgsIsHelpError = _click.ClickException, _click.NoArgsIsHelpError


class _OneLineErrors(TyperGroup):
    """The root command group: a usage error (bad option value, unknown option, missing argument) is one line on
    stderr with exit code 2, like every other error, instead of click's framed usage text."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:
            exc.show()  # `semassoc` alone, or a group without its command: the help text is the answer
            sys.exit(exc.exit_code)
        except ClickException as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if getattr(exc, "ctx", None) is not None else ""
            error(f"{exc.format_message()}{where}")
            sys.exit(exc.exit_code)
        except typer.Abort:
            error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="semassoc",
    help="Semantic product association: related products from product text (Qdrant) and shopping behaviour.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

behavior_app = typer.Typer(
    help="Build and update behaviour statistics (what is bought together) from events files.", no_args_is_help=True
)
batch_app = typer.Typer(
    help="Nightly jobs: related products or recommendations for many, to Parquet/JSONL/CSV.", no_args_is_help=True
)

F = TypeVar("F", bound=Callable[..., Any])


def errors(fn: F) -> F:
    """Turn semassoc's own errors into one line on stderr and the right exit code (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SemassocError as exc:
            error(exc)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature Typer reads


# (group, command function, name), in the order of `semassoc --help` (Typer lists the two groups last).
_COMMANDS: list[tuple[typer.Typer, Callable[..., Any], str | None]] = [
    (app, index.index, None),
    (app, query.similar, None),
    (app, query.search, None),
    (app, index.remove, None),
    (app, index.info, None),
    (app, index.check, None),
    (behavior_app, behaviour.build, "build"),
    (behavior_app, behaviour.update, "update"),
    (app, behaviour.complements, None),
    (app, related.related, None),
    (app, related.recommend, None),
    (app, behaviour.rules, None),
    (app, behaviour.forget_user, "forget-user"),
    (batch_app, related.batch_related, "related"),
    (batch_app, related.batch_recommend, "recommend"),
    (app, evaluate.evaluate, None),
    (app, train.train, None),
    (app, fit.fit, None),
]
for group, function, name in _COMMANDS:
    group.command(name)(errors(function))
app.add_typer(behavior_app, name="behavior")
app.add_typer(batch_app, name="batch")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
