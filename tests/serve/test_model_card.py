"""``GET /v1/model`` returns the model card stored with the model (``card.json`` in its folder,
written by the tuning service at registration: tune/hub/card.py), and null for a model without one.
The replica is built in-process (no Ray), as in test_endpoint's constructor test."""
from __future__ import annotations

import asyncio
import json
import types

import pytest

pytestmark = pytest.mark.slow


def _replica(**settings):
    import serve.app as sa

    cls = next(c for c in sa.SingrSegmenter.func_or_class.__mro__ if "_load" in vars(c))  # the user class
    obj = object.__new__(cls)
    asyncio.run(cls.__init__(obj, **settings))
    return obj


def test_v1_model_returns_the_card(smoke_model, tmp_path):
    from serve.model import scrub_paths
    from singr.config import load_config
    from singr.engine.bundle import write_bundle
    from tune.hub.card import CARD_FILE, build_card, card_markdown, write_card

    folder = write_bundle(tmp_path / "model", [smoke_model["checkpoint"]], names=["best.safetensors"])
    cfg = load_config("smoke.yaml", [f"data.root={smoke_model['work'] / 'data'}",
                                     f"output_dir={smoke_model['work'] / 'run'}"])
    split = json.loads((smoke_model["work"] / "run" / "split.json").read_text())
    card = build_card(folder, cfg, split, sweep="s", trial={"trial_id": "t1", "epochs_run": 2},
                      test={"split": "test", "skipped": "not requested"})
    write_card(folder, card)
    obj = _replica(model=str(folder), device="cpu")
    got = asyncio.run(obj.model(types.SimpleNamespace(headers={})))
    stored = json.loads((folder / CARD_FILE).read_text())
    assert str(smoke_model["work"]) in json.dumps(stored)  # the stored card names the server's folders...
    assert got["card"] == scrub_paths(stored)
    assert str(tmp_path) not in json.dumps(got) and str(smoke_model["work"]) not in json.dumps(got)  # ...served: no
    assert got["card"]["model"]["regions"] == ["TC", "WT", "ET"] and got["card"]["model"]["parameters"] > 1000
    assert got["card"]["data"]["split"] == {k: len(v) for k, v in split.items() if k in ("train", "val", "test")}
    assert "Not for clinical decisions" in got["card"]["intended_use"]
    assert got["lambda"] == card["model"]["lam"] and got["architecture"] == card["model"]["architecture"]
    assert "## Metrics per region" in card_markdown(got["card"])
    # a bare checkpoint (or a model registered before cards) has none: null, not an error
    bare = _replica(model=str(smoke_model["checkpoint"]), device="cpu")
    assert asyncio.run(bare.model(types.SimpleNamespace(headers={})))["card"] is None
