"""``fit``: learn the ranker of ``related`` from the workspace's own basket log."""

from __future__ import annotations

from typing import Annotated

import typer

from semassoc import api
from semassoc.cli import output
from semassoc.cli.options import AsJson, QdrantUrl, Workspace
from semassoc.cli.output import safe


def fit(
    workspace: Workspace = None,
    qdrant_url: QdrantUrl = None,
    cuts: Annotated[int, typer.Option("--cuts", min=1, help="Simulated moments in the last part of the log.")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the query samples and of LightGBM.")] = 0,
    as_json: AsJson = False,
) -> None:
    """Learn how to rank `related` from this workspace's own baskets (replayed at cuts inside the log); saves
    WORKSPACE/ranker/. Refit after `behavior update`. With too few events nothing is saved (hand-set fusion).

    Example: semassoc behavior update new_month.parquet && semassoc fit
    """
    from semassoc.ranking.ranker import FitConfig

    def progress(stage: str, step: int, steps: int) -> None:
        if not as_json and output.err.is_terminal:
            output.note(f"[dim]{safe(stage)}[/]")

    report = api.fit(workspace, qdrant_url=qdrant_url, config=FitConfig(cuts=cuts, seed=seed), progress=progress)
    if as_json:
        output.json_line(report.to_dict())
        return
    output.say(
        f"{'[bold]fitted[/]' if report.saved else 'not fitted'}: {safe(report.message)} ({report.seconds:.0f} s)"
    )
    for group, summary in report.models.items():
        metrics = summary.get("validation_ndcg@10")
        if metrics:
            start = summary.get("baseline")
            how = (
                f"{start} list + {summary.get('rounds', 0)} rounds of trees"
                if summary.get("gate") == "trees kept"
                else f"{start} list alone (the trees did not beat it)"
                if start
                else f"{summary.get('rounds', 0)} rounds of trees"
            )
            output.say(
                f"  {group} ({how}): NDCG@10 on {metrics['model']['n']} held-out products: model "
                f"{metrics['model']['mean']:.3f}, text only {metrics['text']['mean']:.3f}, behaviour only "
                f"{metrics['behaviour']['mean']:.3f}"
            )
        else:
            output.say(f"  {group}: {safe(summary.get('skipped', 'not fitted'))}")
