"""The control / confirmation stage's verdict (:mod:`tune.confirm`): per arm its runs' mean, spread
and paired comparison with the control, the winner, what is registered, and the sentence saying so.

Pure arithmetic on finished runs (numpy and :mod:`tune.stats`; no Ray, no MLflow). Per arm ``a``
and the control ``c``, with runs of the same seed paired and each run's best epoch's per-case
scores (the objective's column; lower-is-better objectives are negated, so a positive gain is
always better)::

    d[seed, case] = a[seed, case] - c[seed, case]
    gain = mean(d),  95 % CI = bootstrap resampling seeds and cases (tune.stats.bootstrap_ci_2way)

An arm **beats the control** when the interval's lower end is above 0 with at least ``MIN_CASES``
cases and ``MIN_SEEDS`` paired seeds (one seed's interval ignores the seed-to-seed spread, the
noise that matters most here). The winner is the best mean (ties go to the control); it is the
arm registered only when it beats the control (or there is none).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .plan import metric_mode

__all__ = ["Arm", "RunScore", "analyse", "describe", "format_arms", "fmt_setting", "CONTROL", "MIN_CASES", "MIN_SEEDS"]

CONTROL = "control"
MIN_CASES = 3
MIN_SEEDS = 2  # "beyond noise" needs the seed-to-seed spread: two paired seeds at least

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


def fmt_setting(params: Mapping[str, Any]) -> str:
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

    arm = [r for r in arm if r.cases]  # a run without per-case scores cannot pair (its pair only is left out)
    ctrl = {r.seed: r.cases for r in control if r.cases}
    pairs = [(r.cases, ctrl[r.seed]) for r in arm if r.seed in ctrl]
    if not pairs and arm:
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
            "significant": bool(n_cases >= MIN_CASES and len(pairs) >= MIN_SEEDS and lo > 0)}


def describe(result: Mapping[str, Any], reference_words: str, ensemble: bool, registered: str | None = None) -> str:
    """The sweep's answer in one sentence (the last lines, the parent run's ``answer`` tag, the card).
    ``registered``: what the sweep registers when it is not the chosen arm's runs (a fold refit,
    a top-k ensemble), in words."""
    arms, metric = result.get("arms") or {}, str(result.get("metric", "val_Dice_mean"))
    name = "val Dice" if metric == "val_Dice_mean" else metric
    winner, chosen = result.get("winner"), result.get("chosen")
    if winner is None:
        return ("no run of the control or confirmation stage finished with a score; registered "
                + (registered or "the search's best trial"))
    what = "seed ensemble" if ensemble and (arms.get(chosen) or {}).get("n", 0) > 1 else "best run"
    reg = registered or ("the best trial" if chosen == "best_trial" else
                         f"the control's {what}" if chosen == CONTROL else f"{chosen}'s {what}")

    def line(arm: str) -> str:
        a = arms[arm]
        se = f" ± {a['se']:.4f}" if a["se"] == a["se"] else ""
        return f"{arm} ({fmt_setting(a['params'])}): {name} {a['mean']:.4f}{se} over {a['n']} run(s)"

    def gain_of(arm: str) -> str:
        vs = arms[arm].get("vs_control") or {}
        if not vs.get("n_cases"):
            return "no per-case scores to compare"
        lo, hi = (vs.get("ci") or [math.nan, math.nan])
        few = "" if vs.get("n_seeds", 0) >= MIN_SEEDS else f"; fewer than {MIN_SEEDS} paired seeds: no evidence"
        return (f"gain {vs.get('gain', math.nan):+.4f} (positive = better), 95% CI [{lo:+.4f}, {hi:+.4f}] over "
                f"{vs.get('n_cases', 0)} validation cases x {vs.get('n_seeds', 0)} seed(s){few}")

    control_ran = bool((arms.get(CONTROL) or {}).get("n"))
    if chosen == "best_trial":
        if not control_ran:
            return f"the control's runs failed: no comparison; registered {reg}"
        if arms["best_trial"].get("params") == arms[CONTROL].get("params"):
            return (f"the search's best trial is {reference_words} itself; {line(CONTROL)} (tune.confirm.top_k = 0: "
                    f"no confirmation); registered {reg}")
        return (f"the search's best trial against {reference_words} (no confirmation, tune.confirm.top_k = 0: "
                f"one run chosen on these cases, so optimistic): {line('best_trial')} against {line(CONTROL)}; "
                f"{gain_of('best_trial')}; registered {reg}")
    if CONTROL not in arms or not control_ran:
        why = "no control arm (tune.control.seeds = 0)" if CONTROL not in arms else "the control's runs failed"
        return f"the confirmed winner is {line(winner)}; {why}, so no comparison with {reference_words}; " \
               f"registered {reg}"
    if winner == CONTROL:
        return (f"no searched setting beat {reference_words}: the control had the best mean, {line(CONTROL)}; "
                f"registered {reg}")
    if result.get("beats_control"):
        return f"{line(winner)} beat {reference_words} beyond noise ({gain_of(winner)}); registered {reg}"
    return (f"no setting beat {reference_words} beyond noise: the best, {line(winner)}, {gain_of(winner)}; "
            f"registered {reg}")


def format_arms(result: Mapping[str, Any]) -> str:
    """The stage's table: one line per arm (mean ± SE over its runs, gain over the control with its CI)."""
    arms = result.get("arms") or {}
    lines = [f"[tune] {'arm':<10} {'n':>2} {'mean':>8} {'± se':>8} {'gain (+ = better) [95% CI]':<30} setting"]
    for name, a in arms.items():
        vs = a.get("vs_control")
        gain = "-" if not vs else f"{vs['gain']:+.4f} [{vs['ci'][0]:+.4f}, {vs['ci'][1]:+.4f}]"
        mark = " <- winner" if name == result.get("winner") else ""
        lines.append(f"[tune] {name:<10} {a['n']:>2} {a['mean']:>8.4f} {a['se']:>8.4f} {gain:<30} "
                     f"{fmt_setting(a['params'])}{mark}")
    return "\n".join(lines)
