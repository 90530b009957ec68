"""Training: a :class:`Trainer` with explicit stages and hooks (nnU-Net v2's shape).

One epoch = ``train.iters_per_epoch`` batches of ``train.batch_size`` random patches
(Adam, the configured loss). Every ``train.val_every`` epochs and at the last, rank 0
segments the validation cases with the one inference path (:class:`singr.engine.infer.Predictor`'s
sliding window) and keeps the checkpoint with the best ``train.select_metric`` as
``best.safetensors`` (default the mean Dice; HD95 metrics: the lowest wins; a lesion-wise metric
makes validation compute the BraTS 2023 lesion-wise scores, which it skips otherwise);
``last.safetensors`` (with the optimizer state) is the resume point. Per-epoch rows go to
``<output_dir>/log.csv``.

Validation at size: ``train.val_max_cases`` = n validates the first n cases of the split every
``val_every`` epochs (the per-epoch score, what picks ``best`` and what a sweep's scheduler
reads); with ``train.val_full_at_end`` the best checkpoint is then validated once on the whole
split after the last epoch: the last row gains ``full_val_*`` (means) and ``full_val_seconds``,
and ``best_val_cases.json`` holds the whole split's per-case rows.

Hooks (:class:`Callback`), called in this order each epoch:

* ``on_validation(trainer, epoch, metrics)``: rank 0, after a validation;
* ``on_checkpoint(trainer, epoch, files)``: rank 0, after ``last`` (and ``best``) are written;
* ``on_epoch_end(trainer, epoch, row)``: every rank. ``row`` holds what was measured this
  epoch and nothing else: ``val_*`` keys only on validation epochs, never a placeholder.

Distributed: ``rank`` / ``world_size`` shard the training cases and the batches (the global
batch is ``batch_size * world_size``); ``wrap_model`` wraps the network (DDP). Rank 0 makes
the split and preprocesses; the others wait at a ``torch.distributed`` barrier, then read
what rank 0 wrote.
"""
from __future__ import annotations

import csv
import io
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import SingrConfig, dump_config
from ..config.schema import SELECT_METRICS
from ..device import resolve_device
from ..io import write_json, write_text
from ..losses import build_loss, is_regression_loss
from ..metrics import case_metrics, summarize
from ..models import model_from_config
from .checkpoint import CHECKPOINT_SUFFIX, Checkpoint, load_checkpoint, save_checkpoint
from .meta import ModelMeta
from .pipeline import RunPaths, discover, prepare, run_paths, sing_settings, split_cases

__all__ = ["Callback", "Trainer", "TrainResult", "fit", "loss_from_config", "seed_everything", "validate",
           "resolve_train_device", "training_meta", "BEST", "LAST"]

BEST = "best" + CHECKPOINT_SUFFIX
LAST = "last" + CHECKPOINT_SUFFIX
VAL_CASES = "best_val_cases.json"  # the best epoch's per-case validation rows, beside BEST


def resolve_train_device(name: str) -> torch.device:
    return torch.device(resolve_device(name))


def training_meta(cfg: SingrConfig, first: Any, split: dict[str, Any], fold: int | None) -> ModelMeta:
    """The metadata the checkpoints of a run carry: channels, regions, convention, modalities and
    spacing of ``first`` (a :class:`~singr.preprocess.PreparedCase` of the training set), the
    config's architecture, loss and SiNG settings, the ``fold`` and the sizes of ``split``."""
    return ModelMeta(in_channels=int(first.image.shape[0]), out_channels=len(first.region_names),
                     region_names=tuple(first.region_names), label_convention=first.label_convention,
                     modalities=tuple(first.modalities), model=cfg.model.name, loss=cfg.loss.name,
                     regression=is_regression_loss(cfg.loss.name), lam=float(cfg.sing.lam),
                     delta=float(cfg.sing.delta), gamma=float(cfg.loss.gamma), spacing=tuple(first.spacing),
                     fold=fold, n_train=len(split["train"]), n_val=len(split["val"]), n_test=len(split["test"]))


def loss_from_config(cfg: SingrConfig) -> torch.nn.Module:
    """The configured loss with its own arguments (gamma, eps, product mode)."""
    name = cfg.loss.name
    kwargs: dict[str, Any] = {}
    if name == "focal_l1":
        kwargs = {"gamma": float(cfg.loss.gamma), "eps": float(cfg.loss.eps)}
    elif name == "focal_l1_dagger":
        kwargs = {"gamma": float(cfg.loss.gamma)}
    elif name == "product":
        kwargs = {"mode": str(cfg.loss.product_mode)}
    return build_loss(name, **kwargs)


def seed_everything(seed: int) -> None:
    from monai.utils import set_determinism

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    set_determinism(seed=seed)


def validate(model: Any, cfg: SingrConfig, cache_dir: Path, case_ids: Sequence[str],
             device: torch.device, progress: bool = False, *, lesion: bool = False
             ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Segment ``case_ids`` (preprocessed) with the inference path; (mean metrics, per-case rows).

    ``model`` is a network in memory (segmented with the config's ``infer`` settings) or a
    :class:`~singr.engine.infer.Predictor` (an ensemble, as it is). ``lesion`` adds the BraTS 2023
    lesion-wise columns (``LesionDice_*``, ``LesionHD95_*``; :func:`singr.metrics.case_metrics`)."""
    from tqdm.auto import tqdm

    from ..preprocess import load_prepared
    from .infer import InferenceSettings, Predictor

    pred = model if isinstance(model, Predictor) else \
        Predictor.from_model(model, InferenceSettings.from_config(cfg), device=device)
    rows = []
    for cid in tqdm(case_ids, desc="validate", unit="case", leave=False, disable=not progress):
        prep = load_prepared(cache_dir, cid)
        p = pred.predict_prepared(prep.image, prep.label_convention)
        assert prep.regions is not None, cid
        rows.append({"case": cid, **case_metrics(p.regions, prep.regions, prep.spacing, prep.region_names,
                                                 lesion=lesion)})
    summ = summarize(rows)
    return {k: float(v["mean"]) for k, v in summ.items()}, rows


class Callback:
    """Hooks of a :class:`Trainer` (see the module docstring); each does nothing by default."""

    def on_validation(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None:
        """Rank 0, after validating at ``epoch`` (1-based)."""

    def on_checkpoint(self, trainer: "Trainer", epoch: int, files: dict[str, Path]) -> None:
        """Rank 0, after writing ``files`` (``{"last": path, "best": path?}``)."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, row: dict[str, Any]) -> None:
        """Every rank, at the end of ``epoch``, with what was measured in it."""


@dataclass
class TrainResult:
    best_metric: float
    best_epoch: int
    best_checkpoint: str
    last_checkpoint: str
    output_dir: str
    split_file: str
    epochs_run: int
    last_metrics: dict[str, Any] = field(default_factory=dict)
    select_metric: str = "val_Dice_mean"   # what best_metric measures (train.select_metric)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dist_barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


class Trainer:
    """Train one model per ``cfg`` (see the module docstring for the stages and hooks)."""

    def __init__(self, cfg: SingrConfig, *, rank: int = 0, world_size: int = 1, device: torch.device | None = None,
                 checkpoint_dir: str | Path | None = None, resume: bool = True, resume_from: str | Path | None = None,
                 wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None, prepared: bool = False,
                 progress: bool = True, fold: int | None = None, callbacks: Sequence[Callback] = (),
                 barrier: Callable[[], None] = _dist_barrier, trust_checkpoint: bool = False):
        self.cfg = cfg
        self.rank, self.world_size = int(rank), int(world_size)
        self.is_main = self.rank == 0
        self.paths: RunPaths = run_paths(cfg)
        self.ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else self.paths.checkpoints
        self.device = device or resolve_train_device(cfg.train.device)
        self.resume, self.resume_from = resume, (Path(resume_from) if resume_from else None)
        self.wrap_model, self.prepared, self.progress, self.fold = wrap_model, prepared, progress, fold
        self.callbacks = list(callbacks)
        self.barrier = barrier
        self.trust_checkpoint = trust_checkpoint
        self.select = str(cfg.train.select_metric)
        self.select_max = SELECT_METRICS[self.select] == "max"
        self.best, self.best_epoch, self.start_epoch = self._no_best(), -1, 0
        self.last_val_cases: list[dict[str, Any]] = []
        self.meta: ModelMeta | None = None  # set by setup()
        self.last_timing: dict[str, float] = {}  # the last epoch's times (train_epoch)
        self.setup_timing: dict[str, float] = {}  # where setup() spent its time (set by setup)

    # ------------------------------------------------------------------ stages

    def setup(self) -> None:
        """Cases, split, preprocessing, network, optimizer, data loader; resume if asked.

        Sets :attr:`setup_timing`: ``setup_data_seconds`` (cases, split, preprocessing),
        ``setup_model_seconds`` (network, optimizer, resume, DDP wrap) and ``setup_seconds``
        (all of it, data set and loader included); the first epoch's row carries them."""
        t_start = time.perf_counter()
        cfg, tr = self.cfg, self.cfg.train
        seed_everything(int(tr.seed) + self.rank)
        cases = discover(cfg)
        if self.is_main:
            self.split = split_cases(cfg, cases, self.paths, self.fold)
        self.barrier()  # the split file exists from here on
        if not self.is_main:
            self.split = split_cases(cfg, cases, self.paths, self.fold)
        by_id = {c.case_id: c for c in cases}
        if not self.prepared and self.is_main:
            prepare(cfg, [by_id[c] for c in self.split["train"] + self.split["val"]], self.paths,
                    progress=self.progress)
        self.barrier()  # preprocessed arrays and distance maps exist from here on
        t_data = time.perf_counter()
        regression = is_regression_loss(cfg.loss.name)
        self.train_ids = self.split["train"][self.rank::self.world_size] or self.split["train"]
        self.val_ids = self.split["val"] if tr.val_max_cases is None else self.split["val"][: int(tr.val_max_cases)]
        self.full_val_due = bool(tr.val_full_at_end) and len(self.val_ids) < len(self.split["val"])
        from ..preprocess import load_prepared

        first = load_prepared(self.paths.cache_dir, self.train_ids[0], mmap=True)
        self.meta = meta = training_meta(cfg, first, self.split, self.fold)
        self.model = model_from_config(cfg, meta.in_channels, meta.out_channels).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=float(tr.lr), weight_decay=float(tr.weight_decay))
        self._resume()
        self.net = self.wrap_model(self.model) if self.wrap_model is not None else self.model
        t_model = time.perf_counter()
        self.loss_fn = loss_from_config(cfg)
        self.iters = max(1, int(tr.iters_per_epoch) // self.world_size)
        from ..data.dataset import PatchDataset, train_augmentation

        a = cfg.augment
        self.dataset = PatchDataset(self.paths.cache_dir, self.train_ids, tr.patch_size,
                                    self.iters * int(tr.batch_size),
                                    regression, sing_settings(cfg), float(cfg.sing.delta),
                                    train_augmentation(a.flip_prob, a.intensity_prob, a.intensity_scale,
                                                       a.intensity_shift),
                                    seed=int(tr.seed) * 1000 + self.rank, in_memory=bool(cfg.data.cache_in_memory),
                                    fg_oversample=float(tr.fg_oversample))
        self.loader = torch.utils.data.DataLoader(self.dataset, batch_size=int(tr.batch_size), shuffle=False,
                                                  num_workers=int(cfg.data.num_workers), drop_last=True,
                                                  pin_memory=self.device.type == "cuda")
        self.use_amp = bool(tr.amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.setup_timing = {"setup_data_seconds": round(t_data - t_start, 3),
                             "setup_model_seconds": round(t_model - t_data, 3),
                             "setup_seconds": round(time.perf_counter() - t_start, 3)}
        if self.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.paths.output_dir / "config.yaml", dump_config(cfg))

    def _resume(self) -> None:
        src = self.resume_from or (self.ckpt_dir / LAST if self.resume else None)
        if src is None or not Path(src).exists():
            return
        ckpt = load_checkpoint(src, map_location=self.device, trust=self.trust_checkpoint)
        self.model.load_state_dict(ckpt.model_state)
        if ckpt.optimizer_state is not None:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        if ckpt.rng_state is not None and self.world_size == 1:
            # torch's CPU generator where the interrupted run left it; with DDP the file holds rank 0's
            # state only, and every rank keeps its own seed (train.seed + rank) instead
            torch.set_rng_state(ckpt.rng_state.to("cpu", torch.uint8))
        self.start_epoch, self.best = int(ckpt.epoch) + 1, float(ckpt.best_metric)
        self.best_epoch = int(ckpt.metrics.get("best_epoch", -1))
        was = str(ckpt.metrics.get("select_metric", "val_Dice_mean"))
        if was != self.select:  # the best so far was judged by another metric: the next validation decides
            self.best, self.best_epoch = self._no_best(), -1
        if self.progress and self.is_main:
            print(f"[singr] resuming from {src} at epoch {self.start_epoch}"
                  + (f" (best checkpoint chosen by {self.select} from now on, was {was})" if was != self.select
                     else ""))

    def _no_best(self) -> float:
        """``best`` before any validation: -1 for a score to maximise (below any Dice), inf to minimise."""
        return -1.0 if self.select_max else float("inf")

    def improves(self, value: float | None) -> bool:
        """Whether ``value`` of ``train.select_metric`` beats the best so far (NaN or None never does)."""
        if value is None or value != value:
            return False
        return float(value) > self.best if self.select_max else float(value) < self.best

    def train_epoch(self, epoch: int) -> float:
        """One epoch of optimisation (0-based ``epoch``); the mean training loss.

        Also sets :attr:`last_timing`: ``train_seconds`` (the epoch's optimisation, loading
        included), ``data_wait_seconds`` (time spent waiting for the loader's next batch: the
        first batch's start-up included; each step ends with ``float(loss)``, a device sync, so
        on a GPU this is time the GPU had nothing to do), ``data_wait_share`` (their ratio)
        and ``patches_per_s`` (training patches per second of ``train_seconds``).
        """
        from tqdm.auto import tqdm

        self.dataset.set_epoch(epoch)
        self.net.train()
        losses = []
        wait, patches = 0.0, 0
        t_start = ready = time.perf_counter()
        for batch in tqdm(self.loader, desc=f"epoch {epoch + 1}", unit="batch", leave=False,
                          disable=not (self.progress and self.is_main)):
            wait += time.perf_counter() - ready
            patches += int(batch["image"].shape[0])
            x = batch["image"].to(self.device, non_blocking=True)
            y = batch["target"].to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=self.device.type, enabled=self.use_amp):
                out = self.net(x)
            loss = self.loss_fn(out.float(), y)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            losses.append(float(loss.detach()))
            ready = time.perf_counter()
        total = time.perf_counter() - t_start
        self.last_timing = {"train_seconds": round(total, 3), "data_wait_seconds": round(wait, 3),
                            "data_wait_share": round(wait / total, 4) if total > 0 else float("nan"),
                            "patches_per_s": round(patches / total, 3) if total > 0 else float("nan")}
        return float(np.mean(losses)) if losses else float("nan")

    def validate_epoch(self, epoch: int) -> dict[str, float]:
        """Rank 0: mean validation metrics of the current network (``val_*`` keys)."""
        means, rows = validate(self.model, self.cfg, self.paths.cache_dir, self.val_ids, self.device,
                               progress=self.progress, lesion=self.select.startswith("val_Lesion"))
        self.last_val_cases = rows
        return {f"val_{k}": v for k, v in means.items()}

    def validate_full(self) -> dict[str, float]:
        """Rank 0, after the last epoch: ``best.safetensors`` on the whole validation split.

        Returns ``full_val_*`` (the means), ``full_val_seconds`` and ``full_val_cases``; rewrites
        ``best_val_cases.json`` with the whole split's rows (``"cases_from": "full split"``). The
        network's own weights (the last epoch's) are put back afterwards. {} without a best."""
        best = self.ckpt_dir / BEST
        if not best.exists():
            return {}
        t0 = time.time()
        own = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(load_checkpoint(best, map_location=self.device).model_state)
        try:
            means, rows = validate(self.model, self.cfg, self.paths.cache_dir, list(self.split["val"]), self.device,
                                   progress=self.progress, lesion=self.select.startswith("val_Lesion"))
        finally:
            self.model.load_state_dict(own)
        write_json(self.ckpt_dir / VAL_CASES, {"epoch": self.best_epoch, "select_metric": self.select,
                                               "cases_from": "full split", "cases": rows})
        return {**{f"full_val_{k}": v for k, v in means.items()}, "full_val_seconds": round(time.time() - t0, 3),
                "full_val_cases": len(rows)}

    def checkpoint(self, epoch: int, row: dict[str, Any], improved: bool) -> dict[str, Path]:
        """Rank 0: write ``last`` (and ``best`` when ``train.select_metric`` improved)."""
        if self.meta is None:
            raise RuntimeError("Trainer.checkpoint() before setup()")
        state = Checkpoint(model_state=self.model.state_dict(), meta=self.meta, config=self.cfg.to_dict(core_only=True),
                           epoch=epoch, best_metric=self.best,
                           metrics={**row, "best_epoch": self.best_epoch, "select_metric": self.select},
                           optimizer_state=self.optimizer.state_dict(), rng_state=torch.get_rng_state())
        files = {}
        if improved:
            best = Checkpoint(model_state=state.model_state, meta=self.meta, config=state.config, epoch=epoch,
                              best_metric=self.best, metrics=state.metrics)
            files["best"] = save_checkpoint(self.ckpt_dir / BEST, best)
            if self.last_val_cases:  # the best epoch's per-case scores: paired comparisons between runs (tune)
                files["val_cases"] = write_json(self.ckpt_dir / VAL_CASES, {
                    "epoch": epoch + 1, "select_metric": self.select, "cases_from": "per-epoch validation",
                    "cases": self.last_val_cases})
        files["last"] = save_checkpoint(self.ckpt_dir / LAST, state)
        return files

    def run(self) -> TrainResult:
        """Set up, then train from the start (or resume) epoch to ``train.epochs``."""
        from tqdm.auto import tqdm

        self.setup()
        tr = self.cfg.train
        epochs = int(tr.epochs)
        bar = tqdm(range(self.start_epoch, epochs), desc="train", unit="epoch",
                   disable=not (self.progress and self.is_main), initial=self.start_epoch, total=epochs)
        last: dict[str, Any] = {}
        for epoch in bar:
            t0 = time.time()
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": self.train_epoch(epoch), **self.last_timing}
            if epoch == self.start_epoch:  # this run's start-up, once
                row.update(self.setup_timing)
            do_val = (epoch + 1) % int(tr.val_every) == 0 or epoch + 1 == epochs
            if self.is_main:
                improved = False
                if do_val and self.val_ids:
                    tv = time.time()
                    metrics = self.validate_epoch(epoch)
                    row.update(metrics)
                    row["val_seconds"] = round(time.time() - tv, 3)
                    if self.improves(metrics.get(self.select)):
                        self.best, self.best_epoch, improved = float(metrics[self.select]), epoch + 1, True
                    row[f"best_{self.select}"] = self.best
                    for cb in self.callbacks:
                        cb.on_validation(self, epoch + 1, metrics)
                row["epoch_seconds"] = round(time.time() - t0, 3)
                files = self.checkpoint(epoch, row, improved)
                full = self.validate_full() if epoch + 1 == epochs and self.full_val_due else {}
                if full:  # counted in the last epoch's time; the whole split's rows replace the subset's
                    row.update(full)
                    row["epoch_seconds"] = round(row["epoch_seconds"] + full["full_val_seconds"], 3)
                    files["val_cases"] = self.ckpt_dir / VAL_CASES
                self._log(row)
                for cb in self.callbacks:
                    cb.on_checkpoint(self, epoch + 1, files)
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", **{f"best_{self.select[4:]}": f"{self.best:.3f}"})
            last = row
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch + 1, dict(row))
        result = TrainResult(best_metric=self.best, best_epoch=self.best_epoch,
                             best_checkpoint=str(self.ckpt_dir / BEST), last_checkpoint=str(self.ckpt_dir / LAST),
                             output_dir=str(self.paths.output_dir), split_file=str(self.paths.split_file),
                             epochs_run=epochs - self.start_epoch, last_metrics=last, select_metric=self.select)
        if self.is_main:
            write_json(self.paths.output_dir / "train_result.json", result.as_dict())
        return result

    def _log(self, row: dict[str, Any]) -> None:
        """Append ``row`` to ``log.csv`` (rewritten atomically; columns are the union of the rows)."""
        path = self.paths.output_dir / "log.csv"
        rows: list[dict[str, Any]] = []
        if path.exists():
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        rows.append(row)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
        write_text(path, buf.getvalue())


def fit(cfg: SingrConfig, *, progress: bool = True, resume: bool = True, fold: int | None = None,
        callbacks: Sequence[Callback] = (), trust_checkpoint: bool = False, **kwargs: Any) -> TrainResult:
    """Train per ``cfg`` in this process (``singr train``); see :class:`Trainer` for the rest."""
    return Trainer(cfg, progress=progress, resume=resume, fold=fold, callbacks=callbacks,
                   trust_checkpoint=trust_checkpoint, **kwargs).run()
