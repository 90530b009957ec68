"""The control arm and the confirmation stage end to end (issue 21; ``tune.control``,
``tune.confirm``), on the smoke config with a local Ray started by the command under test:
after a 2-trial search, the paper's defaults (the control) and the search's best setting are
each trained with two new seeds; the runs are MLflow child runs tagged with their arm and
seed, ``summary.json`` carries the ``control`` and ``confirm`` sections, the chosen arm's seed
runs are the registered model, and the answer is on the terminal, the parent run and the card."""
from __future__ import annotations

import math
import subprocess

import pytest

from tests.tune.conftest import PY, sweep_overrides, sweep_summary, tune_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory, smoke_data):
    work = tmp_path_factory.mktemp("confirm")
    more = {"tune.num_samples": 2, "tune.max_concurrent": 2, "tune.control.seeds": 2, "tune.confirm.top_k": 1,
            "tune.confirm.seeds": 2, "mlflow.export": [], "mlflow.card_test_metrics": False}
    p = subprocess.run([PY, "-m", "tune", "-c", "smoke.yaml", "-q", *sweep_overrides(work, smoke_data, "conf", **more)],
                       cwd=work, env=tune_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    return {"work": work, "out": p.stdout, "summary": sweep_summary(work, "conf")}


def test_control_and_confirmation_runs_are_trained_and_summarised(confirmed):
    s, out = confirmed["summary"], confirmed["out"]
    conf = s["confirm"]
    assert set(conf["arms"]) == {"control", "top_1"} and conf["n_runs"] == 4 and conf["seeds"] == [1, 2]
    ctrl, top = conf["arms"]["control"], conf["arms"]["top_1"]
    # smoke.yaml's own setting: lambda 0.5 (not in its lam_grid [0.3, 0.7]: its maps were made for the control)
    assert ctrl["params"] == {"lam": 0.5, "delta": 0.5, "gamma": 1.0} and ctrl["source"] == "the paper's defaults"
    assert top["params"]["lam"] == s["best"]["lam"] and top["search_trial"] == s["best"]["trial_id"]
    for arm in (ctrl, top):
        assert arm["n"] == 2 and arm["seeds"] == [1, 2] and len(arm["scores"]) == 2
        assert math.isfinite(arm["mean"]) and math.isfinite(arm["se"])
    vs = top["vs_control"]
    n_val = len(__import__("json").loads((confirmed["work"] / "ray" / "conf" / "split.json").read_text())["val"])
    assert vs["n_cases"] == n_val and vs["n_seeds"] == 2 and vs["ci"][0] <= vs["gain"] <= vs["ci"][1]
    assert s["control"] == ctrl and conf["noise_floor_sd"] == pytest.approx(ctrl["sd"])
    assert conf["winner"] in ("control", "top_1") and conf["chosen"] in ("control", "top_1")
    assert "[tune] confirmation: 4 runs" in out and f"[tune] answer: {conf['answer']}" in out


def test_the_chosen_arm_is_registered_as_its_seed_ensemble_with_the_answer(confirmed):
    from mlflow.tracking import MlflowClient

    s = confirmed["summary"]
    conf, m = s["confirm"], s["model"]
    assert m["kind"] == "seeds" and m["arm"] == conf["chosen"]
    assert sorted(x["file"] for x in m["members"]) == ["seed_1.safetensors", "seed_2.safetensors"]
    assert {x["trial_id"] for x in m["members"]} == set(conf["arms"][conf["chosen"]]["trial_ids"])
    uri = s["tracking_uri"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = client.get_run(s["parent_run_id"])
    assert parent.data.tags["answer"] == conf["answer"][:4000]
    assert parent.data.metrics["control_mean"] == pytest.approx(conf["arms"]["control"]["mean"])
    assert parent.data.metrics["control_sd"] == pytest.approx(conf["noise_floor_sd"])  # the noise floor
    assert parent.data.tags["chosen"] == conf["chosen"] and parent.data.tags["winner"] == conf["winner"]
    if conf["winner"] != "control":
        vs = conf["arms"][conf["winner"]]["vs_control"]
        assert parent.data.metrics["winner_gain_ci_low"] == pytest.approx(vs["ci"][0])
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    arms = sorted((r.data.tags.get("arm"), r.data.tags.get("seed")) for r in kids if r.data.tags.get("arm"))
    assert arms == [("control", "1"), ("control", "2"), ("top_1", "1"), ("top_1", "2")]
    assert all(r.info.status == "FINISHED" for r in kids)
    mv = client.get_model_version(s["registered"]["name"], str(s["registered"]["version"]))
    assert mv.tags["arm"] == conf["chosen"] and mv.tags["kind"] == "seeds"
    assert "Search answer" in (mv.description or "")


def test_running_the_finished_sweep_again_reprints_the_same_answer(confirmed, smoke_data):
    work, s = confirmed["work"], confirmed["summary"]
    more = {"tune.num_samples": 2, "tune.max_concurrent": 2, "tune.control.seeds": 2, "tune.confirm.top_k": 1,
            "tune.confirm.seeds": 2, "mlflow.export": [], "mlflow.card_test_metrics": False}
    p = subprocess.run([PY, "-m", "tune", "-c", "smoke.yaml", "-q", *sweep_overrides(work, smoke_data, "conf", **more)],
                       cwd=work, env=tune_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    again = sweep_summary(work, "conf")["confirm"]
    assert again["arms"] == s["confirm"]["arms"] and again["answer"] == s["confirm"]["answer"]
    assert "[tune] confirmation: 4 runs" in p.stdout  # restored: nothing trained again
    more["tune.confirm.seeds"] = 1
    p = subprocess.run([PY, "-m", "tune", "-c", "smoke.yaml", "-q", *sweep_overrides(work, smoke_data, "conf", **more)],
                       cwd=work, env=tune_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode != 0 and "pick a new tune.name" in (p.stdout + p.stderr).lower()
