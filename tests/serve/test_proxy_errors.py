"""The proxy middleware (serve.proxy_errors) without Ray: the proxy's own plain-text errors
become the endpoint's JSON body; JSON errors and successful answers pass untouched."""
from __future__ import annotations

import asyncio
import json

import pytest

from serve.proxy_errors import JSONErrors, middlewares


def _app(status: int, body: bytes, ctype: bytes, extra: list | None = None, chunks: int = 1):
    async def app(scope, receive, send):
        head = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": head + (extra or [])})
        step = max(1, len(body) // chunks)
        parts = [body[i:i + step] for i in range(0, len(body), step)] or [b""]
        for i, p in enumerate(parts):
            await send({"type": "http.response.body", "body": p, "more_body": i < len(parts) - 1})
    return app


def _call(app) -> tuple[int, dict, bytes]:
    sent: list[dict] = []

    async def send(m):
        sent.append(m)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(JSONErrors(app)({"type": "http", "path": "/"}, receive, send))
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_a_lost_replicas_plain_500_becomes_json():
    text = b"Internal Server Error: ActorDiedError: The actor died unexpectedly before finishing this task."
    status, headers, body = _call(_app(500, text, b"text/plain; charset=utf-8", chunks=3))
    doc = json.loads(body)
    assert status == 500 and headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert set(doc) == {"error", "detail", "file", "case"} and doc["error"] == "internal server error"
    assert "replica stopped" in doc["detail"] and "ActorDiedError" in doc["detail"]


@pytest.mark.parametrize("status,reason", [(404, "not found"), (503, "service unavailable")])
def test_other_proxy_errors_keep_status_and_headers(status, reason):
    got, headers, body = _call(_app(status, b"Path '/x' not found.", b"text/plain", [(b"retry-after", b"3")]))
    assert got == status and headers["retry-after"] == "3"
    assert json.loads(body) == {"error": reason, "detail": "Path '/x' not found.", "file": None, "case": None}


@pytest.mark.parametrize("status,ctype,body", [(422, b"application/json", b'{"error": "x"}'),
                                               (200, b"application/gzip", b"\x1f\x8bdata"),
                                               (200, b"text/html", b"<p>viewer</p>")])
def test_json_errors_and_answers_pass_untouched(status, ctype, body):
    got, headers, out = _call(_app(status, body, ctype))
    assert (got, headers["content-type"].encode(), out) == (status, ctype, body)


def test_an_exception_in_the_proxy_becomes_a_json_500():
    async def app(scope, receive, send):
        raise RuntimeError("ActorDiedError: the actor died unexpectedly")

    status, headers, body = _call(app)
    assert status == 500 and headers["content-type"] == "application/json"
    assert "ActorDiedError" in json.loads(body)["detail"]


def test_no_answer_at_all_becomes_a_json_500():
    async def app(scope, receive, send):  # what Ray's proxy does when the replica died: logs, returns
        return None

    status, headers, body = _call(app)
    assert status == 500 and "replica stopped" in json.loads(body)["detail"]


def test_an_exception_after_the_answer_started_is_not_hidden():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        raise RuntimeError("late")

    with pytest.raises(RuntimeError, match="late"):
        _call(app)


def test_the_callback_returns_starlette_middleware():
    (mw,) = middlewares()
    assert mw.cls is JSONErrors
