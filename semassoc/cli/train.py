"""``train``: fine-tune the encoder on the workspace's co-purchase pairs."""

from __future__ import annotations

from typing import Annotated

import typer

from semassoc import api
from semassoc.cli import output
from semassoc.cli.options import AsJson, Device, EarlyStoppingChoice, Model, Workspace
from semassoc.cli.output import safe


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
        EarlyStoppingChoice,
        typer.Option("--early-stopping", help="Validation metric to keep the best of: recall@10 or loss."),
    ] = EarlyStoppingChoice.recall_at_10,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Validations without gain before stopping.")] = 2,
    time_budget: Annotated[
        float | None, typer.Option("--time-budget", min=0.0, help="Minutes; stop cleanly and keep the best checkpoint.")
    ] = 12.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, the pair order and torch.")] = 0,
    device: Device = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a model of the same name.")] = False,
    as_json: AsJson = False,
) -> None:
    """Fine-tune the encoder on the workspace's co-purchase pairs; saves WORKSPACE/models/NAME/ with lineage.json.

    Example: semassoc train --name copurchase && semassoc index catalog.csv --model .semassoc/models/copurchase
    """
    from semassoc.training.pairs import TrainConfig

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
        early_stopping=early_stopping.metric,
        patience=patience,
        time_budget_minutes=time_budget or None,
        seed=seed,
    )
    with output.train_progress("training", disable=as_json) as update:
        report = api.train(
            workspace=workspace,
            name=name,
            config=config,
            model=model,
            device=device,
            overwrite=overwrite,
            progress=update,
        )
    if as_json:
        output.json_line(report.to_dict())
        return
    best, baseline = report.metrics.get("best") or {}, report.metrics.get("baseline") or {}
    validation = (
        f"; validation recall@10 {baseline['recall@10']:.3f} -> {best['recall@10']:.3f}"
        if "recall@10" in best and "recall@10" in baseline
        else ""
    )
    output.say(
        f"[bold]{safe(report.model_dir)}[/] ({safe(report.encoder_id)}): {report.pairs['train_pairs']} training "
        f"pairs, {report.steps} steps on {safe(report.device)} in {report.seconds:.0f} s ({safe(report.stopped)})"
        f"{validation}; use it: semassoc index CATALOG --model {safe(report.model_dir)}"
    )
