"""``behavior build``/``update``, ``complements``, ``rules``: what is bought together."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from semassoc import api
from semassoc.behaviour.event_options import LoadOptions
from semassoc.cli import output
from semassoc.cli.options import (
    ANY_PRODUCT,
    LOCAL_ENGINE,
    READ_EVENTS,
    AsJson,
    Engine,
    MetricChoice,
    OnErrorChoice,
    QdrantUrl,
    RuleSortChoice,
    TopK,
    Workspace,
    delimited_events_options,
    engine_options,
    filter_options,
    weighted_events_options,
)
from semassoc.cli.output import safe
from semassoc.store.base import ProductFilter

# With --engine spark, inputs may be directories, globs and URIs (s3a://...): text, as a Path would fold "//".
EventSources = Annotated[
    list[str],
    typer.Argument(
        help="Events file(s): .csv, .tsv, .jsonl or .parquet; with --engine spark also directories (Hive-style "
        "partitions), globs and URIs such as s3a://bucket/events/."
    ),
]


def _print_behavior(report: api.BehaviorReport, as_json: bool, verb: str) -> None:
    if as_json:
        output.json_line(report.to_dict())
        return
    filtered = ", ".join(f"{count} {reason}" for reason, count in report.filtered.items())
    output.say(
        f"{verb} behaviour statistics in {safe(report.workspace)}: [bold]{report.baskets}[/] baskets, {report.items} "
        f"products, {report.pairs} pairs; read {report.rows_read} rows, used {report.rows_used}"
        + (f" (filtered: {safe(filtered)})" if filtered else "")
        + f", in {report.seconds:.1f} s"
    )
    if report.skipped_rows:
        output.problems(f"[yellow]skipped {report.skipped_rows} bad rows[/], first ones:", report.skipped)
    for line in report.notes:
        output.note(safe(line))


@weighted_events_options
@engine_options
def build(
    events: EventSources,
    workspace: Workspace = None,
    min_count: Annotated[int, typer.Option("--min-count", min=1, help="Fewest shared baskets for a pair.")] = 2,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="Keep only each product's top-k neighbours (huge catalogs).")
    ] = None,
    weighted: Annotated[bool, typer.Option("--weighted", help="Cosine uses event weights, not presence.")] = False,
    event_type: Annotated[
        list[str] | None, typer.Option("--event-type", help="Count only this event type (repeatable).")
    ] = None,
    options: LoadOptions = READ_EVENTS,
    engine: Engine = LOCAL_ENGINE,
    as_json: AsJson = False,
) -> None:
    """Count what is bought together in events files (replaces earlier statistics).

    Example: semassoc behavior build examples/online_retail/invoices.parquet --preset online-retail
    """
    report = api.build_behavior(
        events,
        workspace=workspace,
        options=options,
        min_count=min_count,
        top_k=top_k,
        weighted=weighted,
        event_types=event_type,
        engine=engine.name,
        spark=engine.spark,
    )
    _print_behavior(report, as_json, "built")


@engine_options
def update(
    events: EventSources,
    workspace: Workspace = None,
    on_error: Annotated[
        OnErrorChoice | None, typer.Option("--on-error", help="Override the stored strict/skip setting.")
    ] = None,
    pseudonymise_users: Annotated[
        bool,
        typer.Option(
            "--pseudonymise-users",
            help="Check that the build pseudonymised user ids too (updates always read files as the build did).",
        ),
    ] = False,
    engine: Engine = LOCAL_ENGINE,
    as_json: AsJson = False,
) -> None:
    """Add new events files to the statistics, read with the options of the build (equals a full rebuild).

    Example: semassoc behavior update invoices_2011-01.parquet
    """
    report = api.update_behavior(
        events,
        workspace=workspace,
        on_error=None if on_error is None else on_error.mode,
        pseudonymise_users=True if pseudonymise_users else None,
        engine=engine.name,
        spark=engine.spark,
    )
    _print_behavior(report, as_json, "updated")


def forget_user(
    user_id: Annotated[str, typer.Argument(help="The user's id as in the events files.")],
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Remove a user's history from the workspace, and say what still holds data derived from it.

    Example: semassoc forget-user 13085
    """
    report = api.forget_user(user_id, workspace=workspace)
    if as_json:
        output.json_line(report.to_dict())
        return
    output.say(
        f"forgot user {safe(report.user_id)}: history of {report.products} products ({report.events} events) removed"
    )
    for line in report.remaining:
        output.note(f"[yellow]still derived from it:[/] {safe(line)}")


@filter_options
def complements(
    product_id: Annotated[str, typer.Argument(help="The product to find bought-together products for.")],
    workspace: Workspace = None,
    k: TopK = 10,
    metric: Annotated[
        MetricChoice, typer.Option("--metric", help="Rank by lift, count, confidence, npmi, cosine, ...")
    ] = MetricChoice.lift,
    min_count: Annotated[int | None, typer.Option("--min-count", min=1, help="Fewest shared baskets.")] = None,
    filter: ProductFilter = ANY_PRODUCT,
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
        metric=metric.value,
        min_count=min_count,
        filter=filter,
        qdrant_url=qdrant_url,
    )
    if as_json:
        output.items(items, True, "")
        return
    if not items:
        output.err.print("no products match")
        return
    columns = [
        (name, {"justify": justify, "overflow": "fold"})
        for name, justify in (
            ("#", "right"),
            ("product", "left"),
            ("title", "left"),
            ("count", "right"),
            ("confidence", "right"),
            ("lift", "right"),
        )
    ]
    rows = (
        (rank, item.product_id, item.title, f"{s['count']:.0f}", f"{s['confidence']:.3f}", f"{s['lift']:.2f}")
        for rank, item in enumerate(items, start=1)
        for s in (item.signals,)
    )
    output.table(f"bought with {product_id} (by {metric.value})", columns, rows)


@delimited_events_options
@engine_options
def rules(
    events: EventSources,
    min_support: Annotated[float, typer.Option("--min-support", min=0.0, max=1.0, help="Share of baskets.")] = 0.01,
    min_confidence: Annotated[float, typer.Option("--min-confidence", min=0.0, max=1.0)] = 0.5,
    min_len: Annotated[int, typer.Option("--min-len", min=1, help="Fewest items in lhs + rhs.")] = 2,
    max_len: Annotated[int, typer.Option("--max-len", min=1, help="Most items in lhs + rhs.")] = 10,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write all rules to .csv, .parquet or .jsonl.")
    ] = None,
    sort: Annotated[
        RuleSortChoice, typer.Option("--sort", help="lift, confidence, support, count or coverage.")
    ] = RuleSortChoice.lift,
    top: Annotated[int, typer.Option("--top", min=0, help="Rules shown in the table.")] = 20,
    force: Annotated[
        bool, typer.Option("--force", help="Mine even when the rules are estimated not to fit in memory.")
    ] = False,
    options: LoadOptions = READ_EVENTS,
    engine: Engine = LOCAL_ENGINE,
    as_json: AsJson = False,
) -> None:
    """Mine association rules of any length (arules semantics) and show the top ones.

    Example: semassoc rules examples/online_retail/invoices.parquet --preset online-retail --min-support 0.01
    """
    report = api.rules(
        events,
        options=options,
        min_support=min_support,
        min_confidence=min_confidence,
        min_len=min_len,
        max_len=max_len,
        out=out_file,
        sort_by=sort.value,
        force=force,
        engine=engine.name,
        spark=engine.spark,
    )
    if as_json:
        for rule in report.rules[:top] if out_file else report.rules:
            output.json_line(rule.as_dict())
        return
    output.table(
        f"{len(report.rules)} rules from {report.baskets} baskets (top {min(top, len(report.rules))} by {sort.value})",
        [
            (name, {"justify": "left" if name in ("lhs", "rhs") else "right", "overflow": "fold"})
            for name in ("lhs", "rhs", "support", "confidence", "coverage", "lift", "count")
        ],
        (
            (
                "{" + ", ".join(rule.lhs) + "}",
                "{" + ", ".join(rule.rhs) + "}",
                f"{rule.support:.4f}",
                f"{rule.confidence:.3f}",
                f"{rule.coverage:.4f}",
                f"{rule.lift:.2f}",
                str(rule.count),
            )
            for rule in report.rules[:top]
        ),
    )
    if report.out:
        output.say(f"wrote {len(report.rules)} rules to {safe(report.out)}")
