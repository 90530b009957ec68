"""Admission by cost (serve.admission) without Ray: the budget, the FIFO queue, 503 with a
Retry-After, a request costlier than the budget running alone, cancellation, tickets."""
from __future__ import annotations

import asyncio
import time

import pytest

from serve.admission import Abandoned, Admission, Busy, Ticket, request_cost, watch_all


def test_cost_is_voxels_times_passes():
    brats = 240 * 240 * 155
    assert request_cost(brats, 1, False) == brats
    assert request_cost(brats, 1, True) == 8 * brats
    assert request_cost(brats, 5, True) == 40 * brats


def test_budget_queue_and_refusal():
    async def main() -> list[str]:
        adm = Admission(budget=10, max_queued=6)
        log: list[str] = []
        gate = asyncio.Event()

        async def work(name: str, cost: float) -> None:
            async with adm.admit(cost):
                log.append(f"start {name}")
                await gate.wait()
                log.append(f"end {name}")

        a = asyncio.create_task(work("a", 6))
        b = asyncio.create_task(work("b", 4))  # fits beside a: 10 <= 10
        await asyncio.sleep(0.01)
        c = asyncio.create_task(work("c", 5))  # waits: queued 5
        await asyncio.sleep(0.01)
        assert adm.in_flight == 10 and adm.queued == 5
        with pytest.raises(Busy) as busy:  # 5 + 2 > 6 queued
            async with adm.admit(2):
                pass
        assert busy.value.retry_after_s >= 1 and "queue" in busy.value.detail and "POST /v1/jobs" in busy.value.detail
        gate.set()
        await asyncio.gather(a, b, c)
        assert adm.in_flight == 0 and adm.running == 0 and not adm.waiting
        assert adm.stats == {"admitted": 3, "queued": 1, "refused": 1, "abandoned": 0}
        return log

    log = asyncio.run(main())
    assert log.index("start c") > log.index("end a")  # c started only once a or b gave its share back
    assert log[:2] == ["start a", "start b"]


def _order(starve_s: float) -> list[str]:
    async def main() -> list[str]:
        adm = Admission(budget=10, max_queued=100, starve_s=starve_s)
        order: list[str] = []

        async def work(name: str, cost: float, hold: float) -> None:
            async with adm.admit(cost):
                order.append(name)
                await asyncio.sleep(hold)

        first = asyncio.create_task(work("small1", 3, 0.05))
        await asyncio.sleep(0.005)
        big = asyncio.create_task(work("big", 50, 0.05))  # 5x the budget: waits for an idle replica
        await asyncio.sleep(0.02)
        late = asyncio.create_task(work("small2", 1, 0.0))  # fits beside small1, cheaper than the queued big one
        await asyncio.gather(first, big, late)
        return order

    return asyncio.run(main())


def test_the_cheapest_goes_first_and_the_costliest_runs_alone():
    assert _order(starve_s=60) == ["small1", "small2", "big"]


def test_a_starved_waiter_goes_first_whatever_its_cost():
    assert _order(starve_s=0.01) == ["small1", "big", "small2"]


def test_jobs_wait_however_long_the_queue_and_cancelled_waiters_leave_it():
    async def main() -> None:
        adm = Admission(budget=1, max_queued=0)
        hold = asyncio.Event()

        async def holder() -> None:
            async with adm.admit(1):
                await hold.wait()

        h = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        with pytest.raises(Busy):
            async with adm.admit(1):
                pass
        waiter = asyncio.create_task(adm.admit(1, wait_unbounded=True).__aenter__())
        await asyncio.sleep(0.01)
        assert adm.queued == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert adm.queued == 0
        hold.set()
        await h
        assert adm.in_flight == 0 and adm.running == 0

    asyncio.run(main())


def test_retry_after_follows_the_measured_rate():
    adm = Admission(budget=100e6, max_queued=100e6)
    adm.observe(10e6, 20.0)  # 2 s per million voxel-passes
    adm.in_flight = 50e6
    assert adm.retry_after(10e6) == 120
    adm.observe(10e6, 2.0)
    assert adm.retry_after(10e6) < 120


def test_tickets_end_work_at_the_deadline_or_on_cancel():
    t = Ticket(1.0, deadline_s=0.05)
    t.watch(0.1)
    assert t.progress == 0.1
    time.sleep(0.06)
    with pytest.raises(Abandoned, match="compute deadline of 0.05 s"):
        t.watch(0.2)
    u = Ticket(1.0, deadline_s=60)
    u.cancel()
    with pytest.raises(Abandoned, match="cancelled"):
        u.watch(0.3)
    # a batch ends only when every request in it is abandoned
    live, gone = Ticket(1, 60), Ticket(1, 60)
    gone.cancel()
    w = watch_all([live, gone])
    w(0.5)
    assert live.progress == 0.5
    live.cancel()
    with pytest.raises(Abandoned):
        w(0.6)


def test_heavy_work_runs_one_at_a_time_and_light_work_goes_beside_it():
    async def main() -> list[str]:
        adm = Admission(budget=100, max_queued=100, heavy=10)
        log: list[str] = []
        gate = asyncio.Event()

        async def work(name: str, cost: float) -> None:
            async with adm.admit(cost):
                log.append(f"start {name}")
                if name == "heavy1":
                    await gate.wait()
                log.append(f"end {name}")

        h1 = asyncio.create_task(work("heavy1", 20))
        await asyncio.sleep(0.01)
        h2 = asyncio.create_task(work("heavy2", 20))  # the budget has room, but one heavy runs at a time
        await asyncio.sleep(0.01)
        light = asyncio.create_task(work("light", 1))
        await asyncio.sleep(0.01)
        assert adm.heavy_running == 1 and adm.queued == 20 and "end light" in log
        gate.set()
        await asyncio.gather(h1, h2, light)
        assert adm.heavy_running == 0 and adm.running == 0
        return log

    log = asyncio.run(main())
    assert log.index("start heavy2") > log.index("end heavy1") and log.index("end light") < log.index("end heavy1")
