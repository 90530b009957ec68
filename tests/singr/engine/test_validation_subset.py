"""Validation at size: ``train.val_max_cases`` validates a fixed subset every time, and with
``train.val_full_at_end`` the best checkpoint is validated once on the whole split at the end."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from singr.config import load_config
from singr.engine.checkpoint import load_checkpoint
from singr.engine.trainer import BEST, LAST, VAL_CASES, Trainer, validate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from singr.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("valsubset") / "data"
    synthesize_dataset(root, n_cases=6, shape=(32, 32, 32), seed=1, progress=False)
    return root


def _trainer(tmp: Path, root: Path, *more: str) -> Trainer:
    cfg = load_config("smoke.yaml", [f"data.root={root}", f"data.cache_dir={tmp / 'cache'}",
                                     f"output_dir={tmp / 'out'}",
                                     "data.split_ratios=[0.34,0.5,0.16]", "train.epochs=3", "train.val_max_cases=1",
                                     *more])
    return Trainer(cfg, progress=False)


def _log(tmp: Path) -> list[dict[str, str]]:
    with open(tmp / "out" / "log.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_subset_each_epoch_then_the_best_checkpoint_on_the_whole_split(tmp_path, root):
    tr = _trainer(tmp_path, root)
    res = tr.run()
    val = list(tr.split["val"])
    assert len(val) == 3 and tr.val_ids == val[:1]
    log = _log(tmp_path)
    assert [bool(r.get("full_val_Dice_mean")) for r in log] == [False, False, True]  # once, in the last row
    last = log[-1]
    assert int(last["full_val_cases"]) == 3 and float(last["full_val_seconds"]) > 0
    assert float(last["epoch_seconds"]) >= float(last["full_val_seconds"])  # counted in the epoch's time

    # the per-case file now holds the whole split, scored with the best checkpoint (not the last epoch's weights)
    rec = json.loads((tr.ckpt_dir / VAL_CASES).read_text())
    assert rec["cases_from"] == "full split" and rec["epoch"] == res.best_epoch
    assert [r["case"] for r in rec["cases"]] == val
    best = load_checkpoint(tr.ckpt_dir / BEST)
    net = model_from(tr, best.model_state)  # the same network, rebuilt from the best checkpoint's weights
    means, rows = validate(net, tr.cfg, tr.paths.cache_dir, val, torch.device("cpu"))
    assert float(last["full_val_Dice_mean"]) == pytest.approx(means["Dice_mean"], abs=1e-6)
    assert [r["Dice_mean"] for r in rec["cases"]] == pytest.approx([r["Dice_mean"] for r in rows], abs=1e-6)
    # the subset is the split's first case: at the best epoch its score is the per-epoch score
    assert rec["cases"][0]["Dice_mean"] == pytest.approx(float(log[res.best_epoch - 1]["val_Dice_mean"]), abs=1e-6)
    # the trainer's weights are the last epoch's again (what last.safetensors holds and a resume continues from)
    own = load_checkpoint(tr.ckpt_dir / LAST).model_state
    assert all(torch.equal(v, own[k]) for k, v in tr.model.state_dict().items())
    assert res.last_metrics["full_val_Dice_mean"] == pytest.approx(means["Dice_mean"], abs=1e-6)


def model_from(tr: Trainer, state: dict) -> torch.nn.Module:
    from singr.models import model_from_config

    assert tr.meta is not None
    net = model_from_config(tr.cfg, tr.meta.in_channels, tr.meta.out_channels)
    net.load_state_dict(state)
    return net.eval()


@pytest.mark.slow
def test_off_or_already_whole_split_validates_no_more(tmp_path, root):
    tr = _trainer(tmp_path / "off", root, "train.val_full_at_end=false")
    tr.run()
    assert not any(r.get("full_val_Dice_mean") for r in _log(tmp_path / "off"))
    rec = json.loads((tr.ckpt_dir / VAL_CASES).read_text())
    assert rec["cases_from"] == "per-epoch validation" and len(rec["cases"]) == 1

    whole = _trainer(tmp_path / "whole", root, "train.val_max_cases=3")  # the subset is the split: nothing to add
    assert whole.cfg.train.val_full_at_end
    whole.run()
    assert not whole.full_val_due and not any(r.get("full_val_Dice_mean") for r in _log(tmp_path / "whole"))
