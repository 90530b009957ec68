"""benchmarks/cluster_sweep.py's report (the run itself is the benchmark: a cluster and 30
full-size cases): validation shares from the trials that ran every epoch, the wall-time table whose
rows add up to the job as the client saw it, the section written between its markers and kept."""
from __future__ import annotations

import re

from .conftest import benchmark_module


def _summary(trials: list[dict], **more) -> dict:
    return {"trials": trials, "n_trials": len(trials), "n_stopped_early": sum(t["stopped_early"] for t in trials),
            "maps_computed": 270, "maps_cached": 0, **more}


def _record() -> dict:
    after = _summary(
        [{"stopped_early": False, "error": False, "val_share": 0.30, "val_s": 60.0, "train_s": 140.0},
         {"stopped_early": False, "error": False, "val_share": 0.40, "val_s": 80.0, "train_s": 120.0},
         {"stopped_early": True, "error": False, "val_share": 0.90, "val_s": 99.0, "train_s": 11.0},  # left out
         {"stopped_early": False, "error": True, "val_share": 0.95, "val_s": 1.0, "train_s": 0.1}],   # left out
        confirm={"n_runs": 4}, registered={"name": "m", "version": "3", "alias": "champion", "promoted": True},
        time_split={"maps": 100.0, "search": 400.0, "train": 260.0, "validation": 140.0, "stage": 300.0,
                    "model": 50.0, "register": 40.0, "other": 10.0, "total": 900.0},
        client_seconds=1000.0)
    before = _summary([{"stopped_early": False, "error": False, "val_share": 0.7, "val_s": 300.0, "train_s": 130.0}])
    return after, before


def test_validation_shares_use_trials_that_ran_every_epoch():
    mod = benchmark_module("cluster_sweep")
    after, before = _record()
    got = mod.validation_shares(after, before)
    assert got["after"] == {"trials": 2, "val_share": 0.35, "val_s": 70.0, "train_s": 130.0, "epoch_share": None}
    assert got["before"]["val_share"] == 0.7 and got["before"]["trials"] == 1
    assert "before" not in mod.validation_shares(after, None)


def test_report_table_adds_up_to_the_client_wall_time(tmp_path):
    mod = benchmark_module("cluster_sweep")
    after, before = _record()
    res = {"date": "2026-12-05 13:00", "machine": "2 cores", "features": [8, 8], "patch": "64x64x64", "epochs": 8,
           "val_every": 2,
           "workers": 2, "cpus_per_worker": 1.0, "val_max_cases": 2, "n_val": 6,
           "cases": {"cases": 30, "new": 30, "s_per_case": 1.4, "input_mb_per_case": 6.9},
           "after": after, "before": before, "validation": mod.validation_shares(after, before)}
    lines = mod.report_lines(res)
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| stage") and "**" not in ln]
    secs = [float(m.group(1)) for ln in rows if (m := re.match(r"\| [^|]+ \| (\d+) \|", ln))]
    assert len(secs) == 7 and sum(secs) == 1000.0          # job start 100 (client 1000 - driver 900) + the split
    assert any(ln.startswith("| job start (submit, runtime env, driver) | 100 | 10% |") for ln in lines)
    text = "\n".join(lines)
    assert "4 trials (1 stopped by ASHA)" in text and "version 3 (now @champion)" in text
    assert "70.0 s per trial, **35%**" in text and "300.0 s, **70%**" in text
    # 4 validations of 2 cases + the 6 at the end, against 4 x 6; per case from the whole-split trial: 300 s / 24
    assert "14 case-validations per trial against 24 (12.5 s per full-size case" in text
    assert "659 case-validations per run against 3540, 5.4x fewer" in text
    assert mod.validations(8, 2) == 4 and mod.validations(7, 2) == 4 and mod.validations(300, 5) == 60

    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmarks\n")
    mod.sections.put(out, mod.SECTION, text, mod.HEADING)
    kept = mod.kept_section(out)
    assert kept[1] == mod.HEADING and "job start" in kept[-1] and kept[-1].endswith("<!-- cluster-sweep:end -->")
