"""The sweep's MLflow bookkeeping after an interrupted driver (tune/tracking.py)."""
from __future__ import annotations


def test_a_trial_lost_with_a_killed_driver_leaves_no_child_run(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from tune.tracking import drop_lost_trials

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("lost")
    parent = client.create_run(exp, tags={"singr.role": "sweep"}).info.run_id

    def child(tid: str, status: str, **tags: str) -> str:
        rid = client.create_run(exp, tags={"mlflow.parentRunId": parent, "singr.role": "trial", "trial_id": tid,
                                           **tags}).info.run_id
        if status != "RUNNING":
            client.set_terminated(rid, status=status)
        return rid

    kept = child("a", "FINISHED")
    restarted = child("b", "KILLED")           # a trial of the results, restarted: kept
    lost_running = child("x", "RUNNING")       # started just before the kill, never restored
    lost_killed = child("y", "KILLED")
    refit = child("r", "FINISHED", refit_fold="0")
    errored_other = child("z", "FAILED")       # a finished (failed) run is not a lost one
    other_parent = client.create_run(exp, tags={"singr.role": "trial", "trial_id": "q"}).info.run_id

    assert drop_lost_trials(client, exp, parent, {"a", "b"}) == ["x", "y"]
    assert "2 child run(s)" in capsys.readouterr().out
    for rid in (lost_running, lost_killed):
        r = client.get_run(rid)
        assert r.info.lifecycle_stage == "deleted" and r.info.status == "KILLED" and "singr.lost" in r.data.tags
    for rid in (kept, restarted, refit, errored_other, other_parent):
        assert client.get_run(rid).info.lifecycle_stage == "active"
    active = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.tags["trial_id"] for r in active) == ["a", "b", "r", "z"]
    assert drop_lost_trials(client, exp, parent, {"a", "b"}) == []  # nothing left to drop


def test_the_parent_run_names_its_driver_and_a_restored_sweep_takes_it_over(tmp_path):
    import os

    from tune.config import load_service_config
    from tune.hub.store import client_for
    from tune.plan import make_plan
    from tune.tidy import DRIVER, TIDIED_TAG, driver_tags, judge
    from tune.tracking import parent_run

    plan = make_plan(load_service_config("smoke.yaml", [f"tune.storage_path={tmp_path / 'ray'}", "tune.name=drv",
                                                        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"]))
    plan.sweep_dir.mkdir(parents=True)
    client = client_for(plan.tracking_uri)
    first = dict(driver_tags(), **{f"{DRIVER}pid": "999999999", f"{DRIVER}ray_session": "/tmp/singr-ray-x/s",
                                   f"{DRIVER}ray_pids": "1:1"})
    rid = parent_run(plan, first)
    tags = client.get_run(rid).data.tags
    assert {k: tags[k] for k in first} == first and tags["singr.role"] == "sweep"
    client.set_tag(rid, TIDIED_TAG, "driver pid 999999999 ended without closing the run")
    client.set_terminated(rid, status="KILLED")

    assert parent_run(plan) == rid  # restored: this process drives it now, the old driver's tags are gone
    run = client.get_run(rid)
    assert run.info.status == "RUNNING" and run.data.tags[f"{DRIVER}pid"] == str(os.getpid())
    assert not {f"{DRIVER}ray_session", f"{DRIVER}ray_pids", TIDIED_TAG} & set(run.data.tags)
    assert judge(run.data.tags)[0] == "alive"
