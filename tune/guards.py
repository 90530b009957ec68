"""What keeps a sweep from hanging: a janitor for reserved resources, and a watchdog.

* :class:`PlacementGroupJanitor` (a Tune callback). Every Ray Train run reserves its
  workers' CPUs/GPUs in a placement group. Ray Train v2 removes it when the run ends, and a
  detached ``PlacementGroupCleaner`` actor is meant to remove it when the run's controller
  dies (a trial stopped by ASHA, a failed trial). That cleaner finds "the" cluster through
  the state API and has been seen to fail (another cluster named in
  ``/tmp/ray/ray_current_cluster``; ray-project/ray issues 62753 and 65443), leaving the
  CPUs reserved and later trials waiting forever. The janitor does not depend on it: when
  a trial ends it notes the worker-shaped placement groups that exist; any of them found
  unused (nothing scheduled in it) for a grace period afterwards is removed. Groups made
  after the trial ended belong to later trials and are never touched. At the end of
  the sweep every unused worker-shaped group is removed (and the cleaners still alive are
  counted in ``summary.json``). A group is "unused" when its ``bundle_group_<id>`` resource is fully
  available (nothing scheduled in it); "worker-shaped" means every bundle equals a Train
  worker's resources (Tune's own trial groups, ``{"CPU": 0.01}``, are never touched).
* :class:`Watchdog` (a Tune stopper). When no trial reports, finishes or fails for
  ``stall_timeout_s`` seconds, it stops the whole sweep, which then ends with a message
  naming what every unfinished trial was doing (not a silent hang).
"""
from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

__all__ = ["PlacementGroupJanitor", "Watchdog", "unused_worker_groups"]


def _same_bundle(a: dict[str, float], b: dict[str, float]) -> bool:
    keys = {k for k in (*a, *b) if k in ("CPU", "GPU") or float(a.get(k, 0) or b.get(k, 0))}
    return all(abs(float(a.get(k, 0.0)) - float(b.get(k, 0.0))) < 1e-9 for k in keys)


def worker_groups(worker_bundle: dict[str, float]) -> dict[str, bool]:
    """{id: in use} of the placement groups that are CREATED and shaped like Train worker groups."""
    import ray

    table = ray.util.placement_group_table()
    total, free = ray.cluster_resources(), ray.available_resources()
    out = {}
    for pg_id, pg in table.items():
        if pg.get("state") != "CREATED":
            continue
        bundles = list((pg.get("bundles") or {}).values())
        if not bundles or not all(_same_bundle(b, worker_bundle) for b in bundles):
            continue
        key = f"bundle_group_{pg_id}"
        if key in total:
            out[pg_id] = abs(float(free.get(key, 0.0)) - float(total[key])) > 1e-6
    return out


def unused_worker_groups(worker_bundle: dict[str, float]) -> set[str]:
    """Ids of the worker-shaped placement groups nothing is scheduled in."""
    return {k for k, used in worker_groups(worker_bundle).items() if not used}


def _remove(pg_id: str) -> bool:
    import ray
    from ray.util.placement_group import PlacementGroup

    try:
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
        return True
    except Exception:  # noqa: BLE001 - already gone
        return False


class PlacementGroupJanitor(Callback):
    """Removes the worker placement groups that ended trials left reserved (module docstring)."""

    def __init__(self, worker_bundle: dict[str, float], grace_s: float = 20.0, period_s: float = 5.0):
        self.worker_bundle = {k: float(v) for k, v in worker_bundle.items()}
        self.grace_s, self.period_s = float(grace_s), float(period_s)
        # worker groups that existed when a trial ended -> since when they have been unused (None: in use)
        self.suspects: dict[str, float | None] = {}
        self.removed: list[str] = []
        self._last = 0.0

    def _note(self) -> None:
        """A trial ended: every worker group that exists now is a suspect (groups made later
        belong to trials that start later, and are never touched)."""
        try:
            for pg_id in worker_groups(self.worker_bundle):
                self.suspects.setdefault(pg_id, None)
        except Exception:  # noqa: BLE001 - a janitor never stops the sweep
            pass

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._note()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._note()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.time()
        if now - self._last < self.period_s or not self.suspects:
            return
        self._last = now
        try:
            groups = worker_groups(self.worker_bundle)
        except Exception:  # noqa: BLE001
            return
        for pg_id, since in list(self.suspects.items()):
            if pg_id not in groups:
                del self.suspects[pg_id]  # removed (by Ray Train, or by us)
            elif groups[pg_id]:
                self.suspects[pg_id] = None  # in use: a running trial's workers
            elif since is None:
                self.suspects[pg_id] = now
            elif now - since >= self.grace_s and _remove(pg_id):
                self.removed.append(pg_id)
                del self.suspects[pg_id]
                print(f"[tune] freed a placement group left reserved by an ended trial ({pg_id[:12]}...)", flush=True)

    def finish(self) -> dict[str, int]:
        """At the end of the sweep: remove what is left; returns the counts for summary.json."""
        import ray

        left = 0
        try:
            for pg_id in unused_worker_groups(self.worker_bundle):
                if _remove(pg_id):
                    self.removed.append(pg_id)
            left = len(unused_worker_groups(self.worker_bundle))
        except Exception:  # noqa: BLE001
            pass
        cleaners = -1
        try:  # Ray's cleaners exit when their run's controller ends; count any still alive (state API)
            from ray.util.state import list_actors

            ctx = ray.get_runtime_context()
            cleaners = len(list_actors(address=ctx.gcs_address, timeout=10, raise_on_missing_output=False,
                                       filters=[("class_name", "=", "PlacementGroupCleaner"), ("state", "=", "ALIVE"),
                                                ("job_id", "=", ctx.get_job_id())]))
        except Exception:  # noqa: BLE001
            pass
        return {"placement_groups_freed": len(self.removed), "placement_groups_left": left,
                "cleaner_actors_alive": cleaners}


class Watchdog(Stopper):
    """Stops the sweep when no trial has made progress for ``stall_timeout_s`` seconds."""

    def __init__(self, stall_timeout_s: float):
        self.timeout = float(stall_timeout_s)
        self.last = time.time()
        self.fired = False

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.last = time.time()  # a result is progress
        return False

    def stop_all(self) -> bool:
        if self.timeout > 0 and time.time() - self.last > self.timeout:
            if not self.fired:
                print(f"[tune] watchdog: no trial has reported for {self.timeout:.0f} s (tune.stall_timeout_s); "
                      "ending the sweep", flush=True)
            self.fired = True
            return True
        return False
