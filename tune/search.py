"""Stage 3: the search. Ray Tune + OptunaSearch (seeded TPE) or random search + ASHA on the objective (``tune.metric``).

A trial is :func:`tune.trainer.run_trial` with a tiny CPU share ({"cpu": 0.01}); its Train
workers hold the real CPUs/GPUs. The number of concurrent trials is ``tune.max_concurrent``
or what the cluster fits. The sweep lives in ``<storage_path>/<name>``; running the same
command again restores an interrupted sweep (``Tuner.restore``): finished trials are kept,
unfinished and errored ones resume from their latest Train checkpoint.

``tune.search`` picks the searcher over the same space and under the same ASHA schedule
(:func:`make_searcher`): ``optuna``, Optuna's TPE seeded with ``tune.seed``, whose first
``n_startup`` trials are random (a third of ``tune.num_samples``, at least 2 and at most
Optuna's default 10: with Optuna's default a budget of 10 trials or fewer is random search
in disguise); or ``random``, Ray Tune's ``BasicVariantGenerator`` sampling the space with
``random_state = tune.seed`` (the baseline the TPE must beat at the same budget).

With ``tune.start_from_defaults``, either searcher's first trial is the config's own setting
(the paper's defaults: sing.lam, sing.delta, loss.gamma and, where searched, train.lr,
train.weight_decay, train.fg_oversample, model.name; :func:`default_point`), passed as Ray
Tune's ``points_to_evaluate``, so the sweep always measures the reference it should beat. It
counts as one of the ``tune.num_samples`` trials (and of the TPE's random start-up ones). A
setting outside the space is left out with one line saying why.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ray.tune import Callback

from .config import ServiceConfig
from .grid import expand_variants, is_grid
from .plan import METRIC, MODE, PARAM_KEYS, TIME_ATTR, SweepPlan, better, own_setting, search_params
from .trainer import TrialScale, run_trial, runner
from .verdict import fmt_setting


def concurrency(cfg: ServiceConfig, resources: dict[str, float], scale: TrialScale,
                n_trials: int) -> int:
    """tune.max_concurrent, else as many trials as the cluster fits, at most ``n_trials``."""
    if cfg.tune.max_concurrent:
        return int(cfg.tune.max_concurrent)
    n, cpw, gpw = scale
    fit = int(float(resources.get("CPU", 1.0)) / max(n * cpw, 1e-9) + 1e-9)
    if gpw > 0:
        fit = min(fit, int(float(resources.get("GPU", 0.0)) / (n * gpw) + 1e-9))
    return max(1, min(fit, int(n_trials)))


def check_trial_fits(cfg: ServiceConfig, scale: TrialScale, nodes: list[dict[str, float]]) -> None:
    """An inline trial holds one worker's resources in one process: refuse (SingrConfigError)
    when no node of ``nodes`` (each node's total resources) has that many CPUs and GPUs, which
    would leave the trial pending for ever (Ray Tune only warns). A Ray Train run retries its
    worker group's start-up instead (``tune.start_retries``)."""
    from singr.errors import SingrConfigError

    if runner(cfg, scale) != "inline" or not nodes:
        return
    _, cpus, gpus = scale
    if any(float(n.get("CPU", 0.0)) + 1e-9 >= cpus and float(n.get("GPU", 0.0)) + 1e-9 >= gpus for n in nodes):
        return
    most = max(nodes, key=lambda n: (float(n.get("CPU", 0.0)), float(n.get("GPU", 0.0))))
    raise SingrConfigError(
        f"a trial needs tune.cpus_per_worker = {cpus:g} CPU(s)" + (f" and {gpus:g} GPU(s)" if gpus else "")
        + f" on one node, but the largest node of this cluster has {float(most.get('CPU', 0.0)):g} CPU(s)"
        + (f" and {float(most.get('GPU', 0.0)):g} GPU(s)" if gpus else "")
        + "; lower tune.cpus_per_worker / tune.gpus_per_worker, or add a node that fits one trial")


def n_startup(num_samples: int) -> int:
    """Random trials before the TPE models the results: num_samples // 3, within [2, 10]."""
    return max(2, min(10, int(num_samples) // 3))


def default_point(cfg: ServiceConfig) -> tuple[dict[str, Any] | None, str]:
    """``(point, "")``: the config's own setting (:func:`own_setting`) as a point of
    :func:`search_space` (lam as the tune.lam_grid value it equals, within 1e-9), for the
    searcher's ``points_to_evaluate``; or ``(None, reason)`` when a value lies outside the
    space, the reason naming the config key and the search range it misses."""
    t = cfg.tune
    point: dict[str, Any] = {}
    for p, v in own_setting(cfg).items():
        key = PARAM_KEYS[p]
        if p == "lam":
            hit = [float(g) for g in t.lam_grid if abs(float(g) - float(v)) <= 1e-9]
            if not hit:
                return None, f"{key} = {float(v):g} is not in tune.lam_grid {[float(g) for g in t.lam_grid]}"
            point[p] = hit[0]
        elif p == "model":
            if v not in (t.models or []):
                return None, f"{key} = {v} is not in tune.models {list(t.models or [])}"
            point[p] = str(v)
        else:
            lo, hi = (float(x) for x in getattr(t, p))
            tol = 1e-9 * max(abs(lo), abs(hi), 1e-300)
            if not lo - tol <= float(v) <= hi + tol:
                return None, f"{key} = {float(v):g} is outside tune.{p} [{lo:g}, {hi:g}]"
            point[p] = min(max(float(v), lo), hi)
    return point, ""


def make_searcher(cfg: ServiceConfig, max_concurrent: int, metric: str, mode: str) -> Any:
    """The searcher of ``tune.search`` (see the module docstring), limited to ``max_concurrent``
    trials at once; with ``tune.start_from_defaults`` its first trial is :func:`default_point`
    (where there is one)."""
    t = cfg.tune
    point = default_point(cfg)[0] if t.start_from_defaults else None
    points = [point] if point is not None else None
    if t.search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=int(max_concurrent),
                                     random_state=int(t.seed))
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    class ValidatedEpochsOptunaSearch(OptunaSearch):
        """OptunaSearch that passes on only the epochs that validated: with ``train.val_every`` > 1
        the other epochs' results have no ``metric``, on which Ray's OptunaSearch raises KeyError."""

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if isinstance(self.metric, str) and self.metric not in result:
                return
            super().on_trial_result(trial_id, result)

    sampler = optuna.samplers.TPESampler(seed=int(t.seed), n_startup_trials=n_startup(int(t.num_samples)))
    return ConcurrencyLimiter(ValidatedEpochsOptunaSearch(metric=metric, mode=mode, sampler=sampler,
                                                          points_to_evaluate=points),
                              max_concurrent=int(max_concurrent))


def grid_space(cfg: ServiceConfig) -> dict[str, Any]:
    """Every variant x seed of ``cfg.experiment`` (Tune's grid search, one trial each)."""
    from ray import tune

    assert cfg.experiment is not None
    return {"variant": tune.grid_search([v.name for v in expand_variants(cfg)]),
            "seed": tune.grid_search([int(s) for s in cfg.experiment.seeds])}


def search_space(cfg: ServiceConfig) -> dict[str, Any]:
    """lambda from tune.lam_grid (categorical), delta and gamma uniform in their ranges; lr and
    weight_decay log-uniform, fg_oversample uniform and the architecture (categorical) when
    tune.lr / tune.weight_decay / tune.fg_oversample / tune.models are set."""
    from ray import tune

    t = cfg.tune
    space: dict[str, Any] = {"lam": tune.choice([float(v) for v in t.lam_grid]),
                             "delta": tune.uniform(*map(float, t.delta)),
                             "gamma": tune.uniform(*map(float, t.gamma))}
    if t.lr:
        space["lr"] = tune.loguniform(*map(float, t.lr))
    if t.weight_decay:
        space["weight_decay"] = tune.loguniform(*map(float, t.weight_decay))
    if t.fg_oversample:
        space["fg_oversample"] = tune.uniform(*map(float, t.fg_oversample))
    if t.models:
        space["model"] = tune.choice(list(t.models))
    return space


class Progress(Callback):
    """The sweep's own progress on the terminal: one line per finished trial with a bar of
    trials done and the best so far (Ray's trial tables are off)."""

    def __init__(self, n_trials: int, params: list[str], epochs: int, width: int = 20, metric: str = METRIC,
                 mode: str = MODE):
        self.n, self.params, self.epochs, self.width = int(n_trials), list(params), int(epochs), width
        self.metric, self.mode = metric, mode
        self.done = 0
        self.best: tuple[float, str] | None = None
        self.t0 = time.time()

    def _line(self, trial: Any, what: str) -> None:
        self.done += 1
        filled = int(round(self.width * self.done / max(self.n, 1)))
        bar = "#" * filled + "." * (self.width - filled)
        r = trial.last_result or {}
        score = r.get(f"best_{self.metric}", r.get(self.metric))
        if isinstance(score, (int, float)) and (self.best is None or better(float(score), self.best[0], self.mode)):
            self.best = (float(score), trial.trial_id)
        ps = ", ".join(f"{p}={trial.config[p]:.3g}" if isinstance(trial.config.get(p), float) else
                       f"{p}={trial.config.get(p)}" for p in self.params if p in trial.config)
        name = "Dice" if self.metric == METRIC else self.metric[4:]
        got = f"val {name} {score:.4f}" if isinstance(score, (int, float)) else "no validation"
        best = f"best {self.best[0]:.4f} ({self.best[1]})" if self.best else "best -"
        print(f"[tune] [{bar}] {self.done}/{self.n} trial {trial.trial_id} {what} after {r.get('epoch', 0)} "
              f"epoch(s), {got} ({ps}); {best}; {time.time() - self.t0:.0f} s", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        r = trial.last_result or {}
        stopped = int(r.get("epoch", 0)) < self.epochs
        self._line(trial, "stopped by ASHA" if stopped else "finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "FAILED")


def make_trainable(plan: SweepPlan, scale: TrialScale):
    """The trial function with its resources: a Train worker's CPUs and GPUs when the trial trains
    in its own process (``inline``), else a token CPU share (the Train run reserves its workers)."""
    from ray import tune

    fn = tune.with_parameters(run_trial, base_cfg=plan.cfg, trials_dir=str(plan.trials_dir),
                              train_storage=str(plan.sweep_dir / "train_runs"), scale=scale)
    if runner(plan.cfg, scale) == "inline":
        return tune.with_resources(fn, {k.lower(): v for k, v in scale.bundle().items()})
    return tune.with_resources(fn, {"cpu": 0.01})


def tuner_settings(plan: SweepPlan, scale: TrialScale) -> dict[str, Any]:
    """What the runner changes in a Tuner: inline trials reuse their processes (``reuse_actors``),
    are retried by Tune (``tune.max_failures``) and keep Tune's two latest checkpoints; a Ray
    Train run retries its own workers and keeps its own checkpoints. ``janitor``: whether the
    :class:`~tune.guards.PlacementGroupJanitor` runs as a callback during the sweep (not inline)."""
    from ray import tune

    if runner(plan.cfg, scale) != "inline":
        return {"reuse_actors": False, "run": {}, "janitor": True}
    # no Train worker groups to clean up while the sweep runs: the janitor would see Tune's own trial groups
    # (same shape) between two trials and must not touch them; its end-of-sweep check still runs
    return {"reuse_actors": True, "janitor": False,
            "run": {"failure_config": tune.FailureConfig(max_failures=int(plan.cfg.tune.max_failures)),
                    "checkpoint_config": tune.CheckpointConfig(num_to_keep=2)}}


@dataclass
class TunerRun:
    """What :func:`run_tuner` ran: the ResultGrid, whether the experiment was restored, whether
    the watchdog ended it, and the placement-group janitor's counts (for summary.json)."""

    grid: Any
    restored: bool
    stalled: bool
    resources: dict[str, int]


def run_tuner(plan: SweepPlan, scale: TrialScale,
              new: Callable[[], tuple[dict[str, Any], dict[str, Any]]], *, n_trials: int, params: list[str],
              callbacks: Sequence[Any] = (), resume: bool = True) -> TunerRun:
    """Fit (or restore and finish) the Ray Tune experiment ``plan.sweep_dir`` of
    :func:`make_trainable`'s trials: the one Tuner of the search, the grid and the fold refit.

    With ``resume`` and an experiment there, it is restored (finished trials kept, unfinished
    and errored ones resumed). Otherwise ``new()`` gives ``(param_space, TuneConfig keyword
    arguments)`` and a Tuner is made with the runner's settings (:func:`tuner_settings`), the
    ``callbacks``, then a :class:`Progress` bar over ``n_trials`` showing ``params``, the
    :class:`~tune.guards.PlacementGroupJanitor` (when it runs during the sweep) and the
    :class:`~tune.guards.Watchdog` as its stopper. After the fit the janitor frees what is left."""
    from ray import tune

    from .guards import PlacementGroupJanitor, Watchdog

    cfg = plan.cfg
    exp = plan.sweep_dir
    trainable = make_trainable(plan, scale)
    bar = Progress(n_trials, params, int(cfg.train.epochs), metric=plan.metric, mode=plan.mode)
    janitor = PlacementGroupJanitor(scale.bundle())
    watchdog = Watchdog(float(cfg.tune.stall_timeout_s))
    restored = bool(resume and tune.Tuner.can_restore(str(exp)))
    if restored:
        tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        space, tune_config = new()
        how = tuner_settings(plan, scale)
        run_config = tune.RunConfig(name=exp.name, storage_path=str(exp.parent),
                                    callbacks=[*callbacks, bar, *([janitor] if how["janitor"] else [])],
                                    stop=watchdog, verbose=0, **how["run"])
        tuner = tune.Tuner(trainable, param_space=space,
                           tune_config=tune.TuneConfig(**tune_config, reuse_actors=how["reuse_actors"]),
                           run_config=run_config)
    grid = tuner.fit()
    return TunerRun(grid, restored, watchdog.fired, janitor.finish())


def run_search(plan: SweepPlan, scale: TrialScale, max_concurrent: int,
               callbacks: Sequence[Any] = (), resume: bool = True) -> TunerRun:
    """The sweep's trials (:func:`run_tuner`): every variant x seed of a grid, run to the end
    (no searcher, no ASHA), or ``tune.num_samples`` trials of the searcher under ASHA."""

    def new() -> tuple[dict[str, Any], dict[str, Any]]:
        from ray.tune.schedulers import ASHAScheduler

        if is_grid(plan.cfg):
            return grid_space(plan.cfg), {"num_samples": 1, "max_concurrent_trials": int(max_concurrent)}
        t = plan.cfg.tune
        if t.start_from_defaults:
            point, why = default_point(plan.cfg)
            if point is not None:
                print(f"[tune] trial 1 is the config's own setting ({fmt_setting(point)}; points_to_evaluate)",
                      flush=True)
            else:
                print(f"[tune] the config's own setting ({fmt_setting(own_setting(plan.cfg))}) lies outside "
                      f"the search space ({why}): the search starts without it", flush=True)
        searcher = make_searcher(plan.cfg, max_concurrent, plan.metric, plan.mode)
        epochs = int(plan.cfg.train.epochs)
        scheduler = ASHAScheduler(time_attr=TIME_ATTR, metric=plan.metric, mode=plan.mode, max_t=epochs,
                                  grace_period=min(int(t.asha.grace_period), epochs),
                                  reduction_factor=float(t.asha.reduction_factor))
        return search_space(plan.cfg), {"search_alg": searcher, "scheduler": scheduler,
                                        "num_samples": int(t.num_samples)}

    return run_tuner(plan, scale, new, n_trials=plan.n_trials, params=search_params(plan.cfg),
                     callbacks=callbacks, resume=resume)
