"""What the endpoint shows names files, never where they are on the server (serve.model.scrub_paths)."""
from __future__ import annotations

import json

from serve.model import scrub_paths


def test_paths_are_cut_to_their_names_and_the_rest_is_kept():
    card = {"data": {"root": "/srv/brats/data", "cache": "/srv/brats/data/.singr_cache/"},
            "tracking": "sqlite:////home/me/work/mlflow.db", "notes": "runs in /tmp/ray/sweep-1 (3 trials)",
            "files": ["/srv/models/m/best.safetensors", "best.safetensors"],
            "kept": {"model": "models:/singr-synthetic@champion", "run": "runs:/0a1b/model", "regions": "TC/WT/ET",
                     "server": "http://127.0.0.1:5000/api/2.0", "sha256": "ab" * 32, "version": 3}}
    out = scrub_paths(card)
    text = json.dumps(out)
    for leak in ("/srv", "/home", "/tmp", "/work"):
        assert leak not in text, leak
    assert out["data"] == {"root": ".../data", "cache": ".../.singr_cache"}
    assert out["tracking"] == "sqlite:.../mlflow.db" and out["notes"] == "runs in .../sweep-1 (3 trials)"
    assert out["files"] == [".../best.safetensors", "best.safetensors"]
    assert out["kept"] == card["kept"]
