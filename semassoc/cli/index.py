"""``index``, ``remove``, ``info``: what the workspace holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from semassoc import api
from semassoc.catalog import CatalogColumns
from semassoc.cli import output
from semassoc.cli.options import AsJson, Delimiter, Device, Model, OnErrorChoice, QdrantUrl, Workspace
from semassoc.cli.output import safe


def index(
    catalog: Annotated[Path, typer.Argument(help="Catalog file: .csv, .tsv, .jsonl or .parquet.")],
    workspace: Workspace = None,
    model: Model = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Directory of prompt templates.")] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Make the workspace hold exactly this file's products (remove others).")
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Rebuild the vector store with exactly this file's products, vectors from the vector cache "
            "(the repair for a damaged store; nothing already encoded is encoded again).",
        ),
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
    delimiter: Delimiter = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Encoder batch size.")] = 64,
    optimize: Annotated[
        bool, typer.Option("--optimize", help="Build the HNSW index afterwards (faster queries on big catalogs).")
    ] = False,
    device: Device = None,
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
    with output.progress_bar("encoding", disable=as_json) as advance:
        report = api.index_catalog(
            catalog,
            workspace=workspace,
            columns=columns,
            on_error=on_error.mode,
            delimiter=delimiter,
            model=model,
            prompts=prompts,
            replace=replace,
            rebuild=rebuild,
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
        output.json_line(report.to_dict())
        return
    output.say(
        f"[bold]{report.products_total}[/] products in {safe(report.workspace)} ({safe(report.store)}): "
        f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, {report.removed} removed"
        + (f", {report.reencoded} re-encoded (template or encoder changed)" if report.reencoded else "")
        + f"; {report.encoded} texts encoded, {report.from_cache} from cache, in {report.seconds:.1f} s"
    )
    if report.skipped:
        output.problems(
            f"[yellow]skipped {len(report.skipped)} of {report.rows_read} rows:[/]",
            report.skipped,
            more="(--json lists them all)",
        )


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
        output.json_line(report.__dict__)
    else:
        output.say(f"removed {len(report.removed)} products; {report.products_total} left")


def info(workspace: Workspace = None, qdrant_url: QdrantUrl = None, as_json: AsJson = False) -> None:
    """Show what the workspace holds: store, encoder, prompt digest, counts.

    Example: semassoc info
    """
    data = api.info(workspace=workspace, qdrant_url=qdrant_url)
    if as_json:
        output.json_line(data.to_dict())
        return
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
    output.table(
        f"workspace {data.workspace}",
        [("", {"style": "bold"}), ("", {})],
        rows,
        show_header=False,
    )


def check(
    workspace: Workspace = None,
    quick: Annotated[bool, typer.Option("--quick", help="Check a sample of the vectors instead of every one.")] = False,
    as_json: AsJson = False,
) -> None:
    """Check the workspace: manifest, vector store (count, dimension, vector lengths), vector cache, behaviour
    statistics and user histories. Exit 1 with one line per damaged file and its repair.

    Example: semassoc check --workspace .semassoc
    """
    from semassoc.check import check as run_check

    report = run_check(workspace, full=not quick)
    if as_json:
        output.json_line(report.to_dict())
    else:
        verdict = "[green]ok[/]" if report.ok else f"[red]{len(report.problems)} problem(s)[/]"
        output.say(
            f"{safe(report.workspace)}: {verdict}; checked {', '.join(report.checks)}; "
            f"{report.products} products, {report.vectors_checked} vectors"
        )
        for problem in report.problems:
            output.note(safe(problem))
    if not report.ok:
        raise typer.Exit(1)
