"""Marked sections of RESULTS.md that long or special runs write and ``run.py`` keeps.

A section lives between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``; a writer replaces
what is between its markers (or appends heading and block), a rewriter keeps it as it is.
Plain files (no singr import): the GPU check runs this on a machine that may lack singr.
"""
from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def put(results: Path, name: str, text: str, heading: str | None = None) -> None:
    """Replace the text between ``name``'s markers in ``results`` with ``text``; if the markers
    are absent, append ``heading`` (if any) and the marked block. Written under a temporary name, then renamed."""
    begin, end = markers(name)
    body = results.read_text() if results.exists() else ""
    block = f"{begin}\n{text}{end}"
    if begin in body and end in body:
        head, rest = body.split(begin, 1)
        body = head + block + rest.split(end, 1)[1]
    else:
        body = body.rstrip("\n") + (f"\n\n{heading}" if heading else "") + f"\n\n{block}\n"
    tmp = results.with_suffix(results.suffix + ".tmp")
    tmp.write_text(body)
    tmp.replace(results)


def kept(results: Path, name: str, heading: str | None = None) -> list[str]:
    """``name``'s marked block of ``results`` (after ``heading`` if given) as lines for a writer that
    rewrites the file, so that it does not erase it; [] if there is none."""
    begin, end = markers(name)
    body = results.read_text() if results.exists() else ""
    if begin not in body or end not in body:
        return []
    return ["", *([heading, ""] if heading else []), begin + body.split(begin, 1)[1].split(end, 1)[0] + end]
