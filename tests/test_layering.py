"""The layers' one direction, read from the source (every import, lazy ones included) and checked
at run time:

- ``singr`` (the method and engine) imports nothing of ``tune``, ``serve``, Ray, MLflow or Optuna,
  not even inside a function: what lies above it plugs in through entry points;
- ``tune`` never imports ``serve``; ``serve`` imports of ``tune`` only the MLflow hub
  (``tune.hub``) and the Ray nodes' helpers (``tune.nodes``), never the sweep;
- ``tune.hub`` reaches no Ray module, directly or through the modules it imports;
- no production module imports the development cluster harness (``tune.devcluster``);
- no import cycle between the project's modules;
- no non-test module of the project is 500 lines or longer.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("singr", "tune", "serve")
MAX_LINES = 500
SERVE_MAY_USE = ("tune.hub", "tune.nodes")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every Python module of ``packages`` under ``root`` (the viewer's static files are data)."""
    return {module_name(root, p): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))
            if "static" not in p.relative_to(root).parts}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules ``name`` imports anywhere in its body, absolute names. ``from pkg import x`` is
    the module ``pkg.x`` when that is a module, else ``pkg``."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
            out.update(subs)
            if len(subs) < len(node.names):
                out.add(mod)
    out.discard(name)
    return out


def graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """``module -> the names it imports`` (project modules and third-party names alike)."""
    mods = modules(root, packages)
    return {n: imports(n, p, set(mods)) for n, p in mods.items()}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(g: dict[str, set[str]]) -> list[str]:
    """Every import that points the wrong way."""
    out = []
    for mod, imps in sorted(g.items()):
        for imp in sorted(imps):
            if _under(mod, "singr") and any(_under(imp, up) for up in ("tune", "serve", "ray", "mlflow", "optuna")):
                out.append(f"{mod} imports {imp}: singr imports nothing above it")
            if _under(mod, "tune") and _under(imp, "serve"):
                out.append(f"{mod} imports {imp}: tune never imports serve")
            sweep = _under(imp, "tune") and imp != "tune" and not any(_under(imp, ok) for ok in SERVE_MAY_USE)
            if _under(mod, "serve") and sweep:
                out.append(f"{mod} imports {imp}: serve imports only {', '.join(SERVE_MAY_USE)} of the tuning package")
            if _under(imp, "tune.devcluster") and not _under(mod, "tune.devcluster"):
                out.append(f"{mod} imports {imp}: the dev cluster harness is for tests, scripts and benchmarks")
    for mod in sorted(g):
        if _under(mod, "tune.hub"):
            ray = [m for m in reachable(g, mod) if any(_under(i, "ray") for i in g.get(m, ()))]
            if ray:
                out.append(f"{mod} reaches Ray through {ray}: tune.hub is MLflow only")
    return out


def reachable(g: dict[str, set[str]], start: str) -> list[str]:
    """The project modules ``start`` imports, directly or not (itself included)."""
    seen, todo = {start}, [start]
    while todo:
        for imp in g.get(todo.pop(), ()):
            if imp in g and imp not in seen:
                seen.add(imp)
                todo.append(imp)
    return sorted(seen)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one project module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(i for i in g[v] if i in g):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_import_points_down():
    g = graph(ROOT)
    assert len(g) > 60, sorted(g)
    assert not violations(g), "\n".join(violations(g))


def test_no_import_cycle():
    assert not cycles(graph(ROOT))


def test_no_module_of_500_lines_or_more():
    long = {n: len(p.read_text().splitlines()) for n, p in modules(ROOT).items()}
    assert not {n: k for n, k in long.items() if k >= MAX_LINES}, sorted(long.items(), key=lambda x: -x[1])[:5]


def test_the_checks_catch_what_they_forbid(tmp_path):
    """A tree with every kind of wrong import: each is reported, and the cycle is found."""
    files = {
        "singr/__init__.py": "",
        "singr/a.py": "def f():\n    from tune.sweep import run  # lazy, still wrong\n",
        "singr/b.py": "from . import c\n",
        "singr/c.py": "from .b import x\n",
        "tune/__init__.py": "",
        "tune/sweep.py": "import serve.app\nfrom tune.devcluster import LocalCluster\n",
        "tune/hub/__init__.py": "",
        "tune/hub/store.py": "from ..nodes import label\n",
        "tune/nodes.py": "import ray\n",
        "tune/devcluster/__init__.py": "",
        "serve/__init__.py": "",
        "serve/app.py": "from tune.hub.store import client\nfrom tune.sweep import run\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    g = graph(tmp_path)
    bad = "\n".join(violations(g))
    assert "singr.a imports tune.sweep" in bad
    assert "tune.sweep imports serve.app" in bad
    assert "tune.sweep imports tune.devcluster" in bad
    assert "serve.app imports tune.sweep" in bad and "serve.app imports tune.hub" not in bad
    assert "tune.hub.store reaches Ray through ['tune.nodes']" in bad
    assert ["singr.b", "singr.c"] in cycles(g)


# ------------------------------------------------------------------ at run time
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


@pytest.mark.parametrize("package,forbidden,least", [
    ("singr", "ray,mlflow,tune,serve", 10),
    ("tune", "serve", 10),
    ("tune.hub", "ray", 5),
])
def test_importing_a_layer_loads_nothing_above_it(package, forbidden, least):
    """Every module imported in a fresh interpreter: nothing forbidden is loaded (third-party
    imports included, which the source check does not follow)."""
    p = subprocess.run([sys.executable, "-c", PROBE, package, forbidden], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    assert int(p.stdout.split()[0]) >= least


def test_the_probe_catches_an_import():
    """The run-time check itself fails when a forbidden module is imported (here: tune imports singr)."""
    p = subprocess.run([sys.executable, "-c", PROBE, "tune", "singr"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "imports ['singr']" in p.stdout
