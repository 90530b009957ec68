"""Where a trial's slot goes: the sweep as a user runs it (``python -m tune``, a local Ray) with
each trial a Ray Train run (``tune.trial_runner: train``: a controller and a worker group per
trial) against trials trained in their own, reused Tune process (``inline``, the default for one
worker), in the same run, on the same data, seeds and search. Per runner: the median over
trials of the epochs' share of the trial's slot (its process start to its last report) and of
the start-up before the first epoch (with its parts, ``startup/*`` and ``setup_*``), and the
sweep's wall time. Used by ``run.py`` (section ``startup``); ``python benchmarks/bench_startup.py``
prints the figures alone.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RUNNERS = ("train", "inline")
PARTS = ("startup/trial_process_s", "startup/worker_group_s", "startup/worker_process_s", "startup/loop_s",
         "setup_data_seconds", "setup_model_seconds", "epoch_seconds")


def _first_reports(sweep: Path) -> list[dict[str, Any]]:
    """Each trial's first report (Tune's result.json), in the order the trials started."""
    out = []
    for f in sweep.glob("run_trial_*/result.json"):
        line = f.read_text().splitlines()[:1]
        if line:
            out.append(json.loads(line[0]))
    return sorted(out, key=lambda r: r.get("timestamp", 0))


def bench_startup(repeats: int, tiny: bool, workdir: Path) -> dict[str, Any]:
    """Both runners' sweeps, alternating (``repeats`` rounds, at least 1); see the module docstring."""
    from singr.data.synth import synthesize_dataset
    from tune.config import load_service_config

    base = "smoke.yaml" if tiny else "synthetic.yaml"
    # tiny: the registered model is not exported nor evaluated on the test split (seconds per sweep, after its
    # trials: in the wall time only, the same for both runners; what the test of --tiny runs is the trials)
    sweep_over = (["tune.num_samples=2", "train.epochs=2", "mlflow.export=[]", "mlflow.card_test_metrics=false"]
                  if tiny else ["tune.num_samples=4", "train.epochs=10"])
    s = load_service_config(base).synth
    data = workdir / "data"
    synthesize_dataset(data, n_cases=int(s.n_cases), shape=tuple(s.shape), seed=0, progress=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "MLFLOW_TRACKING_URI"}
    env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"})
    runs: dict[str, list[dict[str, Any]]] = {r: [] for r in RUNNERS}
    for i in range(max(1, repeats)):
        for runner in (RUNNERS if i % 2 == 0 else RUNNERS[::-1]):
            name = f"{runner}-{i}"
            over = [f"data.root={data}", f"data.cache_dir={workdir / 'cache'}", f"output_dir={workdir / 'out'}",
                    f"tune.storage_path={workdir / 'ray'}", f"tune.name={name}", f"tune.trial_runner={runner}",
                    f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}", "mlflow.registered_model=singr-bench",
                    "tune.postprocess=false", *sweep_over]
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "tune", "-c", base, "-q", *over], cwd=workdir, env=env,
                               capture_output=True, text=True, timeout=3600)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                raise RuntimeError(f"the {runner} sweep failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
            summ = json.loads((workdir / "ray" / name / "results" / "summary.json").read_text())
            firsts = _first_reports(workdir / "ray" / name)
            runs[runner].append({"wall_s": wall, "epoch_share": summ["epoch_share_median"],
                                 "startup_s": summ["startup_s_median"],
                                 "scores": sorted(round(float(t["score"]), 6) for t in summ["trials"]),
                                 "parts": {k: statistics.median(float(r[k]) for r in firsts if k in r)
                                           for k in PARTS if any(k in r for r in firsts)}})
    out: dict[str, Any] = {"config": base, "overrides": sweep_over, "rounds": max(1, repeats)}
    for runner, rr in runs.items():
        out[runner] = {"epoch_share": statistics.median(r["epoch_share"] for r in rr),
                       "startup_s": statistics.median(r["startup_s"] for r in rr),
                       "wall_s": statistics.median(r["wall_s"] for r in rr),
                       "parts": rr[0]["parts"], "scores": rr[0]["scores"]}
    out["wall_ratio"] = out["inline"]["wall_s"] / out["train"]["wall_s"]
    out["same_scores"] = out["inline"]["scores"] == out["train"]["scores"]
    return out


def startup_lines(b: dict[str, Any]) -> list[str]:
    """RESULTS.md's section for :func:`bench_startup`."""
    t, i = b["train"], b["inline"]
    names = {"startup/trial_process_s": "trial process start to its function (boot, imports)",
             "startup/worker_group_s": "Train controller + worker group until the worker process starts",
             "startup/worker_process_s": "worker process start to its loop (boot, imports)",
             "startup/loop_s": "the loop before the Trainer (checkpoint, node names, system metrics)",
             "setup_data_seconds": "Trainer setup: cases, split, cache",
             "setup_model_seconds": "Trainer setup: network",
             "epoch_seconds": "the first epoch"}
    lines = ["", "## Trial start-up: a Ray Train run per trial vs training in the trial's own process", "",
             f"`python -m tune -c configs/{b['config']} {' '.join(b['overrides'])}` on a local Ray, once with "
             "`tune.trial_runner=train` (every trial a Ray Train run: a controller and a worker group) and once with "
             "`inline` (the default for one worker: the Tune trial process trains, and Tune reuses it for later "
             f"trials), same data, seeds and search; {b['rounds']} round(s), alternating, median. The slot is a "
             "trial's process start to its last report.", "",
             "| runner | epochs' share of a trial's slot (median) | start-up before the first epoch (median s) "
             "| sweep wall time (s) |", "| --- | --- | --- | --- |",
             f"| train | {t['epoch_share']:.0%} | {t['startup_s']:.1f} | {t['wall_s']:.0f} |",
             f"| inline (default) | **{i['epoch_share']:.0%}** | **{i['startup_s']:.1f}** | {i['wall_s']:.0f} "
             f"(**{b['wall_ratio']:.2f}x**) |", "",
             "A trial's start-up by part (s; median over the trials' first reports: inline, the trials that "
             "start in a reused process pay no boot and no imports):", "",
             "| part | train | inline |", "| --- | --- | --- |"]
    for k, label in names.items():
        a, c = t["parts"].get(k), i["parts"].get(k)
        lines.append(f"| {label} | {'' if a is None else f'{a:.2f}'} | {'-' if c is None else f'{c:.2f}'} |")
    lines += ["", "Both runners trained the same trials to the same validation scores (ASHA's stops, which depend on "
              f"the order results arrive in, can differ): {b['same_scores']}."]
    return lines


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import standalone

    sys.exit(standalone.main(__doc__, bench_startup, lambda res, case: startup_lines(res), case=False,
                                 repeats=1))
