"""Registering a sweep's model, with its card and exports, and moving ``@champion`` only when
it is better.

:func:`register` logs a singr model folder (one checkpoint, or an ensemble) as an MLflow
pyfunc (:mod:`tune.hub.pyfunc`) in the sweep's parent run, registers it as a new version of
``mlflow.registered_model`` with version tags (lambda, delta, gamma, architecture, the
validation metric, a digest of the validation split, the export formats and their largest
difference from PyTorch), and then applies the promotion rule (``mlflow.promote``):

* ``better``: the alias moves to the new version only when its validation score
  beats the current champion's *on the same validation split* (same split digest) and by the
  same objective (``tune.metric``, version tag ``objective``; HD95 metrics: lower is better);
  a champion scored on another split or by another metric is not comparable, and the alias
  stays where it is, said so in the output;
* ``significant`` (default): as ``better``, but the new model and the champion segment the same
  validation cases and the alias moves only when the paired gain's 95 % bootstrap interval is
  above 0 (:mod:`tune.hub.evidence`); the version's tags (``promotion``, ``promotion_gain``,
  ``promotion_ci``) and its card say the gain, the interval and why it moved or not;
* ``always``: every sweep moves the alias; ``never``: it never moves (register only).

Logged with the model, beside its checkpoint(s) (artifact ``model``):

* ``export/``: each member as ONNX and/or TorchScript (``mlflow.export``; :func:`export_members`,
  :mod:`singr.engine.export`) with its JSON sidecar, each checked against PyTorch on a crop of a
  validation case (:mod:`singr.engine.export_check`; max abs difference, tolerance 1e-4);
* the model card (:mod:`tune.hub.card`): ``card.json`` in the model folder (the endpoint's
  ``/v1/model`` returns it), rendered as Markdown into the version's description;
* the pyfunc's signature, a small input example and requirements that resolve outside this
  environment: the project's wheel (artifact ``wheel``) and pinned torch/MONAI/safetensors/
  numpy/nibabel (:mod:`tune.hub.pyfunc`).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .card import card_markdown, write_card
from .store import client_for

EXPORT_DIR = "export"


def _champion(client: Any, name: str, alias: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception:  # noqa: BLE001 - no such alias (or model) yet
        return None


def comparable(champion_tags: dict[str, str], metric: str, digest: str) -> bool:
    """Whether the champion was scored by the same objective on the same validation split."""
    return champion_tags.get("objective", "val_Dice_mean") == metric and champion_tags.get("val_split") == digest


def decide_promotion(rule: str, new_score: float, new_digest: str, champion_tags: dict[str, str] | None,
                     metric: str = "val_Dice_mean", higher_is_better: bool = True,
                     min_gain: float = 1e-4, evidence: dict[str, Any] | None = None) -> tuple[bool, str]:
    """(move the alias?, why), from the rule, the new score and the champion's version tags.
    ``better``: by more than ``min_gain`` (a rerun of the same setting is not better);
    ``significant``: the paired interval of :mod:`tune.hub.evidence` (``evidence``) is above 0."""
    if rule == "never":
        return False, "mlflow.promote is 'never'"
    if rule == "always" or champion_tags is None:
        return True, "no champion yet" if champion_tags is None else "mlflow.promote is 'always'"
    if champion_tags.get("objective", "val_Dice_mean") != metric:
        return False, (f"the champion was chosen by {champion_tags.get('objective', 'val_Dice_mean')}, this model by "
                       f"{metric}; not comparable, kept (use mlflow.promote=always to move it anyway)")
    if champion_tags.get("val_split") != new_digest:
        return False, (f"the champion was scored on another validation split ({champion_tags.get('val_split')} vs "
                       f"{new_digest}); not comparable, kept (use mlflow.promote=always to move it anyway)")
    if rule == "significant":
        from .evidence import describe

        if not evidence:
            return False, "no paired comparison with the champion was made; champion kept"
        if "error" in evidence:
            return False, f"could not compare with the champion ({evidence['error']}); champion kept"
        return bool(evidence["significant"]), describe(evidence) + ("" if evidence["significant"] else
                                                                     "; champion kept")
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


def check_sample(cfg: Any, case_ids: Sequence[str], size: Sequence[int], channels: int) -> tuple[np.ndarray, str]:
    """(sample (1, C, *size), what it is) for checking an export: a crop of the first of
    ``case_ids`` that can be read (its prepared, normalised copy in the cache, as training used
    it), else a random normalised input (the data may have moved)."""
    from singr.engine.export_check import random_sample
    from singr.engine.pipeline import discover, run_paths
    from singr.geometry import crop_around_brain
    from singr.preprocess import prepare_case

    shape = "x".join(str(int(v)) for v in size)
    try:
        cases = {c.case_id: c for c in discover(cfg)}
        spacing = tuple(cfg.data.spacing) if cfg.data.spacing else None
        for cid in case_ids:
            if cid in cases:
                img = prepare_case(cases[cid], run_paths(cfg).cache_dir, spacing).image
                if img.shape[0] == int(channels):
                    return crop_around_brain(img, size)[None], f"a {shape} crop of {cid}"
    except Exception:  # noqa: BLE001 - checked on a random input instead, and the card says so
        pass
    return random_sample(int(channels), size), f"a random normalised {shape} input"


def export_members(model_dir: Path, formats: Sequence[str], out_dir: Path,
                   sample: Callable[[Sequence[int], int], tuple[np.ndarray, str]]) -> list[dict[str, Any]]:
    """Export every member of ``model_dir`` in each of ``formats`` into ``out_dir`` (with sidecars)
    and check each file against PyTorch on ``sample(window, channels)``. One record per file:
    format, file (path in the logged model), sidecar, bytes, seconds, max_abs_diff, checked_on,
    ok (diff <= tolerance); a format that fails to export is a record with ``error``."""
    from singr.engine.bundle import read_bundle
    from singr.engine.export import export_model
    from singr.engine.export_check import CHECK_TOLERANCE, check_export, read_sidecar, sidecar_path

    members, _ = read_bundle(model_dir)
    out: list[dict[str, Any]] = []
    for fmt in formats:
        t0 = time.perf_counter()
        try:
            files = export_model(members, fmt, out_dir)
        except Exception as e:  # noqa: BLE001 - the card says which export failed; registration goes on
            out.append({"format": fmt, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
            continue
        spent = time.perf_counter() - t0
        for src, f in zip(members, files):
            side = read_sidecar(f)
            size = [int(v) for v in side["input"]["exported_at"][2:]]
            x, what = sample(size, int(side["input"]["channels"]))
            t1 = time.perf_counter()
            rec: dict[str, Any] = {"format": fmt, "member": src.name, "file": f"artifacts/{EXPORT_DIR}/{f.name}",
                                   "sidecar": f"artifacts/{EXPORT_DIR}/{sidecar_path(f).name}",
                                   "bytes": f.stat().st_size, "input_shape": side["input"]["shape"],
                                   "method": side["export"].get("method"), "tolerance": CHECK_TOLERANCE,
                                   "checked_on": what}
            try:
                diff: float | None = check_export(f, fmt, src, x)
            except Exception as e:  # noqa: BLE001
                diff, rec["error"] = None, f"check failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            rec.update({"max_abs_diff": diff, "ok": diff is not None and diff <= CHECK_TOLERANCE,
                        "seconds": round(spent / len(files) + time.perf_counter() - t1, 2)})
            out.append(rec)
    return out


def _in_channels(model_dir: Path) -> tuple[int, list[str]]:
    from singr.engine.bundle import read_bundle
    from singr.engine.checkpoint import load_checkpoint

    members, _ = read_bundle(model_dir)
    meta = load_checkpoint(members[0], map_location="cpu").meta
    return meta.in_channels, list(meta.modalities)


def _val_cases(plan: Any) -> list[str]:
    try:
        return list(json.loads(Path(plan.split_file).read_text()).get("val") or [])
    except (OSError, ValueError, AttributeError):
        return []


def register(plan: Any, parent_id: str, model_dir: Path, tags: dict[str, Any], score: float,
             digest: str, rule: str = "better", description: str | None = None,
             card: Callable[[], dict[str, Any]] | None = None, exports: Sequence[str] = (),
             metric: str = "val_Dice_mean", mode: str = "max") -> dict[str, Any]:
    """Log ``model_dir`` as a pyfunc (with ``exports`` and the card), register it, tag it, and apply
    the promotion rule. ``card``: builds the card's facts (:func:`tune.champion.sweep_card`); called
    only when a new version is logged (a rerun of a finished sweep reuses its version). The card,
    completed with the exports and the pyfunc's facts, goes to ``model_dir/card.json`` (logged
    with the model) and, as Markdown, to the version's description (else ``description``).
    ``score`` is the model's validation ``metric`` (``mode`` "max", or "min" for HD95; tags
    ``<metric>`` and ``objective``); a rerun matches its version by the ``sweep``, ``trial_id``
    and ``kind`` tags (kind: single, folds or top_k; :mod:`tune.ensemble`).
    Returns name, version, alias, promoted, why, model_uri, the exports and the seconds spent."""
    import mlflow

    from .pyfunc import (
        SingrModel,
        build_wheel,
        fallback_requirements,
        input_example,
        package_dirs,
        pip_requirements,
        signature,
    )

    uri, m = plan.tracking_uri, plan.cfg.mlflow
    client = client_for(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name, alias = m.registered_model, m.alias
    for mv in client.search_model_versions(f"name='{name}'"):
        vt = mv.tags or {}
        if vt.get("sweep") == str(tags.get("sweep")) and vt.get("trial_id") == str(tags.get("trial_id")) and \
                vt.get("kind", "single") == str(tags.get("kind", "single")):
            # this sweep's model is registered already (a rerun of a finished sweep): reuse it
            return {"name": name, "version": int(mv.version), "alias": alias, "promoted": False, "reused": True,
                    "why": "registered by an earlier run of this sweep", "model_uri": f"models:/{name}/{mv.version}"}
    champion = _champion(client, name, alias)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    champ_tags = dict(champion.tags or {}) if champion else None
    evidence: dict[str, Any] | None = None
    if rule == "significant" and champion is not None and champ_tags is not None and \
            comparable(champ_tags, metric, digest):
        from .evidence import compare_with_champion

        t0 = time.perf_counter()
        try:
            evidence = compare_with_champion(model_dir, champion, plan.cfg, uri, metric, mode == "max")
        except Exception as e:  # noqa: BLE001 - no evidence: the champion stays, and the output says why
            evidence = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        seconds["evidence"] = round(time.perf_counter() - t0, 2)
    promote, why = decide_promotion(rule, score, digest, champ_tags, metric=metric, higher_is_better=mode == "max",
                                    evidence=evidence)
    with tempfile.TemporaryDirectory(prefix="singr-register-") as tmp:
        stage = Path(tmp)
        artifacts = {"model": str(model_dir)}
        t0 = time.perf_counter()
        val_ids = _val_cases(plan)
        ex = export_members(model_dir, list(exports), stage / EXPORT_DIR,
                            lambda size, c: check_sample(plan.cfg, val_ids, size, c)) if exports else []
        if any("file" in e for e in ex):
            artifacts[EXPORT_DIR] = str(stage / EXPORT_DIR)
        seconds["export"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        wheel, how = build_wheel(stage / "wheel")
        seconds["wheel"] = round(time.perf_counter() - t0, 2)
        code_paths: list[str] | None = None
        if wheel is not None:
            artifacts["wheel"] = str(wheel)
            reqs = pip_requirements(wheel)
        else:
            reqs = fallback_requirements()
            code_paths = [str(p) for p in package_dirs()]
        channels, modalities = _in_channels(model_dir)
        facts: dict[str, Any] | None = None
        if card is not None:
            t0 = time.perf_counter()
            facts = card()
            facts["exports"] = ex
            facts["promotion"] = {"rule": rule, "moved": promote, "why": why, "evidence": evidence}
            facts["pyfunc"] = {
                "input": f"one un-normalised float32 image ({channels}, D, H, W), channels "
                         f"{', '.join(modalities) or 'in training order'}",
                "output": "its uint8 label map (D, H, W) in the training data's label convention",
                "requirements": reqs, "wheel": wheel.name if wheel is not None else None, "wheel_how": how,
                "code_paths": [Path(p).name for p in code_paths or []]}
            write_card(model_dir, facts)
            seconds["card"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        with mlflow.start_run(run_id=parent_id):
            info = mlflow.pyfunc.log_model(name="model", python_model=SingrModel(), artifacts=artifacts,
                                           pip_requirements=reqs, code_paths=code_paths,
                                           signature=signature(channels), input_example=input_example(channels))
        seconds["log_model"] = round(time.perf_counter() - t0, 2)
    mv = mlflow.register_model(info.model_uri, name)
    all_tags = {**{k: str(v) for k, v in tags.items()}, "val_split": digest, metric: f"{score:.6f}",
                "objective": metric}
    done = [e for e in ex if e.get("max_abs_diff") is not None]
    if exports:
        all_tags["export"] = ",".join(exports)
        if done:
            all_tags["export_max_abs_diff"] = f"{max(e['max_abs_diff'] for e in done):.3g}"
    for k, v in all_tags.items():
        client.set_model_version_tag(name, mv.version, k, v)
    if facts is not None:
        facts["pyfunc"]["model_uri"] = f"models:/{name}/{mv.version}"
        description = card_markdown(facts, name, mv.version)
    if description:
        client.update_model_version(name, mv.version, description=description)
    client.set_model_version_tag(name, mv.version, "promotion", why[:4000])
    if evidence and "gain" in evidence:
        client.set_model_version_tag(name, mv.version, "promotion_gain", f"{evidence['gain']:.5f}")
        client.set_model_version_tag(name, mv.version, "promotion_ci", json.dumps([round(x, 5) for x in
                                                                                    evidence["ci"]]))
    if promote:
        client.set_registered_model_alias(name, alias, mv.version)
    seconds["total"] = round(time.perf_counter() - t_all, 2)
    return {"name": name, "version": int(mv.version), "alias": alias, "promoted": promote, "why": why,
            "evidence": evidence,
            "champion_version": int(mv.version) if promote else (int(champion.version) if champion else None),
            "model_uri": f"models:/{name}/{mv.version}", "wheel": wheel.name if wheel is not None else how,
            "exports": [{k: e.get(k) for k in ("format", "file", "bytes", "max_abs_diff", "ok", "seconds", "error")}
                        for e in ex], "seconds": seconds}
