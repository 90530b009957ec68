"""Stage 4: MLflow tracking and the model registry.

* A parent run per sweep, created by the driver; its id is kept in
  ``<sweep_dir>/mlflow_parent.json`` so that a restored sweep logs into the same parent. It
  names its driver (tags ``singr.driver.*``, :func:`tune.tidy.driver_tags`; a restored sweep's
  driver replaces them before it reopens the run), so that the runs of a driver killed outright
  can be closed later (:mod:`tune.tidy`).
* One child run per trial (:class:`TrialRuns`): the trial's whole resolved config as
  params, its ``config.yaml``, the validation curves (Dice, IoU, HD95 per region and mean)
  and the training loss as metrics with the epoch as step, nothing of Ray's bookkeeping;
  tags ``trial_id``, ``worker_nodes`` (where its Train workers ran) and, in a grid,
  ``variant`` / ``seed``. A trial that is restarted (a restored sweep, a lost node) logs
  into its existing child run: one child per trial, never two.

  Ray's ``MLflowLoggerCallback`` is not used: it cannot nest runs under a parent, logs every
  result key (``config/*``, ``pid``, ``timestamp``, ``done``) as metrics, opens a second run
  for a restored trial and keeps its run table private. This callback runs in the Tune
  driver, so one process writes the store (safe for sqlite), and an MLflow call that fails
  (the server went away) is recorded and skipped: the sweep goes on and its own results
  (trials.csv, best checkpoint) say what was not logged.
* The experiment is tagged as an ML (not GenAI) experiment; MLflow 3.17's UI still opens an
  experiment on its GenAI overview in a fresh browser, so each sweep publishes a shared view of
  the runs table (its trials, best validation Dice first, with their lambda/delta/gamma and
  Dice/HD95 columns; :mod:`tune.hub.ui_link`) whose link the sweep prints at its end, and the
  parent run carries the best trial's validation metrics and hyperparameters under the keys of
  the child runs (:func:`log_best`), so that its row reads in the same columns.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ray.tune import Callback

from singr.config import dump_config

from .grid import expand_variants, is_grid
from .hub.store import client_for, ensure_experiment
from .plan import PARAM_KEYS, SweepPlan, search_params, trial_config

# what a child run keeps of a trial's results: the curves, nothing of Ray's bookkeeping
METRIC_PREFIXES = ("val_", "train_loss", "epoch_seconds", "best_val_", "data_wait_", "patches_per_s",
                   "setup_", "startup/",  # the curves, where the time went (start-up included),
                   "system/")  # and the worker machine (MLflow system-metric names)


def flat_params(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, values as short strings."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        else:
            text = json.dumps(v) if isinstance(v, (list, tuple)) or v is None else str(v)
            out[key] = text[:500]
    return out


def parent_run(plan: SweepPlan, driver: Mapping[str, str] | None = None) -> str:
    """Create (or, for a restored sweep, reopen) the sweep's parent run; returns its id. ``driver``:
    the tags naming the driver (default :func:`tune.tidy.driver_tags` of this process, no Ray);
    a reopened run gets them (and loses the previous driver's, and a ``singr.tidied`` tag)
    before it is RUNNING again, so that no tidy takes it for the old driver's."""
    from .tidy import DRIVER, TIDIED_TAG, driver_tags

    uri, cfg = plan.tracking_uri, plan.cfg
    client = client_for(uri)
    exp_id = ensure_experiment(uri, cfg.mlflow.experiment)
    drv = dict(driver_tags() if driver is None else driver)
    marker = plan.sweep_dir / "mlflow_parent.json"
    if marker.exists():
        try:
            info = json.loads(marker.read_text())
            run = client.get_run(info["run_id"])
            if run.info.experiment_id == exp_id:
                rid = run.info.run_id
                if "singr.ui_view" not in run.data.tags:  # a parent run of an older version
                    publish_ui_view(plan, client, exp_id, rid)
                for k, v in drv.items():
                    client.set_tag(rid, k, v)
                for k in run.data.tags:
                    if (k.startswith(DRIVER) and k not in drv) or k == TIDIED_TAG:
                        client.delete_tag(rid, k)
                client.update_run(rid, status="RUNNING")
                return rid
        except Exception:  # noqa: BLE001 - a stale marker: start a new parent
            pass
    grid = is_grid(cfg)
    run = client.create_run(exp_id, run_name=plan.name, tags={"sweep": plan.name, "singr.role": "sweep",
                                                               "singr.mode": "grid" if grid else "search", **drv})
    rid = run.info.run_id
    t = cfg.tune
    params: dict[str, str] = {}
    if grid:
        assert cfg.experiment is not None
        params = {"grid.variants": json.dumps([v.name for v in expand_variants(cfg)]),
                  "grid.seeds": json.dumps(cfg.experiment.seeds), "grid.eval_split": cfg.experiment.eval_split}
    else:
        params = {f"search.{k}": json.dumps(getattr(t, k)) for k in
                  ("lam_grid", "delta", "gamma", "lr", "models", "num_samples", "num_workers", "seed")}
        params["asha"] = json.dumps(t.asha.model_dump())
    for k, v in params.items():
        client.log_param(rid, k, v)
    client.log_text(rid, dump_config(cfg), "config.yaml")
    from singr.io import write_json

    write_json(marker, {"run_id": rid, "tracking_uri": uri})
    publish_ui_view(plan, client, exp_id, rid)
    return rid


def publish_ui_view(plan: SweepPlan, client: Any, exp_id: str, parent_id: str) -> str | None:
    """The sweep's shared view of the runs table (:func:`tune.hub.ui_link.publish_view`): the
    searched hyperparameters (a grid: its ``variant`` / ``seed`` tags; a search with a control or
    confirmation stage: also the ``arm`` / ``seed`` tags of the stage's runs) and the validation
    Dice / HD95 (and the objective) as columns. Its key, or None where it could not be written."""
    from .hub.ui_link import DEFAULT_METRICS, publish_view, view_state

    cfg = plan.cfg
    metrics = list(DEFAULT_METRICS) + ([plan.metric] if plan.metric not in DEFAULT_METRICS else [])
    if is_grid(cfg):
        split = cfg.experiment.eval_split if cfg.experiment is not None else None
        extra = [f"{split}_Dice_mean", f"{split}_HD95_mean"] if split and split != "val" else []
        state = view_state(plan.name, params=[], metrics=metrics + extra, tags=["variant", "seed"])
    else:
        t = cfg.tune  # a control / confirmation stage: its runs (tune.confirm) are told apart by tags arm, seed
        stage = bool(t.control.seeds or (t.confirm.top_k and t.confirm.seeds))
        state = view_state(plan.name, params=[PARAM_KEYS[p] for p in search_params(cfg)], metrics=metrics,
                           tags=["arm", "seed"] if stage else [])
    try:
        return publish_view(client, exp_id, parent_id, state)
    except Exception as e:  # noqa: BLE001 - the link falls back to the URL-only view
        print(f"[tune] MLflow: could not publish the runs view of the sweep ({type(e).__name__}: {e})", flush=True)
        return None


class TrialRuns(Callback):
    """One MLflow child run per trial under the sweep's parent run (see the module docstring)."""

    RETRY_AFTER_S = 60.0

    def __init__(self, plan: SweepPlan, parent_run_id: str):
        self.plan = plan
        self.uri = plan.tracking_uri
        self.parent = parent_run_id
        self.runs: dict[str, str] = {}       # trial id -> run id
        self.tagged: set[tuple[str, str]] = set()
        self.failures: list[str] = []        # what could not be logged (the server went away, ...)
        self._client: Any = None
        self._exp_id: str | None = None
        self._down_until = 0.0               # after a failure, calls are skipped for a while (not retried each)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client_for(self.uri)
        return self._client

    def _safe(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None when MLflow fails: the failure is recorded (and printed once), and
        for ``RETRY_AFTER_S`` seconds later calls are skipped and recorded, so that a server
        that went away costs the sweep nothing but the missing logs."""
        if time.time() < self._down_until:
            self.failures.append(f"{what}: skipped (the MLflow store did not answer)")
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - tracking must never stop a sweep
            msg = f"{what}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            print(f"[tune] MLflow: could not log {msg}; the sweep goes on (retrying MLflow in "
                  f"{self.RETRY_AFTER_S:.0f} s)", flush=True)
            self.failures.append(msg)
            self._down_until = time.time() + self.RETRY_AFTER_S
            return None

    def _existing(self, trial_id: str) -> str | None:
        if self._exp_id is None:
            self._exp_id = self.client.get_run(self.parent).info.experiment_id
        found = self.client.search_runs([self._exp_id], f"tags.mlflow.parentRunId = '{self.parent}' and "
                                        f"tags.trial_id = '{trial_id}'", max_results=5)
        return found[0].info.run_id if found else None

    def _run_for(self, trial: Any) -> str | None:
        tid = trial.trial_id
        if tid in self.runs:
            return self.runs[tid]

        def open_run() -> str:
            rid = self._existing(tid)
            if rid is not None:  # a restarted trial: the same child run again
                self.client.update_run(rid, status="RUNNING")
                return rid
            run = self.client.create_run(self.client.get_run(self.parent).info.experiment_id, run_name=tid,
                                         tags={"mlflow.parentRunId": self.parent, "sweep": self.plan.name,
                                               "singr.role": "trial", "trial_id": tid})
            rid = run.info.run_id
            cfg = trial_config(self.plan.cfg, trial.config, self.plan.trials_dir / tid)
            params = flat_params(cfg.to_dict(core_only=True))
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(rid, params=items[i:i + 100])
            self.client.log_text(rid, dump_config(cfg), "config.yaml")
            if "variant" in trial.config:
                self.client.set_tag(rid, "variant", str(trial.config["variant"]))
                self.client.set_tag(rid, "seed", str(trial.config["seed"]))
            if "arm" in trial.config:  # a run of the control / confirmation stage (tune.confirm)
                self.client.set_tag(rid, "arm", str(trial.config["arm"]))
                self.client.set_tag(rid, "seed", str(trial.config["seed"]))
            return rid

        rid = self._safe(f"the child run of trial {tid}", open_run)
        if rid is not None:
            self.runs[tid] = rid
        return rid

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run_for(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        rid = self._run_for(trial)
        if rid is None:
            return
        step = int(result.get("epoch") or result.get("training_iteration") or iteration)
        metrics = {k: float(v) for k, v in result.items()
                   if k.startswith(METRIC_PREFIXES) or k.startswith(("test_", "train_"))
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        if metrics:
            from mlflow.entities import Metric

            ts = int(time.time() * 1000)
            self._safe(f"metrics of trial {trial.trial_id}", lambda: self.client.log_batch(
                rid, metrics=[Metric(k, v, ts, step) for k, v in metrics.items()]))
        nodes = result.get("worker_nodes")
        if nodes and (rid, str(nodes)) not in self.tagged:
            self.tagged.add((rid, str(nodes)))
            self._safe(f"the node tags of trial {trial.trial_id}", lambda: self._tag_nodes(rid, str(nodes)))

    def _tag_nodes(self, rid: str, nodes: str) -> None:
        self.client.set_tag(rid, "worker_nodes", nodes)
        for part in nodes.split(","):
            rank, _, node = part.partition(":")
            self.client.set_tag(rid, f"node.rank{rank}", node)

    def _end(self, trial: Any, status: str) -> None:
        rid = self._run_for(trial)
        if rid is None:
            return
        if "variant" in trial.config:  # a grid run's evaluation files and best checkpoint, read by singr report
            out = self.plan.trials_dir / trial.trial_id
            if (out / "eval").is_dir():
                self._safe(f"eval/ of trial {trial.trial_id}",
                           lambda: self.client.log_artifacts(rid, str(out / "eval"), "eval"))
            from singr.engine.trainer import BEST

            best = out / "checkpoints" / BEST
            if best.exists():
                self._safe(f"the checkpoint of trial {trial.trial_id}",
                           lambda: self.client.log_artifact(rid, str(best), "checkpoint"))
        self._safe(f"the end of trial {trial.trial_id}", lambda: self.client.set_terminated(rid, status=status))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED")


def close_parent(plan: SweepPlan, parent_id: str, status: str, summary: dict[str, Any] | None = None,
                 files: Sequence[Path] = ()) -> None:
    """Log the sweep's summary metrics and files to its parent run, mark child runs that were
    left RUNNING (trials of an interrupted session) as KILLED, and end the parent."""
    client = client_for(plan.tracking_uri)
    if summary:
        for k in ("best_val_Dice_mean", "maps_computed", "maps_cached", "n_trials", "n_stopped_early", "n_errors"):
            if isinstance(summary.get(k), (int, float)):
                client.log_metric(parent_id, k, float(summary[k]))
        try:
            log_best(client, parent_id, summary, [PARAM_KEYS[p] for p in search_params(plan.cfg) if p in PARAM_KEYS])
        except Exception as e:  # noqa: BLE001 - a row of the UI must not keep the parent run open
            print(f"[tune] MLflow: could not log the best trial on the parent run ({type(e).__name__}: {e})",
                  flush=True)
        log_answer(client, parent_id, summary)
    for f in files:
        if Path(f).exists():
            client.log_artifact(parent_id, str(f))
    exp = client.get_run(parent_id).info.experiment_id
    for r in client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'"):
        client.set_terminated(r.info.run_id, status="KILLED")
    if status == "FINISHED" and summary and summary.get("trials"):
        try:
            drop_lost_trials(client, exp, parent_id, {str(t.get("trial_id")) for t in summary["trials"]}
                             | {str(t) for t in summary.get("stage_trial_ids") or []})
        except Exception as e:  # noqa: BLE001 - tidying must not keep the parent run open
            print(f"[tune] MLflow: could not tidy the child runs of lost trials ({type(e).__name__}: {e})",
                  flush=True)
    client.set_terminated(parent_id, status=status)


BEST_METRIC_PREFIXES = ("val_", "best_val_")


def log_best(client: Any, parent_id: str, summary: dict[str, Any],
             param_keys: Sequence[str] = ("sing.lam", "sing.delta", "loss.gamma")) -> dict[str, Any]:
    """The best trial (``summary["best"]``) on the parent run: its latest validation metrics
    (``val_*``, ``best_val_*``) and its searched hyperparameters (``param_keys``, the config keys
    of :func:`tune.plan.search_params`), under the keys of its child run, so that the parent's
    row in the runs table shows them in the trials' columns; tags ``best_trial`` and
    ``best_run_id``. A parameter the parent already has with another value (MLflow parameters
    cannot change) is left as it is; all of them are also in the tag ``singr.best_params``.
    Returns what was logged (empty: no best trial or child run)."""
    best = summary.get("best") or {}
    tid = best.get("trial_id")
    if not tid:
        return {}
    found = client.search_runs([client.get_run(parent_id).info.experiment_id],
                               f"tags.mlflow.parentRunId = '{parent_id}' and tags.trial_id = '{tid}'", max_results=1)
    if not found:
        return {}
    child = found[0]
    from mlflow.entities import Metric, Param

    metrics = {k: v for k, v in child.data.metrics.items()
               if k.startswith(BEST_METRIC_PREFIXES) and isinstance(v, (int, float)) and math.isfinite(v)}
    params = {k: child.data.params[k] for k in param_keys if k in child.data.params}
    have = client.get_run(parent_id).data.params
    new = {k: v for k, v in params.items() if k not in have}
    ts = int(time.time() * 1000)
    client.log_batch(parent_id, metrics=[Metric(k, float(v), ts, 0) for k, v in sorted(metrics.items())],
                     params=[Param(k, v) for k, v in sorted(new.items())])
    client.set_tag(parent_id, "best_trial", str(tid))
    client.set_tag(parent_id, "best_run_id", child.info.run_id)
    client.set_tag(parent_id, "singr.best_params", json.dumps(params, sort_keys=True))
    return {"metrics": metrics, "params": params}


def log_answer(client: Any, parent_id: str, summary: dict[str, Any]) -> None:
    """The control / confirmation stage on the parent run (:mod:`tune.confirm`): tag ``answer``
    (the sentence), tags ``winner`` and ``beats_control``, metrics ``control_mean``, ``control_sd``
    (the noise floor), ``winner_mean``, ``winner_gain`` and its CI ``winner_gain_ci_low/high``."""
    conf = summary.get("confirm") or {}
    if not conf.get("answer"):
        return
    client.set_tag(parent_id, "answer", str(conf["answer"])[:4000])
    client.set_tag(parent_id, "winner", str(conf.get("winner")))
    client.set_tag(parent_id, "chosen", str(conf.get("chosen")))
    client.set_tag(parent_id, "beats_control", str(conf.get("beats_control")))
    arms = conf.get("arms") or {}
    vals = {"control_mean": (arms.get("control") or {}).get("mean"), "control_sd": conf.get("noise_floor_sd"),
            "winner_mean": (arms.get(conf.get("winner")) or {}).get("mean")}
    vs = (arms.get(conf.get("winner")) or {}).get("vs_control") or {}
    if vs:
        vals.update({"winner_gain": vs.get("gain"), "winner_gain_ci_low": (vs.get("ci") or [None])[0],
                     "winner_gain_ci_high": (vs.get("ci") or [None, None])[1]})
    for k, v in vals.items():
        if isinstance(v, (int, float)) and v == v:
            client.log_metric(parent_id, k, float(v))


def drop_lost_trials(client: Any, experiment_id: str, parent_id: str, trial_ids: set[str]) -> list[str]:
    """Move to MLflow's deleted runs (recoverable) the unfinished trial child runs of ``parent_id``
    whose trial is not among the sweep's ``trial_ids``: a trial that had just started when the driver
    was killed, before Ray Tune saved its experiment state, is not restored by the resumed sweep
    (its searcher proposes another), so its child run stands for no trial of the results.
    Returns their trial ids (printed)."""
    lost = [r for r in client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}' and "
                                          "tags.`singr.role` = 'trial'", max_results=10000)
            if r.data.tags.get("trial_id") not in trial_ids and r.info.status in ("RUNNING", "KILLED")
            and "refit_fold" not in r.data.tags]  # a refit's fold runs are not search trials
    for r in lost:
        if r.info.status == "RUNNING":
            client.set_terminated(r.info.run_id, status="KILLED")
        client.set_tag(r.info.run_id, "singr.lost", "started before the driver was killed; not restored by Ray Tune")
        client.delete_run(r.info.run_id)
    ids = sorted(str(r.data.tags.get("trial_id")) for r in lost)
    if ids:
        print(f"[tune] MLflow: {len(ids)} child run(s) of trials that started just before an earlier driver was "
              f"killed and that Ray Tune did not restore ({', '.join(ids)}) moved to the deleted runs", flush=True)
    return ids
