"""The registered model's wheel is built once per source version (tune.hub.pyfunc.build_wheel):
the digest follows every source byte and ignores caches, a second registration copies the kept
wheel instead of running pip, and the cache keeps the latest KEEP_WHEELS versions."""
from __future__ import annotations

import os
import time
from pathlib import Path

from tune.hub import pyfunc


def _tree(root: Path) -> Path:
    root.mkdir(parents=True)
    for item in pyfunc._SOURCE_ITEMS:
        if "." in item:
            (root / item).write_text(f"{item}\n")
        else:
            (root / item).mkdir(parents=True)
            (root / item / "a.py").write_text("x = 1\n")
    return root


def test_digest_follows_the_sources_and_ignores_caches(tmp_path):
    src = _tree(tmp_path / "src")
    d0 = pyfunc.source_digest(src)
    (src / "singr" / "__pycache__").mkdir()
    (src / "singr" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (src / "tune" / ".hidden").write_text("local")
    assert pyfunc.source_digest(src) == d0
    (src / "singr" / "a.py").write_text("x = 2\n")
    assert pyfunc.source_digest(src) != d0
    (src / "singr" / "a.py").write_text("x = 1\n")
    (src / "singr" / "b.py").write_text("")  # a new, empty file changes the wheel too
    assert pyfunc.source_digest(src) != d0


def test_second_build_is_copied_from_the_cache(tmp_path, monkeypatch):
    src = _tree(tmp_path / "src")
    monkeypatch.setattr(pyfunc, "project_source", lambda: src)
    monkeypatch.setenv("SINGR_WHEEL_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_pip(src_: Path, out: Path, timeout_s: float):
        calls.append(out)
        w = out / "singr-0.1.0-py3-none-any.whl"
        w.write_bytes(os.urandom(64))
        return w, "built with pip wheel"

    monkeypatch.setattr(pyfunc, "_pip_wheel", fake_pip)
    w1, how1 = pyfunc.build_wheel(tmp_path / "out1")
    w2, how2 = pyfunc.build_wheel(tmp_path / "out2")
    assert len(calls) == 1 and "cached" in how2 and "cached" not in how1
    assert w2 == tmp_path / "out2" / w1.name and w2.read_bytes() == w1.read_bytes()
    pyfunc.build_wheel(tmp_path / "out3", cache=False)
    assert len(calls) == 2
    (src / "serve" / "a.py").write_text("changed\n")
    _, how4 = pyfunc.build_wheel(tmp_path / "out4")
    assert len(calls) == 3 and "cached" not in how4
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # written under a temporary name, then renamed


def test_cache_keeps_the_latest_versions(tmp_path):
    cache = tmp_path / "cache"
    for i in range(pyfunc.KEEP_WHEELS + 3):
        d = cache / f"{i:016x}"
        d.mkdir(parents=True)
        t = time.time() - 1000 + i
        os.utime(d, (t, t))
    pyfunc._prune(cache, pyfunc.KEEP_WHEELS)
    left = sorted(d.name for d in cache.iterdir())
    assert len(left) == pyfunc.KEEP_WHEELS and left[0] == f"{3:016x}"
