"""``train.select_metric``: the validation metric that picks ``best.safetensors`` (the highest, or
the lowest for HD95 ones); a lesion-wise one makes validation compute the lesion-wise scores."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from singr.config import load_config
from singr.engine.checkpoint import load_checkpoint
from singr.engine.trainer import BEST, Trainer, fit


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    from singr.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("select") / "data"
    synthesize_dataset(root, n_cases=6, shape=(32, 32, 32), seed=0, progress=False)
    return root


def _cfg(tmp: Path, root: Path, *more: str):
    return load_config("smoke.yaml", [f"data.root={root}", f"data.cache_dir={tmp / 'cache'}",
                                      f"output_dir={tmp / 'out'}", *more])


def _log(tmp: Path) -> list[dict[str, str]]:
    with open(tmp / "out" / "log.csv") as f:
        return list(csv.DictReader(f))


def test_improves_follows_the_direction(tmp_path, smoke_root):
    hi = Trainer(_cfg(tmp_path, smoke_root), progress=False)
    lo = Trainer(_cfg(tmp_path, smoke_root, "train.select_metric=val_HD95_mean"), progress=False)
    assert hi.improves(0.0) and not hi.improves(float("nan")) and not hi.improves(None)
    assert lo.best == math.inf and lo.improves(373.13) and not lo.improves(float("nan"))
    lo.best = 5.0
    assert lo.improves(4.9) and not lo.improves(5.0) and not lo.improves(6.0)


@pytest.mark.slow
def test_lowest_lesion_hd95_picks_best_then_a_resume_by_dice_starts_over(tmp_path, smoke_root):
    res = fit(_cfg(tmp_path, smoke_root, "train.epochs=3", "train.select_metric=val_LesionHD95_mean"),
              progress=False)
    log = _log(tmp_path)
    values = [float(r["val_LesionHD95_mean"]) for r in log]  # computed because the selection needs it
    assert len(values) == 3 and all(math.isfinite(v) for v in values)
    assert "val_LesionDice_mean" in log[0] and "best_val_LesionHD95_mean" in log[0]
    best_epoch = min(range(3), key=lambda i: (values[i], i)) + 1
    assert res.select_metric == "val_LesionHD95_mean"
    assert res.best_epoch == best_epoch and res.best_metric == pytest.approx(min(values))
    assert [float(r["best_val_LesionHD95_mean"]) for r in log] == pytest.approx(
        [min(values[: i + 1]) for i in range(3)])
    ckpt = load_checkpoint(Path(res.best_checkpoint))
    assert ckpt.epoch + 1 == best_epoch and ckpt.metrics["select_metric"] == "val_LesionHD95_mean"

    # the same run resumed with another selection metric: the best so far was judged otherwise,
    # so the first validation after the resume is the new best whatever its value
    res2 = fit(_cfg(tmp_path, smoke_root, "train.epochs=4"), progress=False)
    log = _log(tmp_path)
    assert len(log) == 4 and "val_LesionDice_mean" not in {k for k, v in log[-1].items() if v}  # Dice: no lesions
    assert res2.select_metric == "val_Dice_mean" and res2.best_epoch == 4
    assert res2.best_metric == pytest.approx(float(log[-1]["val_Dice_mean"]))
    assert load_checkpoint(tmp_path / "out" / "checkpoints" / BEST).metrics["select_metric"] == "val_Dice_mean"


@pytest.mark.slow
def test_a_resume_restores_the_torch_generator_it_saved(tmp_path, smoke_root, monkeypatch):
    """``last.safetensors`` keeps torch's CPU generator state; a resumed run starts from it, not
    from whatever state the new process has."""
    import torch

    from singr.engine.trainer import LAST

    fit(_cfg(tmp_path, smoke_root, "train.epochs=1"), progress=False)
    saved = load_checkpoint(tmp_path / "out" / "checkpoints" / LAST).rng_state
    assert saved is not None
    torch.manual_seed(12345)  # another state in this process
    assert not torch.equal(torch.get_rng_state(), saved)
    seen = []
    original = Trainer._resume

    def resume_and_look(self):
        original(self)
        seen.append(torch.get_rng_state())

    monkeypatch.setattr(Trainer, "_resume", resume_and_look)
    t = Trainer(_cfg(tmp_path, smoke_root, "train.epochs=2"), progress=False)
    t.setup()
    assert t.start_epoch == 1 and len(seen) == 1 and torch.equal(seen[0], saved)
