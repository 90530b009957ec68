"""`singr report` for a grid with an axis (configs/ambiguity.yaml) on a fabricated MLflow store:
per-case scores from the runs' eval CSVs, paired differences averaged over seeds, the
bootstrap intervals and Wilcoxon p-values against hand values, the verdicts and headline,
the line plot and the picture of one case at every level."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlflow")

from singr.config import dump_config  # noqa: E402
from tune.config import load_service_config  # noqa: E402
from tune.plan import make_plan  # noqa: E402
from tune.report import write_report  # noqa: E402
from tune.stats import mean_se  # noqa: E402

HARD_DICE, HARD_HD = 0.5, 10.0
# SiNGR - hard, per level, seed and case (Dice); HD95 moves the other way, 100 mm per Dice
D = {
    # a0: the same differences for both seeds, [0, 0, 0, 0.04]: bootstrap means are 0.01 x (number of
    # times the 4th case is drawn) ~ Bin(4, 1/4): P(<= 2) = 0.949 < 0.975 <= P(<= 3) = 0.996, so the
    # 95% interval is (0, 0.03), not the data range (0, 0.04); one non-zero difference: Wilcoxon p = 1
    ("a0", 0): [0.0, 0.0, 0.0, 0.04], ("a0", 1): [0.0, 0.0, 0.0, 0.04],
    # a1: case c gets 0.01 c + 0.005 with seed 0 and 0.01 c - 0.005 with seed 1; averaged over the
    # seeds 0.01, ..., 0.06, all positive: exact two-sided Wilcoxon p = 2 / 2^6
    ("a1", 0): [0.01 * c + 0.005 for c in range(1, 7)], ("a1", 1): [0.01 * c - 0.005 for c in range(1, 7)],
}


def _axis_config(tmp_path: Path, roots: dict[str, Path]):
    levels = ", ".join(f"{{name: {n}, value: {v}, label: L{n}, set: [synth.ambiguity={v}, data.root={roots[n]}]}}"
                       for n, v in (("a0", 0.0), ("a1", 1.0)))
    cfg = load_service_config("ambiguity.yaml", [
        "experiment.variants=[{name: hard, label: Hard labels (Dice+BCE), set: [loss.name=dice_bce]}, "
        "{name: singr, label: SiNGR (delta 0.5), set: [loss.name=focal_l1]}]",
        f"experiment.axis={{name: ambiguity, levels: [{levels}]}}", "experiment.seeds=[0, 1]",
        "experiment.overlay_cases=0", "experiment.notes=fabricated", f"data.root={roots['a0']}",
        f"tune.storage_path={tmp_path / 'ray'}", f"output_dir={tmp_path / 'out'}"])
    return make_plan(cfg).cfg  # what a sweep stores: paths resolved, one cache and split per folder


def _fabricate(tmp_path: Path, roots: dict[str, Path], extra_run: bool = True) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("fab", artifact_location=(tmp_path / "artifacts").as_uri())
    cfg = _axis_config(tmp_path, roots)
    parent = client.create_run(exp, run_name="amb", tags={"singr.role": "sweep", "singr.mode": "grid",
                                                          "sweep": "amb"})
    pid = parent.info.run_id
    client.log_text(pid, dump_config(cfg), "config.yaml")
    for (level, seed), diffs in D.items():
        for variant in ("hard", "singr"):
            r = client.create_run(exp, tags={"mlflow.parentRunId": pid, "variant": f"{variant}-{level}",
                                             "seed": str(seed)})
            rows = ["case,Dice_TC,Dice_WT,Dice_ET,HD95_TC,HD95_WT,HD95_ET,Dice_mean,HD95_mean"]
            dice = [HARD_DICE + (d if variant == "singr" else 0.0) for d in diffs]
            hd = [HARD_HD - (100 * d if variant == "singr" else 0.0) for d in diffs]
            for c, (x, h) in enumerate(zip(dice, hd), start=1):
                rows.append(f"case{c},{x},{x},{x},{h},{h},{h},{x},{h}")
            client.log_text(r.info.run_id, "\n".join(rows) + "\n", "eval/metrics_test.csv")
            for reg in ("TC", "WT", "ET", "mean"):
                client.log_metric(r.info.run_id, f"test_Dice_{reg}", float(np.mean(dice)))
                client.log_metric(r.info.run_id, f"test_HD95_{reg}", float(np.mean(hd)))
                # lesion-wise: level a0 scores 0.2, level a1 0.7 (+0.1 for SiNGR), to find them per level
                lesion = (0.2 if level == "a0" else 0.7) + (0.1 if variant == "singr" else 0.0)
                client.log_metric(r.info.run_id, f"test_LesionDice_{reg}", lesion)
                client.log_metric(r.info.run_id, f"test_LesionHD95_{reg}", 50.0)
            client.set_terminated(r.info.run_id)
    if extra_run:  # a third seed of hard-a0 without per-case scores: in the tables, not in the pairs
        r = client.create_run(exp, tags={"mlflow.parentRunId": pid, "variant": "hard-a0", "seed": "2"})
        for reg in ("TC", "WT", "ET", "mean"):
            client.log_metric(r.info.run_id, f"test_Dice_{reg}", 0.8)
            client.log_metric(r.info.run_id, f"test_HD95_{reg}", 4.0)
    return uri


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """The same 6 small cases at ambiguity 0 and 1 (for the picture of one case at every level)."""
    from singr.data.synth import synthesize_dataset

    base = tmp_path_factory.mktemp("axis_data")
    out = {}
    for name, a in (("a0", 0.0), ("a1", 1.0)):
        synthesize_dataset(base / name, n_cases=6, shape=(32, 32, 32), seed=0, progress=False, ambiguity=a)
        out[name] = base / name
    return out


def test_axis_report_statistics_by_hand(tmp_path, roots):
    uri = _fabricate(tmp_path, roots)
    out = tmp_path / "report"
    write_report(uri, "fab", out, log_to_mlflow=False)
    s = json.loads((out / "summary.json").read_text())
    assert s["axis"]["name"] == "ambiguity" and [lv["value"] for lv in s["axis"]["levels"]] == [0.0, 1.0]
    rows = {(r["level"], r["variant"], r["metric"]): r for r in s["comparisons"]}
    assert set(rows) == {(lv, "singr", m) for lv in ("a0", "a1") for m in ("Dice_mean", "HD95_mean")}

    a0 = rows[("a0", "singr", "Dice_mean")]
    assert (a0["n_seeds"], a0["n_cases"]) == (2, 4)  # seed 2 of hard-a0 has no pair and no per-case scores
    assert a0["mean"] == pytest.approx(0.01) and a0["se"] == pytest.approx(0.01)  # sd of (0,0,0,.04) = .02
    assert a0["ci_lo"] == pytest.approx(0.0, abs=1e-12) and a0["ci_hi"] == pytest.approx(0.03)  # two-way
    assert a0["ci_cases"] == pytest.approx([0.0, 0.03])
    assert a0["p"] == 1.0
    assert a0["verdict"] == "no detectable difference (95% CI 0.000 to 0.030 includes 0, p = 1.00)"

    a1 = rows[("a1", "singr", "Dice_mean")]
    assert (a1["n_seeds"], a1["n_cases"]) == (2, 6)
    assert a1["mean"] == pytest.approx(0.035) and a1["p"] == pytest.approx(2 / 64)
    assert a1["se"] == pytest.approx(mean_se([0.01 * c for c in range(1, 7)])[1])
    # per seed: 0.040 and 0.030 -> mean 0.035, SE |0.04 - 0.03| / 2 = 0.005
    assert a1["seed_mean"] == pytest.approx(0.035) and a1["seed_se"] == pytest.approx(0.005)
    # every d is > 0, so both intervals lie above 0, inside the data range [0.005, 0.065]
    assert 0.005 <= a1["ci_lo"] < 0.035 < a1["ci_hi"] <= 0.065
    assert a1["verdict"].startswith("SiNGR better by 0.035 (95% CI ") and a1["verdict"].endswith("p = 0.03)")
    hd = rows[("a1", "singr", "HD95_mean")]  # 100 mm per Dice point, lower is better: the same verdict in mm
    assert hd["mean"] == pytest.approx(-3.5) and hd["p"] == pytest.approx(2 / 64)
    assert hd["verdict"].startswith("SiNGR better by 3.500 (95% CI ")

    # trend: the difference at a1 minus at a0 over their common cases 1-4, seed-averaged
    # (0.01, 0.02, 0.03, 0.04) - (0, 0, 0, 0.04) = (0.01, 0.02, 0.03, 0): three positives, p = 2/8
    tr = {t["metric"]: t for t in s["trend"]}
    assert tr["Dice_mean"]["n_cases"] == 4 and tr["Dice_mean"]["p"] == pytest.approx(0.25)
    assert tr["Dice_mean"]["mean"] == pytest.approx(0.015)
    assert not tr["Dice_mean"]["verdict"].startswith(("ambiguity 1 better", "ambiguity 0 better"))

    text = s["headline"]["text"]
    assert "mean Dice, SiNGR − Hard labels** (paired per case, 4-6 test cases × 2 seeds per level)" in text
    assert "SiNGR is better at ambiguity 1" in text and "there is no detectable difference at ambiguity 0" in text
    assert "does not change detectably" in text or "not conclusively" in text
    md = (out / "report.md").read_text()
    assert text in md and "| 0 | SiNGR − Hard labels | Dice mean | 2 × 4 |" in md
    assert "## ambiguity = 1 (La1)" in md and "fabricated" in md
    assert "1 run(s) have no per-case scores" in md and "hard-a0 seed 2" in md
    # the tables keep every run: hard-a0 over 3 seeds (0.5, 0.5, 0.8)
    hard_a0 = s["variants"]["hard-a0"]
    assert hard_a0["Dice_mean"][2] == 3 and hard_a0["Dice_mean"][0] == pytest.approx(0.6)
    assert hard_a0["level"] == "a0" and hard_a0["stem"] == "hard" and hard_a0["x"] == 0.0
    for name in ("axis.png", "ambiguity.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name})" in md
    assert s["figures"] == ["axis.png", "ambiguity.png"]
    # the lesion-wise section: one table per level, each with that level's variants
    lesion = md.split("## Lesion-wise (BraTS 2023)")[1]
    a0_part, a1_part = lesion.split("### ambiguity = 1 (La1)")
    assert "### ambiguity = 0 (La0)" in a0_part
    # hard-a0's seed 2 has no lesion-wise scores: 2 seeds here
    assert "| Hard labels (Dice+BCE) | 2 | 0.200 ± 0.000 |" in a0_part and "0.700" not in a0_part
    assert "| **SiNGR (delta 0.5) (paper)** | **2** | **0.800 ± 0.000** |" in a1_part and "0.200" not in a1_part
    assert s["lesion_wise"]["singr-a1"]["LesionDice_mean"][0] == pytest.approx(0.8)


def test_axis_picture_shows_the_same_case_at_every_level(tmp_path, roots):
    from tune.grid import expand_variants
    from tune.report.overlays import axis_picture

    cfg = _axis_config(tmp_path, roots)
    png, case = axis_picture(tmp_path / "pic.png", cfg, expand_variants(cfg), "test")
    split = json.loads(Path(cfg.data.split_file).read_text())
    assert case in split["test"] and png.read_bytes()[:4] == b"\x89PNG"
    # both levels read their own folder: the same case id, a different label (rater borders at 1)
    from singr.io import read_nifti

    labels = [read_nifti(roots[n] / case / f"{case}_seg.nii.gz")[0] for n in ("a0", "a1")]
    assert labels[0].shape == labels[1].shape and not np.array_equal(labels[0], labels[1])


def test_axis_report_without_case_scores_says_so(tmp_path, roots):
    from mlflow.tracking import MlflowClient

    uri = _fabricate(tmp_path, roots, extra_run=False)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("fab")
    runs = client.search_runs([exp.experiment_id], "tags.variant = 'singr-a1'")
    for r in runs:  # no per-case scores for SiNGR at a1: no pairs there, and the report says why
        client.delete_run(r.info.run_id)
    out = tmp_path / "r2"
    write_report(uri, "fab", out, log_to_mlflow=False)
    s = json.loads((out / "summary.json").read_text())
    assert {r["level"] for r in s["comparisons"] if r["n_cases"]} == {"a0"}
    empty = [r for r in s["comparisons"] if r["level"] == "a1"]
    assert empty and all(r["verdict"] == "no data" and r["n_cases"] == 0 for r in empty)
    assert math.isnan(empty[0]["mean"]) if isinstance(empty[0]["mean"], float) else empty[0]["mean"] is None


def test_report_notes_from_a_config_replace_the_stored_ones(tmp_path, roots):
    """`singr report --notes-from CONFIG`: notes written after the run (wall time, reading) replace
    the ones the sweep stored; a config without notes is refused with its name."""
    from singr.errors import SingrInputError
    from tune.report import run_report

    uri = _fabricate(tmp_path, roots, extra_run=False)
    cfg = tmp_path / "after.yaml"
    cfg.write_text("base: ambiguity.yaml\nexperiment:\n  notes: written after the run, 48 min here\n")
    args = dict(tracking_uri=uri, experiment="fab", sweep=None, out=str(tmp_path / "r3"),
                overlay_cases=0, log=False, device="cpu", notes_from=str(cfg))
    assert run_report(**args) == 0
    md = (tmp_path / "r3" / "report.md").read_text()
    assert md.rstrip().endswith("## Notes\n\nwritten after the run, 48 min here") and "fabricated" not in md
    cfg.write_text("base: ambiguity.yaml\nexperiment:\n  notes: ''\n")
    with pytest.raises(SingrInputError, match="after.yaml: the config has no experiment.notes"):
        run_report(**args)
