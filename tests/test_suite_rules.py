"""Rules the suite keeps so that it passes on any machine CI lands on (read from the tests' AST):

- no assert on an elapsed wall-clock time (``time.time() - t0 < 60`` and the like with ``perf_counter()``,
  ``monotonic()``): shared CPUs make them flaky; speed is measured in ``benchmarks/`` as ratios;
- no recorded digest (a 64-hex-digit sha256 or 32-digit md5 literal) to compare computed data with:
  float rounding differs by CPU and BLAS; keep a small reference and a stated tolerance instead.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CLOCKS = {"time", "perf_counter", "monotonic", "perf_counter_ns", "monotonic_ns"}
DIGEST = re.compile(r"^[0-9a-f]{32}$|^[0-9a-f]{64}$")


def _clock_calls(node: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr in CLOCKS and isinstance(n.func.value, ast.Name) and n.func.value.id == "time"]


def _elapsed(node: ast.AST) -> bool:
    """``node`` holds a clock reading minus another (an elapsed time)."""
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Sub) and _clock_calls(n) for n in ast.walk(node))


def timed_asserts(source: str) -> list[int]:
    """Lines of ``assert`` statements that compare an elapsed time, directly or through a name
    assigned one (``slowest = max(slowest, time.perf_counter() - t0)``; ``assert slowest < 2``).
    ``assert time.time() < deadline, "what it saw"`` is a wait's deadline, not a speed claim: allowed."""
    tree = ast.parse(source)
    timed = {t.id for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))
             and n.value is not None and _elapsed(n.value)
             for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            compares = [c for c in ast.walk(node.test) if isinstance(c, ast.Compare)]
            if any(_elapsed(c) or any(isinstance(n, ast.Name) and n.id in timed for n in ast.walk(c))
                   for c in compares):
                out.append(node.lineno)
    return out


def digest_literals(source: str) -> list[int]:
    return [n.lineno for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and DIGEST.match(n.value)]


def _sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p.name != Path(__file__).name)


def test_no_test_asserts_a_wall_clock_time():
    bad = [f"{p.relative_to(TESTS)}:{ln}" for p in _sources() for ln in timed_asserts(p.read_text())]
    assert not bad, f"asserts on wall-clock time (measure speed in benchmarks/ instead): {bad}"


def test_no_test_compares_with_a_recorded_digest():
    bad = [f"{p.relative_to(TESTS)}:{ln}" for p in _sources() for ln in digest_literals(p.read_text())]
    assert not bad, f"recorded digests (keep a small reference with a stated tolerance instead): {bad}"


def test_the_rules_see_what_they_forbid():
    timed = "import time\nt0 = time.time()\nassert time.time() - t0 < 60\nassert x < 3\n"
    assert timed_asserts(timed) == [3]
    assert timed_asserts("import time\nassert time.time() < deadline, 'saw'\n") == []  # a wait's deadline is fine
    through_a_name = "import time\ns = 0.0\ns = max(s, time.perf_counter() - t0)\nassert s < 2.0\nassert n == 3\n"
    assert timed_asserts(through_a_name) == [4]
    assert digest_literals(f"H = {'ab' * 32!r}\nname = 'x'\n") == [1]
