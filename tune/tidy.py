"""Closing the MLflow runs of a sweep driver that was killed, and stopping what its own Ray left.

A driver that ends normally, on Ctrl-C or on SIGTERM closes its runs; one killed outright
(SIGKILL, out of memory, a lost shell) leaves its sweep's parent run and trial child runs
RUNNING, and the agents of the local Ray it started alive for a while. So every sweep's parent
run records its driver (:func:`driver_tags`, set by :func:`tune.tracking.parent_run`):

* ``singr.driver.host``, ``.pid``, ``.start`` (the process's start time, so that a reused pid
  is not taken for the driver), ``.boot`` (the machine's boot id), ``.pidns`` (its pid namespace:
  another container may have the same host name);
* when the driver started its own local Ray: ``.ray_session`` (that Ray's session dir) and
  ``.ray_pids`` (``pid:start`` of the processes it started and of their children: GCS, raylet,
  dashboard, monitors, the raylet's agents).

:func:`find_orphans` reads the RUNNING parent runs (tag ``singr.role = sweep``) of some
experiments: a run whose driver ran on this host (same pid namespace) and has ended (its pid is
gone, now names a process with another start time, or the machine restarted since) is an orphan
(``certain``); a run driven from another host or container, or one without driver tags (a sweep
older than these tags), is reported as "cannot tell" (not ``certain``); a run whose driver lives
is not returned. :func:`tidy` marks each orphan and its RUNNING child runs KILLED with a tag
``singr.tidied`` saying why, and stops the recorded processes of the driver's own Ray that still
live (same pid and start time) and show that they work in its session dir (:func:`tune.procs.belongs`),
by pid, never ``ray stop``; "cannot tell" runs only with ``force`` (their processes never: they
are not on this machine, or not known).

Run by ``python -m tune --tidy`` (:func:`tidy_command`) and, quietly, at the start of every sweep
and ``singr report`` (:func:`tidy_quietly`). MLflow is imported only when a client is made; no Ray.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from singr.errors import SingrInputError

from . import procs
from .hub.store import check_store, client_for, sqlite_path

__all__ = ["DRIVER", "TIDIED_TAG", "Orphan", "TidyReport", "driver_tags", "judge", "find_orphans", "tidy",
           "tidy_command", "tidy_quietly"]

DRIVER = "singr.driver."
TIDIED_TAG = "singr.tidied"
ROLE_FILTER = "tags.`singr.role` = 'sweep' and attributes.status = 'RUNNING'"


def driver_tags(ray_session: str | None = None, ray_pids: Sequence[int] = ()) -> dict[str, str]:
    """The tags that name this process as a sweep's driver (see the module docstring); ``ray_session``
    and ``ray_pids``: the session dir and processes of the local Ray it started, if any."""
    pid = os.getpid()
    tags = {f"{DRIVER}host": socket.gethostname(), f"{DRIVER}pid": str(pid),
            f"{DRIVER}start": str(procs.start_time(pid) or ""), f"{DRIVER}boot": procs.boot_id(),
            f"{DRIVER}pidns": procs.pid_namespace()}
    if ray_session:
        tags[f"{DRIVER}ray_session"] = str(ray_session)
        alive = [(p, procs.start_time(p)) for p in dict.fromkeys(int(p) for p in ray_pids)]
        tags[f"{DRIVER}ray_pids"] = ",".join(f"{p}:{s}" for p, s in alive if s is not None)[:5000]
    return tags


def judge(tags: Mapping[str, str]) -> tuple[str, str]:
    """``(verdict, why)`` for a run with these tags: ``alive`` (its driver runs), ``ended`` (it
    ended without closing the run; ``why`` is the text of the ``singr.tidied`` tag) or ``unknown``."""
    host, pid_s, start = (tags.get(f"{DRIVER}{k}", "") for k in ("host", "pid", "start"))
    if not host or not pid_s.isdigit():
        return "unknown", "its driver is not recorded (a sweep started before drivers were)"
    pid, me = int(pid_s), socket.gethostname()
    if host != me:
        return "unknown", f"driven by pid {pid} on {host}, not this host ({me})"
    ns = tags.get(f"{DRIVER}pidns", "")
    if ns and procs.pid_namespace() and ns != procs.pid_namespace():
        return "unknown", f"driven by pid {pid} in another pid namespace on {host} (another container)"
    if not procs.available():
        return "unknown", f"driven by pid {pid} on {host}, and this system has no /proc to tell whether it runs"
    ended = f"driver pid {pid} on {host} ended without closing the run"
    boot = tags.get(f"{DRIVER}boot", "")
    if boot and procs.boot_id() and boot != procs.boot_id():
        return "ended", ended + " (the machine has restarted since)"
    now = procs.start_time(pid)
    if now is None:
        return "ended", ended
    if start.isdigit() and int(start) != now:
        return "ended", ended + f" (pid {pid} is now another process)"
    return "alive", f"driver pid {pid} on {host} is running"


@dataclass(frozen=True)
class Orphan:
    """A RUNNING sweep parent run whose driver has ended (``certain``) or cannot be checked."""

    run_id: str
    experiment_id: str
    sweep: str
    why: str
    certain: bool
    ray_session: str | None = None
    ray_pids: tuple[tuple[int, int], ...] = ()


def _ray_pids(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for part in text.split(","):
        p, _, s = part.partition(":")
        if p.strip().isdigit() and s.strip().isdigit():
            out.append((int(p), int(s)))
    return tuple(out)


def find_orphans(client: Any, experiment_ids: Sequence[str]) -> list[Orphan]:
    """The RUNNING sweep parent runs of ``experiment_ids`` whose driver has ended or cannot be
    checked (see the module docstring); runs with a live driver are left out."""
    runs = client.search_runs(list(experiment_ids), ROLE_FILTER, max_results=10000)
    out = []
    for r in runs:
        tags = r.data.tags
        verdict, why = judge(tags)
        if verdict == "alive":
            continue
        out.append(Orphan(r.info.run_id, r.info.experiment_id, tags.get("sweep", r.info.run_name or ""), why,
                          verdict == "ended", tags.get(f"{DRIVER}ray_session") or None,
                          _ray_pids(tags.get(f"{DRIVER}ray_pids", ""))))
    return out


@dataclass
class TidyReport:
    """What :func:`tidy` did (or, in a dry run, would do): one line per action in ``lines``."""

    lines: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)      # parent runs marked KILLED
    stopped: list[int] = field(default_factory=list)   # Ray processes stopped
    left: list[str] = field(default_factory=list)      # runs left alone: cannot tell


def _leftovers(o: Orphan) -> list[int]:
    """The recorded processes of ``o``'s Ray that still live (same start time) in its session dir."""
    if not o.ray_session:
        return []
    return [p for p, s in o.ray_pids if procs.start_time(p) == s and procs.belongs(p, o.ray_session)]


def tidy(client: Any, experiment_ids: Sequence[str], *, dry_run: bool = False, force: bool = False,
         say: Callable[[str], None] | None = None, mention_left: bool = True, grace_s: float = 5.0) -> TidyReport:
    """Close the orphans of ``experiment_ids`` (see the module docstring): each parent run and its
    RUNNING children are marked KILLED with the tag ``singr.tidied``, and its driver's leftover Ray
    processes are stopped (SIGTERM, SIGKILL after ``grace_s``). "Cannot tell" runs are closed only
    with ``force``, else listed (``mention_left``). Each run is read again just before it is
    closed, so that a run a new driver has taken over meanwhile is left to it. ``dry_run``: change
    nothing, say what would be done. Every line goes to ``say`` as well as into the report."""
    rep = TidyReport()

    def line(text: str) -> None:
        rep.lines.append(text)
        if say is not None:
            say(text)

    would = "would mark" if dry_run else "marked"
    for o in find_orphans(client, experiment_ids):
        if not o.certain and not force:
            rep.left.append(o.run_id)
            if mention_left:
                line(f"left run {o.run_id} (sweep {o.sweep!r}) RUNNING: cannot tell whether its driver runs, "
                     f"{o.why} (--force closes it)")
            continue
        fresh = client.get_run(o.run_id)
        verdict, why = judge(fresh.data.tags)
        if fresh.info.status != "RUNNING" or verdict == "alive" or (verdict == "unknown" and not force):
            continue  # closed, or taken over by a new driver, since it was read
        why = why if verdict == "ended" else f"closed by --force: {why}"
        kids = client.search_runs([o.experiment_id], f"tags.mlflow.parentRunId = '{o.run_id}' and "
                                  "attributes.status = 'RUNNING'", max_results=10000)
        if not dry_run:
            for k in kids:
                client.set_tag(k.info.run_id, TIDIED_TAG, why)
                client.set_terminated(k.info.run_id, status="KILLED")
            client.set_tag(o.run_id, TIDIED_TAG, why)
            client.set_terminated(o.run_id, status="KILLED")
        rep.runs.append(o.run_id)
        line(f"{would} run {o.run_id} (sweep {o.sweep!r}) KILLED with {len(kids)} running child run(s): {why}")
        if verdict != "ended":
            continue  # its processes are not known to be this machine's
        left = _leftovers(o)
        if dry_run:
            rep.stopped += left
            for p in left:
                line(f"would stop Ray process {p} ({procs.name(p)}), left by that driver's Ray session {o.ray_session}")
            continue
        names = {p: procs.name(p) for p in left}
        for p in procs.stop(left, grace_s=grace_s):
            rep.stopped.append(p)
            line(f"stopped Ray process {p} ({names[p]}), left by that driver's Ray session {o.ray_session}")
    return rep


def _experiment_ids(client: Any, uri: str, names: Sequence[str]) -> list[str]:
    ids = []
    for n in names:
        exp = client.get_experiment_by_name(n)
        if exp is None:
            known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise SingrInputError(f"no MLflow experiment named {n!r} at {uri}; experiments: {known}")
        ids.append(exp.experiment_id)
    return ids


def tidy_command(experiments: Sequence[str], uri: str, *, dry_run: bool = False, force: bool = False,
                 say: Callable[[str], None] = print) -> int:
    """``python -m tune --tidy``: :func:`tidy` over the named experiments of the store at ``uri``,
    one line per action and a final count; returns 0. A store that is missing or does not answer,
    or an unknown experiment: :class:`SingrInputError` (one line, exit 2)."""
    check_store(uri)  # a sqlite file that is not there is not created
    from .session import check_tracking_store  # a tracking server must answer

    check_tracking_store(uri, experiments[0] if experiments else "")
    try:
        client = client_for(uri)
        rep = tidy(client, _experiment_ids(client, uri, experiments), dry_run=dry_run, force=force, say=say)
    except SingrInputError:
        raise
    except Exception as e:  # noqa: BLE001 - the store failed: one line, not a traceback
        msg = str(e).splitlines()[0][:300] if str(e) else ""
        raise SingrInputError(f"the MLflow store at {uri} failed: {type(e).__name__}: {msg}") from None
    left = f"; {len(rep.left)} left RUNNING (cannot tell; --force closes them)" if rep.left else ""
    if dry_run:
        say(f"tidy (dry run, nothing changed): {len(rep.runs)} run(s) would be marked KILLED, "
            f"{len(rep.stopped)} Ray process(es) stopped{left}")
    else:
        say(f"tidy: {len(rep.runs)} run(s) marked KILLED, {len(rep.stopped)} Ray process(es) stopped{left}")
    return 0


def tidy_quietly(uri: str, experiment: str, say: Callable[[str], None] = print) -> TidyReport | None:
    """:func:`tidy` of one experiment before a command that touches it (a sweep, a report): the
    orphans only, their actions printed with a ``[tune] tidy:`` prefix, nothing when there are none
    (nor when the store or experiment does not exist yet). Never raises: a failure is one line."""
    try:
        db = sqlite_path(uri)
        if db is not None and not db.is_file():
            return None
        client = client_for(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        return tidy(client, [exp.experiment_id], say=lambda t: say(f"[tune] tidy: {t}"), mention_left=False)
    except Exception as e:  # noqa: BLE001 - tidying must never stop the command
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        say(f"[tune] tidy: could not check {experiment!r} for runs of killed drivers ({type(e).__name__}: {msg}); "
            "going on")
        return None
