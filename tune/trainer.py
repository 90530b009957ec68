"""Stage 2: one trial = one Ray Train TorchTrainer run of ``singr.engine.train.fit``.

Each Train worker calls :func:`singr.engine.train.fit` with its world rank and size, the
model wrapped by ``ray.train.torch.prepare_model`` (DDP: gloo on CPU, NCCL on GPU) and an
epoch callback that calls ``ray.train.report`` on every rank, every epoch; rank 0 attaches
a Checkpoint holding ``last.pt`` and ``best.pt``. After a worker failure (FailureConfig)
or a restart of the trial (same Train run name and storage, e.g. after ``Tuner.restore``),
``ray.train.get_checkpoint()`` returns the latest checkpoint and ``fit`` resumes from its
``last.pt``. In a comparison grid (``tune.mode: grid``) rank 0 then evaluates the run's
``best.pt`` on ``experiment.eval_split`` and every rank reports once more with the
``<split>_*`` metrics (what ``singr report`` reads). Train V2 cannot take a Trainer inside a Tuner, so a trial is a Tune function
(:func:`run_trial`) that builds and fits the TorchTrainer; ``TuneReportCallback`` forwards
each rank-0 report to Tune.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

CKPT_FILES = ("last.pt", "best.pt")


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in row.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop; ``config`` = {"cfg": singr config, "prepared": bool, "threads": int}."""
    import ray.train
    import ray.train.torch
    import torch

    from singr.engine.train import fit

    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = config["cfg"]
    ckpt_dir = Path(cfg["output_dir"]) / "checkpoints"
    local = Path(tempfile.mkdtemp(prefix="singr-resume-"))
    resume_from = None
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            for name in CKPT_FILES:
                if (Path(d) / name).exists():
                    shutil.copy2(Path(d) / name, local / name)
        if (local / "last.pt").exists():
            resume_from = local / "last.pt"
        if rank == 0 and (local / "best.pt").exists():
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local / "best.pt", ckpt_dir / "best.pt")  # the trial's best so far
    last_val: dict[str, float] = {}

    def on_epoch_end(epoch: int, row: dict[str, Any], ckpt_path: Path | None) -> None:
        metrics = _numeric(row)
        val = {k: v for k, v in metrics.items() if k.startswith("val_")}
        if val:
            last_val.clear()
            last_val.update(val)
            last_val["val_epoch"] = float(epoch)
        # validation runs every train.val_every epochs; between, carry the latest values forward
        merged = {"val_Dice_mean": 0.0, "val_epoch": 0.0, **last_val, **metrics, "epoch": epoch}
        merged = {k: (v if math.isfinite(v) else -1.0) for k, v in merged.items()}
        if rank == 0 and ckpt_path is not None:
            with tempfile.TemporaryDirectory(prefix="singr-ckpt-") as d:
                for name in CKPT_FILES:
                    src = Path(ckpt_path).parent / name
                    if src.exists():
                        shutil.copy2(src, Path(d) / name)
                ray.train.report(merged, checkpoint=ray.train.Checkpoint.from_directory(d),
                                 checkpoint_dir_name=f"epoch_{epoch:05d}")
        else:
            ray.train.report(merged)  # every rank reports, every epoch (report is a barrier)
        fail = config.get("inject_failure")  # tests only: {"epoch": n, "marker": path}, fails once
        if fail and rank == 0 and epoch == int(fail["epoch"]) and not Path(fail["marker"]).exists():
            Path(fail["marker"]).write_text("failed once")
            raise RuntimeError(f"injected worker failure after epoch {epoch}")

    try:
        result = fit(cfg, progress=False, resume=False, on_epoch_end=on_epoch_end, rank=rank, world_size=world,
                     wrap_model=ray.train.torch.prepare_model, device=ray.train.torch.get_device(),
                     checkpoint_dir=ckpt_dir, resume_from=resume_from, prepared=bool(config.get("prepared", True)))
        split = config.get("evaluate_split")
        if split:  # a grid run: score best.pt on the held-out split, reported once more as <split>_*
            scores = evaluate_best(result, cfg, split, ray.train.torch.get_device()) if rank == 0 else {}
            # only the evaluation (no val_* carried over: after a restart none ran in this worker);
            # a non-finite score is left out rather than averaged as a number by the report
            final = {k: v for k, v in scores.items() if math.isfinite(v)}
            ray.train.report({**final, "epoch": int(cfg["train"]["epochs"])})
    finally:
        shutil.rmtree(local, ignore_errors=True)


def evaluate_best(result: dict[str, Any], cfg: dict[str, Any], split: str, device: Any) -> dict[str, float]:
    """Evaluate the run's best.pt (last.pt if no validation ever ran) on ``split``:
    ``{"<split>_Dice_TC": mean over cases, ..., "<split>_n_cases": n}``; files in <output_dir>/eval."""
    from singr.engine.evaluate import evaluate

    ckpt = Path(result["best_checkpoint"])
    if not ckpt.exists():
        ckpt = Path(result["last_checkpoint"])
    dev = "cuda" if getattr(device, "type", str(device)) == "cuda" else "cpu"
    res = evaluate(ckpt, cfg, split=split, out_dir=Path(cfg["output_dir"]) / "eval", device=dev,
                   progress=False, overlays=0)
    out = {f"{split}_{k}": float(v["mean"]) for k, v in res["summary"].items()}
    out[f"{split}_n_cases"] = float(res["n_cases"])
    return out


def scaling(cfg: dict[str, Any], resources: dict[str, float]) -> tuple[int, float, float]:
    """(num_workers, CPUs per worker, GPUs per worker); gpus_per_worker null = 1 if the cluster has GPUs."""
    t = cfg["tune"]
    gpus = t.get("gpus_per_worker")
    if gpus is None:
        gpus = 1.0 if float(resources.get("GPU", 0.0)) > 0 else 0.0
    return int(t["num_workers"]), float(t["cpus_per_worker"]), float(gpus)


def build_trainer(cfg: dict[str, Any], run_name: str, storage_path: str | Path, num_workers: int,
                  cpus_per_worker: float, gpus_per_worker: float = 0.0, max_failures: int = 0,
                  prepared: bool = True, tune_callback: bool = False,
                  inject_failure: dict[str, Any] | None = None, evaluate_split: str | None = None) -> Any:
    """A TorchTrainer running :func:`train_loop_per_worker` on ``cfg``."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    res = {"CPU": float(cpus_per_worker)}
    if gpus_per_worker > 0:
        res["GPU"] = float(gpus_per_worker)
    callbacks = []
    if tune_callback:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "prepared": prepared, "threads": max(1, int(cpus_per_worker)),
                           "inject_failure": inject_failure, "evaluate_split": evaluate_split},
        torch_config=TorchConfig(backend="nccl" if gpus_per_worker > 0 else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=int(num_workers), use_gpu=gpus_per_worker > 0,
                                               resources_per_worker=res),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=str(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=int(max_failures)),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks),
    )


def run_trial(params: dict[str, Any], base_cfg: dict[str, Any], trials_dir: str, train_storage: str,
              scale: tuple[int, float, float]) -> None:
    """Ray Tune function trainable: the trial's config from ``params``, then a TorchTrainer fit."""
    import ray.tune

    from singr.experiment import is_grid

    from .plan import trial_config

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(base_cfg, params, Path(trials_dir) / trial_id)
    trainer = build_trainer(cfg, run_name=trial_id, storage_path=train_storage, num_workers=scale[0],
                            cpus_per_worker=scale[1], gpus_per_worker=scale[2],
                            max_failures=int(base_cfg["tune"]["max_failures"]), prepared=True,
                            tune_callback=True,
                            evaluate_split=cfg["experiment"]["eval_split"] if is_grid(cfg) else None)
    trainer.fit()
