"""The comparison grid (tune.mode: grid) end to end at smoke size: configs/ablation-synthetic.yaml
with 1 seed x 2 variants through `python -m tune` (same Ray Train loop, MLflow tracking and map
cache as a sweep), then its report."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable

pytestmark = pytest.mark.slow

SMOKE_GRID = """
base: {base}
output_dir: {work}/out
data: {{root: {data}, cache_dir: {work}/cache}}
model: {{features: [4, 4, 8, 8, 16, 4], init_filters: 4}}
train: {{epochs: 2, iters_per_epoch: 2, patch_size: [32, 32, 32], val_every: 1}}
infer: {{roi_size: [32, 32, 32]}}
tune: {{name: grid-smoke, storage_path: {work}/ray, cpus_per_worker: 0.5, map_cpus: 0.5, train_overrides: []}}
experiment:
  seeds: [0]
  variants:
    - {{name: hard, label: Hard labels, set: [loss.name=dice_bce]}}
    - {{name: nomargin, label: "SiNG delta=0", set: [sing.delta=0.0, loss.name=focal_l1]}}
  highlight: nomargin
  architectures: []
  overlay_cases: 1
mlflow: {{experiment: grid-smoke, tracking_uri: "sqlite:///{work}/mlflow.db", registered_model: grid-smoke}}
"""


def test_grid_runs_variants_and_writes_report(tmp_path, smoke_data):
    from mlflow.tracking import MlflowClient

    data = smoke_data  # the session's smoke data set (6 cases, 32^3); the grid's cache is under tmp_path
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(SMOKE_GRID.format(base=REPO / "configs" / "ablation-synthetic.yaml", work=tmp_path, data=data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "MLFLOW_TRACKING_URI"}
    env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"})
    p = subprocess.run([PY, "-m", "tune", "-c", str(cfg), "-q"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "2 grid runs (variants x seeds)" in p.stdout
    # each finished run's progress line gives its best validation score (the last report is the test scores)
    done = [ln for ln in p.stdout.splitlines() if " finished after " in ln]
    assert len(done) == 2 and all(" val Dice 0." in ln or " val Dice 1." in ln for ln in done), done

    results = tmp_path / "ray" / "grid-smoke" / "results"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["mode"] == "grid" and summary["n_trials"] == 2 and summary["n_stopped_early"] == 0
    # only the SiNG variant needs maps: 3 regions x (train + val cases) at one lambda
    assert summary["maps_computed"] > 0 and summary["maps_computed"] % 3 == 0
    rows = list(csv.DictReader(open(results / "trials.csv")))
    assert sorted(r["variant"] for r in rows) == ["hard", "nomargin"]
    assert all(r["epochs_run"] == "2" for r in rows)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("grid-smoke")
    parent = client.search_runs([exp.experiment_id], "tags.`singr.mode` = 'grid'")[0]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.tags["variant"] for c in children) == ["hard", "nomargin"]
    for c in children:
        m = c.data.metrics
        assert 0.0 <= m["test_Dice_mean"] <= 1.0 and m["test_n_cases"] >= 1 and "test_HD95_WT" in m
        assert c.data.tags["seed"] == "0" and c.info.status == "FINISHED"
        files = {f.path for f in client.list_artifacts(c.info.run_id, "checkpoint")}
        assert files == {"checkpoint/best.safetensors"}
        assert {f.path for f in client.list_artifacts(c.info.run_id, "eval")} >= {"eval/metrics_test.csv"}
        run_cfg = yaml.safe_load(open(client.download_artifacts(c.info.run_id, "config.yaml", str(tmp_path))))
        want = ("dice_bce", 0.5) if c.data.tags["variant"] == "hard" else ("focal_l1", 0.0)
        assert (run_cfg["loss"]["name"], run_cfg["sing"]["delta"]) == want
        assert c.data.params["loss.name"] == want[0]
    # a grid registers no model
    assert not client.search_registered_models("name='grid-smoke'")

    report = results / "report"
    md = (report / "report.md").read_text()
    assert "**SiNG delta=0 (paper)**" in md and "| Hard labels | 1 |" in md
    assert (report / "overlays.png").read_bytes()[:4] == b"\x89PNG"
    assert (report / "bars_table.png").exists()
    logged = {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/overlays.png" in logged
