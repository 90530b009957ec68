"""The model card of a registered version: what it is, what it was trained and scored on, how
to use it, and what not to use it for.

:func:`build_card` gathers the facts at registration (:func:`tune.champion.sweep_card` for a
sweep's best trial, in the sweep driver after the trials):

* ``data``: root, layout, label convention, split sizes (train / val / test) and the
  validation split's digest (two models compare only on the same one);
* ``model``: architecture, its settings, parameter count, members, channels and modalities,
  regions, loss, lambda / delta / gamma (and lr when the sweep searched it), the checkpoint's
  sha256 and epoch;
* ``validation``: the best checkpoint's validation metrics per region (Dice, HD95 in mm,
  IoU; lesion-wise Dice / HD95 where validation computed them, ``train.select_metric``);
* ``test``: the model evaluated on the test split in the driver with
  :func:`singr.engine.evaluate.evaluate` (mean and standard error per region), when
  ``mlflow.card_test_metrics`` is true; else why not;
* ``training``: sweep, trial, epochs, the trial's training seconds (its ``epoch_seconds``
  history in MLflow) and the sweep's wall time so far;
* ``hardware``: the Ray cluster (nodes, CPUs, GPUs, accelerator types), each trial's
  workers, the driver machine (CPU model, cores, GPUs) and the versions of Python, singr,
  torch, MONAI, Ray and MLflow;
* ``intended_use`` and ``limitations``; ``config``: the trial's whole resolved config;
* ``exports`` and ``pyfunc``: added by :func:`tune.hub.publish.register` (the ONNX/TorchScript
  files logged with the model and their difference from PyTorch; the pyfunc's input,
  output and requirements).

:func:`card_markdown` renders a card as the registered version's description (the MLflow UI
shows it), at most :data:`MAX_DESCRIPTION` characters (MLflow's column for it), dropping the
least important sections first. :func:`write_card` stores the JSON as ``card.json`` in the
model folder, so it travels with the model: the endpoint's ``/v1/model`` returns it
(:func:`read_card`). Nothing here imports Ray or MLflow at import time.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from singr.io import write_json

__all__ = ["CARD_FILE", "CARD_VERSION", "MAX_DESCRIPTION", "INTENDED_USE", "region_metrics", "summary_metrics",
           "split_digest", "machine_facts", "evaluate_split", "trial_timing", "build_card",
           "card_markdown", "write_card", "read_card"]

CARD_FILE = "card.json"
CARD_VERSION = 1
MAX_DESCRIPTION = 5000
"""MLflow keeps a model version's description in a 5000-character column."""
METRICS = ("Dice", "HD95", "IoU", "LesionDice", "LesionHD95")
INTENDED_USE = ("Research on brain-tumour segmentation from multi-modal MRI (method development, comparison, "
                "teaching). Not for clinical decisions: it is not a medical device, has not been validated "
                "clinically, and its output must not guide diagnosis or treatment.")
_KEY_SETTINGS = ("model.name", "model.features", "loss.name", "train.epochs", "train.iters_per_epoch",
                 "train.batch_size", "train.patch_size", "train.lr", "train.select_metric", "sing.iterations",
                 "sing.engine", "infer.roi_size", "infer.overlap", "infer.tta", "infer.postprocess", "data.spacing")
_METRIC_KEY = re.compile(r"^(" + "|".join(sorted(METRICS, key=len, reverse=True)) + r")_(.+)$")


# --------------------------------------------------------------------------- metrics
def split_digest(split: Mapping[str, Sequence[str]]) -> str:
    """A short digest of the validation cases: two models compare only on the same ones."""
    return hashlib.sha1(json.dumps(sorted(split["val"])).encode()).hexdigest()[:12]


def region_metrics(metrics: Mapping[str, Any], prefix: str = "val_") -> dict[str, dict[str, float]]:
    """``{"val_Dice_TC": 0.8, "val_HD95_mean": 3.1, ...}`` -> ``{"TC": {"Dice": 0.8}, ..., "mean": {...}}``:
    the per-region metrics under ``prefix`` (regions in first-seen order, ``mean`` last; non-finite
    and non-numeric values dropped)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if not key.startswith(prefix) or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        m = _METRIC_KEY.match(key[len(prefix):])
        if m and math.isfinite(float(value)):
            out.setdefault(m.group(2), {})[m.group(1)] = float(value)
    if "mean" in out:
        out["mean"] = out.pop("mean")
    return out


def summary_metrics(summary: Mapping[str, Mapping[str, float]]) -> tuple[dict[str, dict[str, float]],
                                                                         dict[str, dict[str, float]]]:
    """An evaluation summary (``{"Dice_TC": {"mean", "se", "n", ...}}``, :func:`singr.metrics.summarize`)
    -> (means per region, standard errors per region), shaped like :func:`region_metrics`."""
    means = region_metrics({k: v.get("mean") for k, v in summary.items()}, prefix="")
    ses = region_metrics({k: v.get("se") for k, v in summary.items()}, prefix="")
    return means, ses


# --------------------------------------------------------------------------- machine and cluster
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    """This machine (the sweep driver): CPU model and cores, GPUs, OS, and the versions of
    Python and the libraries the model depends on (read from package metadata: nothing imported
    but torch, for the GPU names)."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    return {"cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "gpus": gpus,
            "platform": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "versions": {"python": platform.python_version(), "singr": _version("singr"),
                         "torch": torch.__version__, "monai": _version("monai"), "ray": _version("ray"),
                         "mlflow": _version("mlflow"), "onnxruntime": _version("onnxruntime")}}


# --------------------------------------------------------------------------- test split and timing
def evaluate_split(model_dir: Path, cfg: Any, split: str, out_dir: Path) -> dict[str, Any]:
    """The model in ``model_dir`` evaluated on ``split`` of ``cfg``'s data set (on this machine's
    CPU, or its GPU; files in ``out_dir``): ``{"split", "n_cases", "regions", "se", "seconds"}``; ``{"split",
    "error"}`` when it cannot be done (no labels, an empty split, ...): the card says so instead."""
    from singr.engine.bundle import load_predictor
    from singr.engine.evaluate import evaluate

    t0 = time.perf_counter()
    try:
        res = evaluate(load_predictor(model_dir, "auto"), cfg, split=split, out_dir=out_dir, progress=False,
                       overlays=0)
    except Exception as e:  # noqa: BLE001 - the card reports it; registration goes on
        return {"split": split, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    means, ses = summary_metrics(res["summary"])
    return {"split": split, "n_cases": int(res["n_cases"]), "regions": means, "se": ses,
            "seconds": round(time.perf_counter() - t0, 2)}


def trial_timing(client: Any, parent_id: str, trial_id: str) -> dict[str, Any]:
    """Seconds from MLflow: the trial's training (the sum of its ``epoch_seconds`` history: training
    and validation epochs, without worker start-up), the trial run's wall time, and the sweep's
    wall time so far (its parent run's start to now). Missing pieces are left out."""
    out: dict[str, Any] = {}
    try:
        parent = client.get_run(parent_id)
        out["sweep_seconds"] = round(time.time() - parent.info.start_time / 1000.0, 1)
        found = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}' and "
                                   f"tags.trial_id = '{trial_id}'", max_results=1)
        if found:
            run = found[0]
            if run.info.end_time:
                out["trial_wall_seconds"] = round((run.info.end_time - run.info.start_time) / 1000.0, 1)
            hist = client.get_metric_history(run.info.run_id, "epoch_seconds")
            per_epoch = {int(m.step): float(m.value) for m in hist}  # a resumed epoch counts once
            if per_epoch:
                out["trial_train_seconds"] = round(sum(per_epoch.values()), 1)
    except Exception as e:  # noqa: BLE001 - the card says what it could not read
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return out


# --------------------------------------------------------------------------- the card
def _dotted(d: Mapping[str, Any], key: str) -> Any:
    cur: Any = d
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _limitations(data: Mapping[str, Any], val: Mapping[str, Any], test: Mapping[str, Any],
                 model: Mapping[str, Any]) -> list[str]:
    n = data.get("split") or {}
    mods = ", ".join(model.get("modalities") or []) or "as in training"
    out = [f"Trained on {_cases(n.get('train', '?'))} and validated on {_cases(n.get('val', '?'))} of one data set "
           f"({data.get('root')}, layout {data.get('layout')}); other scanners, protocols, populations and "
           "tumour types are untested.",
           "The validation split picked both the hyperparameters and the checkpoint: its metrics are optimistic; "
           "the test split's are the unbiased estimate" + ("." if test.get("regions") else
                                                            ", and were not computed for this card."),
           f"Expects the {model.get('in_channels')} modalities ({mods}) co-registered, skull-stripped and at "
           "the training spacing, in the NIfTI voxel order "
           "(no reorientation, no resampling); other inputs give meaningless labels without an error.",
           "The signed maps (tanh of the output) near 0 mark uncertain borders; they are not calibrated "
           "probabilities."]
    small = [k for k in ("val", "test") if isinstance(n.get(k), int) and n[k] < 20]
    if small:
        out.append(f"Few cases in {' and '.join(small)} ({', '.join(str(n[k]) for k in small)}): the metrics "
                   "carry a wide uncertainty.")
    if int(model.get("members") or 1) > 1:
        out.append("An ensemble: the validation metrics are those of its first member's checkpoint.")
    return out


def _or(value: Any, default: Any) -> Any:
    """``value``, or ``default`` where the checkpoint's metadata lacks it (None)."""
    return default if value is None else value


def build_card(model_dir: str | Path, cfg: Any, split: Mapping[str, Sequence[str]], *, sweep: str | None = None,
               trial: Mapping[str, Any] | None = None, test: Mapping[str, Any] | None = None,
               training: Mapping[str, Any] | None = None, hardware: Mapping[str, Any] | None = None,
               searched: Sequence[str] = ()) -> dict[str, Any]:
    """The card's facts (module docstring) for the singr model in ``model_dir``, trained with
    ``cfg`` (the trial's resolved config) on ``split``. ``trial``: the sweep's row of the trial
    (trial id, epochs run, stopped early); ``searched``: the hyperparameters the sweep searched."""
    from singr.engine.bundle import read_bundle
    from singr.engine.checkpoint import load_checkpoint
    from singr.engine.export import file_sha256

    members, rec = read_bundle(model_dir)
    ckpt = load_checkpoint(members[0], map_location="cpu")
    meta, conf = ckpt.meta, cfg.to_dict()
    n_params = sum(int(t.numel()) for t in ckpt.model_state.values())
    trial = dict(trial or {})
    layout = conf["data"]["layout"]
    if layout == "auto":
        try:
            from singr.data.readers.registry import detect_layout

            layout = detect_layout(conf["data"]["root"])
        except Exception:  # noqa: BLE001 - the data may be elsewhere now
            layout = "auto (not detected)"
    sizes = {k: len(v) for k, v in split.items()  # the case lists (not the ratios, nor the folds)
             if isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v)}
    data = {"root": conf["data"]["root"], "layout": layout,
            "label_convention": meta.label_convention or conf["data"]["label_convention"],
            "cases": sum(sizes.values()), "split": sizes, "split_ratios": conf["data"]["split_ratios"],
            "val_split_digest": split_digest({"val": list(split["val"])}) if "val" in split else None,
            "spacing_mm": list(meta.spacing) if meta.spacing is not None else None}
    architecture = meta.model or conf["model"]["name"]
    model = {"architecture": architecture,
             "settings": {k: conf["model"][k] for k in ("features", "dropout") if k in conf["model"]}
             if architecture in ("unet3d", "unetpp") else
             {k: v for k, v in conf["model"].items() if k != "name"},
             "parameters": n_params, "members": len(members), "in_channels": meta.in_channels,
             "modalities": list(meta.modalities), "regions": list(meta.region_names),
             "loss": meta.loss or conf["loss"]["name"],
             "lam": _or(meta.lam, conf["sing"]["lam"]), "delta": _or(meta.delta, conf["sing"]["delta"]),
             "gamma": _or(meta.gamma, conf["loss"]["gamma"]),
             "lr": conf["train"]["lr"], "searched": list(searched),
             "checkpoint": {"file": members[0].name, "sha256": file_sha256(members[0]), "epoch": int(ckpt.epoch) + 1,
                            "best_epoch": ckpt.metrics.get("best_epoch")},
             "postprocess": bool(rec.get("postprocess"))}
    val = {"split": "val", "n_cases": sizes.get("val"), "epoch": ckpt.metrics.get("best_epoch"),
           "select_metric": conf["train"]["select_metric"], "regions": region_metrics(ckpt.metrics, "val_")}
    test_d = dict(test) if test is not None else {"split": "test", "skipped": "not requested"}
    epochs_run = trial.get("epochs_run")
    train_d = {"sweep": sweep, "trial_id": trial.get("trial_id"), "epochs": conf["train"]["epochs"],
               "epochs_run": epochs_run, "stopped_early": trial.get("stopped_early"),
               "iters_per_epoch": conf["train"]["iters_per_epoch"], "batch_size": conf["train"]["batch_size"],
               "patch_size": conf["train"]["patch_size"], **dict(training or {})}
    card = {"singr_card": CARD_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": data, "model": model, "validation": val, "test": test_d, "training": train_d,
            "hardware": dict(hardware or {}), "intended_use": INTENDED_USE,
            "limitations": _limitations(data, val, test_d, model), "config": conf}
    return card


# --------------------------------------------------------------------------- Markdown
def _cases(n: Any) -> str:
    """``"1 case"``, ``"5 cases"``."""
    return f"{n} case" if n == 1 else f"{n} cases"


def _num(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return "n/a" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else "n/a"
    return str(v)


def _seconds(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "n/a"
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")


def _metric_table(card: Mapping[str, Any]) -> list[str]:
    val = (card.get("validation") or {}).get("regions") or {}
    test = card.get("test") or {}
    treg, tse = test.get("regions") or {}, test.get("se") or {}
    # IoU follows from Dice: it is in card.json only
    vm = [m for m in METRICS if m != "IoU" and any(m in r for r in val.values())]
    tm = [m for m in METRICS if m != "IoU" and any(m in r for r in treg.values())]
    regions = list(dict.fromkeys([*val, *treg]))
    if not regions:
        return ["No validation or test metrics were recorded."]
    unit = {"HD95": " (mm)", "LesionHD95": " (mm)"}
    head = [f"val {m}{unit.get(m, '')}" for m in vm] + [f"test {m}{unit.get(m, '')}" for m in tm]
    lines = ["| region | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for r in regions:
        cells = [_num((val.get(r) or {}).get(m)) for m in vm]
        for m in tm:
            v, se = (treg.get(r) or {}).get(m), (tse.get(r) or {}).get(m)
            cells.append(_num(v) + (f" ± {_num(se, 2)}" if isinstance(se, float) and se > 0 else ""))
        lines.append(f"| {'**mean**' if r == 'mean' else r} | " + " | ".join(cells) + " |")
    n_val = (card.get("validation") or {}).get("n_cases")
    note = f"Validation: {_cases(n_val)}, best epoch {(card.get('validation') or {}).get('epoch')}"
    if treg:
        n_test = test.get("n_cases")
        note += (f"; test: {_cases(n_test)} ({'no standard error' if n_test == 1 else 'mean ± standard error'}), "
                 "evaluated at registration")
    elif test.get("error"):
        note += f"; test: not evaluated ({test['error']})"
    elif test.get("skipped"):
        note += f"; test: not evaluated ({test['skipped']})"
    if (card.get("model") or {}).get("postprocess"):
        note += ("; validation: the checkpoint's raw maps, test: with the model's post-processing rules "
                 "(fitted on the validation split)")
    return [*lines, "", note + ". Empty-case convention (BraTS): both empty -> Dice 1, HD95 0."]


def _hardware_line(hw: Mapping[str, Any]) -> str:
    parts = []
    cl = hw.get("cluster")
    if cl:
        acc = f" ({', '.join(cl['accelerators'])})" if cl.get("accelerators") else ""
        parts.append(f"Ray cluster of {cl.get('nodes')} node(s), {_num(cl.get('CPU'))} CPUs, "
                     f"{_num(cl.get('GPU'))} GPUs{acc}")
    tw = hw.get("trial_workers")
    if tw:
        gpus = tw.get("gpus_per_worker")
        parts.append(f"each trial {tw.get('workers')} worker(s) x {_num(tw.get('cpus_per_worker'))} CPU"
                     + (f" + {_num(gpus)} GPU" if gpus else ""))
    d = hw.get("driver")
    if d:
        gpus = ", ".join(d.get("gpus") or []) or "no GPU"
        v = d.get("versions") or {}
        parts.append(f"driver: {d.get('cpu_model')} ({d.get('cpu_count')} cores), {gpus}; torch {v.get('torch')}, "
                     f"MONAI {v.get('monai')}, Ray {v.get('ray')}, MLflow {v.get('mlflow')}")
    return "; ".join(parts) or "not recorded"


def _sections(card: Mapping[str, Any], name: str | None, version: Any) -> list[tuple[str, list[str]]]:
    """(section name, lines), most important first; :func:`card_markdown` drops from the end."""
    m, d, t = card.get("model") or {}, card.get("data") or {}, card.get("training") or {}
    title = f"{name} version {version}" if name and version is not None else (name or "singr model")
    split = d.get("split") or {}
    settings = ", ".join(f"{k} {v}" for k, v in (m.get("settings") or {}).items())
    hyper = f"lambda {_num(m.get('lam'))}, delta {_num(m.get('delta'))}, gamma {_num(m.get('gamma'))}"
    if "lr" in (m.get("searched") or []):
        hyper += f", lr {_num(m.get('lr'))}"
    trained = (f"sweep `{t.get('sweep')}`, trial `{t.get('trial_id')}`: {t.get('epochs_run')} of {t.get('epochs')} "
               f"epochs{' (stopped early by ASHA)' if t.get('stopped_early') else ''}, training "
               f"{_seconds(t.get('trial_train_seconds'))} (trial wall time {_seconds(t.get('trial_wall_seconds'))}); "
               f"sweep wall time {_seconds(t.get('sweep_seconds'))}")
    head = [f"# {title}: SiNGR brain-tumour segmentation", "",
            f"**Intended use.** {card.get('intended_use', INTENDED_USE)}", "",
            "| | |", "|---|---|",
            f"| architecture | {m.get('architecture')} ({settings}); {_num(m.get('parameters'))} parameters; "
            f"{m.get('members')} member(s) |",
            f"| SiNGR | {hyper}; loss {m.get('loss')} |",
            f"| input | {m.get('in_channels')} channels ({', '.join(m.get('modalities') or [])}), z-scored per "
            "channel over the brain |",
            f"| output | regions {', '.join(m.get('regions') or [])}; labels {d.get('label_convention')}"
            f"{'; post-processing rules fitted on the validation split' if m.get('postprocess') else ''} |",
            f"| data | `{d.get('root')}` ({d.get('layout')}): {d.get('cases')} cases, train {split.get('train')} / "
            f"val {split.get('val')} / test {split.get('test')} (val digest {d.get('val_split_digest')}) |",
            f"| training | {trained} |",
            f"| hardware | {_hardware_line(card.get('hardware') or {})} |"]
    out: list[tuple[str, list[str]]] = [("head", head), ("metrics", ["", "## Metrics per region", "",
                                                                     *_metric_table(card)])]
    answer = (card.get("search") or {}).get("answer")
    if answer:
        out.insert(1, ("search", ["", f"**Search answer** (`tune.control`, `tune.confirm`): {answer}."]))
    promo = card.get("promotion") or {}
    if promo:
        out.insert(1, ("promotion", ["", f"**Promotion** (`mlflow.promote: {promo.get('rule')}`): "
                                     f"{'moved the alias here' if promo.get('moved') else 'the alias stayed'}: "
                                     f"{promo.get('why')}."]))
    ex = card.get("exports") or []
    if ex:
        lines = ["", "## Exports (artifacts of the logged model, `export/`)", "",
                 "| file | format | MB | max abs diff vs PyTorch | checked on |", "|---|---|---|---|---|"]
        for e in ex:
            if e.get("error"):
                lines.append(f"| - | {e.get('format')} | - | failed: {e['error'][:120]} | - |")
                continue
            ok = "" if e.get("ok") else " (above the tolerance)"
            lines.append(f"| `{e.get('file')}` | {e.get('format')} | {_num((e.get('bytes') or 0) / 1e6, 3)} | "
                         f"{_num(e.get('max_abs_diff'), 3)}{ok} | {e.get('checked_on')} |")
        lines += ["", "Each file has a JSON sidecar (`<file>.json`: modalities, normalisation, regions, window)."]
        out.append(("exports", lines))
    py = card.get("pyfunc") or {}
    if py:
        out.append(("use", ["", "## Use", "", "```python", "import mlflow, numpy as np",
                            f"model = mlflow.pyfunc.load_model(\"{py.get('model_uri', 'models:/<name>/<version>')}\")",
                            "labels = model.predict(image)", "```", "",
                            f"`image`: {py.get('input', 'float32 (C, D, H, W)')}; returns "
                            f"{py.get('output', 'the label map')}. Requirements: "
                            f"{', '.join(f'`{r}`' for r in py.get('requirements') or [])}."]))
    out.append(("limitations", ["", "## Limitations", "", *[f"- {x}" for x in card.get("limitations") or []]]))
    conf = card.get("config") or {}
    rows = [f"| {k} | `{json.dumps(_dotted(conf, k))}` |" for k in _KEY_SETTINGS if _dotted(conf, k) is not None]
    out.append(("config", ["", "## Config (key settings; the whole resolved config is `config` in `card.json`)", "",
                           "| key | value |", "|---|---|", *rows]))
    return out


def card_markdown(card: Mapping[str, Any], name: str | None = None, version: Any = None,
                  limit: int = MAX_DESCRIPTION) -> str:
    """The card as Markdown of at most ``limit`` characters: sections are dropped from the least
    important (the config table, then limitations, ...) until it fits, and it says so."""
    sections = _sections(card, name, version)
    keep = len(sections)
    while True:
        text = "\n".join(line for _, lines in sections[:keep] for line in lines)
        dropped = [s for s, _ in sections[keep:]]
        if dropped:
            text += f"\n\n_Not shown (length limit): {', '.join(dropped)}; see `card.json` in the model._"
        if len(text) <= limit or keep <= 1:
            return text[:limit]
        keep -= 1


# --------------------------------------------------------------------------- files
def write_card(folder: str | Path, card: Mapping[str, Any]) -> Path:
    """``<folder>/card.json`` (atomically)."""
    return write_json(Path(folder) / CARD_FILE, dict(card), indent=1, default=_plain)


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def read_card(model: str | Path) -> dict[str, Any] | None:
    """The card stored in a model folder (``card.json``); None for a checkpoint file, a folder
    without one (models registered before cards) or a file that cannot be read."""
    p = Path(model)
    if not p.is_dir():
        return None
    try:
        data = json.loads((p / CARD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
