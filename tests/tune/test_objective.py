"""The sweep's objective and what it registers, without Ray: ``tune.metric`` (mode, the runs'
``train.select_metric``, the ranking of trials, the promotion rule), the checks of
``tune.refit_folds`` / ``tune.ensemble_top_k`` and the refit runs' configs and folds."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from singr.errors import SingrConfigError, SingrInputError
from tests.tune.conftest import PY, sweep_overrides, tune_env
from tune.config import load_service_config
from tune.plan import make_plan, trial_config


def _plan(tmp_path: Path, data: Path | None = None, *more: str):
    over = [f"tune.storage_path={tmp_path / 'ray'}", "tune.name=t", f"output_dir={tmp_path / 'out'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    if data is not None:
        over += [f"data.root={data}", f"data.cache_dir={tmp_path / 'cache'}"]
    return make_plan(load_service_config("smoke.yaml", [*over, *more]))


def test_both_ensemble_keys_are_refused():
    with pytest.raises(SingrConfigError) as e:
        load_service_config("smoke.yaml", ["tune.refit_folds=2", "tune.ensemble_top_k=2"])
    msg = str(e.value)
    assert "tune.refit_folds = 2 and tune.ensemble_top_k = 2 are both set" in msg and "null" in msg


def test_both_keys_stop_the_command_before_any_work(tmp_path, smoke_data):
    over = sweep_overrides(tmp_path, smoke_data, "both", **{"tune.refit_folds": 2, "tune.ensemble_top_k": 2})
    p = subprocess.run([PY, "-m", "tune", "-c", "smoke.yaml", *over], cwd=tmp_path, env=tune_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "tune.refit_folds" in p.stderr and "tune.ensemble_top_k" in p.stderr and "both set" in p.stderr
    assert not (tmp_path / "ray").exists() and not (tmp_path / "cache").exists()


def test_ensemble_keys_need_a_search_and_top_k_within_the_budget():
    with pytest.raises(SingrConfigError, match="more than the sweep's tune.num_samples = 2"):
        load_service_config("smoke.yaml", ["tune.ensemble_top_k=3"])
    with pytest.raises(SingrConfigError, match="apply to tune.mode = 'search'"):
        load_service_config("ablation-synthetic.yaml", ["tune.refit_folds=2"])
    with pytest.raises(SingrConfigError, match="tune.refit_folds"):
        load_service_config("smoke.yaml", ["tune.refit_folds=1"])
    t = load_service_config("smoke.yaml").tune
    assert (t.metric, t.refit_folds, t.ensemble_top_k, t.postprocess) == ("val_Dice_mean", None, None, True)


@pytest.mark.parametrize("metric,mode", [("val_Dice_mean", "max"), ("val_LesionDice_mean", "max"),
                                         ("val_HD95_mean", "min"), ("val_LesionHD95_mean", "min")])
def test_metric_gives_mode_and_every_runs_selection(tmp_path, metric, mode):
    plan = _plan(tmp_path, None, f"tune.metric={metric}")
    assert (plan.metric, plan.mode) == (metric, mode)
    assert plan.cfg.train.select_metric == metric  # each trial's best checkpoint is best by the objective
    cfg = trial_config(plan.cfg, {"lam": 0.3, "delta": 0.5, "gamma": 1.0}, tmp_path / "trials" / "x")
    assert cfg.train.select_metric == metric


def test_unknown_metric_lists_the_choices():
    with pytest.raises(SingrConfigError) as e:
        load_service_config("smoke.yaml", ["tune.metric=val_Dice_TC"])
    assert "tune.metric" in str(e.value) and "val_LesionHD95_mean" in str(e.value)


def test_refit_run_config_trains_its_fold(tmp_path):
    plan = _plan(tmp_path)
    cfg = trial_config(plan.cfg, {"lam": 0.3, "delta": 0.45, "gamma": 1.5, "fold": 1, "folds": 3},
                       tmp_path / "refit" / "singr_trials" / "abc_00001")
    assert Path(cfg.output_dir) == tmp_path / "refit" / "singr_trials" / "fold_1"
    assert cfg.data.folds == 3 and cfg.sing.lam == 0.3 and cfg.sing.delta == 0.45 and cfg.loss.gamma == 1.5
    assert cfg.data.split_file == plan.cfg.data.split_file  # the sweep's split, with its folds


def test_folds_are_made_by_the_driver_and_checked(tmp_path, smoke_data):
    from singr.engine.pipeline import discover, run_paths, split_cases
    from tune.ensemble import fold_digest, prepare_folds

    plan = _plan(tmp_path, smoke_data)
    split = split_cases(plan.cfg, discover(plan.cfg), run_paths(plan.cfg))
    folds = prepare_folds(plan, 2)
    assert len(folds) == 2 and all(folds)
    assert sorted(c for f in folds for c in f) == sorted(split["train"] + split["val"])  # test held out
    saved = json.loads(plan.split_file.read_text())
    assert saved["folds"]["2"] == folds and saved["test"] == split["test"]
    assert fold_digest(folds) == fold_digest([list(reversed(f)) for f in folds]) != fold_digest(folds[::-1])
    with pytest.raises(SingrInputError, match="tune.refit_folds = 6: cannot make 6 folds of 5"):
        prepare_folds(plan, 6)


def _result(tid: str, values: list[float], metric: str, dice: list[float], error: bool = False):
    df = pd.DataFrame({"epoch": list(range(1, len(values) + 1)), metric: values, "val_Dice_mean": dice,
                       "checkpoint_path": [f"/ckpt/{tid}"] * len(values)})
    return SimpleNamespace(metrics={"trial_id": tid, "epoch": len(values), metric: values[-1]}, metrics_dataframe=df,
                           config={"lam": 0.3, "delta": 0.5, "gamma": 1.0}, path=f"/x/{tid}",
                           error=RuntimeError("boom") if error else None)


def test_trials_ranked_by_the_objective_lowest_hd95_first(tmp_path):
    from tune.results import format_table, trial_rows

    plan = _plan(tmp_path, None, "tune.metric=val_HD95_mean")
    grid = [_result("a", [9.0, 7.0], "val_HD95_mean", [0.5, 0.6]),
            _result("b", [6.0, 8.0], "val_HD95_mean", [0.4, 0.3]),
            _result("c", [float("nan"), float("nan")], "val_HD95_mean", [0.9, 0.9])]
    rows = trial_rows(grid, plan)
    assert [r["trial_id"] for r in rows] == ["b", "a", "c"]  # best (lowest) HD95 over epochs; never scored last
    assert [r["score"] for r in rows[:2]] == [6.0, 7.0] and math.isnan(rows[2]["score"])
    assert rows[0]["val_Dice_best"] == 0.4 and rows[1]["val_Dice_best"] == 0.6  # Dice kept, whatever the objective
    table = format_table(rows, ["lam", "delta", "gamma"], plan.metric)
    assert "HD95_mean(best)" in table.splitlines()[0] and "6.0000" in table.splitlines()[1]


def test_trials_ranked_by_dice_by_default(tmp_path):
    from tune.results import trial_rows

    plan = _plan(tmp_path)
    rows = trial_rows([_result("a", [0.5, 0.6], "val_Dice_mean", [0.5, 0.6]),
                       _result("b", [0.7, 0.65], "val_Dice_mean", [0.7, 0.65])], plan)
    assert [r["trial_id"] for r in rows] == ["b", "a"] and rows[0]["score"] == rows[0]["val_Dice_best"] == 0.7


def test_promotion_compares_only_the_same_objective():
    from tune.hub.publish import decide_promotion

    champ = {"objective": "val_Dice_mean", "val_split": "d", "val_Dice_mean": "0.9"}
    ok, why = decide_promotion("better", 3.0, "d", champ, metric="val_HD95_mean", higher_is_better=False)
    assert not ok and "not comparable" in why and "val_HD95_mean" in why
    champ = {"objective": "val_HD95_mean", "val_split": "d", "val_HD95_mean": "5.0"}
    assert decide_promotion("better", 4.0, "d", champ, metric="val_HD95_mean", higher_is_better=False)[0]
    assert not decide_promotion("better", 6.0, "d", champ, metric="val_HD95_mean", higher_is_better=False)[0]
    old = {"val_split": "d", "val_Dice_mean": "0.5"}  # a version registered before tune.metric: Dice
    assert decide_promotion("better", 0.6, "d", old)[0]
    assert not decide_promotion("better", 0.6, "cv2-x", old)[0]  # a fold ensemble's CV score: other cases


def test_model_folder_says_what_it_is(tmp_path):
    from tune.ensemble import ModelFolder

    m = ModelFolder(tmp_path, "top_k", [{"file": "top_0.safetensors", "trial_id": "a", "score": 0.8},
                                        {"file": "top_1.safetensors", "trial_id": "b", "score": 0.7}],
                    "val_Dice_mean", 0.82, "the ensemble on 2 validation cases", "d")
    assert m.tags() == {"kind": "top_k", "members": 2, "member_trials": "a,b"}
    s = m.summary()
    assert s["kind"] == "top_k" and [x["file"] for x in s["members"]] == ["top_0.safetensors", "top_1.safetensors"]
    assert s["score"] == 0.82 and s["val_split"] == "d" and s["postprocess"] is None
    assert "ensemble of the 2 best trials (a, b)" in m.describe()
