"""The processes of a local cluster, read from ``/proc`` (Linux; no psutil): command lines,
children, listening sockets, and stopping exactly the processes one started (by PID, never
``ray stop``, which would end every Ray process of the user on the machine).

Part of the development harness :mod:`tune.devcluster`; tests use these helpers too.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Sequence

__all__ = ["alive", "cmdline", "descendants", "find_processes", "listening_sockets", "stop_processes"]


def cmdline(pid: int) -> bytes:
    """The NUL-separated command line of ``pid`` (empty when it is gone, or a zombie)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """A process that runs (a zombie, whose command line is empty, does not)."""
    return bool(cmdline(pid))


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(d.name))
    return out


def descendants(pids: Sequence[int]) -> set[int]:
    """``pids`` and every process below them."""
    kids = _children()
    out, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        todo.extend(kids.get(p, []))
    return out


def find_processes(markers: Sequence[str]) -> set[int]:
    """Processes whose command line contains one of ``markers``, and their descendants."""
    me = os.getpid()
    found = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and int(d.name) != me
             and any(m.encode() in cmdline(int(d.name)) for m in markers)]
    return {p for p in descendants(found) if p != me}


def stop_processes(pids: set[int], grace_s: float = 10.0) -> set[int]:
    """SIGTERM, then SIGKILL after ``grace_s``; returns the processes still alive (none)."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for p in pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + wait
        while time.time() < deadline and any(alive(p) for p in pids):
            time.sleep(0.2)
    return {p for p in pids if alive(p)}


def listening_sockets(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket of ``pids`` (from /proc, no psutil)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] != "0A" or parts[9] not in inodes:  # 0A: LISTEN
                continue
            hexaddr, hexport = parts[1].split(":")
            if v6:
                raw = bytes.fromhex(hexaddr)
                words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
                b = b"".join(words)
                addr = "::" if not any(b) else ("127.0.0.1" if b[-4:] == b"\x7f\x00\x00\x01" and not any(b[:10])
                                                else b.hex())
            else:
                addr = ".".join(str(x) for x in bytes.fromhex(hexaddr)[::-1])
            out.append((addr, int(hexport, 16), inodes[parts[9]]))
    return out
