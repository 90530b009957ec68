"""Closing the MLflow runs of a killed sweep driver and stopping its Ray's leftovers (tune/tidy.py).

A temporary SQLite store, no Ray: each sweep parent run carries driver tags that point at a
dead pid, this live process, a live pid with another start time, or another host.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tune.conftest import tune_env
from tune import procs
from tune.tidy import DRIVER, TIDIED_TAG, driver_tags, judge, tidy

ROOT = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()


def dead_pid() -> int:
    p = subprocess.Popen(["sleep", "0"])
    p.wait()
    return p.pid


def drv(pid: int, start: int | None, host: str = HOST, **more: str) -> dict[str, str]:
    me = driver_tags()
    return {f"{DRIVER}host": host, f"{DRIVER}pid": str(pid), f"{DRIVER}start": "" if start is None else str(start),
            f"{DRIVER}boot": me[f"{DRIVER}boot"], f"{DRIVER}pidns": me[f"{DRIVER}pidns"], **more}


@pytest.fixture
def store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return uri, client, client.create_experiment("tidy")


def sweep(client, exp: str, name: str, tags: dict[str, str]) -> tuple[str, list[str], str]:
    """A RUNNING parent run with two RUNNING trial runs and a FINISHED one: (parent, running kids, finished kid)."""
    parent = client.create_run(exp, run_name=name, tags={"sweep": name, "singr.role": "sweep", **tags}).info.run_id

    def kid(tid: str) -> str:
        return client.create_run(exp, tags={"mlflow.parentRunId": parent, "singr.role": "trial",
                                            "trial_id": tid}).info.run_id
    done = kid("done")
    client.set_terminated(done, status="FINISHED")
    return parent, [kid("t1"), kid("t2")], done


@pytest.fixture
def sweeps(store):
    uri, client, exp = store
    me = os.getpid()
    dead = dead_pid()
    runs = {"dead": sweep(client, exp, "dead", drv(dead, 12345)),
            "live": sweep(client, exp, "live", driver_tags()),
            "reused": sweep(client, exp, "reused", drv(me, procs.start_time(me) + 1)),
            "elsewhere": sweep(client, exp, "elsewhere", drv(me, procs.start_time(me), host="elsewhere.invalid"))}
    return uri, client, exp, runs, dead


def status(client, rid: str) -> str:
    return client.get_run(rid).info.status


def test_judge_tells_ended_alive_and_unknown_drivers():
    me = os.getpid()
    assert judge(driver_tags())[0] == "alive"
    assert judge(drv(dead_pid(), 1))[0] == "ended"
    verdict, why = judge(drv(me, procs.start_time(me) + 1))
    assert verdict == "ended" and f"driver pid {me} on {HOST} ended without closing the run" in why
    assert judge(drv(me, procs.start_time(me), **{f"{DRIVER}boot": "another-boot"}))[0] == "ended"
    assert judge(drv(me, procs.start_time(me), host="elsewhere.invalid"))[0] == "unknown"
    assert judge(drv(me, procs.start_time(me), **{f"{DRIVER}pidns": "pid:[1]"}))[0] == "unknown"
    assert judge({})[0] == "unknown"


def test_only_the_runs_of_ended_drivers_are_killed_with_their_children(sweeps):
    uri, client, exp, runs, dead = sweeps
    lines: list[str] = []

    dry = tidy(client, [exp], dry_run=True, say=lines.append)
    assert sorted(dry.runs) == sorted([runs["dead"][0], runs["reused"][0]]) and dry.left == [runs["elsewhere"][0]]
    for parent, kids, _done in runs.values():  # a dry run changes nothing
        assert status(client, parent) == "RUNNING" and [status(client, k) for k in kids] == ["RUNNING"] * 2
        assert TIDIED_TAG not in client.get_run(parent).data.tags
    assert any(line.startswith("would mark") for line in lines)

    rep = tidy(client, [exp])
    assert sorted(rep.runs) == sorted(dry.runs) and rep.left == dry.left
    for name in ("dead", "reused"):
        parent, kids, done = runs[name]
        assert status(client, parent) == "KILLED" and [status(client, k) for k in kids] == ["KILLED"] * 2
        assert status(client, done) == "FINISHED"
        why = client.get_run(parent).data.tags[TIDIED_TAG]
        pid = dead if name == "dead" else os.getpid()
        assert f"driver pid {pid} on {HOST} ended without closing the run" in why
        assert all(client.get_run(k).data.tags[TIDIED_TAG] == why for k in kids)
    for name in ("live", "elsewhere"):
        parent, kids, done = runs[name]
        assert status(client, parent) == "RUNNING" and [status(client, k) for k in kids] == ["RUNNING"] * 2
        assert TIDIED_TAG not in client.get_run(parent).data.tags
    assert tidy(client, [exp]).runs == []  # nothing left to tidy

    forced = tidy(client, [exp], force=True)  # another host's run: only when forced; a live driver's: never
    assert forced.runs == [runs["elsewhere"][0]] and status(client, runs["elsewhere"][0]) == "KILLED"
    assert "closed by --force" in client.get_run(runs["elsewhere"][0]).data.tags[TIDIED_TAG]
    assert status(client, runs["live"][0]) == "RUNNING"


def test_the_cli_tidies_an_experiment_and_refuses_bad_input(sweeps, tmp_path):
    uri, client, exp, runs, dead = sweeps

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tune", "--tidy", *args], cwd=ROOT, env=tune_env(),
                              capture_output=True, text=True, timeout=120)

    r = cli("--experiment", "tidy", "--tracking-uri", uri, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("tidy (dry run, nothing changed): 2 run(s) would be marked")
    assert status(client, runs["dead"][0]) == "RUNNING"

    r = cli("--experiment", "tidy", "--tracking-uri", uri)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip().splitlines()
    assert sum(line.startswith("marked run ") for line in out) == 2
    assert sum(line.startswith("left run ") for line in out) == 1
    assert out[-1] == "tidy: 2 run(s) marked KILLED, 0 Ray process(es) stopped; 1 left RUNNING (cannot tell; " \
                      "--force closes them)"
    assert status(client, runs["dead"][0]) == status(client, runs["reused"][0]) == "KILLED"
    assert status(client, runs["live"][0]) == "RUNNING"  # this test's process drives it, and lives

    r = cli("--experiment", "nope", "--tracking-uri", uri)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"tune: error: no MLflow experiment named 'nope' at {uri}; "
                                             "experiments: Default, tidy"]
    r = cli("--experiment", "tidy", "--tracking-uri", f"sqlite:///{tmp_path}/missing.db")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no MLflow store at" in r.stderr
    assert not (tmp_path / "missing.db").exists()


def test_the_leftover_processes_of_a_dead_drivers_ray_session_are_stopped(store, tmp_path):
    uri, client, exp = store
    session = tmp_path / "singr-ray-x" / "session_2000-01-01_00-00-00_1"
    (session / "logs").mkdir(parents=True)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    named = subprocess.Popen([*sleeper, f"--session-dir={session}"])           # its command line names the session
    with open(session / "logs" / "agent.out", "w") as log:                       # renamed, its log open in the session
        logging = subprocess.Popen(["sleep", "60"], stdout=log)
    reused = subprocess.Popen([*sleeper, str(session)])     # in the session, but recorded with another start time
    unrelated = subprocess.Popen(["sleep", "60"])           # recorded, but not in the session
    bystander = subprocess.Popen([*sleeper, str(session)])  # in the session, never recorded
    mine = [named, logging, reused, unrelated, bystander]
    try:
        time.sleep(0.3)
        starts = {p.pid: procs.start_time(p.pid) for p in mine}
        recorded = [f"{p.pid}:{starts[p.pid]}" for p in (named, logging, unrelated)] + [f"{reused.pid}:1"]
        parent, kids, done = sweep(client, exp, "ray", drv(dead_pid(), 1, **{
            f"{DRIVER}ray_session": str(session), f"{DRIVER}ray_pids": ",".join(recorded)}))
        assert tidy(client, [exp], dry_run=True).stopped == [named.pid, logging.pid]
        assert all(p.poll() is None for p in mine)  # a dry run stops nothing

        lines: list[str] = []
        rep = tidy(client, [exp], say=lines.append, grace_s=3.0)
        assert sorted(rep.stopped) == sorted([named.pid, logging.pid])
        assert named.wait(timeout=10) != 0 and logging.wait(timeout=10) != 0
        assert [p.poll() for p in (reused, unrelated, bystander)] == [None, None, None]
        assert sum(f"left by that driver's Ray session {session}" in line for line in lines) == 2
        assert status(client, parent) == "KILLED"
    finally:
        for p in mine:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_belongs_never_matches_a_short_or_partial_path(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"{tmp_path}/abc/logs"])
    try:
        time.sleep(0.2)
        assert procs.belongs(p.pid, str(tmp_path / "abc"))
        assert not procs.belongs(p.pid, str(tmp_path / "ab"))  # a prefix of a name is not the folder
        assert not procs.belongs(p.pid, "/tmp") and not procs.belongs(p.pid, "relative/path")
    finally:
        p.kill()
        p.wait()


def test_tidy_quietly_says_only_what_it_did_and_never_raises(sweeps, tmp_path, monkeypatch):
    from tune import tidy as tidy_mod

    uri, client, exp, runs, dead = sweeps
    said: list[str] = []
    assert tidy_mod.tidy_quietly(f"sqlite:///{tmp_path}/none.db", "tidy", say=said.append) is None
    assert tidy_mod.tidy_quietly(uri, "no-such-experiment", say=said.append) is None
    assert said == [] and not (tmp_path / "none.db").exists()  # no store, no experiment: nothing to say

    rep = tidy_mod.tidy_quietly(uri, "tidy", say=said.append)
    assert rep is not None and sorted(rep.runs) == sorted([runs["dead"][0], runs["reused"][0]])
    assert len(said) == 2 and all(s.startswith("[tune] tidy: marked run ") for s in said)  # no "cannot tell" lines

    def down(uri: str):
        raise ConnectionError("the store went away")

    monkeypatch.setattr(tidy_mod, "client_for", down)
    said.clear()
    assert tidy_mod.tidy_quietly(uri, "tidy", say=said.append) is None
    assert said == ["[tune] tidy: could not check 'tidy' for runs of killed drivers (ConnectionError: the store "
                    "went away); going on"]


def test_a_sweep_tidies_its_experiment_before_it_starts(sweeps, tmp_path, monkeypatch, capsys, smoke_data):
    """preflight (before any Ray): the runs of ended drivers are closed, this process's own are not."""
    from tune.cli import preflight

    uri, client, exp, runs, dead = sweeps
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    preflight("smoke.yaml", [f"data.root={smoke_data}", f"tune.storage_path={tmp_path / 'ray'}", "tune.name=t",
                             f"data.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri={uri}",
                             "mlflow.experiment=tidy"], resume=True)
    out = capsys.readouterr().out
    assert out.count("[tune] tidy: marked run ") == 2, out
    assert status(client, runs["dead"][0]) == status(client, runs["reused"][0]) == "KILLED"
    assert status(client, runs["live"][0]) == status(client, runs["elsewhere"][0]) == "RUNNING"
