"""Stage 4: MLflow tracking and model registry.

* A parent run per sweep (created by the driver; its id is kept in
  ``<sweep_dir>/mlflow_parent.json`` so a restored sweep logs into the same parent).
* One child run per trial, from Ray's ``MLflowLoggerCallback`` on the Tuner's RunConfig,
  subclassed to (a) tag each child with ``mlflow.parentRunId`` (how MLflow nests runs),
  (b) log the trial's full singr config as ``config.yaml``, (c) use the epoch as the step.
  The callback runs in the Tune driver, so one process writes the store (safe for sqlite).
* The best trial's ``best.pt`` logged as an MLflow pyfunc model (artifact ``checkpoint``)
  and registered under ``mlflow.registered_model`` with the alias ``mlflow.alias`` and the
  version tags lam, delta, gamma, model, val_Dice_mean.
* A comparison grid (``tune.mode: grid``) registers nothing: its child runs carry the
  tags ``variant`` and ``seed``, the metrics ``<eval_split>_*`` and the artifacts
  ``eval/`` and ``checkpoint/best.pt``, which ``singr report`` reads.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from singr.config import dump_config
from singr.experiment import expand_variants, is_grid

from .plan import SweepPlan, trial_config


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(uri: str, name: str) -> str:
    """The experiment id; a new experiment next to an sqlite store keeps its artifacts beside it."""
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    loc = None
    if uri.startswith("sqlite:///"):
        loc = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=loc)


def parent_run(plan: SweepPlan) -> str:
    """Create (or, for a restored sweep, reopen) the sweep's parent run; returns its id."""
    uri, cfg = plan.tracking_uri, plan.cfg
    client = _client(uri)
    exp_id = ensure_experiment(uri, cfg["mlflow"]["experiment"])
    marker = plan.sweep_dir / "mlflow_parent.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        try:
            run = client.get_run(info["run_id"])
            if run.info.experiment_id == exp_id:
                client.update_run(run.info.run_id, status="RUNNING")
                return run.info.run_id
        except Exception:
            pass
    grid = is_grid(cfg)
    run = client.create_run(exp_id, run_name=plan.name, tags={"sweep": plan.name, "singr.role": "sweep",
                                                               "singr.mode": "grid" if grid else "search"})
    rid = run.info.run_id
    t = cfg["tune"]
    if grid:
        client.log_param(rid, "grid.variants", json.dumps([v.name for v in expand_variants(cfg)]))
        client.log_param(rid, "grid.seeds", json.dumps(cfg["experiment"]["seeds"]))
        client.log_param(rid, "grid.eval_split", cfg["experiment"]["eval_split"])
    else:
        for k in ("lam_grid", "delta", "gamma", "lr", "models", "num_samples", "num_workers", "seed"):
            client.log_param(rid, f"search.{k}", json.dumps(t[k]))
        client.log_param(rid, "asha", json.dumps(t["asha"]))
    client.log_text(rid, dump_config(cfg), "config.yaml")
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_id": rid, "tracking_uri": uri}))
    return rid


class ChildRunCallback(MLflowLoggerCallback):
    """MLflowLoggerCallback whose runs are children of the sweep's parent run."""

    def __init__(self, plan: SweepPlan, parent_run_id: str):
        super().__init__(tracking_uri=plan.tracking_uri, registry_uri=plan.tracking_uri,
                         experiment_name=plan.cfg["mlflow"]["experiment"],
                         tags={"mlflow.parentRunId": parent_run_id, "sweep": plan.name, "singr.role": "trial"})
        self.base_cfg = plan.cfg
        self.trials_dir = str(plan.trials_dir)

    def log_trial_start(self, trial: Any) -> None:
        new = trial not in self._trial_runs
        super().log_trial_start(trial)
        if new:
            rid = self._trial_runs[trial]
            client = self.mlflow_util._get_client()
            client.set_tag(rid, "trial_id", trial.trial_id)
            cfg = trial_config(self.base_cfg, trial.config, Path(self.trials_dir) / trial.trial_id)
            client.log_text(rid, dump_config(cfg), "config.yaml")
            if "variant" in trial.config:
                client.set_tag(rid, "variant", str(trial.config["variant"]))
                client.set_tag(rid, "seed", str(trial.config["seed"]))
                for k, v in (("loss", cfg["loss"]["name"]), ("model", cfg["model"]["name"]),
                             ("lam", cfg["sing"]["lam"]), ("delta", cfg["sing"]["delta"]),
                             ("gamma", cfg["loss"]["gamma"])):
                    client.log_param(rid, k, v)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        """Before the run ends: a grid run's evaluation files and best.pt become its artifacts
        (``eval/`` and ``checkpoint/best.pt``, what ``singr report`` reads back)."""
        rid = self._trial_runs.get(trial)
        if rid is not None and "variant" in trial.config:
            client = self.mlflow_util._get_client()
            out = Path(self.trials_dir) / trial.trial_id
            if (out / "eval").is_dir():
                client.log_artifacts(rid, str(out / "eval"), "eval")
            best = out / "checkpoints" / "best.pt"
            if best.exists():
                client.log_artifact(rid, str(best), "checkpoint")
        super().log_trial_end(trial, failed)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        step = int(result.get("epoch") or result.get("training_iteration") or iteration)
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=result, step=step)


def close_parent(plan: SweepPlan, parent_id: str, status: str, summary: dict[str, Any] | None = None,
                 files: list[Path] = ()) -> None:
    client = _client(plan.tracking_uri)
    if summary:
        for k in ("best_val_Dice_mean", "maps_computed", "maps_cached", "n_trials", "n_stopped_early"):
            if isinstance(summary.get(k), (int, float)):
                client.log_metric(parent_id, k, float(summary[k]))
    for f in files:
        if Path(f).exists():
            client.log_artifact(parent_id, str(f))
    # runs of trials interrupted in an earlier session of this sweep are left RUNNING: mark them
    exp = client.get_run(parent_id).info.experiment_id
    for r in client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'"):
        client.set_terminated(r.info.run_id, status="KILLED")
    client.set_terminated(parent_id, status=status)


def register_best(plan: SweepPlan, parent_id: str, checkpoint: Path, tags: dict[str, Any]) -> dict[str, Any]:
    """Log ``checkpoint`` (best.pt) as a pyfunc model in the parent run, register it, set alias and tags."""
    import mlflow

    from .pyfunc import SingrCheckpointModel

    uri, m = plan.tracking_uri, plan.cfg["mlflow"]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = _client(uri)
    for mv in client.search_model_versions(f"name='{m['registered_model']}'"):
        vt = mv.tags or {}
        if vt.get("sweep") == str(tags.get("sweep")) and vt.get("trial_id") == str(tags.get("trial_id")):
            # this sweep's best trial is registered already (a rerun of a finished sweep): reuse it
            client.set_registered_model_alias(m["registered_model"], m["alias"], mv.version)
            return {"name": m["registered_model"], "version": int(mv.version), "alias": m["alias"],
                    "model_uri": f"models:/{m['registered_model']}@{m['alias']}", "reused": True}
    with mlflow.start_run(run_id=parent_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=SingrCheckpointModel(),
                                       artifacts={"checkpoint": str(checkpoint)},
                                       pip_requirements=["singr", "torch", "monai"])
    mv = mlflow.register_model(info.model_uri, m["registered_model"])
    for k, v in tags.items():
        client.set_model_version_tag(m["registered_model"], mv.version, k, str(v))
    client.set_registered_model_alias(m["registered_model"], m["alias"], mv.version)
    return {"name": m["registered_model"], "version": int(mv.version), "alias": m["alias"],
            "model_uri": f"models:/{m['registered_model']}@{m['alias']}"}
