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
(:func:`tune.stats.bootstrap_ci_2way`). The **winner** is the arm with the best mean; it
**beats the control** when its interval lies above 0 (at least ``MIN_CASES`` cases). The
arm registered (``chosen``): the winner when it beats the control (or there is no control),
else the control: "no setting beat the paper's defaults beyond noise" is an answer, and the
registered model is then the defaults' seed ensemble.

With ``tune.confirm.top_k = 0`` and a control, the search's best trial is compared with the
control the same way (its one run against the control's seeds) and registered as before.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from .plan import PARAM_KEYS, SweepPlan, metric_mode, search_params

__all__ = ["Arm", "RunScore", "Stage", "run_stage", "format_arms", "reference_params", "choose_arms",
           "stage_seeds", "analyse", "describe", "run_confirm", "confirm_dir", "CONTROL"]

CONTROL = "control"
MIN_CASES = 3


@dataclass
class Arm:
    """A setting the stage trains: its name, hyperparameters (search keys) and where it came from."""

    name: str
    params: dict[str, Any]
    source: str
    search_trial: str | None = None
    search_score: float | None = None


@dataclass
class RunScore:
    """One finished run of an arm: its seed, best validation score and per-case scores."""

    arm: str
    seed: int
    score: float
    cases: dict[str, float] = field(default_factory=dict)
    trial_id: str = ""
    checkpoint_path: str | None = None
    row: dict[str, Any] = field(default_factory=dict)


def confirm_dir(plan: SweepPlan) -> Path:
    """The stage's Ray Tune experiment folder (its runs' outputs in ``singr_trials/<trial id>``)."""
    return plan.sweep_dir / "confirm"


def reference_params(plan: SweepPlan, champion: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The control's setting and its words: the champion's tags (``lam``, ``delta``, ... of the
    registered version) when ``tune.control.reference`` is ``champion`` and there is one, else
    this config's own values (``sing.lam``, ``sing.delta``, ``loss.gamma``, and ``train.lr`` etc.
    for each searched key)."""
    cfg = plan.cfg.to_dict()
    own: dict[str, Any] = {}
    for p in search_params(plan.cfg):
        section, key = PARAM_KEYS[p].split(".")
        own[p] = cfg[section][key]
    if plan.cfg.tune.control.reference == "champion" and champion:
        got = dict(own)
        for p in own:
            v = champion.get(p)
            if v not in (None, "", "None"):
                got[p] = v if p == "model" else float(v)
        return got, f"the champion's setting (version {champion.get('version', '?')})"
    return own, "the paper's defaults" if plan.cfg.tune.control.reference == "defaults" else \
        "the config's own setting (no champion yet)"


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


def _fmt(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def analyse(arms: Sequence[Arm], runs: Sequence[RunScore], metric: str, *, seed: int = 0,
            search_best: RunScore | None = None) -> dict[str, Any]:
    """Means, spreads and paired comparisons with the control (module docstring); JSON-able.

    Returns ``{"metric", "arms": {name: {params, source, n, mean, sd, se, scores, seeds,
    trial_ids, vs_control}}, "winner", "chosen", "beats_control", "noise_floor_sd", "answer"}``;
    ``vs_control`` = ``{gain, ci, n_cases, n_seeds, significant}`` (None for the control itself
    or without one). ``search_best``: with no confirmed arm, the search's best trial as the
    one challenger (arm ``best_trial``)."""
    from .stats import bootstrap_ci_2way, mean_se

    higher = metric_mode(metric) == "max"
    by_arm: dict[str, list[RunScore]] = {a.name: [] for a in arms}
    for r in runs:
        if r.arm in by_arm and r.score == r.score:
            by_arm[r.arm].append(r)
    arm_list = list(arms)
    if search_best is not None and not any(a.name != CONTROL for a in arms):
        arm_list.append(Arm("best_trial", dict(search_best.row.get("params") or {}),
                            f"trial {search_best.trial_id}, the search's best"))
        by_arm["best_trial"] = [search_best]
    control = by_arm.get(CONTROL) or []
    out: dict[str, Any] = {"metric": metric, "arms": {}}
    for a in arm_list:
        got = sorted(by_arm.get(a.name, []), key=lambda r: r.seed)
        scores = [r.score for r in got]
        mean, se, n = mean_se(scores)
        sd = se * math.sqrt(n) if n > 1 else math.nan
        rec: dict[str, Any] = {"params": a.params, "source": a.source, "n": n, "mean": mean, "sd": sd, "se": se,
                               "scores": scores, "seeds": [r.seed for r in got],
                               "trial_ids": [r.trial_id for r in got], "search_trial": a.search_trial,
                               "search_score": a.search_score, "vs_control": None}
        if a.name != CONTROL and control and got:
            rec["vs_control"] = _paired(got, control, higher, seed, bootstrap_ci_2way)
        out["arms"][a.name] = rec
    scored = [(name, rec["mean"]) for name, rec in out["arms"].items() if rec["n"] and rec["mean"] == rec["mean"]]
    if not scored:
        out.update({"winner": None, "chosen": None, "beats_control": None, "noise_floor_sd": None})
        return out
    sign = 1.0 if higher else -1.0
    winner = max(scored, key=lambda x: (sign * x[1], x[0] == CONTROL))[0]  # ties go to the control
    vs = out["arms"][winner]["vs_control"]
    beats = None if winner == CONTROL or vs is None else bool(vs["significant"])
    has_control = bool(control)
    chosen = winner if (beats or not has_control or winner == CONTROL) else CONTROL
    if search_best is not None and "best_trial" in out["arms"]:
        chosen = "best_trial"  # without confirmation the search's best is registered as before
    c = out["arms"].get(CONTROL)
    out.update({"winner": winner, "chosen": chosen, "beats_control": beats,
                "noise_floor_sd": c["sd"] if c else None})
    return out


def _paired(arm: Sequence[RunScore], control: Sequence[RunScore], higher: bool, seed: int, ci2: Any
            ) -> dict[str, Any]:
    """``d[seed, case]`` of ``arm`` minus ``control`` (sign flipped for lower-is-better): runs of the
    same seed pair; with no common seed, the arm's per-case mean pairs with each control run."""
    import numpy as np

    ctrl = {r.seed: r.cases for r in control}
    pairs = [(r.cases, ctrl[r.seed]) for r in arm if r.seed in ctrl]
    if not pairs:
        keys = set.intersection(*(set(r.cases) for r in arm)) if arm else set()
        mean_arm = {k: float(np.mean([r.cases[k] for r in arm])) for k in keys}
        pairs = [(mean_arm, c) for c in ctrl.values()]
    cases = sorted(set.intersection(*(set(a) & set(b) for a, b in pairs))) if pairs else []
    s = 1.0 if higher else -1.0
    d = np.array([[s * (float(a[k]) - float(b[k])) for k in cases] for a, b in pairs], dtype=float)
    if d.size:
        d = d[:, np.isfinite(d).all(axis=0)]
    n_cases = int(d.shape[1]) if d.size else 0
    if not n_cases:
        return {"gain": math.nan, "ci": [math.nan, math.nan], "n_cases": 0, "n_seeds": len(pairs),
                "significant": False}
    lo, hi = ci2(d, seed=seed)
    return {"gain": float(d.mean()), "ci": [float(lo), float(hi)], "n_cases": n_cases, "n_seeds": len(pairs),
            "significant": bool(n_cases >= MIN_CASES and lo > 0)}


def describe(result: Mapping[str, Any], reference_words: str, ensemble: bool) -> str:
    """The sweep's answer in one sentence (the last lines, the parent run's ``answer`` tag, the card)."""
    arms, metric = result.get("arms") or {}, str(result.get("metric", "val_Dice_mean"))
    name = "val Dice" if metric == "val_Dice_mean" else metric
    winner, chosen = result.get("winner"), result.get("chosen")
    if winner is None:
        return "no run of the control or confirmation stage finished with a score"
    what = "seed ensemble" if ensemble and (arms.get(chosen) or {}).get("n", 0) > 1 else "best run"

    def line(arm: str) -> str:
        a = arms[arm]
        se = f" ± {a['se']:.4f}" if a["se"] == a["se"] else ""
        return f"{arm} ({_fmt(a['params'])}): {name} {a['mean']:.4f}{se} over {a['n']} run(s)"

    if chosen == "best_trial":
        vs = arms["best_trial"].get("vs_control") or {}
        lo, hi = (vs.get("ci") or [math.nan, math.nan])
        verdict = "beat" if vs.get("significant") else "did not beat"
        return (f"the search's best trial {verdict} {reference_words} beyond noise: {line('best_trial')} against "
                f"{line(CONTROL)}; gain {vs.get('gain', math.nan):+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] over "
                f"{vs.get('n_cases', 0)} validation cases; registered the best trial (tune.confirm.top_k = 0: no "
                "confirmation)")
    if CONTROL not in arms:
        return f"the confirmed winner is {line(winner)}; no control arm (tune.control.seeds = 0), so no " \
               f"comparison with {reference_words}; registered its {what}"
    if winner == CONTROL:
        return (f"no searched setting beat {reference_words}: the control had the best mean, {line(CONTROL)}; "
                f"registered the control's {what}")
    vs = arms[winner]["vs_control"] or {}
    lo, hi = (vs.get("ci") or [math.nan, math.nan])
    gain = (f"gain {vs.get('gain', math.nan):+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] over {vs.get('n_cases', 0)} "
            f"validation cases x {vs.get('n_seeds', 0)} seed(s)")
    if result.get("beats_control"):
        return f"{line(winner)} beat {reference_words} beyond noise ({gain}); registered its {what}"
    return (f"no setting beat {reference_words} beyond noise: the best, {line(winner)}, {gain}; registered the "
            f"control's {what}")


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


def search_best_run(plan: SweepPlan, best: Mapping[str, Any]) -> RunScore:
    """The search's best trial as a :class:`RunScore` (seed ``train.seed``)."""
    params = {k: best.get(k) for k in search_params(plan.cfg)}
    return RunScore("best_trial", int(plan.cfg.train.seed), float(best["score"]),
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
    print(f"[tune] confirmation: {len(specs)} runs ({', '.join(f'{a.name}: {_fmt(a.params)}' for a in arms)}) with "
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
        out.append(RunScore(str(c.get("arm")), int(c.get("seed", 0)), float(row["score"]),
                            _case_scores(row["checkpoint_path"], plan.metric), str(row["trial_id"]),
                            row["checkpoint_path"], {**row, "params": {k: c.get(k) for k in search_params(cfg)}}))
    if failed:
        print(f"[tune] confirmation: {len(failed)} run(s) failed and are left out: {'; '.join(failed)}", flush=True)
    facts = {"dir": str(exp), "seconds": round(time.time() - t0, 1), "failed": failed, "max_concurrent": int(conc),
             "seeds": seeds, "n_runs": len(specs)}
    return out, facts


def format_arms(result: Mapping[str, Any]) -> str:
    """The stage's table: one line per arm (mean ± SE over its runs, gain over the control with its CI)."""
    arms = result.get("arms") or {}
    lines = [f"[tune] {'arm':<10} {'n':>2} {'mean':>8} {'± se':>8} {'gain vs control [95% CI]':<30} setting"]
    for name, a in arms.items():
        vs = a.get("vs_control")
        gain = "-" if not vs else f"{vs['gain']:+.4f} [{vs['ci'][0]:+.4f}, {vs['ci'][1]:+.4f}]"
        mark = " <- winner" if name == result.get("winner") else ""
        lines.append(f"[tune] {name:<10} {a['n']:>2} {a['mean']:>8.4f} {a['se']:>8.4f} {gain:<30} "
                     f"{_fmt(a['params'])}{mark}")
    return "\n".join(lines)


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

    @property
    def answer(self) -> str:
        return describe(self.result, self.reference_words, self.ensemble)

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


def run_stage(plan: SweepPlan, rows: Sequence[Mapping[str, Any]], best: Mapping[str, Any], parent: str,
              runs: Any) -> Stage:
    """The stage of the module docstring: arms chosen, trained (:func:`run_confirm`), analysed."""
    t = plan.cfg.tune
    champion = _champion_tags(plan) if t.control.reference == "champion" else None
    reference, words = reference_params(plan, champion)
    arms = choose_arms(plan, rows, reference, words)
    got, facts = run_confirm(plan, arms, parent, runs) if arms else ([], {})
    search_best = search_best_run(plan, best) if not t.confirm.top_k else None
    result = analyse(arms, got, plan.metric, seed=int(t.seed), search_best=search_best)
    return Stage(arms, got, result, facts, words, bool(t.confirm.ensemble), bool(t.confirm.top_k))
