"""Stage 4b: the control arm and the confirmation (issue 21), after the search and before the model.

A search's best trial is mostly its luckiest run: the same setting trained with another seed
moves the validation Dice by more than most settings differ. So, after the search, in one Ray
Tune experiment (``<sweep>/confirm``, full ``train.epochs``, no early stopping, the sweep's own
trial function, MLflow child runs tagged ``arm`` and ``seed``):

* **control** (``tune.control.seeds`` runs): the reference setting, this config's own values
  (the paper's defaults) or the current champion's (``tune.control.reference``);
* **top_1 .. top_K** (``tune.confirm.top_k`` distinct settings, best first by the search's
  score; a setting equal to the reference is the control), each with ``tune.confirm.seeds`` runs.

Every arm uses the same new seeds ``train.seed + 1, + 2, ...``, so two arms' runs pair by seed
and by validation case. Per arm (:func:`analyse`): the runs' best validation scores (the
objective, ``tune.metric``), their ``mean``, ``sd``, ``se`` and ``n``; per arm against the
control, the paired differences ``d[seed, case] = arm - control`` (each run's best epoch's
per-case scores, ``best_val_cases.json``; the other way round for HD95 objectives), their
mean ``gain`` and the 95 % bootstrap interval resampling seeds and cases
(:func:`tune.stats.bootstrap_ci_2way`; the arithmetic is :mod:`tune.verdict`). The **winner**
is the arm with the best mean; it **beats the control** when its interval lies above 0 (at least ``MIN_CASES`` cases and
``MIN_SEEDS`` paired seeds: with one seed the interval ignores the seed-to-seed spread). The
arm registered (``chosen``): the winner when it beats the control (or there is no control),
else the control: "no setting beat the paper's defaults beyond noise" is an answer, and the
registered model is then the defaults' seed ensemble.

With ``tune.confirm.top_k = 0`` and a control, the search's best trial is compared with the
control the same way (its one run against the control's seeds: optimistic, it was chosen on
these cases) and registered as before. The arms are chosen once and kept in
``confirm/arms.json``: running the command again resumes or reprints the same stage.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from .plan import SweepPlan, metric_mode, own_setting, search_params
from .verdict import CONTROL, Arm, RunScore, analyse, describe, fmt_setting, format_arms

__all__ = ["Arm", "RunScore", "Stage", "run_stage", "format_arms", "reference_params", "choose_arms",
           "stage_seeds", "analyse", "describe", "run_confirm", "confirm_dir", "CONTROL"]

PAPER = {"lam": 0.5, "delta": 0.5, "gamma": 1.0}  # SiNGR's lambda, delta, gamma (configs/brats.yaml)


def confirm_dir(plan: SweepPlan) -> Path:
    """The stage's Ray Tune experiment folder (its runs' outputs in ``singr_trials/<trial id>``)."""
    return plan.sweep_dir / "confirm"


def reference_params(plan: SweepPlan, champion: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The control's setting and its words: the champion's tags (``lam``, ``delta``, ... of the
    registered version) when ``tune.control.reference`` is ``champion`` and there is one, else
    this config's own values (``sing.lam``, ``sing.delta``, ``loss.gamma``, and ``train.lr`` etc.
    for each searched key)."""
    own = own_setting(plan.cfg)
    if plan.cfg.tune.control.reference == "champion" and champion:
        got = dict(own)
        for p in own:
            v = champion.get(p)
            if v not in (None, "", "None"):
                got[p] = v if p == "model" else float(v)
        return got, f"the champion's setting (version {champion.get('version', '?')})"
    words = own_words(own)
    return own, words if plan.cfg.tune.control.reference == "defaults" else f"{words} (no champion yet)"


def own_words(own: Mapping[str, Any]) -> str:
    """How the answer names the config's own setting ``own``: "the paper's defaults" when it is
    the paper's lambda, delta and gamma and nothing else is searched; "the paper's lambda, delta
    and gamma with this config's <other values>" when training keys (lr, fg_oversample, ...)
    are searched too (the paper has no value for them); else "the config's own setting"."""
    if not all(abs(float(own.get(k, v)) - v) < 1e-9 for k, v in PAPER.items()):
        return "the config's own setting"
    rest = {k: v for k, v in own.items() if k not in PAPER}
    if not rest:
        return "the paper's defaults"
    return f"the paper's lambda, delta and gamma with this config's {fmt_setting(rest)}"


def _key(params: Mapping[str, Any]) -> tuple[Any, ...]:
    """A setting's identity: its values, floats to 4 significant digits."""
    return tuple((k, f"{float(v):.4g}" if isinstance(v, (int, float)) else str(v)) for k, v in sorted(params.items()))


def stage_seeds(plan: SweepPlan) -> list[int]:
    """The seeds of the stage's runs: ``train.seed + 1 ..`` (the search trained with ``train.seed``)."""
    t = plan.cfg.tune
    n = max(int(t.control.seeds), int(t.confirm.seeds) if t.confirm.top_k else 0)
    return [int(plan.cfg.train.seed) + 1 + i for i in range(n)]


def choose_arms(plan: SweepPlan, rows: Sequence[Mapping[str, Any]], reference: dict[str, Any],
                ref_words: str) -> list[Arm]:
    """The control (when ``tune.control.seeds`` > 0) and the ``tune.confirm.top_k`` best distinct
    settings of the search's ``rows`` (best first; those that finished with a score)."""
    t = plan.cfg.tune
    params = search_params(plan.cfg)
    arms: list[Arm] = []
    seen = {_key(reference)} if t.control.seeds else set()
    if t.control.seeds:
        arms.append(Arm(CONTROL, dict(reference), ref_words))
    for r in rows:
        if len(arms) - (1 if t.control.seeds else 0) >= int(t.confirm.top_k):
            break
        score = r.get("score")
        if r.get("error") or not r.get("checkpoint_path") or not isinstance(score, (int, float)) or score != score:
            continue
        p = {k: r.get(k) for k in params}
        if _key(p) in seen:
            if t.control.seeds and _key(p) == _key(reference) and arms[0].search_trial is None:
                arms[0].search_trial, arms[0].search_score = str(r["trial_id"]), float(score)
            continue
        seen.add(_key(p))
        n = len(arms) + (0 if t.control.seeds else 1)
        arms.append(Arm(f"top_{n}", p, f"trial {r['trial_id']} of the search (score {float(score):.4f})",
                        str(r["trial_id"]), float(score)))
    return arms


def _case_scores(checkpoint_path: str | None, metric: str) -> dict[str, float]:
    """``{case: the objective's value}`` of a run's best epoch (``best_val_cases.json`` in its
    latest Ray checkpoint); {} when the run did not write it."""
    if not checkpoint_path:
        return {}
    import ray.train

    from singr.engine.trainer import VAL_CASES

    col = metric[4:] if metric.startswith("val_") else metric
    with ray.train.Checkpoint(checkpoint_path).as_directory() as d:
        f = Path(d) / VAL_CASES
        if not f.exists():
            return {}
        rows = json.loads(f.read_text()).get("cases") or []
    return {str(r["case"]): float(r[col]) for r in rows if col in r and r[col] is not None}


def run_score(row: Mapping[str, Any]) -> float:
    """A finished run's score for the stage: its best checkpoint on the whole validation split
    (``full_score``) where ``train.val_max_cases`` validated a subset per epoch, else its best
    epoch's score."""
    full = row.get("full_score")
    return float(full) if isinstance(full, (int, float)) and full == full else float(row["score"])


def search_best_run(plan: SweepPlan, best: Mapping[str, Any]) -> RunScore:
    """The search's best trial as a :class:`RunScore` (seed ``train.seed``)."""
    params = {k: best.get(k) for k in search_params(plan.cfg)}
    return RunScore("best_trial", int(plan.cfg.train.seed), run_score(best),
                    _case_scores(best.get("checkpoint_path"), plan.metric), str(best["trial_id"]),
                    best.get("checkpoint_path"), {**dict(best), "params": params})


def _pick(specs: list[dict[str, Any]], key: str) -> Any:
    """``spec -> specs[spec.config.run][key]``: a flat key of the grid's run (Tune's sample_from)."""
    def pick(spec: Any) -> Any:
        return specs[int(spec.config["run"])].get(key)

    return pick


def run_confirm(plan: SweepPlan, arms: Sequence[Arm], parent: str, runs: Any) -> tuple[list[RunScore], dict[str, Any]]:
    """Train every arm x seed (one Ray Tune grid, :func:`tune.search.run_tuner`); the finished
    runs and the stage's facts (``dir``, ``seconds``, ``failed``, ``max_concurrent``). Raises
    :class:`tune.ensemble.RefitIncomplete` (exit 130 or 3) when it was interrupted or stalled:
    the same command resumes it."""
    import time

    import ray
    from ray import tune

    from .ensemble import RefitIncomplete
    from .maps import compute_maps
    from .plan import DataGroup
    from .results import interrupted, trial_rows
    from .search import concurrency, run_tuner
    from .tracking import TrialRuns
    from .trainer import how_trials_train, scaling

    cfg = plan.cfg
    seeds = stage_seeds(plan)
    n_seeds = {a.name: int(cfg.tune.control.seeds if a.name == CONTROL else cfg.tune.confirm.seeds) for a in arms}
    specs = [{"arm": a.name, **a.params, "seed": s} for a in arms for s in seeds[: n_seeds[a.name]]]
    lams = sorted({float(s["lam"]) for s in specs if "lam" in s} - {float(v) for v in plan.lam_grid})
    if lams and plan.lam_grid:  # the reference's lambda may lie outside tune.lam_grid: its maps first
        split = json.loads(plan.split_file.read_text())
        compute_maps(plan, list(split["train"]) + list(split["val"]), progress=False,
                     group=DataGroup(cfg, tuple(lams), ()))
    exp = confirm_dir(plan)
    cplan = replace(plan, sweep_dir=exp, trials_dir=exp / "singr_trials")
    resources = ray.cluster_resources()
    scale = scaling(cfg, resources)
    conc = concurrency(cfg, resources, scale, len(specs))
    keys = sorted({k for s in specs for k in s})
    shown = ", ".join(f"{a.name}: {fmt_setting(a.params)}" for a in arms)
    print(f"[tune] confirmation: {len(specs)} runs ({shown}) with "
          f"seeds {seeds}, {cfg.train.epochs} epochs each, no early stopping; {how_trials_train(cfg, scale)}, up to "
          f"{conc} at once; in {exp}", flush=True)
    stage_runs = TrialRuns(cplan, parent)
    t0 = time.time()

    def space() -> tuple[dict[str, Any], dict[str, Any]]:
        # one grid over the runs; each key is read from the chosen run (flat configs: tables, MLflow params)
        sp: dict[str, Any] = {"run": tune.grid_search(list(range(len(specs))))}
        for k in keys:
            sp[k] = tune.sample_from(_pick(specs, k))
        return sp, {"num_samples": 1, "max_concurrent_trials": int(conc)}

    run = run_tuner(cplan, scale, space, n_trials=len(specs), params=["arm", "seed"], callbacks=[stage_runs])
    grid = run.grid
    runs.failures.extend(stage_runs.failures)
    if run.stalled:
        raise RefitIncomplete(3, f"the watchdog ended the confirmation: no run reported for "
                                 f"{cfg.tune.stall_timeout_s:g} s (tune.stall_timeout_s); run the same command again "
                                 "to resume it")
    if interrupted(grid, len(specs)):
        raise RefitIncomplete(130, f"confirmation interrupted; run the same command again to resume it from {exp}")
    config_of = {str((r.metrics or {}).get("trial_id") or Path(r.path).name): (r.config or {})
                 for r in (grid[i] for i in range(len(grid)))}
    out: list[RunScore] = []
    failed: list[str] = []
    for row in trial_rows(grid, cplan):
        c = config_of.get(str(row["trial_id"]), {})
        if row["error"] or not row["checkpoint_path"] or row["score"] != row["score"]:
            failed.append(f"{c.get('arm')} seed {c.get('seed')} ({row['trial_id']})")
            continue
        out.append(RunScore(str(c.get("arm")), int(c.get("seed", 0)), run_score(row),
                            _case_scores(row["checkpoint_path"], plan.metric), str(row["trial_id"]),
                            row["checkpoint_path"], {**row, "params": {k: c.get(k) for k in search_params(cfg)}}))
    if failed:
        print(f"[tune] confirmation: {len(failed)} run(s) failed and are left out: {'; '.join(failed)}", flush=True)
    facts = {"dir": str(exp), "seconds": round(time.time() - t0, 1), "failed": failed, "max_concurrent": int(conc),
             "seeds": seeds, "n_runs": len(specs)}
    return out, facts


@dataclass
class Stage:
    """What the stage ran and concluded (:func:`run_stage`)."""

    arms: list[Arm]
    runs: list[RunScore]
    result: dict[str, Any]
    facts: dict[str, Any]
    reference_words: str
    ensemble: bool
    confirming: bool
    registered: str | None = None  # what is registered when it is not the chosen arm's runs (refit, top-k)

    @property
    def answer(self) -> str:
        return describe(self.result, self.reference_words, self.ensemble, self.registered)

    @property
    def chosen(self) -> str:
        return str(self.result.get("chosen"))

    @property
    def chosen_runs(self) -> list[RunScore]:
        """The runs of the arm to register; [] without confirmation (the best trial is registered)."""
        if not self.confirming or self.result.get("chosen") in (None, "best_trial"):
            return []
        return sorted((r for r in self.runs if r.arm == self.chosen), key=lambda r: r.seed)

    @property
    def registered_row(self) -> dict[str, Any] | None:
        """The chosen arm's best run as a row of the search (trial id, scores, its setting), or None."""
        got = self.chosen_runs
        if not got:
            return None
        sign = 1.0 if metric_mode(str(self.result.get("metric"))) == "max" else -1.0
        best = max(got, key=lambda r: sign * r.score)
        row = {k: v for k, v in best.row.items() if k != "params"}
        return {**row, **(best.row.get("params") or {}), "arm": self.chosen, "seed": best.seed}

    @property
    def table(self) -> str:
        return format_arms(self.result)

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s ``confirm`` section (JSON-able)."""
        return {**self.result, "answer": self.answer, "reference": self.reference_words, **self.facts}


def _champion_tags(plan: SweepPlan) -> dict[str, Any] | None:
    """The registered ``@alias`` version's tags and number (None when there is none)."""
    from .hub.store import client_for

    cfg = plan.cfg
    try:
        mv = client_for(plan.tracking_uri).get_model_version_by_alias(cfg.mlflow.registered_model, cfg.mlflow.alias)
    except Exception:  # noqa: BLE001 - no model or alias yet
        return None
    return {**dict(mv.tags or {}), "version": mv.version}


def _stage_arms(plan: SweepPlan, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Arm], str]:
    """The arms of the stage and the reference's words: chosen once and kept in ``confirm/arms.json``,
    so that running the command again (to resume, or to reprint) trains and reports the same arms
    even after the champion moved; a changed ``tune.control`` / ``tune.confirm`` is refused."""
    from singr.io import write_json

    t = plan.cfg.tune
    saved = check_stage(plan)
    if saved is not None:
        return [Arm(**a) for a in saved["arms"]], str(saved["reference"])
    f = confirm_dir(plan) / "arms.json"
    champion = _champion_tags(plan) if t.control.reference == "champion" else None
    reference, words = reference_params(plan, champion)
    arms = choose_arms(plan, rows, reference, words)
    write_json(f, {"keys": _stage_keys(plan), "reference": words, "arms": [a.__dict__ for a in arms]})
    return arms, words


def _stage_keys(plan: SweepPlan) -> dict[str, Any]:
    t = plan.cfg.tune
    return {"control": t.control.model_dump(), "confirm": t.confirm.model_dump(), "seeds": stage_seeds(plan)}


def check_stage(plan: SweepPlan) -> dict[str, Any] | None:
    """The saved arms of a sweep that ran its stage (``confirm/arms.json``), or None; a command
    asking for other ``tune.control`` / ``tune.confirm`` settings is refused (``SingrInputError``)
    before any work, like a changed budget (:func:`tune.sweep.check_budget`)."""
    from singr.errors import SingrInputError

    f = confirm_dir(plan) / "arms.json"
    if not f.exists():
        return None
    saved: dict[str, Any] = json.loads(f.read_text())
    keys = _stage_keys(plan)
    if saved.get("keys") != keys:
        raise SingrInputError(
            f"the sweep {plan.name!r} ran its control and confirmation with {json.dumps(saved.get('keys'))}; this "
            f"command asks for {json.dumps(keys)}. Pick a new tune.name for a new sweep, or rerun with the old "
            "settings to resume or reprint it", path=f)
    return saved


def run_stage(plan: SweepPlan, rows: Sequence[Mapping[str, Any]], best: Mapping[str, Any], parent: str,
              runs: Any) -> Stage:
    """The stage of the module docstring: arms chosen, trained (:func:`run_confirm`), analysed."""
    t = plan.cfg.tune
    arms, words = _stage_arms(plan, rows)
    got, facts = run_confirm(plan, arms, parent, runs) if arms else ([], {})
    search_best = search_best_run(plan, best) if not t.confirm.top_k else None
    result = analyse(arms, got, plan.metric, seed=int(t.seed), search_best=search_best)
    return Stage(arms, got, result, facts, words, bool(t.confirm.ensemble), bool(t.confirm.top_k))
