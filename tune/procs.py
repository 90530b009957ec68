"""This machine's processes, as the sweep's tidy (:mod:`tune.tidy`) sees them. Linux ``/proc`` only;
nothing but the standard library is imported.

A process is named by its pid *and* its start time (field 22 of ``/proc/<pid>/stat``, clock
ticks since boot): a pid that the kernel has since given to another process has another start
time, so it is never mistaken for the one recorded. A zombie (ended, not yet reaped) counts as
ended. Where ``/proc`` is missing (not Linux) :func:`available` is False and nothing here claims
to know whether a process lives. (The development harness has its own helpers,
:mod:`tune.devcluster.procs`, which no production module may import.)
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["PROC", "available", "start_time", "boot_id", "pid_namespace", "name", "children", "belongs", "stop"]

PROC = Path("/proc")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def available() -> bool:
    """True where processes can be told apart by pid and start time (a Linux ``/proc``)."""
    return (PROC / "self" / "stat").is_file()


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 on), or None."""
    try:
        text = (PROC / str(int(pid)) / "stat").read_text()
    except (OSError, ValueError):
        return None
    return text[text.rindex(")") + 2:].split()  # the name may hold spaces and parentheses


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), or None when there is no such
    live process (none, a zombie, or ``/proc`` unreadable)."""
    f = _stat(pid)
    if not f or f[0] in ("Z", "X", "x"):
        return None
    return int(f[19])


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def boot_id() -> str:
    """This boot of the machine (``/proc/sys/kernel/random/boot_id``; "" when unknown): start times
    count from the boot, so they compare only within one."""
    return _read(PROC / "sys" / "kernel" / "random" / "boot_id")


def pid_namespace() -> str:
    """This process's pid namespace (``pid:[4026531836]``; "" when unknown): two containers on one
    host name number their processes apart."""
    try:
        return os.readlink(PROC / "self" / "ns" / "pid")
    except OSError:
        return ""


def name(pid: int) -> str:
    """The command name of ``pid`` (``/proc/<pid>/comm``), "" when gone."""
    return _read(PROC / str(int(pid)) / "comm")


def children(pids: Iterable[int]) -> list[int]:
    """The live direct children of ``pids`` (from every process's parent pid), sorted."""
    parents = {int(p) for p in pids}
    out = []
    for d in PROC.iterdir() if parents and available() else ():
        if d.name.isdigit():
            f = _stat(int(d.name))
            if f and f[0] not in ("Z", "X", "x") and int(f[1]) in parents:
                out.append(int(d.name))
    return sorted(out)


def _mentions(text: str, path: str) -> bool:
    """``path`` occurs in ``text`` as a whole path (``/a/b`` in ``--dir=/a/b/logs``, not in ``/a/bc``)."""
    i = text.find(path)
    while i >= 0:
        end = i + len(path)
        if end == len(text) or text[end] not in _NAME_CHARS:
            return True
        i = text.find(path, i + 1)
    return False


def belongs(pid: int, folder: str) -> bool:
    """True when process ``pid`` shows that it works in ``folder`` (an absolute path of at least two
    parts: a Ray session dir): its command line names it, or one of its open files lies in it.
    The open files count because Ray renames its agents and workers (``ray::DashboardAgent``,
    ``ray::IDLE``: their command line no longer shows the session), while their logs stay open
    in ``<session>/logs``."""
    folder = str(folder).rstrip("/")
    if not folder.startswith("/") or len(Path(folder).parts) < 3:
        return False  # never "every process with a file in /tmp"
    base = PROC / str(int(pid))
    try:
        cmdline = (base / "cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except (OSError, ValueError):
        return False
    if any(_mentions(arg, folder) for arg in cmdline):
        return True
    try:
        fds = list((base / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target == folder or target.startswith(folder + "/"):
            return True
    return False


def stop(pids: Sequence[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM each of ``pids`` (this process and its parent excepted), SIGKILL those still alive
    after ``grace_s``; returns the pids that ended. By pid only: nothing is looked up by name."""
    mine = {os.getpid(), os.getppid()}
    todo: dict[int, int] = {}
    for pid in pids:
        st = start_time(pid)
        if pid in mine or st is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            todo[pid] = st
        except OSError:  # gone meanwhile, or not ours to signal
            continue
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(start_time(p) == s for p, s in todo.items()):
        time.sleep(0.1)
    for pid, st in todo.items():
        if start_time(pid) == st:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(start_time(p) == s for p, s in todo.items()):
        time.sleep(0.05)
    return [p for p, s in todo.items() if start_time(p) != s]
