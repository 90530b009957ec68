"""A grid with an axis (experiment.axis, configs/ambiguity.yaml): every variant at every level,
levels that read their own data folder (absolute paths, a cache and a split file per
folder, one map stage per folder), and the checks that reject a bad axis before any work."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from singr.errors import SingrConfigError, SingrInputError
from tune.config import load_service_config
from tune.grid import expand_variants, variant_config
from tune.plan import data_splits, make_plan, trial_config

LEVELS = "[{name: a0, value: 0, set: [synth.ambiguity=0.0, data.root=%s]}, " \
         "{name: a1, value: 1, label: fuzzy, set: [synth.ambiguity=1.0, data.root=%s]}]"


def _cfg(tmp_path: Path, *more: str, levels: str | None = None):
    return load_service_config("ambiguity.yaml", [
        f"tune.storage_path={tmp_path / 'ray'}", f"output_dir={tmp_path / 'out'}", "data.root=d/a0",
        f"experiment.axis={{name: ambiguity, levels: {levels or LEVELS % ('d/a0', 'd/a1')}}}", *more])


def test_variants_cross_the_levels(tmp_path):
    cfg = _cfg(tmp_path)
    vs = expand_variants(cfg)
    assert [v.name for v in vs] == ["hard-a0", "l1-a0", "singr-a0", "hard-a1", "l1-a1", "singr-a1"]
    singr = vs[-1]
    assert (singr.stem, singr.level, singr.x, singr.role, singr.label) == ("singr", "a1", 1.0, "highlight",
                                                                          "SiNGR (δ = 0.5 + Focal-L1)")
    assert [v.role for v in vs[:3]] == ["baseline", "", "highlight"]
    # the level's set comes after the variant's: both apply
    c = variant_config(cfg, "singr-a1", seed=3)
    assert (c.loss.name, c.sing.delta, c.synth.ambiguity, c.train.seed) == ("focal_l1", 0.5, 1.0, 3)
    assert c.data.root == "d/a1"
    # the shipped config: 3 variants x 3 levels, every level its own folder
    shipped = load_service_config("ambiguity.yaml")
    assert len(expand_variants(shipped)) == 9 and len(shipped.experiment.seeds) >= 5
    assert {variant_config(shipped, v.name).data.root for v in expand_variants(shipped)} == {
        "data/ambiguity/a0", "data/ambiguity/a0.5", "data/ambiguity/a1"}


def test_plan_gives_each_data_folder_its_cache_split_and_maps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = make_plan(_cfg(tmp_path))
    sweep = tmp_path / "ray" / "ambiguity"
    groups = plan.data_groups
    assert [g.cfg.data.root for g in groups] == [str(tmp_path / "d" / "a0"), str(tmp_path / "d" / "a1")]
    assert [g.variants for g in groups] == [("hard-a0", "l1-a0", "singr-a0"), ("hard-a1", "l1-a1", "singr-a1")]
    assert [g.lams for g in groups] == [(0.5,), (0.5,)]  # l1 and singr regress maps at lambda 0.5
    a0, a1 = groups[0].cfg, groups[1].cfg
    # a0 is the config's own folder: its cache and split; a1 gets its own of each
    assert a0.data.cache_dir == str(tmp_path / "d" / "a0" / ".singr_cache")
    assert a0.data.split_file == str(sweep / "split.json")
    assert a1.data.cache_dir == str(tmp_path / "d" / "a1" / ".singr_cache")
    assert Path(a1.data.split_file).parent == sweep and Path(a1.data.split_file).name.startswith("split-a1-")
    # a trial (in another folder, on another node) gets the absolute paths of its level
    t = trial_config(plan.cfg, {"variant": "hard-a1", "seed": 2}, tmp_path / "trial")
    assert (t.data.root, t.data.cache_dir, t.data.split_file) == (a1.data.root, a1.data.cache_dir, a1.data.split_file)
    assert t.loss.name == "dice_bce" and t.train.seed == 2 and t.output_dir == str(tmp_path / "trial")
    # hard labels only at a level: its folder is prepared but needs no maps
    hard_only = make_plan(_cfg(tmp_path, "experiment.variants=[{name: hard, set: [loss.name=dice_bce]}]",
                               "experiment.highlight=null"))
    assert [g.lams for g in hard_only.data_groups] == [(), ()] and hard_only.lam_grid == []


def test_one_cache_named_for_all_is_split_per_folder(tmp_path):
    """data.cache_dir set once for every run would mix two folders' cases of the same name:
    each other folder gets a subfolder of it."""
    plan = make_plan(_cfg(tmp_path, f"data.cache_dir={tmp_path / 'cache'}", f"data.root={tmp_path / 'd' / 'a0'}",
                          levels=LEVELS % (tmp_path / "d" / "a0", tmp_path / "d" / "a1")))
    caches = [g.cfg.data.cache_dir for g in plan.data_groups]
    assert caches[0] == str(tmp_path / "cache")
    assert Path(caches[1]).parent == tmp_path / "cache" and Path(caches[1]).name.startswith("a1-")
    # a split file named by the config is every folder's (same case ids, same split)
    named = make_plan(_cfg(tmp_path, f"data.split_file={tmp_path / 's.json'}"))
    assert {g.cfg.data.split_file for g in named.data_groups} == {str(tmp_path / "s.json")}


def test_data_splits_per_folder_and_a_missing_folder(tmp_path, monkeypatch):
    from singr.data.synth import synthesize_dataset

    monkeypatch.chdir(tmp_path)
    for name, a in (("a0", 0.0), ("a1", 1.0)):
        synthesize_dataset(tmp_path / "d" / name, n_cases=5, shape=(16, 16, 16), seed=0, progress=False,
                           ambiguity=a)
    plan = make_plan(_cfg(tmp_path, "data.split_ratios=[0.6, 0.2, 0.2]"))
    splits = data_splits(plan)
    assert len(splits) == 2
    files = [Path(g.cfg.data.split_file) for g, _ in splits]
    assert all(f.exists() for f in files) and files[0] != files[1]
    # same case ids and seed: the same split in both folders (the report pairs cases across levels)
    assert [json.loads(f.read_text())["test"] for f in files] == [splits[0][1]["test"]] * 2
    missing = make_plan(_cfg(tmp_path, "data.split_ratios=[0.6, 0.2, 0.2]", levels=LEVELS % ("d/a0", "d/nowhere")))
    with pytest.raises(SingrInputError, match="nowhere"):
        data_splits(missing)


@pytest.mark.parametrize("levels, match", [
    ("[{name: a0, value: 0}, {name: a0, value: 1}]", r"levels\[1\]\.name = 'a0' is used twice"),
    ("[{name: a0, value: 0}, {name: b, value: 0}]", r"levels\[1\]\.value = 0 is used twice"),
    ("[{name: a0, value: 0, set: [tune.seed=3]}]", r"a level may not change the experiment, tune or mlflow"),
    ("[{name: a0, value: 0, set: [loss.name=nope]}]", r"level 'a0' with variant 'hard'"),
    ("[{name: 'a 0', value: 0}]", r"short name"),
    ("[]", r"axis"),
])
def test_bad_axis_is_refused(tmp_path, levels, match):
    with pytest.raises(SingrConfigError, match=match):
        _cfg(tmp_path, levels=levels)


def test_crossed_names_must_be_unique(tmp_path):
    with pytest.raises(SingrConfigError, match=r"run name 'a-b-c' .* comes out twice"):
        _cfg(tmp_path, "experiment.variants=[{name: a, set: []}, {name: a-b, set: []}]", "experiment.baseline=null",
             "experiment.highlight=null", levels="[{name: b-c, value: 0}, {name: c, value: 1}]")
