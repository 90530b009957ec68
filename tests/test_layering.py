"""The layers' one direction: ``singr`` (the method and engine) imports neither Ray nor MLflow,
and ``tune`` never imports ``serve``. Every module is imported in a fresh interpreter."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import importlib, pkgutil, sys
pkg = importlib.import_module(sys.argv[1])
forbidden = sys.argv[2].split(",")
names = [pkg.__name__] + [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
    bad = [f for f in forbidden if f in sys.modules]
    if bad:
        print(f"{name} imports {bad}")
        sys.exit(1)
print(len(names), "modules")
"""


@pytest.mark.parametrize("package,forbidden", [
    ("singr", "ray,mlflow,tune,serve"),
    ("tune", "serve"),
])
def test_layers_import_one_way(package, forbidden):
    p = subprocess.run([sys.executable, "-c", PROBE, package, forbidden], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    assert int(p.stdout.split()[0]) > 10


def test_the_probe_catches_an_import():
    """The check itself fails when a forbidden module is imported (here: tune imports singr)."""
    p = subprocess.run([sys.executable, "-c", PROBE, "tune", "singr"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "imports ['singr']" in p.stdout
