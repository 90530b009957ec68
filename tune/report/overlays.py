"""Case pictures for the report: the models' predictions on test cases, and one case at every axis level.

:func:`overlay_rows` downloads the baseline's and the highlight's best checkpoint (lowest seed)
and segments the first cases of the evaluation split (drawn by :func:`singr.viz.comparison_png`);
:func:`axis_picture` draws one case at every level of ``experiment.axis`` with the highlight's
signed map. Both read the data the sweep's config names.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from singr.errors import SingrInputError

from ..config import ServiceConfig
from ..grid import Variant, variant_config
from .data import GridRun


def _checkpoint(client: Any, runs: Sequence[GridRun], variant: str, d: Path) -> tuple[Path, int] | None:
    from singr.engine.trainer import BEST

    for r in sorted((r for r in runs if r.variant == variant), key=lambda r: r.seed):
        try:
            return Path(client.download_artifacts(r.run_id, f"checkpoint/{BEST}", str(d / variant))), r.seed
        except Exception:  # noqa: BLE001 - a run without the artifact: try the next seed
            continue
    return None


def overlay_rows(client: Any, cfg: ServiceConfig, runs: Sequence[GridRun], baseline: str, highlight: str,
                 n_cases: int, split: str, device: str = "cpu") -> tuple[list[dict[str, Any]], tuple[str, ...], str]:
    """Predictions of the baseline's and the highlight's lowest-seed best checkpoint on the
    first ``n_cases`` of ``split`` (from the sweep config's data folder and split file)."""
    from singr.engine.bundle import load_predictor
    from singr.engine.pipeline import discover, run_paths, split_cases
    from singr.metrics import case_metrics
    from singr.preprocess import prepare_case

    with tempfile.TemporaryDirectory(prefix="singr-report-ckpt-") as d:
        found = [_checkpoint(client, runs, v, Path(d)) for v in (baseline, highlight)]
        if any(f is None for f in found):
            raise SingrInputError(f"no run of {baseline!r} or {highlight!r} has a checkpoint artifact")
        preds = [load_predictor(f[0], device) for f in found if f is not None]
        paths = run_paths(cfg)
        cases = {c.case_id: c for c in discover(cfg)}
        ids = split_cases(cfg, list(cases.values()), paths)[split][:n_cases]
        spacing = tuple(cfg.data.spacing) if cfg.data.spacing else None
        rows = []
        for cid in ids:
            prep = prepare_case(cases[cid], paths.cache_dir, spacing)
            assert prep.regions is not None, cid
            row: dict[str, Any] = {"case": cid, "image": prep.image, "gt": prep.regions, "dice": []}
            for key, p in zip(("hard", "singr"), preds):
                pr = p.predict_prepared(prep.image)
                row[key] = pr.regions
                row["dice"].append(case_metrics(pr.regions, prep.regions, prep.spacing, prep.region_names)["Dice_mean"])
                if key == "singr":
                    row["signed"] = pr.signed
            rows.append(row)
        names = tuple(prep.region_names) if ids else ()
    seeds = [f[1] for f in found if f is not None]
    return rows, names, f"seed {seeds[0]} / seed {seeds[1]}"


def axis_picture(path: Path, cfg: ServiceConfig, variants: Sequence[Variant], split: str) -> tuple[Path, str]:
    """One case of ``split`` at every axis level (image, label, the highlight's signed map of
    WT from its lambda and delta): the case of the lowest level's split with the largest whole
    tumour among those with every region present at every level (the same case id, so the
    same anatomy). Returns (png, case id)."""
    from singr.engine.pipeline import discover, run_paths, split_cases
    from singr.preprocess import prepare_case
    from singr.sing import sing_map
    from singr.viz import ambiguity_png

    e = cfg.experiment
    assert e is not None and e.axis is not None
    levels = sorted(e.axis.levels, key=lambda lv: lv.value)
    pick = {lv.name: next((v for v in variants if v.level == lv.name and v.role == "highlight"),
                          next(v for v in variants if v.level == lv.name)) for lv in levels}
    cfgs = {name: variant_config(cfg, v.name) for name, v in pick.items()}
    found = {name: {c.case_id: c for c in discover(c)} for name, c in cfgs.items()}
    first = cfgs[levels[0].name]
    ids = [c for c in split_cases(first, list(found[levels[0].name].values()), run_paths(first))[split]
           if all(c in found[lv.name] for lv in levels)]
    preps: dict[str, dict[str, Any]] = {}
    best: tuple[int, str] | None = None
    spacing = {name: tuple(c.data.spacing) if c.data.spacing else None for name, c in cfgs.items()}
    for cid in ids:
        ps = {lv.name: prepare_case(found[lv.name][cid], run_paths(cfgs[lv.name]).cache_dir, spacing[lv.name])
              for lv in levels}
        if all(p.regions is not None and bool(np.all(p.regions.reshape(p.regions.shape[0], -1).any(axis=1)))
               for p in ps.values()):
            p0 = ps[levels[0].name]
            assert p0.regions is not None
            size = int(p0.regions[list(p0.region_names).index("WT") if "WT" in p0.region_names else 0].sum())
            if best is None or size > best[0]:
                best = (size, cid)
                preps = {"best": ps}
    if best is None:
        raise SingrInputError(f"no {split} case has every region at every {e.axis.name} level")
    cases = []
    for lv in levels:
        prep, c = preps["best"][lv.name], cfgs[lv.name]
        assert prep.regions is not None
        wt = list(prep.region_names).index("WT") if "WT" in prep.region_names else 0
        signed = sing_map(prep.regions[wt], prep.image, float(c.sing.lam), float(c.sing.delta), prep.spacing,
                          int(c.sing.iterations), str(c.sing.engine), "cpu", str(c.sing.boundary))
        title = f"{e.axis.name} {lv.value:g}" + (f" ({lv.label})" if lv.label else "")
        cases.append({"title": title, "image": prep.image, "regions": prep.regions, "signed": signed})
    png = ambiguity_png(path, cases, tuple(preps["best"][levels[0].name].region_names))
    return png, best[1]
