"""Stage 5: the model folder a search registers (``results/best_model``) and its post-processing.

What the folder holds, by ``tune``'s keys (at most one of the two ensemble keys):

* default: the best trial's best checkpoint, one member ``best.safetensors``; its score is the
  trial's best validation ``tune.metric`` on the sweep's validation split;
* ``refit_folds: K``: the best trial's hyperparameters trained again on each of the K folds of
  train + val (``data.folds = K``, saved in the sweep's split file by the driver before any run
  starts; the test split stays held out), as K trials of one Ray Tune experiment
  (``<sweep>/refit-<K>folds``: no searcher, no early stopping, as many at once as
  ``tune.max_concurrent`` or the cluster allows). Each is the sweep's own trial
  (:func:`tune.trainer.run_trial`, by the same ``tune.trial_runner``, failure handling, MLflow child
  run and checkpoints), so an interrupted refit resumes like the search. Members
  ``fold_0 .. fold_<K-1>``; the score is the mean over folds of each fold's best validation
  score (cross-validation), on a digest of the folds (not comparable with a single split's);
* ``ensemble_top_k: N``: the best checkpoints of the N best trials, members ``top_0 ..``; the
  score is the ensemble's (tanh maps averaged), measured here on the validation split;
* with the confirmation stage (``confirm.top_k`` > 0, :mod:`tune.confirm`): the chosen arm's seed
  runs, members ``seed_<s>`` (kind ``seeds``, scored as the ensemble on the validation split), or
  its best run alone (``confirm.ensemble: false``); a fold refit then trains the chosen setting.

With ``tune.postprocess`` (default) post-processing rules are then fitted on validation data
(:func:`singr.engine.evaluate.fit_postprocess`; a rule is kept only where it raises the
validation Dice) and written into the folder (:func:`singr.engine.bundle.write_rules`) with the
fit's report. A fold ensemble is fitted as nnU-Net does, on out-of-fold predictions: each
fold's validation cases segmented by the member that did not train on them. A failed fit leaves
the folder without rules and says so; it does not stop the registration.

The bundle's ``info`` and :meth:`ModelFolder.summary` (in ``summary.json``) say what was built:
kind, members (file, trial, fold, hyperparameters, score), the registered score and what it was
measured on, and the post-processing rules kept.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from singr.config import with_values
from singr.errors import SingrInputError

from .plan import SweepPlan, search_params

__all__ = ["ModelFolder", "RefitIncomplete", "build_model", "fit_rules", "single_model", "top_k_model", "seeds_model",
           "refit_model", "fold_digest", "refit_dir"]

MODEL_DIR = "best_model"


class RefitIncomplete(Exception):
    """The fold refit did not finish: ``code`` is the sweep's exit code (130 interrupted, 3 stalled,
    1 a fold failed); running the same command again resumes it."""

    def __init__(self, code: int, message: str, runs: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.code, self.message, self.runs = int(code), message, list(runs or [])


@dataclass
class ModelFolder:
    """A built model folder and what it is (see the module docstring)."""

    path: Path
    kind: str                               # "single" | "folds" | "top_k" | "seeds"
    members: list[dict[str, Any]]           # per member: file, trial_id, fold, hyperparameters, score
    metric: str                             # the objective (tune.metric)
    score: float                            # the registered score, in ``metric``
    scored_on: str                          # what ``score`` was measured on, in words
    digest: str                             # the cases it was measured on (the registry's val_split tag)
    folds: int | None = None
    postprocess: dict[str, Any] | None = None  # the fit: kept rules, Dice before/after; or {"error": ...}
    extra: dict[str, Any] = field(default_factory=dict)  # refit: fold runs, seconds, overlap

    def info(self) -> dict[str, Any]:
        """The bundle's ``info``: JSON-able facts about the folder."""
        return {"kind": self.kind, "members": self.members, "metric": self.metric, "score": self.score,
                "scored_on": self.scored_on, "val_split": self.digest, "folds": self.folds, **self.extra}

    def tags(self) -> dict[str, Any]:
        """Registry version tags beyond the best trial's: kind, member count, folds."""
        out: dict[str, Any] = {"kind": self.kind, "members": len(self.members)}
        if self.folds:
            out["folds"] = self.folds
        if self.kind in ("seeds", "single") and self.extra.get("arm"):
            out["arm"] = self.extra["arm"]
            out["member_seeds"] = ",".join(str(m.get("seed")) for m in self.members)
        if self.kind == "top_k":
            out["member_trials"] = ",".join(str(m["trial_id"]) for m in self.members)
        return out

    def summary(self) -> dict[str, Any]:
        """What was registered, for ``summary.json``."""
        return {"path": str(self.path), **self.info(), "postprocess": self.postprocess}

    def describe(self) -> str:
        what = {"single": "the best trial's best checkpoint",
                "folds": f"fold ensemble of {len(self.members)} members ({', '.join(m['file'] for m in self.members)})",
                "top_k": f"ensemble of the {len(self.members)} best trials "
                         f"({', '.join(str(m['trial_id']) for m in self.members)})",
                "seeds": f"the {self.extra.get('arm')} arm's seed ensemble of {len(self.members)} runs "
                         f"(seeds {', '.join(str(m.get('seed')) for m in self.members)})"}[self.kind]
        if self.kind == "single" and self.extra.get("arm"):
            what = f"the {self.extra['arm']} arm's best run (seed {self.members[0].get('seed')})"
        return f"{what}; {self.metric} {self.score:.4f} ({self.scored_on})"


def refit_dir(plan: SweepPlan, k: int) -> Path:
    """The refit's Ray Tune experiment folder (its runs' singr outputs in ``singr_trials/fold_<k>``)."""
    return plan.sweep_dir / f"refit-{int(k)}folds"


def fold_digest(folds: list[list[str]]) -> str:
    """A short digest of K folds: cross-validation scores compare only on the same folds."""
    return f"cv{len(folds)}-" + hashlib.sha1(json.dumps([sorted(f) for f in folds]).encode()).hexdigest()[:12]


def _params(plan: SweepPlan, row: dict[str, Any]) -> dict[str, Any]:
    return {p: row.get(p) for p in search_params(plan.cfg) if row.get(p) is not None}


def _copy_best(checkpoint_path: str, dst: Path) -> Path:
    """The best checkpoint (``last`` when the run never validated) of a trial's latest Ray
    Train checkpoint, copied to ``dst``."""
    import ray.train

    from singr.engine.trainer import BEST, LAST

    with ray.train.Checkpoint(checkpoint_path).as_directory() as d:
        src = Path(d) / BEST
        if not src.exists():
            src = Path(d) / LAST
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return dst


def _write(plan: SweepPlan, model: ModelFolder, files: list[Path]) -> ModelFolder:
    """Write ``files`` (named as ``model.members``) as the bundle at ``model.path`` (replacing it)."""
    from singr.engine.bundle import write_bundle

    if model.path.exists():
        shutil.rmtree(model.path)
    write_bundle(model.path, files, names=[m["file"] for m in model.members],
                 info={"sweep": plan.name, **model.info()})
    for f in files:
        f.unlink(missing_ok=True)
    return model


def single_model(plan: SweepPlan, best: dict[str, Any], split: dict[str, list[str]]) -> ModelFolder:
    """The best trial's best checkpoint as the model folder."""
    from singr.engine.trainer import BEST

    from .hub.card import split_digest

    tmp = _copy_best(best["checkpoint_path"], plan.results_dir / f".tmp-best-{best['trial_id']}.safetensors")
    member = {"file": BEST, "trial_id": best["trial_id"], **_params(plan, best), "score": best["score"]}
    model = ModelFolder(plan.results_dir / MODEL_DIR, "single", [member], plan.metric, float(best["score"]),
                        "the best trial's best validation epoch on its validation split",
                        split_digest(split), extra={"trial_id": best["trial_id"], **_params(plan, best)})
    return _write(plan, model, [tmp])


def _val_ids(plan: SweepPlan, split: dict[str, list[str]], full: bool = False) -> list[str]:
    """The validation cases a trial validated on each time (``train.val_max_cases`` first ones),
    or with ``full`` those its runs' scores come from at the end (the whole split when
    ``train.val_full_at_end``)."""
    n = plan.cfg.train.val_max_cases
    if n is None or (full and plan.cfg.train.val_full_at_end):
        return list(split["val"])
    return list(split["val"])[: int(n)]


def top_k_model(plan: SweepPlan, rows: list[dict[str, Any]], n: int, split: dict[str, list[str]]) -> ModelFolder:
    """The best checkpoints of the ``n`` best trials (that finished with a checkpoint and a
    score) as one ensemble; its score is measured on the validation split."""
    from .hub.card import split_digest

    ok = [r for r in rows if not r["error"] and r["checkpoint_path"] and r["score"] == r["score"]]
    chosen = ok[: int(n)]
    if not chosen:
        raise SingrInputError("no trial finished with a validation score; an ensemble needs at least one",
                              path=plan.sweep_dir)
    files, members = [], []
    for i, r in enumerate(chosen):
        name = f"top_{i}.safetensors"
        files.append(_copy_best(r["checkpoint_path"], plan.results_dir / f".tmp-{name}"))
        members.append({"file": name, "trial_id": r["trial_id"], **_params(plan, r), "score": r["score"]})
    model = ModelFolder(plan.results_dir / MODEL_DIR, "top_k", members, plan.metric, float("nan"), "",
                        split_digest(split), extra={"asked": int(n)})
    _write(plan, model, files)
    ids = _score_on_val(plan, model, split)
    model.scored_on = (f"the ensemble on {len(ids)} validation case{'s' if len(ids) != 1 else ''} (its best "
                       f"member alone: {float(chosen[0]['score']):.4f})")
    model.extra["best_member_score"] = float(chosen[0]["score"])
    if len(chosen) < int(n):
        model.extra["note"] = f"{len(chosen)} of the {n} asked: only {len(ok)} trial(s) finished with a score"
    return _write_info(plan, model)


def _score_on_val(plan: SweepPlan, model: ModelFolder, split: dict[str, list[str]], full: bool = False) -> list[str]:
    """Set ``model.score``: the folder (ensemble, as served) on the validation cases (``full``: see
    :func:`_val_ids`); their ids."""
    from singr.engine.bundle import load_predictor
    from singr.engine.trainer import validate

    ids = _val_ids(plan, split, full)
    pred = load_predictor(model.path, device="auto", postprocess=False)
    means, _ = validate(pred, plan.cfg, plan.cache_dir, ids, pred.device,
                        lesion=plan.metric.startswith("val_Lesion"))
    model.score = float(means[plan.metric[len("val_"):]])
    return ids


def seeds_model(plan: SweepPlan, arm: str, runs: list[Any], ensemble: bool, split: dict[str, list[str]],
                answer: str) -> ModelFolder:
    """The confirmation's chosen arm (:mod:`tune.confirm`) as the model folder: its seed runs'
    best checkpoints as one ensemble (members ``seed_<s>``; scored as the ensemble on the
    validation split), or with ``ensemble`` false (or one run) its best run alone."""
    from .hub.card import split_digest

    sign = 1.0 if plan.mode == "max" else -1.0
    ranked = sorted(runs, key=lambda r: -sign * float(r.score))
    chosen = ranked if ensemble else ranked[:1]
    if not chosen:
        raise SingrInputError(f"the arm {arm!r} has no finished run to register", path=plan.sweep_dir)
    files, members = [], []
    for r in chosen:
        name = f"seed_{int(r.seed)}.safetensors"
        files.append(_copy_best(str(r.checkpoint_path), plan.results_dir / f".tmp-{name}"))
        members.append({"file": name, "trial_id": r.trial_id, "seed": int(r.seed), "arm": arm,
                        **(r.row.get("params") or {}), "score": float(r.score)})
    kind = "seeds" if len(chosen) > 1 else "single"
    model = ModelFolder(plan.results_dir / MODEL_DIR, kind, members, plan.metric, float(chosen[0].score),
                        f"the {arm} arm's best run (seed {chosen[0].seed}) at its best validation epoch",
                        split_digest(split), extra={"arm": arm, "answer": answer,
                                                    **(chosen[0].row.get("params") or {})})
    _write(plan, model, files)
    if kind == "seeds":  # on the cases its runs' scores come from (stage runs all reach the last epoch)
        ids = _score_on_val(plan, model, split, full=True)
        model.scored_on = (f"the {arm} arm's {len(chosen)}-seed ensemble on {len(ids)} validation case"
                           f"{'s' if len(ids) != 1 else ''} (its runs alone: "
                           f"{', '.join(f'{float(r.score):.4f}' for r in chosen)})")
        _write_info(plan, model)
    return model


def _write_info(plan: SweepPlan, model: ModelFolder) -> ModelFolder:
    """Rewrite the bundle's info (members unchanged)."""
    from singr.engine.bundle import BUNDLE_FILE
    from singr.io import write_json

    rec = json.loads((model.path / BUNDLE_FILE).read_text())
    rec["info"] = {"sweep": plan.name, **model.info()}
    write_json(model.path / BUNDLE_FILE, rec)
    return model


def prepare_folds(plan: SweepPlan, k: int) -> list[list[str]]:
    """The K folds of train + val, made once and saved in the sweep's split file by the driver
    (the parallel runs then only read it)."""
    from singr.engine.pipeline import discover, run_paths, split_cases

    cfg = with_values(plan.cfg, {"data.folds": int(k)})
    try:
        folds: list[list[str]] = split_cases(cfg, discover(cfg), run_paths(cfg))["folds"]  # type: ignore[assignment]
        return folds
    except SingrInputError as e:
        raise SingrInputError(f"tune.refit_folds = {k}: {e.reason}", path=plan.split_file) from None


def refit_model(plan: SweepPlan, best: dict[str, Any], parent: str, runs: Any) -> ModelFolder:
    """Train the best trial's hyperparameters on each of the ``tune.refit_folds`` folds (Ray
    Tune, K fixed configs) and make the fold ensemble (see the module docstring). Raises
    :class:`RefitIncomplete` when a fold failed, the refit was interrupted or it stalled."""
    import ray
    from ray import tune

    from .results import interrupted, trial_rows
    from .search import concurrency, run_tuner
    from .tracking import TrialRuns
    from .trainer import how_trials_train, scaling

    cfg = plan.cfg
    k = int(cfg.tune.refit_folds or 0)
    folds = prepare_folds(plan, k)
    exp = refit_dir(plan, k)
    rplan = replace(plan, sweep_dir=exp, trials_dir=exp / "singr_trials")
    resources = ray.cluster_resources()
    scale = scaling(cfg, resources)
    conc = concurrency(cfg, resources, scale, k)
    params = _params(plan, best)
    shown = ", ".join(f"{p}={v:.4g}" if isinstance(v, float) else f"{p}={v}" for p, v in params.items())
    print(f"[tune] refit: {shown} (trial {best['trial_id']}) on {k} folds of {sum(len(f) for f in folds)} train+val "
          f"cases, {k} runs ({how_trials_train(cfg, scale)}), up to {conc} at once; in {exp}", flush=True)
    fold_runs = TrialRuns(rplan, parent)
    t0 = time.time()
    run = run_tuner(rplan, scale, lambda: ({**params, "folds": k, "fold": tune.grid_search(list(range(k)))},
                                           {"num_samples": 1, "max_concurrent_trials": int(conc)}),
                    n_trials=k, params=["fold"], callbacks=[fold_runs])
    grid = run.grid
    rows = trial_rows(grid, rplan)
    results = [grid[i] for i in range(len(grid))]
    fold_of = {str((r.metrics or {}).get("trial_id") or Path(r.path).name): (r.config or {}).get("fold")
               for r in results}
    timing = {str((r.metrics or {}).get("trial_id") or Path(r.path).name): _start_end(r) for r in results}
    for r in rows:
        r["fold"] = fold_of.get(str(r["trial_id"]))
        r["started"], r["ended"] = timing.get(str(r["trial_id"]), (None, None))
    runs_out = [{k2: r.get(k2) for k2 in ("fold", "trial_id", "score", "val_Dice_best", "epochs_run", "error",
                                          "started", "ended")} for r in sorted(rows, key=lambda r: r["fold"] or 0)]
    runs.failures.extend(fold_runs.failures)
    if run.stalled:
        raise RefitIncomplete(3, f"the watchdog ended the refit: no fold run reported for "
                                 f"{cfg.tune.stall_timeout_s:g} s (tune.stall_timeout_s); run the same command "
                                 "again to resume it", runs_out)
    if interrupted(grid, k):
        raise RefitIncomplete(130, f"refit interrupted; run the same command again to resume it from {exp}", runs_out)
    bad = [r for r in rows if r["error"] or not r["checkpoint_path"]]
    if bad:
        raise RefitIncomplete(1, f"refit fold(s) {', '.join(str(r['fold']) for r in bad)} failed (see the errors "
                                 f"above and {exp}); run the same command again to retry them (finished folds are "
                                 "kept)", runs_out)
    for r in rows:  # the fold on the fold's MLflow child run
        rid = fold_runs.runs.get(str(r["trial_id"]))
        if rid:
            runs._safe(f"the fold tag of {r['trial_id']}",
                       lambda rid=rid, f=r["fold"]: fold_runs.client.set_tag(rid, "refit_fold", str(f)))
    rows.sort(key=lambda r: int(r["fold"]))
    files, members = [], []
    for r in rows:
        name = f"fold_{int(r['fold'])}.safetensors"
        files.append(_copy_best(r["checkpoint_path"], plan.results_dir / f".tmp-{name}"))
        members.append({"file": name, "fold": int(r["fold"]), "trial_id": r["trial_id"], **params,
                        "score": r["score"], "epochs_run": r["epochs_run"]})
    scores = [float(r["score"]) for r in rows]
    starts = [r["started"] for r in rows if r["started"] is not None]
    ends = [r["ended"] for r in rows if r["ended"] is not None]
    overlap = max(0.0, min(ends) - max(starts)) if len(starts) == len(ends) == k else None
    model = ModelFolder(plan.results_dir / MODEL_DIR, "folds", members, plan.metric,
                        sum(scores) / len(scores),
                        f"cross-validation: the mean over the {k} folds of each fold's best validation score",
                        fold_digest(folds), folds=k,
                        extra={"refit_from": best["trial_id"], **params, "refit_dir": str(exp),
                               "refit_seconds": round(time.time() - t0, 1), "max_concurrent": int(conc),
                               "all_folds_running_s": None if overlap is None else round(overlap, 1),
                               "fold_runs": runs_out})
    return _write(plan, model, files)


def _start_end(res: Any) -> tuple[float | None, float | None]:
    """(start, end) in Unix seconds of a trial, from its last report (``timestamp``, ``time_total_s``)."""
    df = res.metrics_dataframe
    try:
        end = float(df["timestamp"].iloc[-1])
        return end - float(df["time_total_s"].iloc[-1]), end
    except (KeyError, IndexError, TypeError, ValueError):
        return None, None


def build_model(plan: SweepPlan, rows: list[dict[str, Any]], split: dict[str, list[str]], parent: str,
                runs: Any, stage: Any = None) -> ModelFolder:
    """The model folder the sweep registers (see the module docstring), without post-processing.
    ``stage``: the control / confirmation (:class:`tune.confirm.Stage`): a fold refit trains its
    chosen setting, and otherwise, with ``tune.confirm.top_k``, its chosen arm's seed runs are it."""
    ok = [r for r in rows if not r["error"] and r["checkpoint_path"]]
    t = plan.cfg.tune
    if t.refit_folds:
        return refit_model(plan, stage.registered_row if stage is not None and stage.registered_row else ok[0],
                           parent, runs)
    if stage is not None and stage.chosen_runs:
        return seeds_model(plan, stage.chosen, stage.chosen_runs, bool(t.confirm.ensemble), split, stage.answer)
    if t.ensemble_top_k:
        return top_k_model(plan, rows, int(t.ensemble_top_k), split)
    return single_model(plan, ok[0], split)


def fit_rules(plan: SweepPlan, model: ModelFolder) -> ModelFolder:
    """With ``tune.postprocess``: fit the rules on validation data and write them into the
    folder (see the module docstring); ``model.postprocess`` says what was kept."""
    if not plan.cfg.tune.postprocess:
        model.postprocess = None
        return model
    from singr.engine.bundle import load_predictor, write_rules
    from singr.engine.evaluate import fit_postprocess

    t0 = time.time()
    try:
        if model.kind == "folds":  # out of fold: each fold's cases segmented by the member that did not train on them
            members = ((int(m["fold"]), load_predictor(model.path / m["file"], device="auto", postprocess=False))
                       for m in model.members)
            rules, report = fit_postprocess(None, with_values(plan.cfg, {"data.folds": int(model.folds or 0)}),
                                            split="val", out_of_fold=members)
        else:
            rules, report = fit_postprocess(load_predictor(model.path, device="auto", postprocess=False), plan.cfg,
                                            split="val", progress=False)
    except Exception as e:  # noqa: BLE001 - the model is good without rules; say why there are none
        model.postprocess = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        print(f"[tune] post-processing: the fit failed ({model.postprocess['error']}); the model is registered "
              "without rules", flush=True)
        return model
    desc = rules.describe()
    model.postprocess = {"rules": rules.to_dict(), "kept": [] if rules.is_noop else desc["steps"],
                         "n_cases": report.get("n_cases"), "split": report.get("split"),
                         "dice_before": (report.get("dice_before") or {}).get("mean"),
                         "dice_after": (report.get("dice_after") or {}).get("mean"),
                         "seconds": round(time.time() - t0, 1)}
    write_rules(model.path, rules.to_dict(), info={"postprocess_fit": report})
    return model
