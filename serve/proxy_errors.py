"""The documented JSON body for the errors Ray Serve's HTTP proxy answers itself.

Some answers never reach the deployment: a request in flight when its replica dies (the proxy
logs Ray's ``ActorDiedError`` and ends the request without an answer, which uvicorn turns into a
plain-text 500), a route no application serves (404), the
proxy's own back-pressure (503). :class:`JSONErrors` is an ASGI middleware on the proxy that
rewrites every error answer that is not JSON into ``{"error", "detail", "file", "case"}``,
keeping its status and headers (``Retry-After``). Answers of the deployment (already JSON) and
successful answers pass untouched.

Ray Serve installs it from the environment of the Ray processes:
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=serve.proxy_errors:middlewares``. ``singr serve`` sets
it before a local Ray starts, and passes it to Serve's controller (``controller_options``), whose
proxies inherit it on a cluster too; with ``serve run`` set it yourself. What still
cannot be JSON: a malformed request line or a request head over the server's size limit is
answered by uvicorn's HTTP parser with a plain ``400 Bad Request`` before any application code
(proxy included) runs.
"""
from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Awaitable, Callable

__all__ = ["JSONErrors", "middlewares", "CALLBACK_ENV", "CALLBACK"]

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "serve.proxy_errors:middlewares"

_Send = Callable[[dict[str, Any]], Awaitable[None]]


class JSONErrors:
    """ASGI middleware: non-JSON error answers (status >= 400) become the endpoint's JSON body."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: _Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}
        body = bytearray()

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                ctype = next((v for k, v in message.get("headers", []) if k.lower() == b"content-type"), b"")
                if int(message["status"]) >= 400 and not ctype.startswith(b"application/json"):
                    held["start"] = message  # rewritten once its whole body is here
                    return
                held["sent"] = True
                await send(message)
            elif message["type"] == "http.response.body" and "start" in held:
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    start = held.pop("start")
                    payload = json_body(int(start["status"]), bytes(body))
                    keep = [(k, v) for k, v in start.get("headers", [])
                            if k.lower() not in (b"content-type", b"content-length")]
                    held["sent"] = True
                    await send({**start, "headers": keep + [(b"content-type", b"application/json"),
                                                            (b"content-length", str(len(payload)).encode())]})
                    await send({"type": "http.response.body", "body": payload})
            else:
                await send(message)

        async def lost(why: str) -> None:
            payload = json_body(500, why.encode())
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})

        try:
            await self.app(scope, receive, wrapped)
        except Exception as e:  # noqa: BLE001 - uvicorn would answer a plain-text 500
            if held.get("sent"):
                raise
            await lost(f"{type(e).__name__}: {e}")
            return
        if not held.get("sent") and "start" not in held:  # the proxy gave up without an answer (its replica
            await lost("no answer from the replica")     # died): uvicorn would send a plain-text 500


def json_body(status: int, text: bytes) -> bytes:
    """``{"error": reason phrase, "detail": the proxy's text, "file": null, "case": null}``."""
    try:
        reason = HTTPStatus(status).phrase.lower()
    except ValueError:
        reason = "http error"
    detail = text.decode("utf-8", errors="replace").strip() or reason
    if status == 500:
        detail = ("the request was lost inside the service (its replica stopped or failed); retry it, or send long "
                  f"cases as jobs (POST /v1/jobs). Ray Serve said: {detail[:500]}")
    return json.dumps({"error": reason, "detail": detail, "file": None, "case": None}).encode()


def middlewares() -> list:
    """Ray Serve's proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)."""
    from starlette.middleware import Middleware

    return [Middleware(JSONErrors)]
