"""The learned ranker of ``related``: LightGBM lambdarank fitted on the workspace's own basket log.

:func:`fit` replays the log at a few cuts (:mod:`semassoc.ranking.simulate`) and fits one model per kind of query
product (:data:`GROUPS`: established, young, new; serving picks by the query's baskets). Each model starts from the
group's best single-signal list on the training queries (text, own behaviour, popularity:
:func:`semassoc.ranking.features.baseline_scores`, given to LightGBM as ``init_score``), so its trees learn
corrections on top of that list; early stopping on one half of the held-out query products; on the other half the
trees must beat their start, else the group is saved as that list alone (the gate). Validation figures (model, start,
text only, behaviour only, paired differences) and the gate's outcome go to the lineage. Everything is saved in
``<workspace>/ranker/`` (model text files and ``lineage.json``) with one atomic directory write. :class:`Ranker`
loads them for serving and scores rows as the start's score plus the trees' output, as at fit.

LightGBM is imported only here, and only when fitting or scoring with a model.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semassoc.errors import NotFound, SemassocError
from semassoc.ranking import features as F

RANKER_DIR = "ranker"
#: One model per kind of query product: established (>= ``established_min`` baskets), young (fewer, at least one)
#: and new (no basket yet). Serving picks by the query's baskets (:meth:`Ranker.group_of`).
GROUPS = ("established", "young", "new")


def group_of(baskets: int, established_min: int) -> str:
    """The group of a query product with ``baskets`` baskets."""
    return "established" if baskets >= established_min else ("young" if baskets > 0 else "new")


MAX_LABEL = 30


@dataclass(frozen=True)
class FitConfig:
    """Knobs of ``semassoc fit`` (all recorded in the lineage).

    Attributes:
        cuts: simulated moments in the last part of the log.
        label_fraction: length of each cut's label window, as a share of the log's time range.
        step_fraction: distance between successive cuts, as a share of the range.
        established_min: baskets before a cut that make a query product established (as ``evaluate``'s warm set).
        max_queries: most query products per group and cut (seeded sample).
        candidates: candidates per signal (text, own and borrowed behaviour, popularity, newest by text).
        text_limit: text neighbours searched (the newest-by-text signal looks among these).
        validation_share: share of query products held out (by a hash of the product id): half of it to stop the
            boosting (early stopping), the other half to judge the model (gate, validation figures).
        min_queries: fewest training queries (with a relevant candidate) a model needs; below that none is saved.
            When the young or the new group has too few, young and new queries share one model ("new").
        rounds / learning_rate / num_leaves / min_data_in_leaf: LightGBM settings; early stopping on validation.
        small_group: a group with fewer training queries gets smaller, more cautious trees (7 leaves, 4x
            ``min_data_in_leaf``, half the learning rate): on Instacart's new products the default trees beat their
            start on held-out simulated queries and lost to it when judged after the cuts.
        boost_from_baseline: start each group's model from its best single-signal list on the training queries
            (text, own behaviour with popularity for products without any, or popularity): LightGBM's
            ``init_score`` is that list's rank score times ``init_scale`` (small: at 1, lambdarank's hessians
            vanish on pairs far apart and the first trees' leaves blow up); the trees are kept only if they beat
            that list on the judging half of the held-out queries by more than ``gate_se`` standard errors of the
            paired difference (0: any positive mean), else the group is served by the list alone. False: trees
            from a zero start, always kept (the ranker before this option, kept for comparisons).
        seed / threads: determinism (fixed seed, deterministic mode, fixed thread count; one thread: OpenMP
            threads spin badly on a busy machine, 6x slower here on 2 shared cores, and the data is small).
    """

    cuts: int = 3
    label_fraction: float = 0.2
    step_fraction: float = 0.1
    established_min: int = 5
    max_queries: int = 1000
    candidates: int = 60
    text_limit: int = 150
    validation_share: float = 0.2
    min_queries: int = 30
    rounds: int = 200
    learning_rate: float = 0.1
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    boost_from_baseline: bool = True
    gate_se: float = 0.0
    small_group: int = 1000
    init_scale: float = 0.2
    seed: int = 0
    threads: int = 1


@dataclass
class FitReport:
    """What ``fit`` did. ``saved`` False means the hand-set fusion stays in use, and ``message`` says why."""

    workspace: str
    saved: bool
    message: str
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    cuts: list[dict[str, str]] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lightgbm() -> Any:
    """Import LightGBM without its optional scikit-learn/pandas/dask glue (a second of start-up we never use)."""
    if "lightgbm" in sys.modules:
        return sys.modules["lightgbm"]
    blocked = [m for m in ("sklearn", "pandas", "dask") if m not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import lightgbm
    finally:
        for name in blocked:
            sys.modules.pop(name, None)
    return lightgbm


def _params(config: FitConfig) -> dict[str, Any]:
    return {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "label_gain": list(range(MAX_LABEL + 1)),  # gain = grade, as evaluate's NDCG
        "lambdarank_truncation_level": 20,
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "max_bin": 63,
        "feature_fraction": 1.0,
        "bagging_fraction": 1.0,
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": config.threads,
        "verbosity": -1,
    }


def held_out(ids: np.ndarray, share: float) -> np.ndarray:
    """Whether each product id is in the validation share (a stable hash of the id, not of its position)."""
    return validation_part(ids, share) > 0


def validation_part(ids: np.ndarray, share: float) -> np.ndarray:
    """Per product id (a stable hash of the id): 0 training, 1 held out to stop the boosting (early stopping), 2 held
    out to judge the result (the gate and the validation figures): half of ``share`` each. The judging half is not
    the one the number of rounds was chosen on, so its figures are not flattered by that choice."""
    import zlib

    hashed = np.array([zlib.crc32(str(i).encode()) % 1000 for i in ids.tolist()], dtype=np.int64)
    return np.where(hashed < share * 500, 1, np.where(hashed < share * 1000, 2, 0))


def ndcg10(ranked: list[int], grades: dict[int, float]) -> float:
    if not grades:
        return 0.0
    dcg = sum(grades.get(p, 0.0) / math.log2(i + 2) for i, p in enumerate(ranked[:10]))
    ideal = sorted(grades.values(), reverse=True)[:10]
    return dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))


def _mean_se(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "se": 0.0, "n": 0}
    a = np.asarray(values)
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else 0.0
    return {"mean": round(float(a.mean()), 4), "se": round(se, 4), "n": int(a.size)}


def order_by_score(candidates: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Candidates best first by score, ties by product id (never by position)."""
    return candidates[np.lexsort((ids[candidates], -scores))]


def fit(ws: Any, config: FitConfig | None = None, progress: Callable[[str, int, int], None] | None = None) -> FitReport:
    """Learn the ranker of ``related`` for an open workspace from its basket log and save it (see the module)."""
    from semassoc.behaviour.stats import BehaviourStats
    from semassoc.io import replace_directory
    from semassoc.ranking import simulate as S

    config = config or FitConfig()
    started = time.perf_counter()
    report = FitReport(workspace=str(ws.path), saved=False, message="")
    if not (ws.behaviour_dir / "manifest.json").is_file():
        raise NotFound(f"no behaviour statistics in {ws.path} (run `semassoc behavior build EVENTS` first)")
    if ws.manifest.encoder_id is None:
        raise NotFound(f"no catalog indexed in {ws.path} (run `semassoc index CATALOG` first)")
    stats = BehaviourStats.open(ws.behaviour_dir)
    log = stats.basket_log()
    if log is None:
        raise SemassocError(
            f"{ws.behaviour_dir}: these behaviour statistics were built before semassoc kept a basket log; "
            "rebuild them with `semassoc behavior build EVENTS` and run `semassoc fit` again"
        )
    if not (log.time != np.iinfo(np.int64).min).any():
        report.message = "the events have no times, so there is nothing to replay: the hand-set fusion stays in use"
        return report
    stats_ids = np.asarray(stats.item_ids_and_counts()[0]).astype(str)
    catalog = S.load_catalog(ws.store, stats_ids)
    log_to_code = np.searchsorted(catalog.ids, stats_ids)
    cuts = S.choose_cuts(log.time, config.cuts, config.label_fraction, config.step_fraction)
    min_count = stats.info().min_count
    sims = []
    for i, cut in enumerate(cuts):
        if progress:
            progress("simulate", i, len(cuts))
        sim = S.simulate(
            log,
            log_to_code,
            catalog,
            cut,
            min_count=min_count,
            established_min=config.established_min,
            max_queries=config.max_queries,
            seed=config.seed + i,
            k=config.candidates,
            text_limit=config.text_limit,
        )
        sims.append(sim)
    report.cuts = [c.to_dict() for c in cuts]
    names = sims[0].table.names if sims else F.BASE_FEATURES
    models: dict[str, str] = {}
    for group in GROUPS:
        if progress:
            progress(f"fit {group}", len(cuts), len(cuts) + 2)
        text, summary = _fit_group(group, sims, catalog.ids, names, config)
        report.models[group] = summary
        if text is not None:
            models[group] = text
    if "skipped" in report.models["young"] or "skipped" in report.models["new"]:
        # Too few of one kind to fit apart: young and new queries share one model, "new" (lineage without "young")
        text, summary = _fit_group("new", sims, catalog.ids, names, config, merged=True)
        summary["merged"] = "young and new queries together (too few of one kind to fit apart)"
        del report.models["young"]
        models.pop("young", None)
        models.pop("new", None)
        report.models["new"] = summary
        if text is not None:
            models["new"] = text
    served = [g for g in report.models if g in models or report.models[g].get("baseline")]
    report.rows = sum(int(s.table.candidates.shape[0]) for s in sims)
    report.seconds = round(time.perf_counter() - started, 2)
    if not served:
        reasons = "; ".join(f"{g}: {report.models[g].get('skipped', '')}" for g in report.models)
        report.message = f"too few events to fit a ranker ({reasons}); the hand-set fusion stays in use"
        return report
    lineage = {
        "format": 3,
        "data_fingerprint": log.fingerprint(),
        "baskets": len(log),
        "cuts": report.cuts,
        "features": list(names),
        "params": _params(config),
        "config": asdict(config),
        "recent_span_us": int(cuts[0].end - cuts[0].at),
        "models": report.models,
        "library": {"lightgbm": _lightgbm().__version__, "numpy": np.__version__},
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def write(tmp: Path) -> None:
        for group, text in models.items():
            (tmp / f"{group}.txt").write_text(text, encoding="utf-8")
        (tmp / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n", encoding="utf-8")

    replace_directory(ws.path / RANKER_DIR, write)
    report.saved = True
    missing = [g for g in report.models if g not in served]
    report.message = f"ranker saved in {ws.path / RANKER_DIR}" + (
        f" ({', '.join(missing)} queries keep the hand-set fusion: too few to fit)" if missing else ""
    )
    if _tuned_encoder(ws.manifest.encoder_model):
        report.message += (
            "; note: the catalog vectors come from an encoder tuned on co-purchases (`semassoc train`), which may have"
            " seen the baskets the simulation labels with, so the validation figures can be optimistic"
        )
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _tuned_encoder(model: str | None) -> bool:
    """Whether the workspace's encoder is a `semassoc train` model (a directory with a lineage file)."""
    return bool(model) and (Path(str(model)) / "lineage.json").is_file()


def _fit_group(
    group: str, sims: list[Any], ids: np.ndarray, names: tuple[str, ...], config: FitConfig, merged: bool = False
) -> tuple[str | None, dict[str, Any]]:
    """Fit one group's model, boosted from its best single-signal list, and gate it (see :func:`fit`). Returns the
    model text (None: no trees, the baseline alone or nothing) and the summary kept in the lineage. ``merged``:
    the "new" group takes every query below ``established_min`` baskets (young ones too)."""
    lgb = _lightgbm()
    # rows with a relevant candidate per part (0 training, 1 early stopping, 2 judging) and every query per part
    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {0: [], 1: [], 2: []}
    queries: dict[int, list[tuple[Any, int]]] = {0: [], 1: [], 2: []}  # (sim, query position)
    for sim in sims:
        part = validation_part(ids[sim.queries], config.validation_share)
        for i, baskets in enumerate(sim.baskets.tolist()):
            kind = group_of(baskets, config.established_min)
            if kind != group and not (merged and kind == "young"):
                continue
            lo, hi = int(sim.table.offsets[i]), int(sim.table.offsets[i + 1])
            labels = sim.labels[lo:hi]
            queries[int(part[i])].append((sim, i))
            if hi > lo and labels.max() > 0:
                parts[int(part[i])].append((sim.table.features[lo:hi], labels))
    train, valid = parts[0], parts[1]
    evaluation = queries[2]
    summary: dict[str, Any] = {
        "train_queries": len(train),
        "stopping_queries": len(queries[1]),
        "validation_queries": len(evaluation),
    }
    if len(train) < config.min_queries or not valid or not evaluation:
        summary["skipped"] = f"{len(train)} training queries with a relevant candidate (need {config.min_queries})"
        return None, summary
    # The start: the single-signal list with the best NDCG@10 on the training queries (ties: F.BASELINES order).
    on_train = {
        b: _mean_se([_ndcg_of(sim, i, ids, F.baseline_scores(b, _rows(sim, i), names)) for sim, i in queries[0]])
        for b in F.BASELINES
    }
    best = max(F.BASELINES, key=lambda b: (on_train[b]["mean"], -F.BASELINES.index(b)))
    baseline: str | None = best if config.boost_from_baseline else None
    summary["baseline"] = baseline
    summary["baselines_train_ndcg@10"] = {b: v["mean"] for b, v in on_train.items()}

    def dataset(rows: list[tuple[np.ndarray, np.ndarray]], reference: Any = None) -> Any:
        x = np.concatenate([r[0] for r in rows])
        y = np.minimum(np.rint(np.concatenate([r[1] for r in rows])), MAX_LABEL).astype(np.int32)
        init = config.init_scale * F.baseline_scores(baseline, x, names) if baseline else None
        return lgb.Dataset(
            x,
            y,
            group=[r[0].shape[0] for r in rows],
            init_score=init,
            feature_name=list(names),
            reference=reference,
            free_raw_data=True,
        )

    params = _params(config)
    rounds = config.rounds
    if len(train) < config.small_group:
        # Few training queries: smaller trees, more rows per leaf, smaller steps (corrections the data can carry)
        params.update(
            num_leaves=7, min_data_in_leaf=4 * config.min_data_in_leaf, learning_rate=config.learning_rate / 2
        )
        summary["regularised"] = True
    train_set = dataset(train)
    valid_set = dataset(valid, train_set)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=rounds,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(20, verbose=False)],
    )
    summary["rounds"] = int(booster.best_iteration or rounds)
    text = booster.model_to_string(num_iteration=summary["rounds"])
    model = lgb.Booster(model_str=text)  # what is saved: the trees up to the best round
    metrics = _validate(model, baseline, config.init_scale, evaluation, ids, names)
    summary["validation_ndcg@10"] = metrics
    if baseline is not None:
        # The gate: the trees are kept only if they beat their own start on the held-out queries.
        gain = metrics["model - baseline"]
        kept = gain["mean"] > config.gate_se * gain["se"] and gain["mean"] > 0
        summary["gate"] = "trees kept" if kept else "baseline only"
        if not kept:
            summary["rounds"] = 0
            return None, summary
    return text, summary


def _rows(sim: Any, i: int) -> np.ndarray:
    return sim.table.features[int(sim.table.offsets[i]) : int(sim.table.offsets[i + 1])]


def _ndcg_of(sim: Any, i: int, ids: np.ndarray, scores: np.ndarray) -> float:
    """NDCG@10 of query ``i`` of a simulated cut when its candidates are ordered by ``scores``."""
    lo, hi = int(sim.table.offsets[i]), int(sim.table.offsets[i + 1])
    cands = sim.table.candidates[lo:hi]
    return ndcg10(order_by_score(cands, scores, ids).tolist() if hi > lo else [], sim.truth[i])


def _validate(
    model: Any,
    baseline: str | None,
    scale: float,
    evaluation: list[tuple[Any, int]],
    ids: np.ndarray,
    names: tuple[str, ...],
) -> dict[str, dict[str, float]]:
    """NDCG@10 on held-out queries of the model (its start plus its trees), its start alone, text only and behaviour
    only (popularity for products without any), with the paired difference of the model against each."""
    scores: dict[str, list[float]] = {"model": [], "baseline": [], "text": [], "behaviour": []}
    for sim, i in evaluation:
        x = _rows(sim, i)
        start = scale * F.baseline_scores(baseline, x, names) if baseline else np.zeros(x.shape[0])
        trees = model.predict(x, num_threads=1) if x.shape[0] else np.zeros(0)
        scores["model"].append(_ndcg_of(sim, i, ids, start + trees))
        scores["baseline"].append(_ndcg_of(sim, i, ids, start))
        scores["text"].append(ndcg10(sim.text_lists[i][0][:10].tolist(), sim.truth[i]))
        lo, hi = int(sim.table.offsets[i]), int(sim.table.offsets[i + 1])
        cands = sim.table.candidates[lo:hi]
        pair = x[:, names.index("pair_count")]
        if (pair > 0).any():
            keep = pair > 0
            behaviour = order_by_score(cands[keep], pair[keep], ids)
        else:
            behaviour = order_by_score(cands, -x[:, names.index("popularity_rank")], ids)
        scores["behaviour"].append(ndcg10(behaviour.tolist(), sim.truth[i]))
    if baseline is None:
        del scores["baseline"]
    out = {name: _mean_se(values) for name, values in scores.items()}
    for other in scores:
        if other != "model":
            diff = [a - b for a, b in zip(scores["model"], scores[other], strict=True)]
            out[f"model - {other}"] = _mean_se(diff)
    return out


class Ranker:
    """A fitted ranker loaded for serving."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            self.lineage = json.loads((directory / "lineage.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SemassocError(f"{directory / 'lineage.json'}: unreadable ranker lineage: {exc}") from None
        self.features = tuple(self.lineage["features"])
        self.recent_span = int(self.lineage["recent_span_us"])
        self.established_min = int(self.lineage["config"]["established_min"])
        self.candidates = int(self.lineage["config"]["candidates"])
        self.text_limit = int(self.lineage["config"]["text_limit"])
        self._boosters: dict[str, Any] = {}
        models = self.lineage.get("models", {})
        #: per group, the single-signal list its scores start from (None: trees alone, as lineage format 1)
        self.baselines: dict[str, str | None] = {g: models.get(g, {}).get("baseline") for g in GROUPS}
        self.init_scale = float(self.lineage["config"].get("init_scale", 1.0))

    @staticmethod
    def open(workspace_path: Path) -> Ranker | None:
        directory = workspace_path / RANKER_DIR
        return Ranker(directory) if (directory / "lineage.json").is_file() else None

    def has(self, group: str) -> bool:
        """Whether the group is ranked (by trees, or by its baseline list alone when the gate kept no trees)."""
        return self.baselines.get(group) is not None or self._trees(group)

    def _trees(self, group: str) -> bool:
        return (self.directory / f"{group}.txt").is_file()

    def group_of(self, baskets: int) -> str:
        """The group whose model ranks a query product with ``baskets`` baskets (lineage format 1-2, before the
        young group: "new" for every product below ``established_min``)."""
        if "young" not in self.lineage.get("models", {}):
            return "established" if baskets >= self.established_min else "new"
        return group_of(baskets, self.established_min)

    def predict(self, group: str, x: np.ndarray) -> np.ndarray:
        """Scores of feature rows (columns: ``self.features``) of the group's queries: the group's baseline list
        score (:func:`semassoc.ranking.features.baseline_scores`) plus its trees' output, as at fit."""
        baseline = self.baselines.get(group)
        start = self.init_scale * F.baseline_scores(baseline, x, self.features) if baseline else np.zeros(x.shape[0])
        if not self._trees(group):
            return start
        booster = self._boosters.get(group)
        if booster is None:
            path = self.directory / f"{group}.txt"
            from semassoc.ranking.native_model import NativeModel

            booster = NativeModel.load(path)
            if booster is None:  # no LightGBM library file where the package keeps it: through the package
                booster = _lightgbm().Booster(model_file=str(path))
            self._boosters[group] = booster
        return start + booster.predict(x, num_threads=1)

    def summary(self) -> dict[str, Any]:
        """What ``info`` shows."""
        out: dict[str, Any] = {
            "fitted": self.lineage.get("fitted_at"),
            "baskets": self.lineage.get("baskets"),
            "cuts": ", ".join(c["cut"][:10] for c in self.lineage.get("cuts", [])),
            "lightgbm": self.lineage.get("library", {}).get("lightgbm"),
        }
        for group, model in self.lineage.get("models", {}).items():
            if model.get("merged"):
                out[f"{group} queries"] = model["merged"]
            metrics = model.get("validation_ndcg@10")
            if metrics:
                baseline = model.get("baseline")
                if baseline:
                    out[group] = f"{baseline} list" + (
                        f" + {model.get('rounds', 0)} rounds of trees"
                        if model.get("gate") == "trees kept"
                        else " alone (the trees did not beat it on the held-out queries)"
                    )
                scored = ", ".join(
                    f"{name} {metrics[name]['mean']:.3f}"
                    for name in ("model", "baseline", "text", "behaviour")
                    if name in metrics
                )
                out[f"{group} ndcg@10 (validation)"] = f"{scored} ({metrics['model']['n']} queries)"
            else:
                out[f"{group}"] = "hand-set fusion (too few to fit)"
        return out
