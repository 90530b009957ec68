"""Registering a sweep's model and moving ``@champion`` only when it is better.

:func:`register` logs a singr model folder (one checkpoint, or an ensemble) as an MLflow
pyfunc in the sweep's parent run, registers it as a new version of
``mlflow.registered_model`` with version tags (lambda, delta, gamma, architecture, the
validation metric and a digest of the validation split), and then applies the promotion
rule (``mlflow.promote``):

* ``better`` (default): the alias moves to the new version only when its validation score
  beats the current champion's *on the same validation split* (same split digest); a
  champion scored on another split is not comparable, and the alias stays where it is,
  said so in the output;
* ``always``: every sweep moves the alias; ``never``: it never moves (register only).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .plan import SweepPlan
from .tracking import client_for

PROMOTE_RULES = ("better", "always", "never")


def split_digest(split: dict[str, list[str]]) -> str:
    """A short digest of the validation cases: two models compare only on the same ones."""
    return hashlib.sha1(json.dumps(sorted(split["val"])).encode()).hexdigest()[:12]


def _champion(client: Any, name: str, alias: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception:  # noqa: BLE001 - no such alias (or model) yet
        return None


def decide_promotion(rule: str, new_score: float, new_digest: str, champion_tags: dict[str, str] | None,
                     metric: str = "val_Dice_mean", higher_is_better: bool = True,
                     min_gain: float = 1e-4) -> tuple[bool, str]:
    """(move the alias?, why), from the rule, the new score and the champion's version tags.
    "Better" means by more than ``min_gain`` (a rerun of the same setting is not better)."""
    if rule == "never":
        return False, "mlflow.promote is 'never'"
    if rule == "always" or champion_tags is None:
        return True, "no champion yet" if champion_tags is None else "mlflow.promote is 'always'"
    if champion_tags.get("val_split") != new_digest:
        return False, (f"the champion was scored on another validation split ({champion_tags.get('val_split')} vs "
                       f"{new_digest}); not comparable, kept (use mlflow.promote=always to move it anyway)")
    try:
        old = float(champion_tags.get(metric, "nan"))
    except ValueError:
        old = float("nan")
    better = new_score > old + min_gain if higher_is_better else new_score < old - min_gain
    if old != old:  # nan: the champion has no score
        return True, "the champion has no validation score"
    if better:
        return True, f"{metric} {new_score:.5f} beats the champion's {old:.5f}"
    return False, f"{metric} {new_score:.5f} does not beat the champion's {old:.5f}; champion kept"


def register(plan: SweepPlan, parent_id: str, model_dir: Path, tags: dict[str, Any], score: float,
             digest: str, rule: str = "better", description: str | None = None) -> dict[str, Any]:
    """Log ``model_dir`` as a pyfunc, register it, tag it, and apply the promotion rule."""
    import mlflow

    from .pyfunc import SingrModel

    uri, m = plan.tracking_uri, plan.cfg.mlflow
    client = client_for(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name, alias = m.registered_model, m.alias
    for mv in client.search_model_versions(f"name='{name}'"):
        vt = mv.tags or {}
        if vt.get("sweep") == str(tags.get("sweep")) and vt.get("trial_id") == str(tags.get("trial_id")):
            # this sweep's model is registered already (a rerun of a finished sweep): reuse it
            return {"name": name, "version": int(mv.version), "alias": alias, "promoted": False, "reused": True,
                    "why": "registered by an earlier run of this sweep", "model_uri": f"models:/{name}/{mv.version}"}
    champion = _champion(client, name, alias)
    with mlflow.start_run(run_id=parent_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=SingrModel(), artifacts={"model": str(model_dir)},
                                       pip_requirements=["torch", "monai", "safetensors"])
    mv = mlflow.register_model(info.model_uri, name)
    all_tags = {**{k: str(v) for k, v in tags.items()}, "val_split": digest, "val_Dice_mean": f"{score:.6f}"}
    for k, v in all_tags.items():
        client.set_model_version_tag(name, mv.version, k, v)
    if description:
        client.update_model_version(name, mv.version, description=description)
    promote, why = decide_promotion(rule, score, digest, dict(champion.tags or {}) if champion else None)
    if promote:
        client.set_registered_model_alias(name, alias, mv.version)
    return {"name": name, "version": int(mv.version), "alias": alias, "promoted": promote, "why": why,
            "champion_version": int(mv.version) if promote else (int(champion.version) if champion else None),
            "model_uri": f"models:/{name}/{mv.version}"}
