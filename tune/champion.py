"""The sweep's best trial as a model card (the Ray side of :mod:`tune.hub.card`): the trial's
config, its timing from MLflow, the test split evaluated in the driver when
``mlflow.card_test_metrics`` is true, the Ray cluster and this machine."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from .hub.card import build_card, evaluate_split, machine_facts, trial_timing
from .hub.store import client_for
from .plan import search_params, trial_config

__all__ = ["cluster_facts", "sweep_card"]


def cluster_facts() -> dict[str, Any] | None:
    """The Ray cluster this process is connected to (alive nodes, CPUs, GPUs, accelerator
    types); None when Ray is not initialised here."""
    if "ray" not in sys.modules:
        return None
    import ray

    if not ray.is_initialized():
        return None
    res = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"nodes": len(nodes), "CPU": float(res.get("CPU", 0.0)), "GPU": float(res.get("GPU", 0.0)),
            "accelerators": sorted(k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:"))}



def sweep_card(plan: Any, best: Mapping[str, Any], model_dir: Path, split: Mapping[str, Sequence[str]],
               parent_id: str, answer: str | None = None) -> dict[str, Any]:
    """:func:`build_card` for a sweep's best trial (``tune.sweep``): the trial's config, its
    timing from MLflow, the test split evaluated here when ``mlflow.card_test_metrics`` is true
    (files in ``<results>/test_eval``), the cluster and this machine."""
    cfg = plan.cfg
    params = search_params(cfg)
    tcfg = trial_config(cfg, {k: best[k] for k in params if best.get(k) is not None},
                        Path(plan.trials_dir) / str(best["trial_id"]))
    if not cfg.mlflow.card_test_metrics:
        test: dict[str, Any] = {"split": "test", "skipped": "mlflow.card_test_metrics is false"}
    elif not split.get("test"):
        test = {"split": "test", "skipped": "the split has no test cases"}
    else:
        test = evaluate_split(model_dir, tcfg, "test", Path(plan.results_dir) / "test_eval")
    t = cfg.tune
    hardware = {"cluster": cluster_facts(),
                "trial_workers": {"workers": int(t.num_workers), "cpus_per_worker": float(t.cpus_per_worker),
                                  "gpus_per_worker": t.gpus_per_worker, "nodes": best.get("worker_nodes") or None},
                "driver": machine_facts()}
    card = build_card(model_dir, tcfg, split, sweep=plan.name, trial=best, test=test,
                      training=trial_timing(client_for(plan.tracking_uri), parent_id, str(best["trial_id"])),
                      hardware=hardware, searched=params)
    if answer:  # the control / confirmation stage's answer (tune.confirm)
        card["search"] = {"answer": answer}
    return card
