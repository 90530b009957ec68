"""serve.upload.read_body's limits, without Ray: a 408 names the limit that fired (the minimum
rate after its grace, the idle gap, the total time), and a steady upload passes them all."""
from __future__ import annotations

import asyncio
import types

import pytest

from serve.upload import HTTPProblem, read_body


def _request(pieces: int, size: int, every_s: float, stall_after: int | None = None):
    async def stream():
        for i in range(pieces):
            if stall_after is not None and i == stall_after:
                await asyncio.sleep(3600)
            await asyncio.sleep(every_s)
            yield b"x" * size

    return types.SimpleNamespace(headers={}, stream=stream)


def _read(req, **limits) -> bytes:
    return asyncio.run(read_body(req, 10 << 20, **limits))


def test_a_trickle_is_cut_by_the_minimum_rate_after_its_grace():
    # 10 bytes every 0.05 s = 200 B/s, far below 50 kB/s; no idle gap, far from the total time
    with pytest.raises(HTTPProblem) as e:
        _read(_request(1000, 10, 0.05), timeout_s=60, idle_timeout_s=5, min_rate_kbps=50, grace_s=0.5)
    assert e.value.status == 408 and "upload_min_rate_kbps = 50 kB/s" in e.value.detail
    assert "after a grace of 0.5 s" in e.value.detail


def test_an_idle_gap_names_the_idle_limit():
    with pytest.raises(HTTPProblem) as e:
        _read(_request(10, 100_000, 0.0, stall_after=3), timeout_s=60, idle_timeout_s=0.3, min_rate_kbps=1,
              grace_s=30)
    assert e.value.status == 408 and "no data for upload_idle_s = 0.3 s" in e.value.detail
    assert "300000 bytes" in e.value.detail


def test_the_total_time_names_the_total_limit():
    with pytest.raises(HTTPProblem) as e:
        _read(_request(1000, 100_000, 0.05), timeout_s=0.5, idle_timeout_s=5, min_rate_kbps=0)
    assert e.value.status == 408 and "upload_timeout_s = 0.5 s" in e.value.detail


def test_a_steady_upload_passes():
    body = _read(_request(20, 50_000, 0.01), timeout_s=60, idle_timeout_s=5, min_rate_kbps=64, grace_s=2)
    assert len(body) == 1_000_000
