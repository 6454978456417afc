"""The service's guard, one ASGI middleware in front of every route (serving/service.py adds it first):

- a body larger than `serving.max_body_bytes` is refused with 413 before anything parses it: a
  declared Content-Length over the limit at once, a streamed body as soon as its bytes pass it (the
  body is read here, bounded, and handed on whole);
- a bearer token, when one is configured (`serving.token_env`, default $SEQOPS_API_TOKEN, or the file
  `serving.token_file`; never params.yaml): `auth: writes` asks it of POST /events, `auth: all` of
  every route but the probes; 401 without it, compared in constant time (`hmac.compare_digest`);
- a token bucket per client (the bearer token's hash when it carries the right one, else its
  address): `serving.rate_limit_per_s` with bursts of `serving.rate_burst`, 429 with Retry-After
  past it. The buckets live in each worker process: the service-wide rate is that × `workers`.

Request timeouts are BentoML's (`traffic.timeout` = `serving.request_timeout_s`: 504, the handler
cancelled). The client's key is left in `CLIENT` for the request log (the monitor counts fallback
answers per client). The token itself is never logged or written anywhere."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from starlette.responses import JSONResponse

from seqops.config import ServingParams

log = logging.getLogger("seqops.serving")
CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("seqops_client", default=None)
PROBES = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})  # orchestrators and Prometheus: always open
WRITES = frozenset({"/events"})
ADMIN = frozenset({"/admin/forget"})  # always behind the token: refused (401) when none is configured
MAX_BUCKETS = 100_000  # clients remembered per worker; past it, full (idle) buckets are forgotten


def load_token(params: ServingParams, project: Path) -> str | None:
    """The API token from the environment variable, else the secret file; None when neither is set."""
    token = os.environ.get(params.token_env, "").strip()
    if not token and params.token_file:
        path = Path(params.token_file)
        path = path if path.is_absolute() else project / path
        token = path.read_text().strip() if path.exists() else ""
    return token or None


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" else None
    return None


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float) -> float:
        """0 when a request may pass (one token taken), else the seconds until one may."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """Token buckets per client key; rate 0 = no limit."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, max(burst, 1)
        self.buckets: dict[str, TokenBucket] = {}

    def wait_s(self, client: str) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        if len(self.buckets) >= MAX_BUCKETS:
            self._forget_idle(now)
        bucket = self.buckets.setdefault(client, TokenBucket(self.rate, self.burst))
        return bucket.take(now)

    def _forget_idle(self, now: float) -> None:
        refill_s = self.burst / self.rate
        self.buckets = {k: b for k, b in self.buckets.items() if now - b.updated < refill_s}


def refusal(status: int, error: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": []}, status_code=status, headers=headers)


class BodyTooLarge(Exception):
    pass


async def read_body(receive, limit: int) -> bytes:
    """The whole request body, refusing (BodyTooLarge) as soon as it passes `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive):
    """A `receive` that hands the app the buffered body, then waits on the real one (disconnects)."""
    sent = False

    async def receive_again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


class Guard:
    """ASGI middleware: body size, bearer token, per-client rate (see the module's docstring)."""

    def __init__(self, app, params: ServingParams, token: str | None):
        self.app, self.params, self.token = app, params, token
        self.limiter = RateLimiter(params.rate_limit_per_s, params.rate_burst)
        self.token_key = f"token:{hashlib.sha256(token.encode()).hexdigest()[:12]}" if token else None
        if params.auth != "off" and token is None:
            log.warning(
                "serving.auth is %r but $%s and serving.token_file give no token: every route is open",
                params.auth,
                params.token_env,
            )

    def needs_token(self, method: str, path: str) -> bool:
        if path in ADMIN:  # the admin route's own method only: any other gets BentoML's 405, as on every route
            return method == "POST"
        if self.token is None or self.params.auth == "off" or path in PROBES:
            return False
        return self.params.auth == "all" or (path in WRITES and method not in ("GET", "HEAD", "OPTIONS"))

    def authenticated(self, headers) -> bool:
        offered = bearer(headers)
        return (
            offered is not None
            and self.token is not None
            and hmac.compare_digest(offered.encode(), self.token.encode())
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, headers = scope["path"], scope["headers"]
        declared = content_length(headers)
        if declared is not None and declared > self.params.max_body_bytes:
            await self._refuse(
                scope, receive, send, refusal(413, f"request body over {self.params.max_body_bytes} bytes")
            )
            return
        trusted = self.authenticated(headers)
        if self.needs_token(scope["method"], path) and not trusted:
            await self._refuse(
                scope,
                receive,
                send,
                refusal(
                    401, "a valid bearer token is required (Authorization: Bearer ...)", {"WWW-Authenticate": "Bearer"}
                ),
            )
            return
        client = self.token_key if trusted else f"addr:{(scope.get('client') or ('unknown',))[0]}"
        if path not in PROBES:
            wait = self.limiter.wait_s(client)
            if wait > 0:
                await self._refuse(
                    scope,
                    receive,
                    send,
                    refusal(429, "too many requests from this client", {"Retry-After": str(max(1, math.ceil(wait)))}),
                )
                return
        try:
            body = await read_body(receive, self.params.max_body_bytes)
        except BodyTooLarge:
            await self._refuse(
                scope, receive, send, refusal(413, f"request body over {self.params.max_body_bytes} bytes")
            )
            return
        CLIENT.set(client)
        await self.app(scope, replay(body, receive), send)

    async def _refuse(self, scope, receive, send, response: JSONResponse) -> None:
        # The connection is closed after a refusal: an unread body must not be parsed as the next request.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
