"""The control / confirmation stage's arithmetic (tune.confirm), without Ray: which settings are
confirmed, the means and spreads per arm, the paired comparison with the control, the winner,
what is registered and the sentence that says so."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tune.config import load_service_config
from tune.confirm import CONTROL, Arm, RunScore, analyse, choose_arms, describe, reference_params, stage_seeds
from tune.plan import make_plan

CASES = [f"c{i}" for i in range(8)]


def _plan(*overrides: str):
    return make_plan(load_service_config("configs/synthetic.yaml", list(overrides)))


def _runs(arm: str, seeds: list[int], base: list[float], shift: float = 0.0, noise: float = 0.0,
          rng: np.random.Generator | None = None) -> list[RunScore]:
    rng = rng or np.random.default_rng(0)
    out = []
    for s in seeds:
        cases = {c: float(b + shift + noise * rng.standard_normal()) for c, b in zip(CASES, base)}
        out.append(RunScore(arm, s, float(np.mean(list(cases.values()))), cases, f"{arm}-{s}"))
    return out


def _arms() -> list[Arm]:
    return [Arm(CONTROL, {"lam": 0.5, "delta": 0.5, "gamma": 1.0}, "the paper's defaults"),
            Arm("top_1", {"lam": 0.75, "delta": 0.4, "gamma": 1.5}, "trial a")]


BASE = [0.5, 0.6, 0.7, 0.55, 0.65, 0.62, 0.58, 0.66]


def test_a_clearly_better_setting_beats_the_control_and_is_registered():
    runs = _runs(CONTROL, [1, 2], BASE, noise=0.01) + _runs("top_1", [1, 2], BASE, shift=0.1, noise=0.01)
    r = analyse(_arms(), runs, "val_Dice_mean")
    assert r["winner"] == "top_1" and r["beats_control"] is True and r["chosen"] == "top_1"
    vs = r["arms"]["top_1"]["vs_control"]
    assert vs["n_cases"] == 8 and vs["n_seeds"] == 2 and vs["ci"][0] > 0 and vs["gain"] == pytest.approx(0.1, abs=0.02)
    c = r["arms"][CONTROL]
    assert c["n"] == 2 and c["seeds"] == [1, 2] and c["se"] > 0 and r["noise_floor_sd"] == pytest.approx(c["sd"])
    text = describe(r, "the paper's defaults", ensemble=True)
    assert "beat the paper's defaults beyond noise" in text and text.endswith("registered top_1's seed ensemble")


def test_an_equal_setting_with_a_higher_mean_does_not_move_the_choice_off_the_control():
    rng = np.random.default_rng(3)
    runs = _runs(CONTROL, [1, 2], BASE, noise=0.05, rng=rng) + _runs("top_1", [1, 2], BASE, shift=0.01, noise=0.05,
                                                                       rng=rng)
    r = analyse(_arms(), runs, "val_Dice_mean")
    vs = r["arms"]["top_1"]["vs_control"]
    assert vs["ci"][0] <= 0 <= vs["ci"][1]
    assert r["beats_control"] in (False, None) and r["chosen"] == CONTROL
    text = describe(r, "the paper's defaults", ensemble=True)
    assert ("no setting beat the paper's defaults beyond noise" in text
            or "no searched setting beat the paper's defaults" in text)
    assert "registered the control's seed ensemble" in text


def test_lower_is_better_objectives_flip_the_sign():
    hd = [10.0, 12.0, 8.0, 9.0, 11.0, 10.5, 9.5, 12.5]
    runs = (_runs(CONTROL, [1, 2], hd) + _runs("top_1", [1, 2], hd, shift=-3.0))
    r = analyse(_arms(), runs, "val_HD95_mean")
    assert r["winner"] == "top_1" and r["arms"]["top_1"]["vs_control"]["gain"] == pytest.approx(3.0)
    assert r["beats_control"] is True


def test_without_a_control_the_best_mean_wins_and_the_answer_says_there_was_no_comparison():
    arms = [Arm("top_1", {"lam": 0.5}, "a"), Arm("top_2", {"lam": 0.75}, "b")]
    runs = _runs("top_1", [1, 2], BASE) + _runs("top_2", [1, 2], BASE, shift=0.02)
    r = analyse(arms, runs, "val_Dice_mean")
    assert r["winner"] == r["chosen"] == "top_2" and r["arms"]["top_2"]["vs_control"] is None
    assert "no control arm" in describe(r, "the paper's defaults", ensemble=False)


def test_the_search_best_trial_against_the_control_when_nothing_is_confirmed():
    best = _runs("best_trial", [0], BASE, shift=0.2)[0]
    best.row = {"params": {"lam": 0.75}}
    r = analyse([_arms()[0]], _runs(CONTROL, [1, 2], BASE, noise=0.01), "val_Dice_mean", search_best=best)
    vs = r["arms"]["best_trial"]["vs_control"]
    assert vs["n_seeds"] == 2 and vs["gain"] == pytest.approx(0.2, abs=0.02) and vs["significant"]
    assert r["chosen"] == "best_trial"  # registered as before; the answer says whether it beat the control
    text = describe(r, "the paper's defaults", ensemble=True)
    assert "optimistic" in text and "beyond noise" not in text and "+0.2" in text  # one run, chosen on these cases
    best.row = {"params": {"lam": 0.5, "delta": 0.5, "gamma": 1.0}}  # the defaults won the search themselves
    r = analyse([_arms()[0]], _runs(CONTROL, [1, 2], BASE, noise=0.01), "val_Dice_mean", search_best=best)
    assert "is the paper's defaults itself" in describe(r, "the paper's defaults", ensemble=True)


def test_runs_without_scores_are_left_out_and_a_stage_without_runs_says_so():
    r = analyse(_arms(), [RunScore("top_1", 1, math.nan)], "val_Dice_mean")
    assert r["winner"] is None and "no run" in describe(r, "the paper's defaults", True)


def test_confirmed_settings_are_distinct_best_first_and_the_reference_is_the_control():
    plan = _plan("tune.confirm.top_k=2")
    ref, words = reference_params(plan)
    assert ref == {"lam": 0.5, "delta": 0.5, "gamma": 1.0} and words == "the paper's defaults"
    row = {"error": False, "checkpoint_path": "x"}
    rows = [{**row, "trial_id": "t1", "score": 0.7, "lam": 0.5, "delta": 0.5, "gamma": 1.0},   # the defaults
            {**row, "trial_id": "t2", "score": 0.69, "lam": 0.75, "delta": 0.4, "gamma": 1.5},
            {**row, "trial_id": "t3", "score": 0.68, "lam": 0.75, "delta": 0.40001, "gamma": 1.5},  # the same
            {**row, "trial_id": "t4", "score": float("nan"), "lam": 0.25, "delta": 0.4, "gamma": 1.5},  # no score
            {**row, "trial_id": "t5", "score": 0.6, "lam": 0.25, "delta": 0.6, "gamma": 0.7}]
    arms = choose_arms(plan, rows, ref, words)
    assert [a.name for a in arms] == [CONTROL, "top_1", "top_2"]
    assert arms[0].search_trial == "t1" and [a.search_trial for a in arms[1:]] == ["t2", "t5"]
    assert stage_seeds(plan) == [1, 2]  # train.seed 0 trained the search
    off = choose_arms(_plan("tune.control.seeds=0", "tune.confirm.top_k=1"), rows, ref, words)
    assert [(a.name, a.search_trial) for a in off] == [("top_1", "t1")]


def test_the_champion_reference_reads_the_registered_settings():
    plan = _plan("tune.control.reference=champion")
    ref, words = reference_params(plan, {"lam": "0.75", "delta": "0.35", "gamma": "1.2", "version": "4"})
    assert ref == {"lam": 0.75, "delta": 0.35, "gamma": 1.2} and "version 4" in words
    assert reference_params(plan, None)[0] == {"lam": 0.5, "delta": 0.5, "gamma": 1.0}


def test_the_config_refuses_two_ways_to_choose_the_registered_model():
    from singr.errors import SingrConfigError

    with pytest.raises(SingrConfigError, match="tune.confirm.top_k"):
        load_service_config("configs/synthetic.yaml", ["tune.ensemble_top_k=2"])
    load_service_config("configs/synthetic.yaml", ["tune.ensemble_top_k=2", "tune.confirm.top_k=0"])


def test_one_paired_seed_is_never_evidence_beyond_noise():
    runs = _runs(CONTROL, [1], BASE, noise=0.01) + _runs("top_1", [1, 2], BASE, shift=0.1, noise=0.01)
    r = analyse(_arms(), runs, "val_Dice_mean")
    vs = r["arms"]["top_1"]["vs_control"]
    assert vs["n_seeds"] == 1 and vs["ci"][0] > 0 and not vs["significant"]  # the interval ignores seed noise
    assert r["chosen"] == CONTROL and "no evidence" in describe(r, "the paper's defaults", True)


def test_failed_control_runs_say_so_and_the_registered_model_is_named():
    runs = _runs("top_1", [1, 2], BASE)
    r = analyse(_arms(), runs, "val_Dice_mean")
    assert r["chosen"] == "top_1"
    text = describe(r, "the paper's defaults", ensemble=True)
    assert "the control's runs failed" in text and text.endswith("registered top_1's seed ensemble")
    assert describe(r, "x", True, registered="the top_1 setting refitted on 3 folds").endswith("refitted on 3 folds")


def test_runs_without_per_case_scores_leave_only_their_pairs_out():
    runs = _runs(CONTROL, [1, 2], BASE) + _runs("top_1", [1, 2], BASE, shift=0.1)
    runs[-1].cases = {}
    vs = analyse(_arms(), runs, "val_Dice_mean")["arms"]["top_1"]["vs_control"]
    assert vs["n_seeds"] == 1 and vs["n_cases"] == 8
    for r in runs:
        r.cases = {}
    r = analyse(_arms(), runs, "val_Dice_mean")
    assert r["arms"]["top_1"]["vs_control"]["n_cases"] == 0
    assert "no per-case scores" in describe(r, "the paper's defaults", True)


def test_a_config_that_is_not_the_papers_is_not_called_the_papers_defaults():
    assert reference_params(_plan("sing.lam=0.25"))[1] == "the config's own setting"


def test_the_arms_are_kept_for_a_rerun_and_a_changed_stage_is_refused(tmp_path):
    from singr.errors import SingrInputError
    from tune.confirm import _stage_arms

    plan = _plan(f"tune.storage_path={tmp_path}", "tune.name=s", "tune.confirm.top_k=1")
    row = {"error": False, "checkpoint_path": "x", "trial_id": "t2", "score": 0.69, "lam": 0.75, "delta": 0.4,
           "gamma": 1.5}
    arms, words = _stage_arms(plan, [row])
    assert [a.name for a in arms] == [CONTROL, "top_1"] and (tmp_path / "s" / "confirm" / "arms.json").exists()
    again, _ = _stage_arms(plan, [{**row, "lam": 0.25, "trial_id": "t9"}])  # the rerun sees other rows: same arms
    assert [(a.name, a.params, a.search_trial) for a in again] == [(a.name, a.params, a.search_trial) for a in arms]
    with pytest.raises(SingrInputError, match="tune.name"):
        _stage_arms(_plan(f"tune.storage_path={tmp_path}", "tune.name=s", "tune.confirm.top_k=2"), [row])


def test_the_control_is_called_the_papers_defaults_only_when_it_is():
    from tune.confirm import own_words

    assert own_words({"lam": 0.5, "delta": 0.5, "gamma": 1.0}) == "the paper's defaults"
    assert own_words({"lam": 0.5, "delta": 0.5, "gamma": 1.0, "fg_oversample": 0.33}) == (
        "the paper's lambda, delta and gamma with this config's fg_oversample=0.33")
    assert own_words({"lam": 0.25, "delta": 0.5, "gamma": 1.0}) == "the config's own setting"
