"""Reading a grid sweep from MLflow: the parent run, its stored config and one run per variant and seed.

:func:`find_grid` picks the newest grid sweep (parent run tagged ``singr.mode = grid``) of an
experiment and its child runs (tags ``variant`` and ``seed``; metrics ``<split>_Dice_<region>``,
``<split>_HD95_<region>``) as :class:`GridRun`; :func:`case_scores` reads each run's per-case
scores (artifact ``eval/metrics_<split>.csv``). MLflow is imported only when a client is made.
"""
from __future__ import annotations

import csv
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from singr.config import from_stored
from singr.errors import SingrInputError

from ..config import ServiceConfig

METRICS = ("Dice", "HD95")
LESION_METRICS = ("LesionDice", "LesionHD95")
REGION_ORDER = ("TC", "WT", "ET", "FG")


@dataclass
class GridRun:
    run_id: str
    variant: str
    seed: int
    status: str
    metrics: dict[str, float]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def find_grid(uri: str, experiment: str, sweep: str | None = None) -> tuple[Any, ServiceConfig, list[GridRun]]:
    """(parent run, its config, child runs) of the newest grid sweep of ``experiment``."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise SingrInputError(f"no MLflow experiment named {experiment!r} at {uri}; experiments: {names}")
    parents = client.search_runs([exp.experiment_id], "tags.`singr.mode` = 'grid'",
                                 order_by=["attributes.start_time DESC"], max_results=500)
    if sweep:  # compared here, not in the filter string: a name may hold quotes
        parents = [p for p in parents if p.data.tags.get("sweep") == sweep]
    if not parents:
        what = f"sweep {sweep!r}" if sweep else "grid sweep (tune.mode: grid)"
        raise SingrInputError(f"MLflow experiment {experiment!r} at {uri} has no {what}; run "
                              "`python -m tune -c configs/ablation-synthetic.yaml` (or another ablation config) first")
    parent = parents[0]
    with tempfile.TemporaryDirectory(prefix="singr-report-") as d:
        try:
            local = client.download_artifacts(parent.info.run_id, "config.yaml", d)
        except Exception as e:  # noqa: BLE001 - any store error means the same thing here
            raise SingrInputError(f"the sweep run {parent.info.run_id} has no config.yaml artifact ({e})") from e
        cfg = from_stored(yaml.safe_load(Path(local).read_text()), ServiceConfig)
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  max_results=5000)
    assert cfg.experiment is not None
    split = cfg.experiment.eval_split
    newest: dict[tuple[str, int], Any] = {}
    for r in children:
        tags = r.data.tags
        if "variant" not in tags or "seed" not in tags:
            continue
        key = (tags["variant"], int(tags["seed"]))
        # a trial restarted after Tuner.restore opens a new child run: keep one run per variant
        # and seed, the newest of those with evaluation metrics (else the newest)
        rank = (f"{split}_Dice_mean" in r.data.metrics, r.info.start_time or 0)
        if key not in newest or rank > newest[key][0]:
            newest[key] = (rank, r)
    runs = [GridRun(r.info.run_id, v, s, r.info.status, {k: float(x) for k, x in r.data.metrics.items()})
            for (v, s), (_, r) in sorted(newest.items())]
    return parent, cfg, runs


def regions_of(runs: Sequence[GridRun], split: str) -> list[str]:
    pat = re.compile(rf"^{re.escape(split)}_Dice_(.+)$")
    found = {m.group(1) for r in runs for k in r.metrics if (m := pat.match(k)) and m.group(1) != "mean"}
    return [r for r in REGION_ORDER if r in found] + sorted(found - set(REGION_ORDER))


def case_scores(client: Any, runs: Sequence[GridRun], split: str) -> dict[str, dict[str, dict[str, float]]]:
    """``{run_id: {case: {"Dice_mean": .., ...}}}`` from each run's ``eval/metrics_<split>.csv``
    artifact (runs without it are left out)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="singr-report-cases-") as d:
        for r in runs:
            try:
                local = client.download_artifacts(r.run_id, f"eval/metrics_{split}.csv", str(Path(d) / r.run_id))
            except Exception:  # noqa: BLE001 - a run without per-case scores: left out, said in the report
                continue
            with open(local, newline="") as f:
                rows = list(csv.DictReader(f))
            table: dict[str, dict[str, float]] = {}
            for row in rows:
                vals: dict[str, float] = {}
                for k, v in row.items():
                    if k == "case":
                        continue
                    try:
                        vals[k] = float(v)
                    except (TypeError, ValueError):
                        pass
                table[str(row["case"])] = vals
            out[r.run_id] = table
    return out
