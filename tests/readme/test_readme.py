"""The README-runner: every block the README marks runnable executes, in order, in a fresh copy
of the repository (see readme_blocks.py for the rules), so the README cannot drift from the code."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.readme.readme_blocks import MARK, runnable_blocks, script, small

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PORTS = (5000, 8000)  # the walk-through's MLflow UI and endpoint


def test_blocks_are_found_in_order_and_a_bad_mark_is_an_error(tmp_path):
    f = tmp_path / "R.md"
    f.write_text(f"intro\n{MARK}\n```bash\necho one\n```\n```bash\necho not run\n```\n{MARK}\n\n"
                 "```python\nprint(2)\n```\n")
    blocks = runnable_blocks(f)
    assert [(b.lang, b.line, b.text) for b in blocks] == [("bash", 4, "echo one"), ("python", 12, "print(2)")]
    s = script(blocks)
    assert s.index("echo one") < s.index("print(2)") and "not run" not in s
    f.write_text(f"{MARK}\nplain text\n")
    with pytest.raises(ValueError, match="line 1"):
        runnable_blocks(f)


def test_the_walkthrough_is_runnable_and_uses_the_small_configs():
    blocks = runnable_blocks(README)
    text = "\n".join(b.text for b in blocks)
    for needed in ("bash scripts/demo.sh", "singr serve", "/v1/segment", "mlflow ui", "python -m tune"):
        assert needed in text, f"the README's runnable blocks no longer run {needed!r}"
    ran = small(text)
    assert "synthetic.yaml" not in ran and "singr-synthetic" not in ran


def test_no_runnable_block_pipes_into_a_reader_that_stops_early():
    """The runner (and a careful user) runs with `set -o pipefail`: `curl ... | head -c 600` then fails
    whenever head closes the pipe before curl has written everything (curl exit 23, a CI run lost to
    it), so the walk-through reads files, not truncated pipes."""
    early = re.compile(r"\|\s*(head|grep\s+(-\w*[qm]\w*))\b")
    bad = [(b.line, ln) for b in runnable_blocks(README) for ln in b.text.splitlines() if early.search(ln)]
    assert not bad, f"README blocks (line, command) pipe into a reader that may stop early: {bad}"


def _free(port: int) -> bool:
    """Nothing listens on ``port``: a server could bind it now. SO_REUSEADDR, as servers set it: the
    walk-through's own closed connections to its endpoint sit in TIME_WAIT for 60 s after the last
    request, which refuses a plain bind though no process holds the port (a CI run failed on that)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _holders(ports: list[int]) -> dict[int, list[str]]:
    """``port: ["pid command line", ...]`` of the processes listening on ``ports`` (from /proc)."""
    from tune.devcluster import listening_sockets
    from tune.devcluster.procs import cmdline as _cmdline

    pids = {int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()}
    out: dict[int, list[str]] = {}
    for _, port, pid in listening_sockets(pids):
        if port in ports:
            line = _cmdline(pid).replace(b"\0", b" ").decode(errors="replace")[:160]
            out.setdefault(port, []).append(f"{pid} {line}")
    return out


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    (dst / ".venv").symlink_to(REPO / ".venv")


@pytest.mark.slow
def test_readme_runs_verbatim(tmp_path):
    busy = [p for p in PORTS if not _free(p)]
    assert not busy, f"ports {busy} are in use; the README's walk-through serves on them"
    work = tmp_path / "repo"
    work.mkdir()
    _copy_repo(work)
    (tmp_path / "readme.sh").write_text(script(runnable_blocks(README)))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "VIRTUAL_ENV", "PYTHONPATH", "SINGR_DEMO_CONFIG")}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    env["MPLBACKEND"] = "Agg"
    log = tmp_path / "readme.log"
    t0 = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(tmp_path / "readme.sh")], cwd=work, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=1800)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            _stop_group(proc.pid)
    text = log.read_text()
    where = [ln for ln in text.splitlines() if ln.startswith("### README")]
    tail = "\n".join(text.splitlines()[-60:])
    assert rc == 0 and "### README done" in text, (
        f"the README failed at {where[-1] if where else 'the start'} (exit {rc}, {time.time() - t0:.0f} s); "
        f"last lines:\n{tail}")
    # what the walk-through promises a user, checked on what it left behind
    assert (work / "example-case" / "t1c.nii.gz").is_file()
    assert (work / "seg.nii.gz").stat().st_size > 0
    assert '"volumes_ml"' in text and "champion" in text
    # A stopped server's processes outside the runner's process group (Ray's, started in sessions of their
    # own) may exit after it: wait for the ports on that condition, and name what still holds them if not.
    deadline, t_end = time.time() + 60, time.time()
    freed: dict[int, float] = {}
    holders = _holders(list(PORTS))  # what held them when the walk-through ended (for the figures line)
    while len(freed) < len(PORTS) and time.time() < deadline:
        freed.update({p: round(time.time() - t_end, 1) for p in PORTS if p not in freed and _free(p)})
        time.sleep(0.5)
    held = _holders([p for p in PORTS if p not in freed])
    assert not held, f"the walk-through's servers still hold their ports 60 s after it ended: {held}"
    print(f"\n[readme] every marked block ran in order in {t_end - t0:.0f} s "
          f"({len(where) // 2} blocks); seconds until each port was free after it ended {freed} (held then by "
          f"{holders or 'nothing'})")


def _stop_group(pgid: int) -> None:
    """SIGTERM the runner's process group (what the walk-through left running), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        end = time.time() + wait
        while time.time() < end:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)
