"""Admission by cost: a replica runs work up to a compute budget, queues a bounded amount more,
refuses the rest with 503 + ``Retry-After``, and ends work nobody will wait for.

A request's cost is known from its NIfTI headers before any voxel is decoded::

    cost = voxels of the largest volume x passes          (passes = members x 8 with TTA, else members)

in voxel-passes (a BraTS case, 240 x 240 x 155 = 8.9 M voxels, costs 8.9 M with one model and no
TTA, 71 M with TTA). Work is admitted while the work in flight stays within ``budget`` (a request costlier than
the whole budget runs alone); requests that do not fit wait in a queue of at most
``max_queued`` voxel-passes (jobs always wait: they are bounded by their own count); beyond it,
:class:`Busy` (503) with a ``Retry-After`` estimated from the seconds per voxel-pass measured on
this replica. Work costlier than ``heavy`` (TTA on a BraTS case, a large ensemble) runs one at a
time (the endpoint runs it outside the batches of the others). The queue serves the cheapest
waiter first, so a plain case is not stuck behind queued TTA bombs: it waits for at most the
work in flight to make room. A waiter queued longer than ``starve_s`` goes first whatever its
cost (oldest first), so costly work is not starved.

A :class:`Ticket` carries a request's compute deadline and whether its client went away; its
:meth:`Ticket.watch` is the predictor's watch (:data:`singr.engine.infer.Watch`): it records
progress and raises :class:`Abandoned` once the deadline has passed or the request was
cancelled, which ends the sliding windows at their next network call.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import AsyncIterator, Callable

__all__ = ["Admission", "Abandoned", "Busy", "Ticket", "request_cost"]


class Busy(Exception):
    """The replica's queue is full: answer 503 with ``Retry-After: retry_after_s``."""

    def __init__(self, detail: str, retry_after_s: int):
        super().__init__(detail)
        self.detail, self.retry_after_s = detail, retry_after_s


class Abandoned(Exception):
    """Work ended because its deadline passed or nobody waits for it any more."""


def request_cost(voxels: int, members: int, tta: bool) -> float:
    """Voxel-passes of one case: ``voxels x members x (8 if tta else 1)``."""
    return float(voxels) * max(int(members), 1) * (8 if tta else 1)


class Ticket:
    """One piece of work: its cost, compute deadline (monotonic seconds), cancellation and progress
    (a job's record gets the progress from the replica's heartbeat)."""

    def __init__(self, cost: float, deadline_s: float):
        self.cost = float(cost)
        self.deadline_s = float(deadline_s)
        self.deadline = time.monotonic() + self.deadline_s
        self.cancelled = False
        self.progress = 0.0

    def cancel(self) -> None:
        self.cancelled = True

    def abandoned(self) -> str | None:
        """Why the work should end now, or None."""
        if self.cancelled:
            return "cancelled (the client went away or cancelled it)"
        if time.monotonic() > self.deadline:
            return f"its compute deadline of {self.deadline_s:g} s passed"
        return None

    def watch(self, fraction: float) -> None:
        """The predictor's watch: record progress, raise :class:`Abandoned` when it should end."""
        self.progress = fraction
        why = self.abandoned()
        if why:
            raise Abandoned(why)


def watch_all(tickets: list[Ticket]) -> Callable[[float], None]:
    """A watch for a batch of requests: progress to each, :class:`Abandoned` only when every
    request of the batch is abandoned (the others still want the shared work)."""
    def watch(fraction: float) -> None:
        for t in tickets:
            t.progress = fraction
        whys = [t.abandoned() for t in tickets]
        if all(whys):
            raise Abandoned(whys[0] or "abandoned")
    return watch


class Admission:
    """The replica's compute budget (see the module docstring). Used from the replica's event loop."""

    def __init__(self, budget: float, max_queued: float, heavy: float = float("inf"), starve_s: float = 60.0):
        if budget <= 0 or max_queued < 0 or heavy <= 0:
            raise ValueError(f"admission: budget and heavy must be > 0 and max_queued >= 0 (got {budget}, "
                             f"{heavy}, {max_queued})")
        self.budget, self.max_queued, self.starve_s = float(budget), float(max_queued), float(starve_s)
        self.heavy = float(heavy)
        self.in_flight = 0.0
        self.running = 0
        self.heavy_running = 0
        self.waiting: list[tuple[float, float, asyncio.Future]] = []  # (cost, queued at, future)
        self.s_per_unit: float | None = None  # measured seconds per voxel-pass (moving average)
        self.stats = {"admitted": 0, "queued": 0, "refused": 0, "abandoned": 0}

    @property
    def queued(self) -> float:
        return sum(w[0] for w in self.waiting)

    def _head(self) -> tuple[float, float, asyncio.Future] | None:
        """The waiter to admit next: the oldest starved one, else the cheapest (oldest among equals)."""
        if not self.waiting:
            return None
        now = time.monotonic()
        return min(self.waiting, key=lambda w: (0, w[1], 0.0) if now - w[1] > self.starve_s else (1, w[0], w[1]))

    def is_heavy(self, cost: float) -> bool:
        return cost > self.heavy

    def _fits(self, cost: float) -> bool:
        if self.is_heavy(cost) and self.heavy_running:
            return False
        return self.running == 0 or self.in_flight + cost <= self.budget

    def retry_after(self, cost: float = 0.0) -> int:
        """Seconds until work of ``cost`` would likely start: the work ahead at the measured rate."""
        ahead = self.in_flight + self.queued + cost
        rate = self.s_per_unit if self.s_per_unit is not None else 1e-6  # ~1 s per million voxel-passes (CPU)
        return int(min(max(math.ceil(ahead * rate), 1), 600))

    def observe(self, cost: float, seconds: float) -> None:
        """Feed the rate estimate with one finished piece of work."""
        if cost > 0 and seconds > 0:
            r = seconds / cost
            self.s_per_unit = r if self.s_per_unit is None else 0.7 * self.s_per_unit + 0.3 * r

    @contextlib.asynccontextmanager
    async def admit(self, cost: float, wait_unbounded: bool = False) -> AsyncIterator[None]:
        """Hold ``cost`` of the budget for the block. Waits its turn (FIFO) when the budget is
        spent; raises :class:`Busy` when the queue already holds ``max_queued`` voxel-passes
        (``wait_unbounded``: jobs, which always wait)."""
        head = self._head()
        if not self._fits(cost) or (head is not None and (head[0] <= cost or
                                                          time.monotonic() - head[1] > self.starve_s)):
            if not wait_unbounded and self.queued + cost > self.max_queued:
                self.stats["refused"] += 1
                raise Busy(f"this replica is busy: {self.in_flight / 1e6:.0f} M voxel-passes running, "
                           f"{self.queued / 1e6:.0f} M queued (the queue holds {self.max_queued / 1e6:.0f} M); this "
                           f"request costs {cost / 1e6:.1f} M; retry later, or submit it as a job (POST /v1/jobs)",
                           self.retry_after(cost))
            fut: asyncio.Future = asyncio.get_running_loop().create_future()
            entry = (cost, time.monotonic(), fut)
            self.waiting.append(entry)
            self.stats["queued"] += 1
            try:
                await fut
            except BaseException:
                if entry in self.waiting:
                    self.waiting.remove(entry)
                elif fut.done() and not fut.cancelled():  # admitted just as it was cancelled: give it back
                    self._release(cost)
                raise
        else:
            self._take(cost)
        self.stats["admitted"] += 1
        try:
            yield
        except Abandoned:
            self.stats["abandoned"] += 1
            raise
        finally:
            self._release(cost)

    def _take(self, cost: float) -> None:
        self.in_flight += cost
        self.running += 1
        self.heavy_running += self.is_heavy(cost)

    def _release(self, cost: float) -> None:
        self.in_flight = max(self.in_flight - cost, 0.0)
        self.running -= 1
        self.heavy_running -= self.is_heavy(cost)
        while (head := self._head()) is not None and self._fits(head[0]):
            self.waiting.remove(head)
            if head[2].done():
                continue
            self._take(head[0])
            head[2].set_result(None)
