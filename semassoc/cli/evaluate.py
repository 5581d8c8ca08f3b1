"""``evaluate``: every method at one or several temporal cuts; established, new and hidden products kept apart."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from semassoc import api
from semassoc.behaviour.event_options import LoadOptions
from semassoc.catalog import CatalogColumns
from semassoc.cli import output
from semassoc.cli.options import (
    READ_EVENTS,
    Model,
    TruthChoice,
    events_options,
)
from semassoc.cli.output import safe
from semassoc.errors import InvalidInput, NotFound


def _metric_cell(value: Any) -> str:
    return "" if value is None else (f"{value.mean:.3f}" + ("" if value.se is None else f" ±{value.se:.3f}"))


@events_options
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
    cuts: Annotated[
        str | None,
        typer.Option(
            "--cuts",
            help="Several cuts (rolling origin), comma-separated ISO dates or fractions of the time range; each is "
            "judged up to the next (the last to the end, or --window) and the report pools them.",
        ),
    ] = None,
    window: Annotated[
        float | None, typer.Option("--window", min=0.0, help="Days judged after each cut [default: to the next cut].")
    ] = None,
    baseline: Annotated[
        str,
        typer.Option("--baseline", help="Paired per-query differences against these methods, comma-separated."),
    ] = "similar",
    no_fit: Annotated[
        bool, typer.Option("--no-fit", help="Do not fit the ranker per cut: `related` uses the hand-set fusion.")
    ] = False,
    cold_share: Annotated[
        float,
        typer.Option(
            "--cold-share",
            min=0.0,
            max=1.0,
            help="Also hide all training events of this share of established products (the 'hidden' set).",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --cold-share and of query samples.")] = 0,
    truth: Annotated[
        TruthChoice, typer.Option("--truth", help="lift (beyond chance) or raw (count only).")
    ] = TruthChoice.lift,
    truth_min_count: Annotated[int, typer.Option("--truth-min-count", min=1, help="Fewest shared judged baskets.")] = 2,
    truth_min_lift: Annotated[
        float, typer.Option("--truth-min-lift", min=0.0, help="Lowest lift (--truth lift).")
    ] = 2.0,
    max_basket_size: Annotated[
        int, typer.Option("--max-basket-size", min=2, help="Largest judged basket counted (--truth lift).")
    ] = 50,
    warm_min_baskets: Annotated[
        int, typer.Option("--warm-min-baskets", min=1, help="Training baskets an established query product needs.")
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
    options: LoadOptions = READ_EVENTS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report instead of tables.")] = False,
) -> None:
    """Evaluate every method (baselines, text, behaviour, fused, fitted) at temporal cuts, per query set:
    established products, truly new products, established products with hidden events, users.

    Example: semassoc evaluate examples/online_retail/catalog.csv examples/online_retail/invoices.parquet
    --preset online-retail --out report.json
    """
    from semassoc.evaluation.runner import EvaluationConfig
    from semassoc.evaluation.truth import TruthConfig

    try:
        cut = datetime.fromisoformat(split_date) if split_date else None
        cutoffs = tuple(int(k) for k in ks.split(",") if k.strip())
        cut_list = tuple(_cut(c.strip()) for c in cuts.split(",") if c.strip()) if cuts else None
    except ValueError as exc:
        raise InvalidInput(f"--split-date/--cuts/--k: {exc}") from None
    config = EvaluationConfig(
        split_date=cut,
        split_fraction=split_fraction,
        cold_share=cold_share,
        seed=seed,
        truth=TruthConfig(truth.kind, truth_min_count, truth_min_lift, max_basket_size),
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
        cuts=cut_list,
        window_days=window,
        baselines=tuple(b.strip() for b in baseline.split(",") if b.strip()),
        fit=not no_fit,
    )
    columns = CatalogColumns(id_column, title_column, None, category_column)

    def progress(stage: str, step: int, steps: int) -> None:
        if not as_json and output.err.is_terminal:
            output.note(f"[dim]{safe(stage)}[/]")

    report = api.evaluate(
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
        output.json_line(report.to_dict())
        return
    output.say(f"[bold]truth:[/] {safe(report.truth_definition)}")
    for c in report.cuts:
        sizes = ", ".join(f"{name} {n}" for name, n in c["query_sets"].items())
        ranker = c.get("ranker")
        fitted = (
            "" if ranker is None else ("; ranker fitted" if ranker.get("saved") else "; no ranker (hand-set fusion)")
        )
        output.say(
            f"cut {c['cut']}"
            + (f" to {c['judged_until']}" if c["judged_until"] else "")
            + f": {c['train_baskets']} training baskets, {c['test_baskets']} judged; queries: {safe(sizes)}{fitted}"
        )
    base: str = report.config["baselines"][0] if report.config["baselines"] else ""
    cuts_shown = list(dict.fromkeys(r.cut for r in report.results))
    for cut_label in cuts_shown:
        summary = cut_label == report.summary_cut
        for query_set in report.query_sets:
            rows = [r for r in report.results if r.query_set == query_set and r.cut == cut_label]
            for k in (config.ks if summary else config.ks[:1]) if rows else ():
                names = [n for n in rows[0].metrics if n.endswith(f"@{k}")]
                paired = [m for m in ("ndcg", "recall") if f"{m}@{k}" in rows[0].values] if base else []
                where = "pooled over cuts" if cut_label == "pooled" else f"cut {cut_label}"
                output.table(
                    f"{query_set} queries ({rows[0].queries}), K = {k}, {where}",
                    [
                        ("method", {}),
                        *((name.split("@")[0], {"justify": "right"}) for name in names),
                        *((f"Δ{m} vs {base}", {"justify": "right"}) for m in paired),
                        ("s", {"justify": "right", "style": "dim"}),
                    ],
                    (
                        (
                            r.method,
                            *(_metric_cell(r.metrics[n]) for n in names),
                            *(_difference(report, r, base, f"{m}@{k}") for m in paired),
                            f"{r.seconds:.1f}",
                        )
                        for r in rows
                    ),
                )
    for note in report.notes:
        output.note(f"[yellow]note:[/] {safe(note)}")
    output.say(f"in {report.timings['total']:.1f} s")
    if report.outputs:
        output.say(f"wrote {safe(', '.join(report.outputs.values()))}")


def _cut(text: str) -> datetime | float:
    """One --cuts entry: a fraction of the time range (0.8) or an ISO date."""
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text)


def _difference(report: Any, row: Any, baseline: str, metric: str) -> str:
    if row.method == baseline:
        return "baseline"
    try:
        d = report.difference(row.method, baseline, row.query_set, metric, row.cut)
    except NotFound:
        return ""
    return f"{d.mean:+.3f}" + ("" if d.se is None else f" ±{d.se:.3f}")
