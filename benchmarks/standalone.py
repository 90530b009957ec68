"""One benchmark section run on its own (``python benchmarks/bench_X.py ...``): its figures as
JSON and its RESULTS.md lines on stdout, in a temporary work folder."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Callable


def main(doc: str | None, bench: Callable[..., dict[str, Any]], lines: Callable[[dict[str, Any], Any], list[str]],
         *, case: bool = True, repeats: int = 3) -> int:
    """Parse ``[--case DIR] [--repeats N] [--tiny]``, run ``bench([case,] repeats, tiny, work)``,
    print its result and ``lines(result, case)``."""
    ap = argparse.ArgumentParser(description=doc)
    if case:
        ap.add_argument("--case", required=True, help="the real case's folder (t1n/t1c/t2w/t2f/seg .nii.gz)")
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--tiny", action="store_true")
    a = ap.parse_args()
    where = Path(a.case) if case else None
    with tempfile.TemporaryDirectory() as d:
        res = bench(*([where] if case else []), a.repeats, a.tiny, Path(d))
    print(json.dumps(res, indent=1))
    print("\n".join(lines(res, a.case if case else None)))
    return 0
