"""``related``, ``recommend`` and the ``batch`` jobs: text and behaviour fused."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from semassoc import api
from semassoc.cli import output
from semassoc.cli.options import (
    ANY_PRODUCT,
    AsJson,
    Collapse,
    ModeChoice,
    ProfileChoice,
    QdrantUrl,
    TopK,
    Workspace,
    filter_options,
    split_ids,
)
from semassoc.cli.output import safe
from semassoc.store.base import ProductFilter

OutFile = Annotated[Path, typer.Option("--out", "-o", help="Output file: .parquet, .jsonl or .csv.")]
ChunkSize = Annotated[int, typer.Option("--chunk-size", min=1, help="Queries per resumable chunk.")]


@filter_options
def related(
    product_id: Annotated[str, typer.Argument(help="Any product: a bestseller or one added five minutes ago.")],
    workspace: Workspace = None,
    mode: Annotated[
        ModeChoice, typer.Option("--mode", help="substitutes (instead of), complements (goes with), auto (both).")
    ] = ModeChoice.auto,
    k: TopK = 10,
    collapse: Collapse = None,
    filter: ProductFilter = ANY_PRODUCT,
    no_ranker: Annotated[
        bool, typer.Option("--no-ranker", help="Use the hand-set fusion even when `semassoc fit` saved a ranker.")
    ] = False,
    qdrant_url: QdrantUrl = None,
    as_json: AsJson = False,
) -> None:
    """Related products from text and behaviour fused, with per-signal scores and a reason per row (ordered by the
    ranker `semassoc fit` learned, when the workspace has one).

    Example: semassoc related 85123A --mode complements -k 5 --collapse base-code
    """
    items = api.related(
        product_id,
        workspace=workspace,
        mode=mode.value,
        k=k,
        collapse=collapse,
        filter=filter,
        ranker=not no_ranker,
        qdrant_url=qdrant_url,
    )
    output.items(items, as_json, f"related to {product_id} ({mode.value})")


@filter_options
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
    filter: ProductFilter = ANY_PRODUCT,
    no_ranker: Annotated[
        bool,
        typer.Option("--no-ranker", help="Use the profile fusion even when `semassoc fit` saved a ranker."),
    ] = False,
    qdrant_url: QdrantUrl = None,
    as_json: AsJson = False,
) -> None:
    """Products for a user from their history; cold users get semantic + popularity; says which path it took.
    With a ranker from `semassoc fit`, ranked from the ranked related lists of the user's history products.

    Example: semassoc recommend 13085 -k 5
    """
    result = api.recommend(
        user_id,
        workspace=workspace,
        history=split_ids(history),
        interests=interests,
        k=k,
        allow_repeat=allow_repeat,
        negatives=split_ids(negative),
        profile=profile.value,
        filter=filter,
        ranker=not no_ranker,
        qdrant_url=qdrant_url,
    )
    if as_json:
        output.json_line(result.to_dict())
        return
    who = f"user {user_id}" if user_id else "this user"
    output.note(f"path: {safe(result.path)} ({result.history_size} products known for {safe(who)})")
    output.items(result.items, False, f"for {who}")


def _batch_summary(report: api.BatchReport, as_json: bool, what: str) -> None:
    if as_json:
        output.json_line(report.to_dict())
        return
    resumed = f", {report.resumed_chunks} of {report.chunks} chunks resumed" if report.resumed_chunks else ""
    output.say(
        f"wrote {report.rows} rows for {report.queries} {what} to {safe(report.out)} in {report.seconds:.1f} s "
        f"({report.per_second:,.0f} {what}/s{resumed})"
    )


@filter_options
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
    filter: ProductFilter = ANY_PRODUCT,
    chunk_size: ChunkSize = 256,
    as_json: AsJson = False,
) -> None:
    """Related products for many products; rerun the same command to resume an interrupted run.

    Example: semassoc batch related --cold 1 --out related_new.parquet
    """
    with output.progress_bar("products", disable=as_json) as progress:
        report = api.batch_related(
            out_file,
            workspace=workspace,
            products=products,
            cold=cold,
            all_products=all_products,
            mode=mode.value,
            k=k,
            collapse=collapse,
            filter=filter,
            chunk_size=chunk_size,
            progress=progress,
        )
    _batch_summary(report, as_json, "products")


@filter_options
def batch_recommend(
    out_file: OutFile,
    users: Annotated[Path | None, typer.Option("--users", help="File of user ids (one per line).")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Every user with a history.")] = False,
    workspace: Workspace = None,
    k: TopK = 10,
    allow_repeat: Annotated[bool, typer.Option("--allow-repeat", help="Keep products already bought.")] = False,
    profile: Annotated[ProfileChoice, typer.Option("--profile", help="vectors, text or mix.")] = ProfileChoice.vectors,
    filter: ProductFilter = ANY_PRODUCT,
    chunk_size: ChunkSize = 256,
    no_ranker: Annotated[
        bool,
        typer.Option("--no-ranker", help="Use the profile fusion even when `semassoc fit` saved a ranker."),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Recommendations for many users; rerun the same command to resume an interrupted run.

    Example: semassoc batch recommend --all --out recs.parquet
    """
    with output.progress_bar("users", disable=as_json) as progress:
        report = api.batch_recommend(
            out_file,
            workspace=workspace,
            users=users,
            all_users=all_users,
            k=k,
            allow_repeat=allow_repeat,
            profile=profile.value,
            filter=filter,
            chunk_size=chunk_size,
            progress=progress,
            ranker=not no_ranker,
        )
    _batch_summary(report, as_json, "users")
