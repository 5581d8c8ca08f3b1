"""The one place the command line prints: tables, JSON lines, summaries, progress bars, error lines.

Every value that comes from data (product ids, titles, file names, messages quoting a row) goes through
:func:`safe` before it reaches the terminal: control characters, ANSI escape sequences, bidirectional overrides and
lone surrogates are shown escaped and rich markup is escaped, so a catalog cannot recolour, move or clear the user's
terminal, forge a link, or crash a table. ``--json`` output stays exact JSON.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from semassoc.results import ScoredItem

# emoji=False: ":abc:" in a product id or a message must print as typed, not as an emoji.
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)

# Characters that must not reach a terminal as they are: C0/C1 controls (ESC starts ANSI sequences, CR/BS overwrite
# what was printed, a newline would split a one-line message), DEL, bidirectional overrides (which reorder what is
# shown) and lone surrogates (which cannot be encoded at all). They are shown escaped: \x1b, \u202e...
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# In JSON, C0 controls are escaped by json.dumps already; these are what it leaves raw with ensure_ascii=False.
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def plain(value: object) -> str:
    """``value`` as text that a terminal shows literally: control characters, ANSI escapes, bidirectional
    overrides and lone surrogates written as escapes (``\\x1b[31m`` prints as those 8 characters)."""
    return _UNSAFE.sub(_escaped, str(value))


def safe(value: object) -> str:
    """:func:`plain`, with rich markup escaped too: for text printed through rich (``[/]`` prints as ``[/]``)."""
    return escape(plain(value))


def json_line(data: Mapping[str, Any] | Any) -> None:
    """One JSON object on its own stdout line: exact JSON (every string decodes back to the data), with the
    characters a terminal would act on written as ``\\u`` escapes."""
    sys.stdout.write(_UNSAFE_JSON.sub(_json_escaped, json.dumps(data, ensure_ascii=False)) + "\n")


def say(message: str) -> None:
    """A summary line on stdout; ``message`` is markup: pass data through :func:`safe`."""
    out.print(message, highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """A line on stderr; ``message`` is markup: pass data through :func:`safe`."""
    err.print(message, highlight=False, soft_wrap=True)


def error(message: object) -> None:
    """The one-line error report of a failed command."""
    err.print(f"[bold red]error:[/] {safe(message)}", highlight=False, soft_wrap=True)


def problems(header: str, rows: Sequence[object], limit: int = 20, more: str = "") -> None:
    """A header and the first ``limit`` bad rows, one per stderr line."""
    note(header)
    for problem in rows[:limit]:
        note(f"  {safe(problem)}")
    if more and len(rows) > limit:
        note(f"  ... and {len(rows) - limit} more {more}")


def table(
    title: str,
    columns: Iterable[tuple[str, dict[str, Any]]],
    rows: Iterable[Sequence[object]],
    show_header: bool = True,
) -> None:
    """A table on stdout; the title and every cell are :func:`plain` text (escaped, never read as markup)."""
    # Cells are Text, never markup: "[/]" or a trailing backslash in data prints exactly as it is.
    t = Table(title=Text(plain(title)), title_justify="left", expand=False, show_header=show_header)
    for name, options in columns:
        t.add_column(name, **options)
    for row in rows:
        t.add_row(*(Text(plain(cell)) for cell in row))
    out.print(t)


def items(found: Sequence[ScoredItem], as_json: bool, title: str) -> None:
    """Ranked products: JSON lines or a table (with whichever of category, brand, price the items carry)."""
    if as_json:
        for rank, item in enumerate(found, start=1):
            json_line({"rank": rank, **item.to_dict()})
        return
    if not found:
        err.print("no products match")
        return
    extra = [k for k in ("category", "brand", "price") if any(k in i.attributes for i in found)]
    columns: list[tuple[str, dict[str, Any]]] = [
        ("#", {"justify": "right", "style": "dim"}),
        ("product", {}),
        ("title", {"overflow": "fold"}),
        ("score", {"justify": "right"}),
        *((key, {"justify": "right" if key == "price" else "left"}) for key in extra),
        ("why", {"style": "dim", "overflow": "fold"}),
    ]
    rows = []
    for rank, item in enumerate(found, start=1):
        attributes = [cell(item.attributes.get(k)) for k in extra]
        rows.append((rank, item.product_id, item.title, f"{item.score:.3f}", *attributes, item.explanation))
    table(title, columns, rows)


def cell(value: Any) -> str:
    """A table cell: blank for None, two decimals for floats."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


class progress_bar:
    """A rich progress bar with items/s on stderr (off for --json or when stderr is no terminal); yields the
    ``progress(done, total)`` callback the API calls."""

    def __init__(self, label: str, disable: bool) -> None:
        self.label = label
        self.disable = disable or not err.is_terminal
        self._progress: Any = None
        self._task: Any = None

    def columns(self) -> list[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        return [
            TextColumn(self.label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
        ]

    def update(self, done: int, total: int) -> None:
        self._show(completed=done, total=total)
        speed = self._progress.tasks[0].speed
        self._show(rate=f"{speed:,.0f} items/s" if speed else "")

    def _show(self, **fields: Any) -> None:
        if self._task is None:
            self._task = self._progress.add_task(
                self.label, total=fields.get("total"), rate="", stage="", loss="", val="", eta=""
            )
        self._progress.update(self._task, **fields)

    def __enter__(self) -> Callable[..., None]:
        if self.disable:
            return lambda *args: None
        from rich.progress import Progress

        self._progress = Progress(*self.columns(), console=err, transient=True)
        self._progress.__enter__()
        return self.update

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


class train_progress(progress_bar):
    """Training steps with the running loss, the last validation recall and the ETA."""

    def columns(self) -> list[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

        return [
            TextColumn("{task.fields[stage]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[val]}  ETA {task.fields[eta]}"),
        ]

    def update(self, u: Any, total: int = 0) -> None:  # u: a semassoc.training TrainProgress
        val = f"val recall@10 {u.validation['recall@10']:.3f}" if u.validation and "recall@10" in u.validation else ""
        stages = {"baseline": "validating base", "validate": "validating", "save": "saving"}
        self._show(
            completed=u.step,
            total=u.total_steps,
            stage=stages.get(u.stage, "training"),
            loss="" if u.loss is None else f"{u.loss:.3f}",
            eta="" if u.eta_seconds is None else f"{u.eta_seconds / 60:.1f} min",
            **({"val": val} if val else {}),
        )
