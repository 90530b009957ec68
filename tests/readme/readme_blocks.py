"""The README's runnable blocks, as the README-runner (tests/readme/test_readme.py) executes them.

A fenced ``bash`` or ``python`` block preceded by the line ``<!-- readme: run -->`` is runnable.
The runner executes every runnable block in README order, as one bash script, in a fresh copy
of the repository (tracked and untracked-but-not-ignored files; ``.venv`` linked), so shell
state (``source``, variables, background jobs) carries from one block to the next exactly as
in a user's terminal. The only change to the text is :data:`SMALL`: the walk-through's
synthetic configuration is swapped for the smoke configuration (same data layout, same
service, seconds per trial instead of minutes), so that CI runs it in minutes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MARK = "<!-- readme: run -->"
SMALL: tuple[tuple[str, str], ...] = (
    ("bash scripts/demo.sh", "SINGR_DEMO_CONFIG=configs/smoke.yaml bash scripts/demo.sh"),
    ("runs/synthetic-tune/tune-synthetic", "runs/smoke-tune/tune-smoke"),
    ("configs/synthetic.yaml", "configs/smoke.yaml"),
    ("-c synthetic.yaml", "-c smoke.yaml"),
    ("singr-synthetic", "singr-smoke"),
)
"""(README text, what the runner runs instead), applied in order to runnable blocks only."""


@dataclass(frozen=True)
class Block:
    """One runnable block: its language, its first line number in the README, its text."""

    lang: str
    line: int
    text: str


def runnable_blocks(readme: str | Path) -> list[Block]:
    """Every fenced block right after a :data:`MARK` line (blank lines between allowed).
    A mark not followed by a ``bash`` or ``python`` fence is an error (a typo would silently
    drop a block from the tests)."""
    lines = Path(readme).read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != MARK:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        m = re.fullmatch(r"```(bash|python)\s*", lines[j]) if j < len(lines) else None
        if m is None:
            raise ValueError(f"README line {i + 1}: {MARK} must be followed by a ```bash or ```python block")
        k = j + 1
        while k < len(lines) and lines[k].strip() != "```":
            k += 1
        if k == len(lines):
            raise ValueError(f"README line {j + 1}: unterminated code block")
        out.append(Block(m.group(1), j + 2, "\n".join(lines[j + 1:k])))
        i = k + 1
    return out


def small(text: str) -> str:
    """The block as the runner runs it: :data:`SMALL` applied."""
    for a, b in SMALL:
        text = text.replace(a, b)
    return text


def script(blocks: list[Block]) -> str:
    """One bash script running the blocks in order; before each, a line
    ``### README line N`` on stdout and stderr, so a failure names its block."""
    parts = ["set -eo pipefail"]
    for b in blocks:
        parts.append(f"echo '### README line {b.line}'; echo '### README line {b.line}' >&2")
        body = small(b.text)
        if b.lang == "python":
            parts.append(f"python - <<'READMEPY'\n{body}\nREADMEPY")
        else:
            parts.append(body)
    parts.append("echo '### README done'")
    return "\n".join(parts) + "\n"
