"""The Python API behind every CLI command. Each function returns data; nothing here prints.

One function per command, grouped by stage of the data flow: :mod:`semassoc.api.products` (``index_catalog``,
``similar``, ``search``, ``remove``, ``info``), :mod:`semassoc.api.behaviour` (``build_behavior``,
``update_behavior``, ``forget_user``, ``rules``) and :mod:`semassoc.api.queries` (``complements``, ``related``,
``fit``, ``recommend``, ``batch_related``, ``batch_recommend``); all are importable from here. ``evaluate`` and
``train`` are :func:`semassoc.evaluation.runner.evaluate` and :func:`semassoc.training.trainer.train_encoder`
themselves, imported on first use.

Example:
    >>> from semassoc import api
    >>> report = api.index_catalog("examples/online_retail/catalog.csv", workspace="/tmp/ws")  # doctest: +SKIP
    >>> [item.title for item in api.similar("85123A", workspace="/tmp/ws", k=3)]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semassoc.api.behaviour import (
    BehaviorReport,
    ForgetReport,
    RulesReport,
    build_behavior,
    forget_user,
    rules,
    update_behavior,
)
from semassoc.api.products import RemoveReport, WorkspaceInfo, index_catalog, info, remove, search, similar
from semassoc.api.queries import batch_recommend, batch_related, complements, fit, recommend, related
from semassoc.ranking.batch import BatchReport
from semassoc.ranking.recommend import Recommendation
from semassoc.text.indexing import IndexProgress, IndexReport
from semassoc.text.prompts import PromptSet

if TYPE_CHECKING:  # loaded on first use (scipy, torch...): see __getattr__
    from semassoc.evaluation.runner import evaluate as evaluate
    from semassoc.training.trainer import train_encoder as train

__all__ = [
    "BatchReport",
    "BehaviorReport",
    "ForgetReport",
    "IndexProgress",
    "IndexReport",
    "PromptSet",
    "Recommendation",
    "RemoveReport",
    "RulesReport",
    "WorkspaceInfo",
    "batch_recommend",
    "batch_related",
    "build_behavior",
    "complements",
    "evaluate",
    "fit",
    "forget_user",
    "index_catalog",
    "info",
    "recommend",
    "related",
    "remove",
    "rules",
    "search",
    "similar",
    "train",
    "update_behavior",
]


# ---------------------------------------------------------------------------------------------------------------
# evaluate and train: the evaluation runner's and the trainer's own functions, imported on first use (they load
# scipy, torch...), so that `import semassoc.api` stays light. ``api.evaluate is evaluation.runner.evaluate``.
_LAZY = {
    "evaluate": ("semassoc.evaluation.runner", "evaluate"),
    "train": ("semassoc.training.trainer", "train_encoder"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
