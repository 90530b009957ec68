"""Evaluation (singr.engine.evaluate): lesion-wise columns in the CSV, summary and table, and
post-processing fitted on a split, on small synthetic cases with a fixed toy network (a 1x1x1
convolution that thresholds intensities: noisy on purpose, so that rules have something to remove)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from singr.config import load_config
from singr.engine.evaluate import evaluate, fit_postprocess, summary_markdown
from singr.engine.infer import InferenceSettings, Predictor
from singr.engine.meta import ModelMeta
from singr.engine.postprocess import PostprocessRules
from singr.errors import SingrInputError

META = ModelMeta(in_channels=4, out_channels=3, region_names=("TC", "WT", "ET"), label_convention="brats2020")
LESION_KEYS = [f"{m}_{r}" for m in ("LesionDice", "LesionHD95") for r in ("TC", "WT", "ET", "mean")]


def _threshold_net() -> nn.Module:
    """TC and ET from t1ce (channel 2), WT from flair (channel 0): logit = 4 * (z - 1)."""
    net = nn.Conv3d(4, 3, 1)
    with torch.no_grad():
        net.weight.zero_()
        for out, ch in ((0, 2), (1, 0), (2, 2)):
            net.weight[out, ch] = 4.0
        net.bias.copy_(torch.tensor([-4.0, -4.0, -6.0]))
    return net


def _predictor(rules: PostprocessRules | None = None) -> Predictor:
    settings = InferenceSettings(roi_size=(32, 32, 32), multiple=8, precision="float32")
    return Predictor([_threshold_net()], settings, META, postprocess=rules)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    """8 synthetic cases (32^3) and a config with 2 folds of the train + val cases."""
    from singr.data.synth import synthesize_dataset

    work = tmp_path_factory.mktemp("evaluate")
    synthesize_dataset(work / "data", n_cases=8, shape=(32, 32, 32), seed=0, progress=False)
    return load_config("smoke.yaml", [f"data.root={work / 'data'}", f"output_dir={work / 'run'}", "data.folds=2"])


def test_evaluate_writes_lesion_wise_columns_in_csv_summary_and_table(cfg, tmp_path):
    res = evaluate(_predictor(), cfg, split="test", out_dir=tmp_path, progress=False, overlays=0)
    rows = list(csv.DictReader(open(tmp_path / "metrics_test.csv")))
    assert len(rows) == res["n_cases"] == 2
    for key in LESION_KEYS:
        assert key in rows[0], key
        assert key in res["summary"], key
    for r in rows:
        dices = [float(r[f"LesionDice_{n}"]) for n in ("TC", "WT", "ET")]
        assert all(0.0 <= d <= 1.0 for d in dices)
        assert float(r["LesionDice_mean"]) == pytest.approx(np.mean(dices), abs=1e-5)
        assert all(0.0 <= float(r[f"LesionHD95_{n}"]) <= 374.0 for n in ("TC", "WT", "ET"))
    # the summary is the mean over the CSV's rows
    summ = json.loads((tmp_path / "summary_test.json").read_text())
    assert summ["summary"]["LesionDice_mean"]["mean"] == pytest.approx(
        np.mean([float(r["LesionDice_mean"]) for r in rows]), abs=1e-5)
    assert summ["seconds_per_case"] > 0 and summ["tta"] is False and summ["postprocess"] is None
    md = (tmp_path / "summary_test.md").read_text()
    assert "lesion-wise Dice" in md and "lesion-wise HD95 (mm)" in md
    wt = next(line for line in md.splitlines() if line.startswith("| WT |"))
    assert wt.count("|") == 7  # region + Dice, IoU, HD95 + lesion-wise Dice, HD95


def test_evaluate_without_lesion_columns(cfg, tmp_path):
    res = evaluate(_predictor(), cfg, split="test", out_dir=tmp_path, progress=False, overlays=0, lesion=False)
    header = (tmp_path / "metrics_test.csv").read_text().splitlines()[0].split(",")
    assert "Dice_WT" in header and not any(h.startswith("Lesion") for h in header)
    assert not any(k.startswith("Lesion") for k in res["summary"])
    assert "lesion-wise" not in (tmp_path / "summary_test.md").read_text()


def test_summary_markdown_has_lesion_columns_only_when_the_summary_has_them():
    one = {"mean": 0.5, "se": 0.1, "n": 3}
    voxel = {f"{m}_{r}": one for m in ("Dice", "IoU", "HD95") for r in ("WT", "mean")}
    plain = summary_markdown(voxel, ["WT"], "t")
    both = summary_markdown({**voxel, **{f"{m}_{r}": one for m in ("LesionDice", "LesionHD95")
                                         for r in ("WT", "mean")}}, ["WT"], "t")
    assert "| region | Dice | IoU | HD95 (mm) |" in plain and "Lesion" not in plain
    assert "| region | Dice | IoU | HD95 (mm) | lesion-wise Dice | lesion-wise HD95 (mm) |" in both
    assert "| mean | " + " | ".join(["0.5000 ± 0.1000"] * 5) + " |" in both


def test_fit_postprocess_fits_on_the_folds_validation_cases_without_the_models_rules(cfg, tmp_path):
    # a predictor whose own rules delete everything: the fit must see the raw segmentation
    wipe = PostprocessRules({"WT": 10**9})
    rules, report = fit_postprocess(_predictor(wipe), cfg, split="val", fold=1)
    plain_rules, plain_report = fit_postprocess(_predictor(), cfg, split="val", fold=1)
    assert rules == plain_rules and report == plain_report
    split = json.loads((Path(cfg.output_dir) / "split.json").read_text())
    assert report["cases"] == split["folds"]["2"][1] and report["n_cases"] == len(report["cases"]) >= 2
    assert report["split"] == "val" and report["fold"] == 1
    assert report["rules"] == rules.describe() and json.loads(json.dumps(report)) == report
    assert not rules.is_noop  # the thresholding net leaves small noise components: some rule pays
    # the Dice the fit reports is the Dice evaluate measures, before and after the rules
    raw = evaluate(_predictor(), cfg, split="val", fold=1, out_dir=tmp_path / "raw", progress=False, overlays=0,
                   lesion=False)
    post = evaluate(_predictor(rules), cfg, split="val", fold=1, out_dir=tmp_path / "post", progress=False,
                    overlays=0, lesion=False)
    for name in ("TC", "WT", "ET"):
        assert report["dice_before"][name] == pytest.approx(raw["summary"][f"Dice_{name}"]["mean"], abs=1e-9)
        assert report["dice_after"][name] == pytest.approx(post["summary"][f"Dice_{name}"]["mean"], abs=1e-9)
    assert report["dice_after"]["mean"] > report["dice_before"]["mean"]
    assert post["postprocess"] == rules.to_dict()


def test_fit_postprocess_rejects_an_unknown_or_empty_split(cfg):
    with pytest.raises(SingrInputError, match="unknown split 'holdout'"):
        fit_postprocess(_predictor(), cfg, split="holdout")
    with pytest.raises(SingrInputError, match="fold 5 does not exist"):
        fit_postprocess(_predictor(), cfg, split="val", fold=5)
