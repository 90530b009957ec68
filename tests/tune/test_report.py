"""`singr report` on a tiny fabricated MLflow store: means and standard errors against hand
values, the paired SiNGR-minus-hard difference, both groups' tables and bar charts, the
artifacts logged back to the sweep run, and clear errors for a missing experiment/sweep."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from singr.cli import main  # noqa: E402
from singr.config import dump_config  # noqa: E402
from singr.errors import SingrInputError  # noqa: E402
from tune.config import load_service_config as load_config  # noqa: E402
from tune.report import write_report  # noqa: E402
from tune.stats import mean_se  # noqa: E402

# test_Dice_<region> per (variant, seed); HD95 = 10 * (1 - Dice) + seed (hand-checkable)
DICE = {
    ("hard", 0): (0.50, 0.70, 0.30), ("hard", 1): (0.60, 0.80, 0.40), ("hard", 2): (0.70, 0.90, 0.50),
    ("singr", 0): (0.60, 0.75, 0.35), ("singr", 1): (0.70, 0.85, 0.45), ("singr", 2): (0.74, 0.86, 0.55),
    ("segresnet-hard", 0): (0.40, 0.60, 0.20), ("segresnet-hard", 1): (0.50, 0.70, 0.30),
    ("segresnet-singr", 0): (0.45, 0.65, 0.25), ("segresnet-singr", 1): (0.55, 0.75, 0.35),
}
REGIONS = ("TC", "WT", "ET")


def _fabricate(tmp_path: Path) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("fab", artifact_location=(tmp_path / "artifacts").as_uri())
    cfg = load_config("ablation-synthetic.yaml", [
        "experiment.variants=[{name: hard, label: Hard, set: [loss.name=dice_bce]}, "
        "{name: singr, label: SiNGR, set: [loss.name=focal_l1]}]",
        "experiment.overlay_cases=0", "experiment.notes=fabricated"])
    old = client.create_run(exp, run_name="older", tags={"singr.role": "sweep", "singr.mode": "grid", "sweep": "old"})
    client.log_text(old.info.run_id, dump_config(cfg), "config.yaml")
    parent = client.create_run(exp, run_name="fab-grid", tags={"singr.role": "sweep", "singr.mode": "grid",
                                                              "sweep": "fab-grid"})
    pid = parent.info.run_id
    client.log_text(pid, dump_config(cfg), "config.yaml")
    for (variant, seed), dice in DICE.items():
        r = client.create_run(exp, tags={"mlflow.parentRunId": pid, "variant": variant, "seed": str(seed)})
        for reg, d in zip(REGIONS, dice):
            client.log_metric(r.info.run_id, f"test_Dice_{reg}", d)
            client.log_metric(r.info.run_id, f"test_HD95_{reg}", 10 * (1 - d) + seed)
        client.log_metric(r.info.run_id, "test_Dice_mean", sum(dice) / 3)
        if variant in ("hard", "singr"):  # lesion-wise metrics (singr evaluate): Dice - 0.1, HD95 = 2 x voxel-wise
            for reg, d in zip(REGIONS, dice):
                client.log_metric(r.info.run_id, f"test_LesionDice_{reg}", d - 0.1)
                client.log_metric(r.info.run_id, f"test_LesionHD95_{reg}", 2 * (10 * (1 - d) + seed))
            client.log_metric(r.info.run_id, "test_LesionDice_mean", sum(dice) / 3 - 0.1)
            client.log_metric(r.info.run_id, "test_LesionHD95_mean", 2 * sum(10 * (1 - d) + seed for d in dice) / 3)
        client.log_metric(r.info.run_id, "test_HD95_mean", sum(10 * (1 - d) + seed for d in dice) / 3)
        client.set_terminated(r.info.run_id)
    # an older run of (hard, 0) from before a restore: the newer one counts, not this one
    r = client.create_run(exp, start_time=1, tags={"mlflow.parentRunId": pid, "variant": "hard", "seed": "0"})
    for k in ("test_Dice_TC", "test_Dice_WT", "test_Dice_ET", "test_Dice_mean"):
        client.log_metric(r.info.run_id, k, 0.0)
    # an unfinished run (no test metrics) does not count
    r = client.create_run(exp, tags={"mlflow.parentRunId": pid, "variant": "singr", "seed": "3"})
    client.log_metric(r.info.run_id, "val_Dice_mean", 0.1)
    return uri


def test_mean_se_by_hand():
    m, se, n = mean_se([0.5, 0.6, 0.7])
    assert (round(m, 12), n) == (0.6, 3)
    assert se == pytest.approx(0.1 / math.sqrt(3))
    m, se, n = mean_se([0.4, float("nan")])
    assert (m, n) == (0.4, 1) and math.isnan(se)
    assert mean_se([])[2] == 0


def test_report_tables_and_figures(tmp_path):
    uri = _fabricate(tmp_path)
    out = tmp_path / "report"
    res = write_report(uri, "fab", out)
    s = json.loads((out / "summary.json").read_text())
    assert s["sweep"] == "fab-grid" and s["n_runs"] == 10 and s["regions"] == list(REGIONS)
    assert s["seeds"] == [0, 1, 2]
    hard, singr, seg_h = s["variants"]["hard"], s["variants"]["singr"], s["variants"]["segresnet-hard"]
    # hand values: hard Dice_TC = 0.5, 0.6, 0.7 -> mean 0.6, SE = 0.1/sqrt(3)
    assert hard["Dice_TC"][0] == pytest.approx(0.6) and hard["Dice_TC"][1] == pytest.approx(0.0577350, abs=1e-6)
    assert hard["Dice_TC"][2] == 3
    # singr Dice_TC = 0.6, 0.7, 0.74: mean 0.68, sd = sqrt(((-.08)^2 + .02^2 + .06^2)/2) = sqrt(0.0052)
    assert singr["Dice_TC"][0] == pytest.approx(0.68)
    assert singr["Dice_TC"][1] == pytest.approx(math.sqrt(0.0052) / math.sqrt(3))
    # HD95_WT hard: 10*(1-.7)+0, 10*(1-.8)+1, 10*(1-.9)+2 = 3, 3, 3 -> SE 0
    assert hard["HD95_WT"][0] == pytest.approx(3.0) and hard["HD95_WT"][1] == pytest.approx(0.0, abs=1e-12)
    # two seeds for segresnet: mean of 0.4, 0.5 and SE = |0.5-0.4|/sqrt(2)/sqrt(2) = 0.05
    assert seg_h["Dice_TC"][0] == pytest.approx(0.45) and seg_h["Dice_TC"][1] == pytest.approx(0.05)
    # paired SiNGR - hard over seeds 0-2: Dice_mean differences
    diffs = [sum(DICE[("singr", k)]) / 3 - sum(DICE[("hard", k)]) / 3 for k in range(3)]
    m, se, n = mean_se(diffs)
    h = s["headline"]["paired_Dice_difference"]
    assert h[0] == pytest.approx(m) and h[1] == pytest.approx(se) and h[2] == 3
    md = (out / "report.md").read_text()
    assert "| **SiNGR (paper)** | **3** | **0.680 ± 0.042** |" in md
    assert "| Hard | 3 | 0.600 ± 0.058 | 0.800 ± 0.058 | 0.400 ± 0.058 | 0.600 ± 0.058 | 5.00 ± 0.00 |" in md
    assert "segresnet: Hard" in md and "paper Figure 3" in md and "fabricated" in md
    assert "| **segresnet: SiNGR (paper)** | **2** |" in md
    for name in ("bars_table.png", "bars_architectures.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in md
    assert not (out / "overlays.png").exists()  # overlay_cases = 0
    # lesion-wise section: hard LesionDice_TC = 0.4, 0.5, 0.6 -> 0.500 ± 0.058; segresnet runs have none (n = 0)
    lw = s["lesion_wise"]
    assert lw["hard"]["LesionDice_TC"][0] == pytest.approx(0.5) and lw["hard"]["LesionDice_TC"][2] == 3
    assert lw["singr"]["LesionHD95_WT"][0] == pytest.approx(2 * (10 * (1 - 0.82) + 1))
    assert lw["segresnet-hard"]["LesionDice_mean"][2] == 0
    assert "## Lesion-wise (BraTS 2023)" in md
    assert "| Hard | 3 | 0.500 ± 0.058 | 0.700 ± 0.058 | 0.300 ± 0.058 | 0.500 ± 0.058 | 10.00 ± 0.00 |" in md
    from mlflow.tracking import MlflowClient

    logged = {f.path for f in MlflowClient(tracking_uri=uri).list_artifacts(res["parent_run_id"], "report")}
    assert {"report/report.md", "report/summary.json", "report/bars_table.png"} <= logged


def test_report_picks_sweep_and_explains_missing(tmp_path, capsys):
    uri = _fabricate(tmp_path)
    with pytest.raises(SingrInputError, match="no MLflow experiment named 'nope'.*fab"):
        write_report(uri, "nope", tmp_path / "r")
    with pytest.raises(SingrInputError, match="has no sweep 'missing'"):
        write_report(uri, "fab", tmp_path / "r", sweep="missing")
    with pytest.raises(SingrInputError, match="no run with test_Dice_mean"):
        write_report(uri, "fab", tmp_path / "r", sweep="old")
    rc = main(["report", "--experiment", "fab", "--tracking-uri", uri, "--out", str(tmp_path / "cli"), "--no-log"])
    assert rc == 0 and (tmp_path / "cli" / "report.md").exists()
    assert "singr - hard over 3 seeds: Dice +0.0500" in capsys.readouterr().out
    rc = main(["report", "--experiment", "fab", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"])
    assert rc == 2
