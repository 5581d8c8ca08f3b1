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
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from semassoc import api
from semassoc.catalog import CatalogColumns
from semassoc.errors import SemassocError
from semassoc.results import ScoredItem
from semassoc.store import ProductFilter
from semassoc.workspace import ENV_QDRANT_URL, ENV_WORKSPACE

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
    with _progress_bar(disable=as_json) as advance:
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
    """A rich progress bar with items/s on stderr; yields the callback the API calls."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable or not err.is_terminal
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int, int], None]:
        if self.disable:
            return lambda advance, total: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("encoding"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        self._progress.__enter__()

        def advance(step: int, total: int) -> None:
            if self._task is None:
                self._task = self._progress.add_task("index", total=total, rate="")
            self._progress.update(self._task, advance=step, total=total)
            speed = self._progress.tasks[0].speed
            self._progress.update(self._task, rate=f"{speed:,.0f} items/s" if speed else "")

        return advance

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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
