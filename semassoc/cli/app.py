"""The ``semassoc`` command line: parses options, calls one function of :mod:`semassoc.api`, prints the result.

Exit codes: 0 ok, 1 runtime error (unknown product, workspace in use...), 2 bad input or usage.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from semassoc import api
from semassoc.catalog import CatalogColumns
from semassoc.errors import InvalidInput, SemassocError
from semassoc.results import ScoredItem
from semassoc.store.base import ProductFilter
from semassoc.workspace import ENV_QDRANT_URL, ENV_WORKSPACE

if TYPE_CHECKING:
    from semassoc.behaviour.events import LoadOptions

app = typer.Typer(
    name="semassoc",
    help="Semantic product association: related products from product text (Qdrant) and shopping behaviour.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def _errors(fn: F) -> F:
    """Turn semassoc's own errors into one line on stderr and the right exit code (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SemassocError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


# -- shared options ---------------------------------------------------------------------------------------------
Workspace = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", envvar=ENV_WORKSPACE, help="Workspace directory [default: ./.semassoc]."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object per line instead of a table.")]
TopK = Annotated[int, typer.Option("--k", "-k", min=1, help="How many products to return.")]
Category = Annotated[list[str] | None, typer.Option("--category", help="Only this category (repeatable).")]
Brand = Annotated[list[str] | None, typer.Option("--brand", help="Only this brand (repeatable).")]
MinPrice = Annotated[float | None, typer.Option("--min-price", min=0, help="Lowest price.")]
MaxPrice = Annotated[float | None, typer.Option("--max-price", min=0, help="Highest price.")]
InStock = Annotated[bool, typer.Option("--in-stock", help="Only products in stock.")]
Exclude = Annotated[
    list[str] | None, typer.Option("--exclude", help="Leave out these product ids (repeatable, or comma-separated).")
]
QdrantUrl = Annotated[
    str | None,
    typer.Option("--qdrant-url", envvar=ENV_QDRANT_URL, help="Qdrant server/cluster URL [default: embedded store]."),
]
Exact = Annotated[bool, typer.Option("--exact", help="Exact search even when an HNSW index was built.")]
Model = Annotated[
    str | None,
    typer.Option("--model", "-m", help="sentence-transformers model name or directory [default: the workspace's]."),
]


class OnErrorChoice(str, Enum):
    strict = "strict"
    skip = "skip"


def _filter(
    category: list[str] | None,
    brand: list[str] | None,
    min_price: float | None,
    max_price: float | None,
    in_stock: bool,
    exclude: list[str] | None,
) -> ProductFilter:
    excluded = tuple(p.strip() for value in exclude or [] for p in value.split(",") if p.strip())
    return ProductFilter(
        categories=tuple(category or ()),
        brands=tuple(brand or ()),
        min_price=min_price,
        max_price=max_price,
        in_stock=True if in_stock else None,
        exclude=excluded,
    )


def _print_items(items: Sequence[ScoredItem], as_json: bool, title: str) -> None:
    if as_json:
        for rank, item in enumerate(items, start=1):
            sys.stdout.write(json.dumps({"rank": rank, **item.to_dict()}, ensure_ascii=False) + "\n")
        return
    if not items:
        err.print("no products match")
        return
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("product")
    table.add_column("title", overflow="fold")
    table.add_column("score", justify="right")
    extra = [k for k in ("category", "brand", "price") if any(k in i.attributes for i in items)]
    for key in extra:
        table.add_column(key, justify="right" if key == "price" else "left")
    table.add_column("why", style="dim", overflow="fold")
    for rank, item in enumerate(items, start=1):
        values = [_cell(item.attributes.get(k)) for k in extra]
        table.add_row(str(rank), item.product_id, item.title, f"{item.score:.3f}", *values, item.explanation)
    out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


# -- commands ---------------------------------------------------------------------------------------------------
@app.command()
@_errors
def index(
    catalog: Annotated[Path, typer.Argument(help="Catalog file: .csv, .tsv, .jsonl or .parquet.")],
    workspace: Workspace = None,
    model: Model = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Directory of prompt templates.")] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Make the workspace hold exactly this file's products (remove others).")
    ] = False,
    on_error: Annotated[
        OnErrorChoice,
        typer.Option(
            "--on-error",
            help="strict: any bad row stops the run, nothing is written; skip: "
            "index the good rows and list the bad ones.",
        ),
    ] = OnErrorChoice.strict,
    id_column: Annotated[str | None, typer.Option("--id-column", help="Column holding the product id.")] = None,
    title_column: Annotated[str | None, typer.Option("--title-column", help="Column holding the title.")] = None,
    description_column: Annotated[str | None, typer.Option("--description-column")] = None,
    category_column: Annotated[str | None, typer.Option("--category-column")] = None,
    brand_column: Annotated[str | None, typer.Option("--brand-column")] = None,
    price_column: Annotated[str | None, typer.Option("--price-column")] = None,
    in_stock_column: Annotated[str | None, typer.Option("--in-stock-column")] = None,
    columns_file: Annotated[
        Path | None, typer.Option("--columns", help="TOML/JSON file mapping fields to columns ([columns] id = ...).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Encoder batch size.")] = 64,
    optimize: Annotated[
        bool, typer.Option("--optimize", help="Build the HNSW index afterwards (faster queries on big catalogs).")
    ] = False,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1... [default: auto].")] = None,
    qdrant_url: QdrantUrl = None,
    collection: Annotated[str | None, typer.Option("--collection", help="Remote collection name.")] = None,
    shards: Annotated[int | None, typer.Option("--shards", min=1, help="Shards of a new remote collection.")] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", min=1, help="Replication factor of a new remote collection.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Index a catalog: add new products, update changed ones, leave unchanged ones alone.

    Example: semassoc index examples/online_retail/catalog.csv
    """
    columns = CatalogColumns.from_file(columns_file) if columns_file else CatalogColumns()
    columns = columns.merged(
        CatalogColumns(
            id_column, title_column, description_column, category_column, brand_column, price_column, in_stock_column
        )
    )
    with _progress_bar("encoding", disable=as_json) as advance:
        report = api.index_catalog(
            catalog,
            workspace=workspace,
            columns=columns,
            on_error=on_error.value,
            model=model,
            prompts=prompts,
            replace=replace,
            batch_size=batch_size,
            optimize=optimize,
            qdrant_url=qdrant_url,
            collection=collection,
            shards=shards,
            replicas=replicas,
            device=device,
            progress=advance,
        )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
        return
    out.print(
        f"[bold]{report.products_total}[/] products in {report.workspace} ({report.store}): "
        f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, {report.removed} removed"
        + (f", {report.reencoded} re-encoded (template or encoder changed)" if report.reencoded else "")
        + f"; {report.encoded} texts encoded, {report.from_cache} from cache, in {report.seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
    if report.skipped:
        err.print(f"[yellow]skipped {len(report.skipped)} of {report.rows_read} rows:[/]")
        for problem in report.skipped[:20]:
            err.print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)
        if len(report.skipped) > 20:
            err.print(f"  ... and {len(report.skipped) - 20} more (--json lists them all)")


class _progress_bar:
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


@app.command()
@_errors
def similar(
    product_id: Annotated[str, typer.Argument(help="The product to find similar products for.")],
    workspace: Workspace = None,
    k: TopK = 10,
    category: Category = None,
    brand: Brand = None,
    min_price: MinPrice = None,
    max_price: MaxPrice = None,
    in_stock: InStock = False,
    exclude: Exclude = None,
    exact: Exact = False,
    qdrant_url: QdrantUrl = None,
    as_json: AsJson = False,
) -> None:
    """Products whose text is most similar to PRODUCT_ID's (substitutes).

    Example: semassoc similar 85123A -k 5
    """
    items = api.similar(
        product_id,
        workspace=workspace,
        k=k,
        filter=_filter(category, brand, min_price, max_price, in_stock, exclude),
        exact=exact,
        qdrant_url=qdrant_url,
    )
    _print_items(items, as_json, f"similar to {product_id}")


@app.command()
@_errors
def search(
    text: Annotated[str, typer.Argument(help="What to look for, in words.")],
    workspace: Workspace = None,
    k: TopK = 10,
    model: Model = None,
    category: Category = None,
    brand: Brand = None,
    min_price: MinPrice = None,
    max_price: MaxPrice = None,
    in_stock: InStock = False,
    exclude: Exclude = None,
    exact: Exact = False,
    qdrant_url: QdrantUrl = None,
    as_json: AsJson = False,
) -> None:
    """Products matching free text (encodes the text with the workspace's encoder).

    Example: semassoc search "red enamel mug" -k 5
    """
    items = api.search(
        text,
        workspace=workspace,
        k=k,
        model=model,
        filter=_filter(category, brand, min_price, max_price, in_stock, exclude),
        exact=exact,
    )
    _print_items(items, as_json, f"search: {text}")


@app.command()
@_errors
def remove(
    product_ids: Annotated[list[str], typer.Argument(help="Products to remove.")],
    workspace: Workspace = None,
    qdrant_url: QdrantUrl = None,
    as_json: AsJson = False,
) -> None:
    """Remove products from the workspace (all must exist, else nothing is removed).

    Example: semassoc remove 85123A 22423
    """
    report = api.remove(product_ids, workspace=workspace, qdrant_url=qdrant_url)
    if as_json:
        sys.stdout.write(json.dumps(report.__dict__) + "\n")
    else:
        out.print(
            f"removed {len(report.removed)} products; {report.products_total} left", highlight=False, soft_wrap=True
        )


@app.command()
@_errors
def info(workspace: Workspace = None, qdrant_url: QdrantUrl = None, as_json: AsJson = False) -> None:
    """Show what the workspace holds: store, encoder, prompt digest, counts.

    Example: semassoc info
    """
    data = api.info(workspace=workspace, qdrant_url=qdrant_url)
    if as_json:
        sys.stdout.write(json.dumps(data.to_dict(), ensure_ascii=False) + "\n")
        return
    table = Table(show_header=False, title=f"workspace {data.workspace}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, Any]] = [
        (
            "store",
            f"{data.store} ({data.store_location})" + (f", collection {data.collection}" if data.collection else ""),
        ),
        ("products", data.products),
        ("encoder", f"{data.encoder_id} ({data.dim}-d, max {data.max_seq_length} tokens)"),
        ("encoder model", data.encoder_model or "bundled all-MiniLM-L6-v2"),
        ("prompts digest", data.prompts_digest),
        ("created", data.created),
        ("updated", data.updated),
    ]
    if data.last_index:
        li = data.last_index
        rows.append(
            (
                "last index",
                f"{li.get('catalog')}: +{li.get('added')} ~{li.get('updated')} "
                f"={li.get('unchanged')} -{li.get('removed')}",
            )
        )
    for section, values in data.sections.items():
        for key, value in values.items():
            rows.append((f"{section} {key}", value))
    for key, value in rows:
        table.add_row(key, str(value))
    out.print(table)


# -- behaviour --------------------------------------------------------------------------------------------------
behavior_app = typer.Typer(
    help="Build and update behaviour statistics (what is bought together) from events files.", no_args_is_help=True
)
app.add_typer(behavior_app, name="behavior")

EventsFiles = Annotated[list[Path], typer.Argument(help="Events file(s): .csv, .tsv, .jsonl or .parquet.")]
ItemColumn = Annotated[str | None, typer.Option("--item-column", help="Product id column [default: detected].")]
BasketColumn = Annotated[
    str | None, typer.Option("--basket-column", help="Order/basket/session id column [default: detected].")
]
UserColumn = Annotated[str | None, typer.Option("--user-column", help="User id column [default: detected].")]
TimeColumn = Annotated[str | None, typer.Option("--timestamp-column", help="Event time column [default: detected].")]
TypeColumn = Annotated[str | None, typer.Option("--event-type-column", help="Event type column [default: detected].")]
QuantityColumn = Annotated[str | None, typer.Option("--quantity-column", help="Quantity column [default: detected].")]
SessionGap = Annotated[
    float, typer.Option("--session-gap", min=0.001, help="Minutes of inactivity that end a session (no basket id).")
]
Weights = Annotated[
    list[str] | None,
    typer.Option("--weight", help="Event type weight, TYPE=W (repeatable) [default: view=1 cart=3 purchase=5]."),
]
HalfLife = Annotated[float | None, typer.Option("--half-life", min=0.001, help="Time-decay half-life in days.")]
Preset = Annotated[
    str | None, typer.Option("--preset", help="Cleaning preset: 'online-retail' (cancellations, non-product codes).")
]
CancelPrefix = Annotated[
    str | None, typer.Option("--cancellation-prefix", help="Drop baskets whose id starts with this (e.g. C).")
]
ExcludeItems = Annotated[
    list[str] | None, typer.Option("--exclude-items", help="Product ids that are not products (repeatable, commas).")
]
ExcludePattern = Annotated[str | None, typer.Option("--exclude-pattern", help="Regex of product ids to drop.")]
KeepNonPositive = Annotated[bool, typer.Option("--keep-nonpositive", help="Keep rows with quantity <= 0.")]
OnError = Annotated[
    OnErrorChoice, typer.Option("--on-error", help="strict: any bad row stops the run; skip: drop bad rows, list them.")
]


def _load_options(
    item_column: str | None,
    basket_column: str | None,
    user_column: str | None,
    timestamp_column: str | None,
    event_type_column: str | None,
    quantity_column: str | None,
    session_gap: float,
    weight: list[str] | None,
    half_life: float | None,
    preset: str | None,
    cancellation_prefix: str | None,
    exclude_items: list[str] | None,
    exclude_pattern: str | None,
    keep_nonpositive: bool,
    on_error: OnErrorChoice,
) -> LoadOptions:
    from semassoc.behaviour.events import EventColumns, EventFilters, LoadOptions

    if preset not in (None, "online-retail"):
        raise InvalidInput(f"--preset {preset}: the only preset is 'online-retail'")
    base = EventFilters.online_retail() if preset else EventFilters()
    listed = {p.strip() for value in exclude_items or [] for p in value.split(",") if p.strip()}
    filters = EventFilters(
        drop_nonpositive_quantity=not keep_nonpositive,
        cancellation_prefix=cancellation_prefix or base.cancellation_prefix,
        excluded_items=frozenset(base.excluded_items | listed),
        excluded_item_pattern=exclude_pattern or base.excluded_item_pattern,
    )
    weights = None
    if weight:
        weights = {}
        for pair in weight:
            name, _, value = pair.partition("=")
            try:
                weights[name.strip().lower()] = float(value)
            except ValueError:
                raise InvalidInput(f"--weight {pair!r}: expected TYPE=NUMBER, e.g. purchase=5") from None
    return LoadOptions(
        columns=EventColumns(
            item_column, basket_column, user_column, timestamp_column, event_type_column, quantity_column
        ),
        session_gap_minutes=session_gap,
        weights=weights,
        half_life_days=half_life,
        filters=filters,
        on_error=on_error.value,
    )


def _print_behavior(report: api.BehaviorReport, as_json: bool, verb: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
        return
    filtered = ", ".join(f"{count} {reason}" for reason, count in report.filtered.items())
    out.print(
        f"{verb} behaviour statistics in {report.workspace}: [bold]{report.baskets}[/] baskets, {report.items} "
        f"products, {report.pairs} pairs; read {report.rows_read} rows, used {report.rows_used}"
        + (f" (filtered: {filtered})" if filtered else "")
        + f", in {report.seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
    if report.skipped_rows:
        err.print(f"[yellow]skipped {report.skipped_rows} bad rows[/], first ones:")
        for problem in report.skipped[:20]:
            err.print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)


@behavior_app.command("build")
@_errors
def behavior_build(
    events: EventsFiles,
    workspace: Workspace = None,
    min_count: Annotated[int, typer.Option("--min-count", min=1, help="Fewest shared baskets for a pair.")] = 2,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="Keep only each product's top-k neighbours (huge catalogs).")
    ] = None,
    weighted: Annotated[bool, typer.Option("--weighted", help="Cosine uses event weights, not presence.")] = False,
    event_type: Annotated[
        list[str] | None, typer.Option("--event-type", help="Count only this event type (repeatable).")
    ] = None,
    item_column: ItemColumn = None,
    basket_column: BasketColumn = None,
    user_column: UserColumn = None,
    timestamp_column: TimeColumn = None,
    event_type_column: TypeColumn = None,
    quantity_column: QuantityColumn = None,
    session_gap: SessionGap = 30.0,
    weight: Weights = None,
    half_life: HalfLife = None,
    preset: Preset = None,
    cancellation_prefix: CancelPrefix = None,
    exclude_items: ExcludeItems = None,
    exclude_pattern: ExcludePattern = None,
    keep_nonpositive: KeepNonPositive = False,
    on_error: OnError = OnErrorChoice.strict,
    as_json: AsJson = False,
) -> None:
    """Count what is bought together in events files (replaces earlier statistics).

    Example: semassoc behavior build examples/online_retail/invoices.parquet --preset online-retail
    """
    options = _load_options(
        item_column,
        basket_column,
        user_column,
        timestamp_column,
        event_type_column,
        quantity_column,
        session_gap,
        weight,
        half_life,
        preset,
        cancellation_prefix,
        exclude_items,
        exclude_pattern,
        keep_nonpositive,
        on_error,
    )
    report = api.build_behavior(
        events,
        workspace=workspace,
        options=options,
        min_count=min_count,
        top_k=top_k,
        weighted=weighted,
        event_types=event_type,
    )
    _print_behavior(report, as_json, "built")


@behavior_app.command("update")
@_errors
def behavior_update(
    events: EventsFiles,
    workspace: Workspace = None,
    on_error: Annotated[
        OnErrorChoice | None, typer.Option("--on-error", help="Override the stored strict/skip setting.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Add new events files to the statistics, read with the options of the build (equals a full rebuild).

    Example: semassoc behavior update invoices_2011-01.parquet
    """
    report = api.update_behavior(events, workspace=workspace, on_error=None if on_error is None else on_error.value)
    _print_behavior(report, as_json, "updated")


@app.command()
@_errors
def complements(
    product_id: Annotated[str, typer.Argument(help="The product to find bought-together products for.")],
    workspace: Workspace = None,
    k: TopK = 10,
    metric: Annotated[
        str, typer.Option("--metric", help="Rank by lift, count, confidence, npmi, cosine, ...")
    ] = "lift",
    min_count: Annotated[int | None, typer.Option("--min-count", min=1, help="Fewest shared baskets.")] = None,
    category: Category = None,
    brand: Brand = None,
    min_price: MinPrice = None,
    max_price: MaxPrice = None,
    in_stock: InStock = False,
    exclude: Exclude = None,
    qdrant_url: QdrantUrl = None,
    as_json: AsJson = False,
) -> None:
    """Products bought together with PRODUCT_ID, with count, confidence and lift per row.

    Example: semassoc complements 85123A -k 5 --metric lift --min-count 5
    """
    items = api.complements(
        product_id,
        workspace=workspace,
        k=k,
        metric=metric,
        min_count=min_count,
        filter=_filter(category, brand, min_price, max_price, in_stock, exclude),
        qdrant_url=qdrant_url,
    )
    if as_json:
        _print_items(items, True, "")
        return
    if not items:
        err.print("no products match")
        return
    table = Table(title=f"bought with {product_id} (by {metric})", title_justify="left")
    for name, justify in (
        ("#", "right"),
        ("product", "left"),
        ("title", "left"),
        ("count", "right"),
        ("confidence", "right"),
        ("lift", "right"),
    ):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for rank, item in enumerate(items, start=1):
        s = item.signals
        table.add_row(
            str(rank), item.product_id, item.title, f"{s['count']:.0f}", f"{s['confidence']:.3f}", f"{s['lift']:.2f}"
        )
    out.print(table)


class ModeChoice(str, Enum):
    auto = "auto"
    substitutes = "substitutes"
    complements = "complements"


Collapse = Annotated[
    str | None,
    typer.Option("--collapse", help="Collapse variants: 'base-code' (85123A ~ 85123B) or a catalog column name."),
]


@app.command()
@_errors
def related(
    product_id: Annotated[str, typer.Argument(help="Any product: a bestseller or one added five minutes ago.")],
    workspace: Workspace = None,
    mode: Annotated[
        ModeChoice, typer.Option("--mode", help="substitutes (instead of), complements (goes with), auto (both).")
    ] = ModeChoice.auto,
    k: TopK = 10,
    collapse: Collapse = None,
    category: Category = None,
    brand: Brand = None,
    min_price: MinPrice = None,
    max_price: MaxPrice = None,
    in_stock: InStock = False,
    exclude: Exclude = None,
    qdrant_url: QdrantUrl = None,
    as_json: AsJson = False,
) -> None:
    """Related products from text and behaviour fused, with per-signal scores and a reason per row.

    Example: semassoc related 85123A --mode complements -k 5 --collapse base-code
    """
    items = api.related(
        product_id,
        workspace=workspace,
        mode=mode.value,
        k=k,
        collapse=collapse,
        filter=_filter(category, brand, min_price, max_price, in_stock, exclude),
        qdrant_url=qdrant_url,
    )
    _print_items(items, as_json, f"related to {product_id} ({mode.value})")


class ProfileChoice(str, Enum):
    vectors = "vectors"
    text = "text"
    mix = "mix"


@app.command()
@_errors
def recommend(
    user_id: Annotated[str | None, typer.Argument(help="The user (omit with --history or --interests).")] = None,
    workspace: Workspace = None,
    k: TopK = 10,
    history: Annotated[
        list[str] | None, typer.Option("--history", help="Products the user has, most recent first (commas).")
    ] = None,
    interests: Annotated[str | None, typer.Option("--interests", help="Free text for a user with no history.")] = None,
    allow_repeat: Annotated[bool, typer.Option("--allow-repeat", help="Keep products already bought.")] = False,
    negative: Annotated[
        list[str] | None, typer.Option("--negative", help="Products to steer away from, e.g. returned (commas).")
    ] = None,
    profile: Annotated[
        ProfileChoice,
        typer.Option(
            "--profile",
            help="vectors: mean of item vectors; text: history through prompts/history.txt and the encoder; mix: both.",
        ),
    ] = ProfileChoice.vectors,
    category: Category = None,
    brand: Brand = None,
    min_price: MinPrice = None,
    max_price: MaxPrice = None,
    in_stock: InStock = False,
    exclude: Exclude = None,
    qdrant_url: QdrantUrl = None,
    as_json: AsJson = False,
) -> None:
    """Products for a user from their history; cold users get semantic + popularity; says which path it took.

    Example: semassoc recommend 13085 -k 5
    """
    split = lambda values: [p.strip() for v in values or [] for p in v.split(",") if p.strip()]  # noqa: E731
    result = api.recommend(
        user_id,
        workspace=workspace,
        history=split(history),
        interests=interests,
        k=k,
        allow_repeat=allow_repeat,
        negatives=split(negative),
        profile=profile.value,
        filter=_filter(category, brand, min_price, max_price, in_stock, exclude),
        qdrant_url=qdrant_url,
    )
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        return
    who = f"user {user_id}" if user_id else "this user"
    err.print(f"path: {result.path} ({result.history_size} products known for {who})", highlight=False)
    _print_items(result.items, False, f"for {who}")


@app.command()
@_errors
def rules(
    events: EventsFiles,
    min_support: Annotated[float, typer.Option("--min-support", min=0.0, max=1.0, help="Share of baskets.")] = 0.01,
    min_confidence: Annotated[float, typer.Option("--min-confidence", min=0.0, max=1.0)] = 0.5,
    min_len: Annotated[int, typer.Option("--min-len", min=1, help="Fewest items in lhs + rhs.")] = 2,
    max_len: Annotated[int, typer.Option("--max-len", min=1, help="Most items in lhs + rhs.")] = 10,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write all rules to .csv, .parquet or .jsonl.")
    ] = None,
    sort: Annotated[str, typer.Option("--sort", help="lift, confidence, support, count or coverage.")] = "lift",
    top: Annotated[int, typer.Option("--top", min=0, help="Rules shown in the table.")] = 20,
    item_column: ItemColumn = None,
    basket_column: BasketColumn = None,
    user_column: UserColumn = None,
    timestamp_column: TimeColumn = None,
    event_type_column: TypeColumn = None,
    quantity_column: QuantityColumn = None,
    session_gap: SessionGap = 30.0,
    preset: Preset = None,
    cancellation_prefix: CancelPrefix = None,
    exclude_items: ExcludeItems = None,
    exclude_pattern: ExcludePattern = None,
    keep_nonpositive: KeepNonPositive = False,
    on_error: OnError = OnErrorChoice.strict,
    as_json: AsJson = False,
) -> None:
    """Mine association rules of any length (arules semantics) and show the top ones.

    Example: semassoc rules examples/online_retail/invoices.parquet --preset online-retail --min-support 0.01
    """
    options = _load_options(
        item_column,
        basket_column,
        user_column,
        timestamp_column,
        event_type_column,
        quantity_column,
        session_gap,
        None,
        None,
        preset,
        cancellation_prefix,
        exclude_items,
        exclude_pattern,
        keep_nonpositive,
        on_error,
    )
    report = api.rules(
        events,
        options=options,
        min_support=min_support,
        min_confidence=min_confidence,
        min_len=min_len,
        max_len=max_len,
        out=out_file,
        sort_by=sort,
    )
    if as_json:
        for rule in report.rules[:top] if out_file else report.rules:
            sys.stdout.write(json.dumps(rule.as_dict(), ensure_ascii=False) + "\n")
        return
    table = Table(
        title=f"{len(report.rules)} rules from {report.baskets} baskets (top {min(top, len(report.rules))} by {sort})",
        title_justify="left",
    )
    for name in ("lhs", "rhs", "support", "confidence", "coverage", "lift", "count"):
        table.add_column(name, justify="left" if name in ("lhs", "rhs") else "right", overflow="fold")
    for rule in report.rules[:top]:
        table.add_row(
            "{" + ", ".join(rule.lhs) + "}",
            "{" + ", ".join(rule.rhs) + "}",
            f"{rule.support:.4f}",
            f"{rule.confidence:.3f}",
            f"{rule.coverage:.4f}",
            f"{rule.lift:.2f}",
            str(rule.count),
        )
    out.print(table)
    if report.out:
        out.print(f"wrote {len(report.rules)} rules to {report.out}", highlight=False, soft_wrap=True)


# -- batch ------------------------------------------------------------------------------------------------------
batch_app = typer.Typer(
    help="Nightly jobs: related products or recommendations for many, to Parquet/JSONL/CSV.", no_args_is_help=True
)
app.add_typer(batch_app, name="batch")
OutFile = Annotated[Path, typer.Option("--out", "-o", help="Output file: .parquet, .jsonl or .csv.")]
ChunkSize = Annotated[int, typer.Option("--chunk-size", min=1, help="Queries per resumable chunk.")]


def _batch_summary(report: api.BatchReport, as_json: bool, what: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
        return
    resumed = f", {report.resumed_chunks} of {report.chunks} chunks resumed" if report.resumed_chunks else ""
    out.print(
        f"wrote {report.rows} rows for {report.queries} {what} to {report.out} in {report.seconds:.1f} s "
        f"({report.per_second:,.0f} {what}/s{resumed})",
        highlight=False,
        soft_wrap=True,
    )


@batch_app.command("related")
@_errors
def batch_related(
    out_file: OutFile,
    products: Annotated[Path | None, typer.Option("--products", help="File of product ids (one per line).")] = None,
    cold: Annotated[
        int | None, typer.Option("--cold", min=1, help="Products with fewer than N baskets (new ones: 1).")
    ] = None,
    all_products: Annotated[bool, typer.Option("--all", help="Every catalog product.")] = False,
    workspace: Workspace = None,
    mode: Annotated[ModeChoice, typer.Option("--mode", help="substitutes, complements or auto.")] = ModeChoice.auto,
    k: TopK = 10,
    collapse: Collapse = None,
    category: Category = None,
    brand: Brand = None,
    min_price: MinPrice = None,
    max_price: MaxPrice = None,
    in_stock: InStock = False,
    exclude: Exclude = None,
    chunk_size: ChunkSize = 256,
    as_json: AsJson = False,
) -> None:
    """Related products for many products; rerun the same command to resume an interrupted run.

    Example: semassoc batch related --cold 1 --out related_new.parquet
    """
    with _progress_bar("products", disable=as_json) as progress:
        report = api.batch_related(
            out_file,
            workspace=workspace,
            products=products,
            cold=cold,
            all_products=all_products,
            mode=mode.value,
            k=k,
            collapse=collapse,
            filter=_filter(category, brand, min_price, max_price, in_stock, exclude),
            chunk_size=chunk_size,
            progress=progress,
        )
    _batch_summary(report, as_json, "products")


@batch_app.command("recommend")
@_errors
def batch_recommend(
    out_file: OutFile,
    users: Annotated[Path | None, typer.Option("--users", help="File of user ids (one per line).")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Every user with a history.")] = False,
    workspace: Workspace = None,
    k: TopK = 10,
    allow_repeat: Annotated[bool, typer.Option("--allow-repeat", help="Keep products already bought.")] = False,
    profile: Annotated[ProfileChoice, typer.Option("--profile", help="vectors, text or mix.")] = ProfileChoice.vectors,
    category: Category = None,
    brand: Brand = None,
    min_price: MinPrice = None,
    max_price: MaxPrice = None,
    in_stock: InStock = False,
    exclude: Exclude = None,
    chunk_size: ChunkSize = 256,
    as_json: AsJson = False,
) -> None:
    """Recommendations for many users; rerun the same command to resume an interrupted run.

    Example: semassoc batch recommend --all --out recs.parquet
    """
    with _progress_bar("users", disable=as_json) as progress:
        report = api.batch_recommend(
            out_file,
            workspace=workspace,
            users=users,
            all_users=all_users,
            k=k,
            allow_repeat=allow_repeat,
            profile=profile.value,
            filter=_filter(category, brand, min_price, max_price, in_stock, exclude),
            chunk_size=chunk_size,
            progress=progress,
        )
    _batch_summary(report, as_json, "users")


# -- evaluate ---------------------------------------------------------------------------------------------------
def _metric_cell(value: Any) -> str:
    return "" if value is None else (f"{value.mean:.3f}" + ("" if value.se is None else f" ±{value.se:.3f}"))


@app.command()
@_errors
def evaluate(
    catalog: Annotated[Path, typer.Argument(help="Catalog file (fully indexed): .csv, .tsv, .jsonl or .parquet.")],
    events: Annotated[Path, typer.Argument(help="Events file with timestamps: .csv, .tsv, .jsonl or .parquet.")],
    workspace: Annotated[
        Path, typer.Option("--workspace", "-w", help="The evaluation's own workspace (index cached across runs).")
    ] = Path(".semassoc-eval"),
    model: Model = None,
    split_date: Annotated[
        str | None, typer.Option("--split-date", help="Cut date, ISO (e.g. 2010-10-01); baskets from then are judged.")
    ] = None,
    split_fraction: Annotated[
        float, typer.Option("--split-fraction", min=0.0, max=1.0, help="Cut at this share of the time range.")
    ] = 0.8,
    cold_share: Annotated[
        float,
        typer.Option(
            "--cold-share", min=0.0, max=1.0, help="Also hide all training events of this share of warm products."
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --cold-share and of query samples.")] = 0,
    truth: Annotated[str, typer.Option("--truth", help="lift (beyond chance) or raw (count only).")] = "lift",
    truth_min_count: Annotated[int, typer.Option("--truth-min-count", min=1, help="Fewest shared judged baskets.")] = 2,
    truth_min_lift: Annotated[
        float, typer.Option("--truth-min-lift", min=0.0, help="Lowest lift (--truth lift).")
    ] = 2.0,
    max_basket_size: Annotated[
        int, typer.Option("--max-basket-size", min=2, help="Largest judged basket counted (--truth lift).")
    ] = 50,
    warm_min_baskets: Annotated[
        int, typer.Option("--warm-min-baskets", min=1, help="Training baskets a warm query product needs.")
    ] = 5,
    min_relevant: Annotated[int, typer.Option("--min-relevant", min=1, help="Relevant products a query needs.")] = 1,
    ks: Annotated[str, typer.Option("--k", "-k", help="Cut-offs, comma-separated.")] = "10,50",
    methods: Annotated[
        str | None, typer.Option("--methods", help="Comma-separated method names [default: all available].")
    ] = None,
    min_count: Annotated[int, typer.Option("--min-count", min=1, help="min_count of the training behaviour.")] = 2,
    max_queries: Annotated[
        int | None, typer.Option("--max-queries", min=1, help="Seeded sample of each product query set.")
    ] = 1000,
    max_users: Annotated[
        int | None, typer.Option("--max-users", min=1, help="Seeded sample of each user query set.")
    ] = 1000,
    all_queries: Annotated[bool, typer.Option("--all-queries", help="No sampling: every query and user.")] = False,
    no_users: Annotated[bool, typer.Option("--no-users", help="Skip the user-level task.")] = False,
    keep_history: Annotated[
        bool, typer.Option("--keep-history", help="Users: keep already-bought products in truth and lists.")
    ] = False,
    chart_metric: Annotated[str, typer.Option("--chart-metric", help="Metric of the PNG chart.")] = "ndcg@10",
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the JSON report here and the chart next to it (.png).")
    ] = None,
    id_column: Annotated[str | None, typer.Option("--id-column", help="Catalog product id column.")] = None,
    title_column: Annotated[str | None, typer.Option("--title-column", help="Catalog title column.")] = None,
    category_column: Annotated[str | None, typer.Option("--category-column", help="Catalog category column.")] = None,
    item_column: ItemColumn = None,
    basket_column: BasketColumn = None,
    user_column: UserColumn = None,
    timestamp_column: TimeColumn = None,
    event_type_column: TypeColumn = None,
    quantity_column: QuantityColumn = None,
    session_gap: SessionGap = 30.0,
    preset: Preset = None,
    cancellation_prefix: CancelPrefix = None,
    exclude_items: ExcludeItems = None,
    exclude_pattern: ExcludePattern = None,
    keep_nonpositive: KeepNonPositive = False,
    on_error: OnError = OnErrorChoice.strict,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report instead of tables.")] = False,
) -> None:
    """Evaluate every method (baselines, text, behaviour, fused) on a temporal split, warm vs cold products.

    Example: semassoc evaluate examples/online_retail/catalog.csv examples/online_retail/invoices.parquet
    --preset online-retail --out report.json
    """
    from datetime import datetime

    from semassoc.evaluation import runner as evaluation

    options = _load_options(
        item_column,
        basket_column,
        user_column,
        timestamp_column,
        event_type_column,
        quantity_column,
        session_gap,
        None,
        None,
        preset,
        cancellation_prefix,
        exclude_items,
        exclude_pattern,
        keep_nonpositive,
        on_error,
    )
    try:
        cut = datetime.fromisoformat(split_date) if split_date else None
        cutoffs = tuple(int(k) for k in ks.split(",") if k.strip())
    except ValueError as exc:
        raise InvalidInput(f"--split-date/--k: {exc}") from None
    if truth not in ("lift", "raw"):
        raise InvalidInput(f"--truth must be 'lift' or 'raw', not {truth!r}")
    config = evaluation.EvaluationConfig(
        split_date=cut,
        split_fraction=split_fraction,
        cold_share=cold_share,
        seed=seed,
        truth=evaluation.TruthConfig(truth, truth_min_count, truth_min_lift, max_basket_size),  # type: ignore[arg-type]
        warm_min_baskets=warm_min_baskets,
        min_relevant=min_relevant,
        ks=cutoffs,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else None,
        min_count=min_count,
        users=not no_users,
        exclude_history=not keep_history,
        max_queries=None if all_queries else max_queries,
        max_users=None if all_queries else max_users,
        chart_metric=chart_metric,
    )
    columns = CatalogColumns(id_column, title_column, None, category_column)

    def progress(stage: str, step: int, steps: int) -> None:
        if not as_json and err.is_terminal:
            err.print(f"[dim]{stage}[/]", highlight=False)

    report = evaluation.evaluate(
        catalog,
        events,
        config=config,
        options=options,
        workspace=workspace,
        columns=columns,
        model=model,
        out=out_file,
        progress=progress,
    )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
        return
    sizes = ", ".join(f"{name} {n}" for name, n in report.query_sets.items())
    out.print(f"[bold]truth:[/] {report.truth_definition}", highlight=False, soft_wrap=True)
    out.print(
        f"cut {report.data['cut']}: {report.data['train_baskets']} training baskets, {report.data['test_baskets']} "
        f"judged; queries: {sizes}",
        highlight=False,
        soft_wrap=True,
    )
    for query_set in report.query_sets:
        rows = [r for r in report.results if r.query_set == query_set]
        for k in config.ks if rows else ():
            names = [n for n in rows[0].metrics if n.endswith(f"@{k}")]
            table = Table(title=f"{query_set} queries ({rows[0].queries}), K = {k}", title_justify="left")
            table.add_column("method")
            for name in names:
                table.add_column(name.split("@")[0], justify="right")
            table.add_column("s", justify="right", style="dim")
            for r in rows:
                table.add_row(r.method, *(_metric_cell(r.metrics[n]) for n in names), f"{r.seconds:.1f}")
            out.print(table)
    for note in report.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    out.print(f"in {report.timings['total']:.1f} s", highlight=False)
    if report.outputs:
        out.print(f"wrote {', '.join(report.outputs.values())}", highlight=False, soft_wrap=True)


@app.command()
@_errors
def train(
    workspace: Workspace = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Model directory name under WORKSPACE/models/ [default: tuned-<time>].")
    ] = None,
    model: Model = None,
    min_count: Annotated[int, typer.Option("--min-count", min=1, help="Fewest baskets a pair must share.")] = 3,
    min_lift: Annotated[float, typer.Option("--min-lift", min=0.0, help="Lowest lift of a pair.")] = 2.0,
    min_npmi: Annotated[float, typer.Option("--min-npmi", min=-1.0, max=1.0, help="Lowest NPMI of a pair.")] = 0.1,
    max_pairs: Annotated[int, typer.Option("--max-pairs", min=1, help="Most pairs kept, strongest first.")] = 20_000,
    max_per_product: Annotated[
        int, typer.Option("--max-per-product", min=1, help="Most pairs per product (its strongest).")
    ] = 10,
    keep_variants: Annotated[
        bool, typer.Option("--keep-variants", help="Keep pairs of variants (same base code, colour-only differences).")
    ] = False,
    validation_share: Annotated[
        float, typer.Option("--validation-share", min=0.0, max=0.9, help="Share of paired products held out.")
    ] = 0.1,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the training pairs.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Pairs per step (in-batch negatives).")] = 64,
    learning_rate: Annotated[float, typer.Option("--learning-rate", min=0.0, help="AdamW peak learning rate.")] = 5e-5,
    max_seq_length: Annotated[int, typer.Option("--max-seq-length", min=8, help="Tokens read per text.")] = 64,
    hard_negatives: Annotated[
        bool, typer.Option("--hard-negatives", help="Add a look-alike never bought with the anchor as a negative.")
    ] = False,
    early_stopping: Annotated[
        str, typer.Option("--early-stopping", help="Validation metric to keep the best of: recall@10 or loss.")
    ] = "recall@10",
    patience: Annotated[int, typer.Option("--patience", min=1, help="Validations without gain before stopping.")] = 2,
    time_budget: Annotated[
        float | None, typer.Option("--time-budget", min=0.0, help="Minutes; stop cleanly and keep the best checkpoint.")
    ] = 12.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, the pair order and torch.")] = 0,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1... [default: auto].")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a model of the same name.")] = False,
    as_json: AsJson = False,
) -> None:
    """Fine-tune the encoder on the workspace's co-purchase pairs; saves WORKSPACE/models/NAME/ with lineage.json.

    Example: semassoc train --name copurchase && semassoc index catalog.csv --model .semassoc/models/copurchase
    """
    from semassoc.training.trainer import TrainConfig, train_encoder

    if early_stopping not in ("recall@10", "loss"):
        raise InvalidInput(f"--early-stopping must be 'recall@10' or 'loss', not {early_stopping!r}")
    config = TrainConfig(
        min_count=min_count,
        min_lift=min_lift,
        min_npmi=min_npmi,
        max_per_product=max_per_product,
        max_pairs=max_pairs,
        drop_variants=not keep_variants,
        validation_share=validation_share,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_seq_length=max_seq_length,
        hard_negatives=hard_negatives,
        early_stopping=early_stopping,  # type: ignore[arg-type]
        patience=patience,
        time_budget_minutes=time_budget or None,
        seed=seed,
    )
    with _train_progress("training", disable=as_json) as update:
        report = train_encoder(
            workspace=workspace,
            name=name,
            config=config,
            model=model,
            device=device,
            overwrite=overwrite,
            progress=update,
        )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
        return
    best, baseline = report.metrics.get("best") or {}, report.metrics.get("baseline") or {}
    validation = (
        f"; validation recall@10 {baseline['recall@10']:.3f} -> {best['recall@10']:.3f}"
        if "recall@10" in best and "recall@10" in baseline
        else ""
    )
    out.print(
        f"[bold]{report.model_dir}[/] ({report.encoder_id}): {report.pairs['train_pairs']} training pairs, "
        f"{report.steps} steps on {report.device} in {report.seconds:.0f} s ({report.stopped}){validation}; "
        f"use it: semassoc index CATALOG --model {report.model_dir}",
        highlight=False,
        soft_wrap=True,
    )


class _train_progress(_progress_bar):
    """Training steps with the running loss, the last validation recall and the ETA."""

    def columns(self) -> list[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

        return [
            TextColumn("{task.fields[stage]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[val]}  ETA {task.fields[eta]}"),
        ]

    def update(self, u: Any) -> None:  # type: ignore[override]  # a semassoc.train.TrainProgress
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
