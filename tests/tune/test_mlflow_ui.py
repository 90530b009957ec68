"""The MLflow UI as a user meets it: the link the sweep prints opens the sweep's trials.

MLflow 3.17 lands a fresh browser on an experiment's GenAI overview, and its runs table shows
one collapsed parent run with no metric column (:mod:`tune.hub.ui_link` says why). The sweep
publishes a shared view of the runs table and prints its link (tune.sweep.print_ui_link).

Fast tests: the link's form, the published view, the best trial on the parent run. The slow
test fills a sqlite store the way a sweep does (tune.tracking: the parent run, a child run per
trial through TrialRuns, close_parent), starts a real ``mlflow server`` on it on a free port of
127.0.0.1, opens the link in the system Chromium (headless, through Playwright; as in
tests/serve/test_viewer.py, no browser download; with $CI set a missing browser fails instead
of skipping) and checks what renders: the runs view (not the overview), a row per trial with its
lambda/delta/gamma and Dice/HD95, best Dice first. The screenshot is kept in the test's tmp dir.
"""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

BIN = Path(sys.executable).parent
CHROMIUM = Path(os.environ.get("SINGR_CHROMIUM") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# (lam, delta, gamma, val Dice by epoch, HD95 by epoch) of the trials written to the store
TRIALS = [(0.25, 0.1, 1.0, [0.41, 0.52], [19.0, 17.0]), (0.75, 0.2, 2.0, [0.55, 0.71], [15.0, 9.5]),
          (1.0, 0.3, 0.5, [0.48, 0.60], [16.0, 12.0]), (0.5, 0.4, 1.5, [0.50, 0.46], [18.0, 18.5])]
BEST = 1   # the trial with the best validation Dice (0.71)


def _missing(msg: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _plan(tmp_path: Path, name: str) -> object:
    from tune.config import load_service_config
    from tune.plan import make_plan

    plan = make_plan(load_service_config("smoke.yaml", [f"tune.storage_path={tmp_path / 'ray'}", f"tune.name={name}",
                                                        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                                                        "mlflow.experiment=singr-ui-test"]))
    plan.sweep_dir.mkdir(parents=True)
    return plan


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[object, str]:
    """A finished sweep in a sqlite store, logged by tune.tracking as a sweep logs it (the parent
    run, a child run per trial through TrialRuns, close_parent): (its plan, the parent run id)."""
    from tune.tracking import TrialRuns, close_parent, parent_run

    plan = _plan(tmp_path_factory.mktemp("mlflow_ui"), "tune-ui")
    parent = parent_run(plan, {})
    runs = TrialRuns(plan, parent)
    ids = []
    for i, (lam, delta, gamma, dice, hd95) in enumerate(TRIALS):
        trial = SimpleNamespace(trial_id=f"ab12c_{i:05d}", config={"lam": lam, "delta": delta, "gamma": gamma})
        ids.append(trial.trial_id)
        runs.on_trial_start(0, [], trial)
        for ep, (d, h) in enumerate(zip(dice, hd95), start=1):
            runs.on_trial_result(ep, [], trial, {"epoch": ep, "val_Dice_mean": d, "val_HD95_mean": h,
                                                 "best_val_Dice_mean": max(dice[:ep]), "train_loss": 1.0 / ep})
        runs.on_trial_complete(0, [], trial)
    assert not runs.failures
    summary = {"n_trials": len(TRIALS), "best_val_Dice_mean": max(TRIALS[BEST][3]),
               "best": {"trial_id": ids[BEST]}, "trials": [{"trial_id": t} for t in ids]}
    close_parent(plan, parent, "FINISHED", summary)
    return plan, parent


# --------------------------------------------------------------------------- fast


def test_the_link_opens_the_runs_view_of_the_ml_workflow_not_the_overview():
    from tune.hub.ui_link import runs_view_path, sweep_filter

    shared = runs_view_path("7", "tune-synthetic", shared="singr-abc")
    assert shared == "#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=singr-abc"
    only_url = runs_view_path("7", "tune-synthetic")
    route, _, query = only_url.partition("?")
    assert route == "#/experiments/7/runs" and "overview" not in only_url
    q = {k: v[0] for k, v in parse_qs(query).items()}
    assert q == {"workflowType": "machine_learning", "searchFilter": "tags.sweep = 'tune-synthetic'",
                 "orderByKey": "metrics.`best_val_Dice_mean`", "orderByAsc": "false"}
    assert " " not in only_url and "`" not in only_url  # quoted: the link survives a terminal and a copy
    assert sweep_filter("it's") == "tags.sweep = \"it's\""


def test_the_view_state_has_the_hyperparameters_and_dice_columns_best_first():
    from tune.hub.ui_link import view_state

    st = view_state("s")
    assert st["orderByKey"] == "metrics.`best_val_Dice_mean`" and st["orderByAsc"] is False
    assert st["searchFilter"] == "tags.sweep = 's'"
    assert st["selectedColumns"] == ["params.`sing.lam`", "params.`sing.delta`", "params.`loss.gamma`",
                                     "metrics.`best_val_Dice_mean`", "metrics.`val_Dice_mean`",
                                     "metrics.`val_HD95_mean`"]
    assert st["columnOrder"][0] == "attributes.`Run Name`" and st["columnOrder"][1:] == st["selectedColumns"]
    assert "runsExpanded" not in st  # a shared view cannot carry it (the UI drops it)


def test_the_sweep_publishes_its_view_and_the_parent_carries_the_best_trial(sweep):
    from tune.hub.store import client_for
    from tune.hub.ui_link import SHARE_TAG_PREFIX, share_key, ui_lines

    plan, parent = sweep
    client = client_for(plan.tracking_uri)
    run = client.get_run(parent)
    key = share_key(parent)
    assert run.data.tags["singr.ui_view"] == key
    state = json.loads(client.get_experiment(run.info.experiment_id).tags[SHARE_TAG_PREFIX + key])
    assert state["searchFilter"] == "tags.sweep = 'tune-ui'" and "params.`sing.lam`" in state["selectedColumns"]

    lam, delta, gamma, dice, hd95 = TRIALS[BEST]
    assert run.data.tags["best_trial"] == f"ab12c_{BEST:05d}"
    assert run.data.metrics["val_Dice_mean"] == dice[-1] and run.data.metrics["val_HD95_mean"] == hd95[-1]
    assert run.data.metrics["best_val_Dice_mean"] == max(dice)
    assert "train_loss" not in run.data.metrics  # the validation metrics only
    child = client.get_run(run.data.tags["best_run_id"])
    for k in ("sing.lam", "sing.delta", "loss.gamma"):
        assert run.data.params[k] == child.data.params[k]
    assert float(run.data.params["sing.lam"]) == lam and float(run.data.params["loss.gamma"]) == gamma
    assert "train.seed" not in run.data.params and "train.lr" not in run.data.params  # the searched ones only

    sqlite = ui_lines(client, plan.tracking_uri, parent, plan.name)
    assert sqlite[0].startswith(f"MLflow UI: mlflow ui --backend-store-uri {plan.tracking_uri} --host 127.0.0.1")
    assert sqlite[1].endswith(f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs?"
                              f"workflowType=machine_learning&viewStateShareKey={key}")
    server = ui_lines(client, "http://mlflow.example:5000/", parent, plan.name)
    assert len(server) == 1 and server[0].endswith(f"http://mlflow.example:5000/#/experiments/"
                                                   f"{run.info.experiment_id}/runs?workflowType=machine_learning"
                                                   f"&viewStateShareKey={key}")


def test_the_sweep_prints_the_command_and_the_link_at_its_end(sweep, capsys):
    from tune.hub.ui_link import share_key
    from tune.sweep import print_ui_link

    plan, parent = sweep
    print_ui_link(plan, parent, SimpleNamespace(_down_until=0.0))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"[tune] MLflow UI: mlflow ui --backend-store-uri {plan.tracking_uri} --host 127.0.0.1 --port 5000"
    assert out[1].startswith("[tune]   then open (the sweep's trials, best first): http://127.0.0.1:5000/#/experiments/")
    assert out[1].endswith(f"/runs?workflowType=machine_learning&viewStateShareKey={share_key(parent)}")
    print_ui_link(plan, parent, SimpleNamespace(_down_until=time.time() + 60))  # the store just failed: no call
    assert capsys.readouterr().out == (f"[tune] MLflow UI: mlflow ui --backend-store-uri {plan.tracking_uri} "
                                       "--host 127.0.0.1\n")


def test_without_its_published_view_the_link_is_the_url_only_one():
    from tune.hub.ui_link import ui_lines

    run = SimpleNamespace(info=SimpleNamespace(experiment_id="3"), data=SimpleNamespace(tags={"singr.ui_view": "k"}))
    client = SimpleNamespace(get_run=lambda rid: run, get_experiment=lambda eid: SimpleNamespace(tags={}))
    (line,) = ui_lines(client, "https://mlflow.example", "r1", "s")  # the experiment lost the view's tag
    assert line.endswith("https://mlflow.example/#/experiments/3/runs?workflowType=machine_learning&searchFilter="
                         "tags.sweep%20%3D%20%27s%27&orderByKey=metrics.%60best_val_Dice_mean%60&orderByAsc=false")


# --------------------------------------------------------------------------- the browser


@pytest.fixture
def mlflow_server(sweep, tmp_path):
    """The sweep's store served by ``mlflow server`` on a free port: (base URL, plan, parent run id)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("Playwright for Python is not installed (pip install playwright)")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SINGR_CHROMIUM)")
    from tune.nodes import free_port

    plan, parent = sweep
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "wb")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", plan.tracking_uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError("mlflow server did not start: "
                                     + (tmp_path / "mlflow-server.log").read_text()[-2000:])
            time.sleep(0.3)
        yield base, plan, parent
    finally:
        try:  # the server and its uvicorn worker: the process group this test started
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_printed_link_shows_the_trials_with_their_hyperparameters_and_dice(mlflow_server, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    from tune.hub.store import client_for
    from tune.hub.ui_link import ui_lines

    base, plan, parent = mlflow_server
    (line,) = ui_lines(client_for(base), base, parent, plan.name)  # what the sweep prints for a server
    link = line.rsplit(" ", 1)[1]
    assert link.startswith(f"{base}/#/experiments/") and "viewStateShareKey=" in link
    shot = tmp_path / "mlflow-runs.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1920, "height": 1000}).new_page()  # a fresh profile
            page.goto(link)
            dice_cells = page.locator("[role=row] [col-id='metrics.`best_val_Dice_mean`']")
            try:
                page.wait_for_function("n => document.querySelectorAll(\"[role=row] "
                                       "[col-id='metrics.`best_val_Dice_mean`']\").length >= n",
                                       arg=len(TRIALS) + 1, timeout=45_000)
            except PlaywrightTimeout:
                page.screenshot(path=str(shot))
                pytest.fail(f"no table of the trials' Dice at {page.url} (screenshot {shot}): "
                            f"{page.inner_text('body')[:600]!r}")
            page.wait_for_timeout(500)  # the columns' widths settle
            page.screenshot(path=str(shot))
            url, text = page.url, page.inner_text("body")
            rows = page.eval_on_selector_all(
                "[role=row][row-index]",
                "rs => rs.map(r => [Number(r.getAttribute('row-index')), r.innerText.replace(/\\s+/g, ' ')])")
            assert dice_cells.count() >= len(TRIALS) + 1
        finally:
            browser.close()
    assert shot.is_file() and shot.stat().st_size > 20_000, "the screenshot is (nearly) empty"
    w, h = _png_size(shot)
    assert (w, h) == (1920, 1000)

    # the runs view of the model-training workflow, not the GenAI overview
    assert "/runs" in urlsplit(url).fragment and "overview" not in url and "workflowType=genai" not in url
    assert "Token Usage" not in text and "No data available for the selected time range" not in text
    for header in ("sing.lam", "sing.delta", "loss.gamma", "best_val_Dice_mean", "val_HD95_mean"):
        assert header in text, f"no column {header}"
    # one row per trial (and the parent), best validation Dice first; the parent reads like the best trial
    by_index: dict[int, str] = {}
    for i, t in rows:  # ag-grid splits a row over its pinned and scrolled parts: join them
        by_index[i] = f"{by_index.get(i, '')} {t}"
    ordered = [by_index[i] for i in sorted(by_index)]
    names = [f"ab12c_{i:05d}" for i in range(len(TRIALS))]
    for n in names + [plan.name]:
        assert sum(n in r for r in ordered) == 1, f"no row (or several) for {n}: {ordered}"
    rank = [next(k for k, r in enumerate(ordered) if n in r) for n in names]
    by_dice = sorted(range(len(TRIALS)), key=lambda i: -max(TRIALS[i][3]))
    assert sorted(rank) == [rank[i] for i in by_dice], f"not best Dice first: {ordered}"
    best_row, parent_row = ordered[rank[BEST]], next(r for r in ordered if plan.name in r)
    lam, delta, gamma, dice, hd95 = TRIALS[BEST]
    for r in (best_row, parent_row):
        for v in (lam, delta, gamma, max(dice), hd95[-1]):
            assert f" {v:g} " in f" {r} ".replace(".0 ", " "), f"{v} not in row {r!r}"
    assert min(rank) <= 1 and ordered.index(parent_row) <= 1  # the best trial and its parent lead
