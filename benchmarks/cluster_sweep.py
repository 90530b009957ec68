"""The whole job at BraTS size on a local three-node cluster (issue 20 item 4).

    .venv/bin/python benchmarks/cluster_sweep.py [--work runs/cluster-sweep] [--n-cases 30]

1. starts the development cluster (:class:`tune.devcluster.LocalCluster`: a head without CPUs, two
   1-CPU worker nodes, an MLflow server; all on 127.0.0.1, stopped by PID at the end);
2. writes ``--n-cases`` synthetic cases of 240 x 240 x 155 (``configs/synthetic-brats-size.yaml``'s
   generator) to the cluster's shared folder (kept in ``--work`` and reused by a later run);
3. submits ``configs/synthetic-brats-size-cluster.yaml`` with ``python -m tune.submit`` (``ray job
   submit``): SiNG maps through Ray Data, the search, the control and confirmation, the model, the
   registration with its card. Validation per epoch scores a fixed subset of the validation split
   (``train.val_max_cases``) and the best checkpoint the whole split at the end;
4. submits the same schedule once more as a single trial that validates the whole split every
   time (``train.val_max_cases=null``): validation's share of trial time "before";
5. writes the wall-time split (client, job, and the driver's ``summary.json`` ``time_split``) to
   ``benchmarks/RESULTS.md`` (section "A full-size sweep on the local cluster") and
   ``benchmarks/cluster_sweep.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import sections  # noqa: E402 - benchmarks/sections.py, beside this file

CONFIG = "synthetic-brats-size-cluster.yaml"
HEADING = "## A full-size sweep on the local cluster (`benchmarks/cluster_sweep.py`)"
SECTION = "cluster-sweep"


def write_cases(data: Path, n: int) -> dict[str, Any]:
    """``n`` BraTS-size synthetic cases in ``data`` (those there already are kept); seconds per new case."""
    from singr.config import load_config
    from singr.data.synth import synthesize_dataset

    have = len([p for p in data.glob("*") if p.is_dir()]) if data.is_dir() else 0
    s: Any = load_config(CONFIG).synth
    t0 = time.time()
    if have < n:
        print(f"[cluster-sweep] writing {n} cases of {list(s.shape)} to {data}", flush=True)
        synthesize_dataset(data, n_cases=n, shape=tuple(s.shape), seed=int(s.seed), progress=True,
                           brain_box=s.brain_box, dtype=str(s.dtype))
    new = n - have if have < n else 0
    nbytes = sum(f.stat().st_size for f in data.rglob("*.nii.gz"))
    return {"cases": n, "new": new, "s_per_case": round((time.time() - t0) / new, 2) if new else None,
            "input_mb_per_case": round(nbytes / 1e6 / max(1, n), 2)}


def submit(info: Any, shared: Path, name: str, *more: str) -> dict[str, Any]:
    """One ``python -m tune.submit`` job; its summary.json plus the client's wall seconds."""
    cmd = [sys.executable, "-m", "tune.submit", "--address", info.dashboard, "-c", CONFIG,
           f"data.root={shared / 'data'}", f"data.cache_dir={shared / 'cache'}", f"output_dir={shared / 'out' / name}",
           f"data.split_file={shared / 'split.json'}", f"tune.storage_path={shared / 'ray'}", f"tune.name={name}",
           *more]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **info.env(), "PYTHONUNBUFFERED": "1"}
    print(f"[cluster-sweep] {name}: {' '.join(cmd[3:])}", flush=True)
    log = shared.parent / "logs" / f"job-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert p.stdout is not None
        for line in p.stdout:  # the job's log, as the user sees it, kept in the file
            f.write(line)
            if line.startswith("[tune]") and ("trial" in line or "maps" in line or "wall time" in line
                                               or "registered" in line or "answer" in line):
                print("   " + line.rstrip()[:220], flush=True)
        rc = p.wait()
    if rc != 0:
        raise SystemExit(f"[cluster-sweep] job {name} failed (exit {rc}); its log: {log}")
    s = json.loads((shared / "ray" / name / "results" / "summary.json").read_text())
    s["client_seconds"] = round(time.time() - t0, 1)
    s["log"] = str(log)
    return s


def _full_trials(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in summary.get("trials", []) if not t.get("error") and not t.get("stopped_early")]


def _median(vals: list[Any]) -> float | None:
    got = [float(v) for v in vals if isinstance(v, (int, float)) and v == v]
    return round(statistics.median(got), 4) if got else None


def validation_shares(after: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """Validation's share of trial time (``val_share``: validation over training + validation) in
    trials that ran every epoch, with the subset per epoch and the whole split at the end (after)
    and with the whole split every time (before); and the validation seconds of such a trial."""
    out: dict[str, Any] = {}
    for key, s in (("after", after), ("before", before)):
        if s is None:
            continue
        rows = _full_trials(s)
        out[key] = {"trials": len(rows), "val_share": _median([r.get("val_share") for r in rows]),
                    "val_s": _median([r.get("val_s") for r in rows]),
                    "train_s": _median([r.get("train_s") for r in rows]),
                    "epoch_share": _median([r.get("epoch_share") for r in rows])}
    return out


def report_lines(res: dict[str, Any]) -> list[str]:
    """The RESULTS.md section (markdown lines) for a run's record ``res``."""
    a = res["after"]
    ts = a["time_split"]
    wall = float(a["client_seconds"])
    job_start = max(0.0, wall - float(ts["total"] or 0.0))

    def row(name: str, sec: Any, note: str = "") -> str:
        if sec is None:
            return f"| {name} | - | - | {note} |"
        return f"| {name} | {float(sec):.0f} | {float(sec) / wall:.0%} | {note} |"

    conf = a.get("confirm") or {}
    reg = a.get("registered") or {}
    val = res["validation"]
    lines = [f"Run of {res['date']} on {res['machine']}: {res['cases']['cases']} synthetic cases of 240 x 240 x 155 "
             f"({res['cases']['input_mb_per_case']:.1f} MB of NIfTI each), `configs/{CONFIG}` (network features "
             f"{res['features']}, {res['patch']} patches, {res['epochs']} epochs), submitted with `python -m "
             f"tune.submit` to the local cluster: a head without CPUs and {res['workers']} worker nodes of "
             f"{res['cpus_per_worker']:g} CPU, MLflow server, storage under one shared folder.", "",
             f"The job: {a['n_trials']} trials ({a['n_stopped_early']} stopped by ASHA), then "
             f"{conf.get('n_runs', 0)} control and confirmation runs; registered "
             f"{reg.get('name', '-')} version {reg.get('version', '-')}"
             + (f" ({'now @' + reg['alias'] if reg.get('promoted') else '@' + str(reg.get('alias')) + ' not moved'})"
                if reg else "") + ".", "",
             "| stage | seconds | share of the job | |", "| --- | ---: | ---: | --- |",
             row("job start (submit, runtime env, driver)", job_start),
             row("SiNG maps (Ray Data: preprocessing and maps)", ts.get("maps"),
                 f"{a.get('maps_computed', 0)} maps computed, {a.get('maps_cached', 0)} from cache"),
             row("search (trials, wall)", ts.get("search"),
                 f"summed over trials: training {ts.get('train')} s, validation {ts.get('validation')} s"),
             row("control and confirmation", ts.get("stage")),
             row("model folder (ensemble built and scored)", ts.get("model")),
             row("registration (MLflow model, card, exports)", ts.get("register")),
             row("other (driver start-up, results files)", ts.get("other")),
             f"| **the job, as the client saw it** | **{wall:.0f}** | 100% | |", ""]
    if res["cases"].get("s_per_case"):
        lines += [f"Before the job: the cases written in {res['cases']['s_per_case']:.2f} s each (one core).", ""]
    b, f = val.get("before"), val.get("after")
    if f:
        lines.append(f"Validation, in trials that ran all {res['epochs']} epochs: with {res['val_max_cases']} of "
                     f"{res['n_val']} validation cases per validation and the whole split once at the end, "
                     f"{f['val_s']} s per trial, **{(f['val_share'] or 0):.0%}** of its training + validation time"
                     + (f"; with the whole split every validation (`train.val_max_cases=null`, one trial, "
                        f"same schedule), {b['val_s']} s, **{(b['val_share'] or 0):.0%}**." if b else "."))
        lines.append("")
        k = validations(res["epochs"], res["val_every"])
        after_n, before_n = k * int(res["val_max_cases"]) + res["n_val"], k * res["n_val"]
        per = float(b["val_s"]) / before_n if b and b.get("val_s") else float(f["val_s"]) / after_n
        big = validations(300, 5)  # the paper's schedule (configs/brats.yaml), BraTS 2020's 59 validation cases
        lines += [f"That is {after_n} case-validations per trial against {before_n} ({per:.1f} s per full-size case "
                  f"with this network), {res['n_val']} of them the whole split at the end, a large part in so short a "
                  f"schedule. "
                  f"At the paper's schedule ({big} validations in 300 epochs) and BraTS 2020's 59 validation cases, "
                  f"10 cases per validation and the split at the end make {big * 10 + 59} case-validations per run "
                  f"against {big * 59}, {big * 59 / (big * 10 + 59):.1f}x fewer (arithmetic, not measured).", ""]
    return lines


def validations(epochs: int, every: int) -> int:
    """How many times a run of ``epochs`` validates with ``train.val_every`` = ``every`` (and at the last epoch)."""
    return epochs // every + (1 if epochs % every else 0)


def kept_section(results: Path) -> list[str]:
    """The section of ``results``, for ``run.py`` to keep when it rewrites the file."""
    return sections.kept(results, SECTION, HEADING)


def main(argv: list[str] | None = None) -> int:
    from singr.config import load_config
    from tune.devcluster import LocalCluster

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(ROOT / "runs" / "cluster-sweep"), help="cluster folder, cases, logs")
    ap.add_argument("--n-cases", type=int, default=30)
    ap.add_argument("--no-before", action="store_true", help="skip the whole-split-every-time trial")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--report-only", metavar="JSON",
                    help="rewrite the section from a run's record (benchmarks/cluster_sweep.json)")
    a = ap.parse_args(argv)
    if a.report_only:
        rec = json.loads(Path(a.report_only).read_text())
        rec.setdefault("val_every", int(load_config(CONFIG).train.val_every))
        sections.put(Path(a.out), SECTION, "\n".join(report_lines(rec)), HEADING)
        print("\n".join(report_lines(rec)))
        return 0
    work = Path(a.work).resolve()
    cfg: Any = load_config(CONFIG)
    cluster = LocalCluster(work / "cluster", workers=2, cpus_per_worker=1.0, mlflow=True)
    info = cluster.up()
    try:
        shared = Path(info.root) / "shared"
        data = work / "data"  # outside the cluster folder: kept when the cluster's state is not
        cases = write_cases(data, int(a.n_cases))
        if not (shared / "data").exists():
            (shared / "data").symlink_to(data)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        after = submit(info, shared, f"after-{stamp}")
        before = None if a.no_before else submit(
            info, shared, f"before-{stamp}", "tune.num_samples=1", "tune.control.seeds=0", "tune.confirm.top_k=0",
            "train.val_max_cases=null", "mlflow.registered_model=singr-brats-size-cluster-before")
    finally:
        cluster.down()
    n_val = round(int(a.n_cases) * float(cfg.data.split_ratios[1]))
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores", "cases": cases,
           "features": list(cfg.model.features), "patch": "x".join(map(str, cfg.train.patch_size)),
           "epochs": int(cfg.train.epochs), "val_every": int(cfg.train.val_every), "workers": 2, "cpus_per_worker": 1.0,
           "val_max_cases": cfg.train.val_max_cases, "n_val": n_val,
           "after": after, "before": before, "validation": validation_shares(after, before)}
    lines = report_lines(res)
    print("\n".join(lines))
    out = Path(a.out)
    sections.put(out, SECTION, "\n".join(lines), HEADING)
    out.with_name("cluster_sweep.json").write_text(json.dumps(res, indent=1, default=str))
    print(f"[cluster-sweep] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
