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


def timed_asserts(source: str) -> list[int]:
    """Lines of ``assert`` statements that compare an elapsed time (a clock reading minus another).
    ``assert time.time() < deadline, "what it saw"`` is a wait's deadline, not a speed claim: allowed."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assert):
            elapsed = [n for c in ast.walk(node.test) if isinstance(c, ast.Compare) for n in ast.walk(c)
                       if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Sub) and _clock_calls(n)]
            if elapsed:
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
    assert digest_literals(f"H = {'ab' * 32!r}\nname = 'x'\n") == [1]
