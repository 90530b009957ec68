"""Stage 2: one trial = one run of singr's :class:`~singr.engine.trainer.Trainer`, by ``tune.trial_runner``.

``inline`` (the default for one worker per trial, ``auto``): the Tune trial process trains
(:func:`run_inline`), reports and checkpoints go to Ray Tune, a failed trial is retried by Tune
from its latest checkpoint, and Tune reuses the process for later trials (``reuse_actors``): no
Train controller and worker group to start, no second set of imports, so a trial's slot goes
to its epochs (benchmarks/RESULTS.md, "Trial start-up": 26 s of start-up before the first epoch
with a Train run per trial on 2 cores, 4 s inline, 0.2 s in a reused process).
``train`` (and ``auto`` with ``num_workers`` > 1): a Ray Train ``TorchTrainer`` run per trial.
Each Train worker runs the Trainer with its world rank and size, the network wrapped by
``ray.train.torch.prepare_model`` (DDP: gloo on CPU, NCCL on GPU), and a callback that
calls ``ray.train.report`` on every rank at the end of every epoch; rank 0 attaches a
Checkpoint holding ``last.safetensors`` and ``best.safetensors``. A report carries what
was measured in that epoch and nothing else: the validation metrics only on validation
epochs (no placeholder values reach the scheduler; ASHA rungs fall on validation epochs).

After a worker failure (``FailureConfig``) or a restart of the trial (same Train run name
and storage, e.g. after ``Tuner.restore``), ``ray.train.get_checkpoint()`` returns the
latest checkpoint and the Trainer resumes from its ``last``. In a comparison grid
(``tune.mode: grid``) rank 0 then evaluates the run's best checkpoint on
``experiment.eval_split`` and every rank reports once more with the ``<split>_*`` metrics.
Train V2 cannot take a Trainer inside a Tuner, so a trial is a Tune function
(:func:`run_trial`) that builds and fits the TorchTrainer; ``TuneReportCallback`` forwards
each rank-0 report to Tune. Where each rank ran is reported too (``worker_nodes``). A refit
run (:mod:`tune.ensemble`) is the same trial with ``fold`` / ``folds`` in its params: the
Trainer trains and validates on that fold of ``data.folds``.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from singr.engine.trainer import BEST, LAST, VAL_CASES, Callback

from .config import ServiceConfig
from .nodes import node_label

CKPT_FILES = (LAST, BEST, VAL_CASES)


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


class SystemSampler:
    """MLflow's own system-metrics collectors on a Train worker: ``CPUMonitor`` (the machine's
    CPU and memory, psutil) and, where NVML sees GPUs, ``GPUMonitor`` (utilisation, memory,
    power), sampled every ``every`` s in a daemon thread. :meth:`take` returns the means since
    the last call as ``system/<name>``, the names MLflow's own system-metrics logging uses, so
    a trial's run shows them beside its curves; ``{}`` where the collectors cannot run."""

    def __init__(self, every: float = 2.0):
        import threading

        self.every = float(every)
        self.monitors: list[Any] = []
        try:
            from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor

            self.monitors.append(CPUMonitor())
        except Exception:  # noqa: BLE001 - psutil missing: no system metrics, training goes on
            pass
        try:
            from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

            gpu = GPUMonitor()
            if getattr(gpu, "num_gpus", 0):
                self.monitors.append(gpu)
        except Exception:  # noqa: BLE001 - no pynvml or no GPU
            pass
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="singr-system-metrics")
        if self.monitors:
            self._sample()
            self._thread.start()

    def _sample(self) -> None:
        with self._lock:
            for m in self.monitors:
                try:
                    m.collect_metrics()
                except Exception:  # noqa: BLE001 - a missed sample is not an error
                    pass

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def take(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with self._lock:
            for m in self.monitors:
                if m.metrics:
                    out.update({f"system/{k}": float(v) for k, v in m.aggregate_metrics().items()})
                    m.clear_metrics()
        return out

    def stop(self) -> None:
        self._stop.set()


def process_start() -> float:
    """When this process was created (epoch seconds; psutil), or now where that cannot be read."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - no psutil: the process' own imports are not separated out
        return time.time()


def startup_split(clock: dict[str, float], worker_process: float, entry: float, trainer_start: float
                  ) -> dict[str, float]:
    """Where a trial's start-up went, in seconds, from wall-clock marks (``time.time()``):

    ``startup/trial_process_s`` the trial's process start to its function (Ray worker boot,
    imports), ``startup/worker_group_s`` from there to the Train worker's process start (the
    Train controller and the worker group's scheduling), ``startup/worker_process_s`` that
    process' start to the training loop (boot, imports, unpickling the loop), and
    ``startup/loop_s`` the loop's own preparation before the Trainer (checkpoint restore,
    ranks' node names, system-metric collectors). The Trainer's setup and first batch follow
    as ``setup_*_seconds`` and the first epoch's ``data_wait_seconds``. Marks missing from
    ``clock`` (``trial_process``, ``trial_function``) leave their spans out."""
    out = {"startup/worker_process_s": entry - worker_process, "startup/loop_s": trainer_start - entry}
    if "trial_process" in clock and "trial_function" in clock:
        out["startup/trial_process_s"] = clock["trial_function"] - clock["trial_process"]
    if "trial_function" in clock:
        out["startup/worker_group_s"] = worker_process - clock["trial_function"]
    return {k: round(max(0.0, v), 3) for k, v in out.items()}


class RayReport(Callback):
    """Reports each epoch to Ray Train (every rank; rank 0 with the checkpoint), or to Ray Tune
    from an inline trial (``inline``), with the
    worker's system metrics of that epoch (:class:`SystemSampler`) where one is given and
    ``startup`` (:func:`startup_split`, plus ``startup/first_report_s`` since the trial's
    process started) in the first report."""

    def __init__(self, nodes: str, system: SystemSampler | None = None, startup: dict[str, float] | None = None,
                 trial_started: float | None = None, inline: bool = False):
        self.nodes = nodes
        self.system = system
        self.startup = dict(startup or {})
        self.trial_started = trial_started
        self.inline = inline  # reports go to Ray Tune straight from the trial's process (:func:`run_inline`)
        self.files: dict[str, Path] = {}

    def _send(self, metrics: dict[str, Any], folder: str | None = None, name: str | None = None) -> None:
        if self.inline:
            import ray.tune

            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(folder) if folder else None)
            return
        import ray.train

        if folder:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder), checkpoint_dir_name=name)
        else:
            ray.train.report(metrics)  # every rank reports, every epoch (report is a barrier)

    def on_checkpoint(self, trainer: Any, epoch: int, files: dict[str, Path]) -> None:
        self.files = files

    def on_epoch_end(self, trainer: Any, epoch: int, row: dict[str, Any]) -> None:
        metrics: dict[str, Any] = {**_numeric(row), **(self.system.take() if self.system else {}), "epoch": epoch}
        if self.startup:  # the first report of this run
            metrics.update(self.startup)
            if self.trial_started is not None:
                metrics["startup/first_report_s"] = round(time.time() - self.trial_started, 3)
            self.startup = {}
        if trainer.is_main and self.files:
            metrics["worker_nodes"] = self.nodes
            with tempfile.TemporaryDirectory(prefix="singr-ckpt-") as d:
                folder = Path(self.files["last"]).parent
                for name in CKPT_FILES:
                    if (folder / name).exists():
                        shutil.copy2(folder / name, Path(d) / name)
                self._send(metrics, d, f"epoch_{epoch:05d}")
            self.files = {}
        else:
            self._send(metrics)


def _gather_nodes(rank: int, world: int) -> str:
    """``rank:node`` for every rank, gathered over torch.distributed (one string)."""
    import torch.distributed as dist

    mine = node_label()
    if world > 1 and dist.is_available() and dist.is_initialized():
        names: list[Any] = [None] * world
        dist.all_gather_object(names, mine)
    else:
        names = [mine]
    return ",".join(f"{r}:{n}" for r, n in enumerate(names))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop; ``config`` = {"cfg": ServiceConfig, "prepared", "threads", "evaluate_split", "fold",
    "clock"}."""
    entry = time.time()
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _train(config, rank, world, ray.train.torch.get_device(), ray.train.torch.prepare_model,
           ray.train.get_checkpoint(), entry, process_start(), inline=False)


def run_inline(config: dict[str, Any], gpus: float) -> None:
    """A one-worker trial trained in the Tune trial's own process (``tune.trial_runner: inline``):
    the loop of :func:`train_loop_per_worker` without a Train controller and worker group, so
    the trial starts without two more processes (and their imports) and, with Tune's actor
    reuse, later trials start in a process that has them loaded. Reports and checkpoints go to
    Ray Tune (``ray.tune.report``), a retried or restored trial resumes from
    ``ray.tune.get_checkpoint()``, failures are retried by Tune (``tune.max_failures``).
    ``gpus`` > 0: the trial's GPU share (Ray sets CUDA_VISIBLE_DEVICES), used as cuda:0."""
    import ray.tune
    import torch

    device = torch.device("cuda", 0) if gpus > 0 and torch.cuda.is_available() else torch.device("cpu")
    clock = dict(config.get("clock") or {})
    _train(config, 0, 1, device, None, ray.tune.get_checkpoint(), time.time(),
           clock.get("trial_function", time.time()), inline=True)


def _train(config: dict[str, Any], rank: int, world: int, device: Any, wrap_model: Any, restored: Any,
           entry: float, worker_process: float, inline: bool) -> None:
    """One rank of a trial: restore from ``restored`` (a Ray checkpoint or None), train, report
    every epoch (:class:`RayReport`), and for a grid run evaluate the best checkpoint and report
    once more."""
    import torch

    from singr.engine.trainer import Trainer

    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    cfg: ServiceConfig = config["cfg"]
    ckpt_dir = Path(cfg.output_dir) / "checkpoints"
    local = Path(tempfile.mkdtemp(prefix="singr-resume-"))
    resume_from = None
    if restored is not None:
        with restored.as_directory() as d:
            for name in CKPT_FILES:
                if (Path(d) / name).exists():
                    shutil.copy2(Path(d) / name, local / name)
        if (local / LAST).exists():
            resume_from = local / LAST
        if rank == 0 and (local / BEST).exists():
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local / BEST, ckpt_dir / BEST)  # the trial's best so far
            if (local / VAL_CASES).exists():
                shutil.copy2(local / VAL_CASES, ckpt_dir / VAL_CASES)
    nodes = _gather_nodes(rank, world)
    system = SystemSampler()
    clock = dict(config.get("clock") or {})
    startup = startup_split(clock, worker_process, entry, time.time())
    if inline:  # no worker group: the trial's process is the worker
        startup.pop("startup/worker_group_s", None)
        startup.pop("startup/worker_process_s", None)
    try:
        report = RayReport(nodes, system, startup, clock.get("trial_process"), inline=inline)
        trainer = Trainer(cfg, rank=rank, world_size=world, device=device,
                          checkpoint_dir=ckpt_dir, resume=False, resume_from=resume_from,
                          wrap_model=wrap_model, prepared=bool(config.get("prepared", True)),
                          progress=False, fold=config.get("fold"), callbacks=[report])
        result = trainer.run()
        split = config.get("evaluate_split")
        if split:  # a grid run: score the best checkpoint on the held-out split, reported once more
            scores = evaluate_best(result.best_checkpoint, result.last_checkpoint, cfg, split,
                                   device) if rank == 0 else {}
            best = _numeric({f"best_{result.select_metric}": result.best_metric})  # the progress line's score
            report._send({**_numeric(scores), **best, "epoch": int(cfg.train.epochs)})
    finally:
        system.stop()
        shutil.rmtree(local, ignore_errors=True)


def evaluate_best(best: str, last: str, cfg: ServiceConfig, split: str, device: Any) -> dict[str, float]:
    """Evaluate the run's best checkpoint (last if no validation ever ran) on ``split``:
    ``{"<split>_Dice_TC": mean over cases, ..., "<split>_n_cases": n}``; files in <output_dir>/eval."""
    from singr.engine.bundle import load_predictor
    from singr.engine.evaluate import evaluate

    ckpt = Path(best) if Path(best).exists() else Path(last)
    dev = "cuda" if getattr(device, "type", str(device)) == "cuda" else "cpu"
    res = evaluate(load_predictor(ckpt, dev), cfg, split=split, out_dir=Path(cfg.output_dir) / "eval",
                   progress=False, overlays=0)
    out = {f"{split}_{k}": float(v["mean"]) for k, v in res["summary"].items()}
    out[f"{split}_n_cases"] = float(res["n_cases"])
    return out


class TrialScale(NamedTuple):
    """What one trial trains on: ``workers`` training processes (Ray Train workers, or the trial's
    own process when :func:`runner` says inline), each with ``cpus`` CPUs and ``gpus`` GPUs."""

    workers: int
    cpus: float
    gpus: float

    def bundle(self) -> dict[str, float]:
        """One worker's Ray resources: ``{"CPU": cpus}`` and ``"GPU"`` when it has any."""
        return {"CPU": float(self.cpus), **({"GPU": float(self.gpus)} if self.gpus > 0 else {})}


def scaling(cfg: ServiceConfig, resources: dict[str, float]) -> TrialScale:
    """The config's trial scale (``tune.num_workers``, ``cpus_per_worker``, ``gpus_per_worker``);
    gpus_per_worker null = 1 if the cluster has GPUs."""
    t = cfg.tune
    gpus = t.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if float(resources.get("GPU", 0.0)) > 0 else 0.0
    return TrialScale(int(t.num_workers), float(t.cpus_per_worker), float(gpus))


def build_trainer(cfg: ServiceConfig, run_name: str, storage_path: str | Path, num_workers: int,
                  cpus_per_worker: float, gpus_per_worker: float = 0.0, max_failures: int = 0,
                  prepared: bool = True, tune_callback: bool = False, evaluate_split: str | None = None,
                  start_retries: int = 5, fold: int | None = None, clock: dict[str, float] | None = None) -> Any:
    """A TorchTrainer running :func:`train_loop_per_worker` on ``cfg``. Worker failures are
    retried ``max_failures`` times (from the latest checkpoint); a worker group that cannot
    start (no resources within 60 s) is retried ``start_retries`` times, then the run errors
    (Ray's default retries forever). ``fold``: train fold ``fold`` of ``data.folds``. ``clock``:
    the trial's start marks for :func:`startup_split` (``trial_process``, ``trial_function``)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    res = {"CPU": float(cpus_per_worker)}
    if gpus_per_worker > 0:
        res["GPU"] = float(gpus_per_worker)
    callbacks: list[Any] = []
    if tune_callback:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    kwargs: dict[str, Any] = dict(
        train_loop_config={"cfg": cfg, "prepared": prepared, "threads": max(1, int(cpus_per_worker)),
                           "evaluate_split": evaluate_split, "fold": fold, "clock": dict(clock or {})},
        scaling_config=ray.train.ScalingConfig(num_workers=int(num_workers), use_gpu=gpus_per_worker > 0,
                                               resources_per_worker=res),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=str(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=int(max_failures),  # type: ignore[call-arg]
                                                   controller_failure_limit=int(start_retries)),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks))
    if int(num_workers) == 1:
        # one worker needs no process group: no torch.distributed rendezvous store, which would
        # listen on every interface (torch offers no way to bind it to loopback)
        from .raycompat import data_parallel_trainer

        return data_parallel_trainer(train_loop_per_worker, **kwargs)
    return TorchTrainer(train_loop_per_worker, torch_config=TorchConfig(backend="nccl" if gpus_per_worker > 0
                                                                       else "gloo"), **kwargs)


_PROCESS_TRIALS: list[float] = []  # start times of the trials this process ran (Tune reuses trial processes)


def run_trial(params: dict[str, Any], base_cfg: ServiceConfig, trials_dir: str, train_storage: str,
              scale: TrialScale) -> None:
    """Ray Tune function trainable: the trial's config from ``params``, then its training: in this
    process (:func:`run_inline`) or as a Ray Train run (:func:`build_trainer`), by :func:`runner`."""
    now = time.time()
    # a process Tune reuses (reuse_actors) booted for an earlier trial: this one starts at its function
    clock = {"trial_process": now if _PROCESS_TRIALS else process_start(), "trial_function": now}
    _PROCESS_TRIALS.append(now)
    import ray.tune

    from .grid import is_grid
    from .plan import trial_config

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(base_cfg, params, Path(trials_dir) / trial_id)
    split = cfg.experiment.eval_split if is_grid(cfg) and cfg.experiment is not None else None
    fold = None if params.get("fold") is None else int(params["fold"])
    if runner(base_cfg, scale) == "inline":
        run_inline({"cfg": cfg, "prepared": True, "threads": max(1, int(scale.cpus)), "evaluate_split": split,
                    "fold": fold, "clock": clock}, scale.gpus)
        return
    trainer = build_trainer(cfg, run_name=trial_id, storage_path=train_storage, num_workers=scale.workers,
                            cpus_per_worker=scale.cpus, gpus_per_worker=scale.gpus,
                            max_failures=int(base_cfg.tune.max_failures), prepared=True, tune_callback=True,
                            evaluate_split=split, start_retries=int(base_cfg.tune.start_retries),
                            fold=fold, clock=clock)
    trainer.fit()


def runner(cfg: ServiceConfig, scale: TrialScale) -> str:
    """How a trial trains: ``tune.trial_runner``, with ``auto`` = ``inline`` for one worker per
    trial and ``train`` (a Ray Train run: controller, worker group, DDP) for more."""
    chosen = str(cfg.tune.trial_runner)
    if chosen == "auto":
        return "inline" if int(scale.workers) == 1 else "train"
    return chosen


def how_trials_train(cfg: ServiceConfig, scale: TrialScale) -> str:
    """The progress line's words for :func:`runner`."""
    if runner(cfg, scale) == "inline":
        return "trained in its trial's own process (tune.trial_runner inline)"
    return f"a Ray Train run of {scale.workers} worker(s)"
