"""The door: API keys, per-key rate and concurrency limits, and the body-size limit.

One plain ASGI middleware in front of every route, so nothing reaches a route
(or a backend) without passing it, and a refusal costs no body parsing:

- Keys come from SDC_API_KEYS_FILE, one `NAME:KEY` or `NAME:sha256:HEX` per
  line, reread when the file changes (a mounted Secret updates in place). Every
  key is kept only as its SHA-256, and a presented key is hashed and looked up,
  so plain and hashed entries are checked the same way and no comparison leaks
  timing about a stored key. Unset, the gateway is open (local development) and
  says so in the log; every caller is then the key `anonymous`.
- Rate limits are a token bucket per key name (burst = the per-minute limit,
  refilled continuously), so a burst of N > limit gets the limit answered and
  the rest a 429 with `Retry-After`. The concurrency cap is a counter per key.
- The body limit is checked on Content-Length and again while the body is read
  (chunked uploads declare no length), so a 100 MB body is refused after the
  first bytes beyond the limit, not after reading it.

Tenants: a key named `NAME@TENANT` belongs to TENANT (letters, digits, `.`, `_`,
`-`); a key without one belongs to the tenant `default`. Documents and feedback
are the tenant's own (`scope["state"]["tenant"]`): one tenant never retrieves,
deletes or rates another's. Metrics and limits use NAME.

Metrics carry the key's NAME, never the key, and even names are not public:
`/metrics` stays open to scrapers (no credentials in the Prometheus config),
but without a key allowed to change documents (an admin key, or any key when
no admin names are set) it serves every series except the per-key one
(`sdc_orchestrator_key_requests_total`); the aggregate
`sdc_orchestrator_gateway_requests_total` (by outcome only) stays. With an
open gateway (no keys file) everything is served: there are no key names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdc_orchestrator import metrics

log = logging.getLogger("sdc_orchestrator.gateway")

OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})
ANONYMOUS = "anonymous"
DEFAULT_TENANT = "default"
TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class KeyFileError(ValueError):
    """A line of the keys file is not NAME:KEY or NAME:sha256:HEX."""


def parse_keys(text: str) -> dict[str, str]:
    """SHA-256 hex of each key -> its name. Blank lines and `#` comments are skipped.

    >>> parse_keys("team-a:s3cret")  # doctest: +ELLIPSIS
    {'...': 'team-a'}
    """
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.partition(":")
        name = name.strip()
        if not sep or not name or not secret:
            raise KeyFileError(f"line {number}: expected NAME:KEY or NAME:sha256:HEX")
        _, at, tenant = name.partition("@")
        if at and not TENANT.fullmatch(tenant):
            raise KeyFileError(f"line {number}: a tenant (NAME@TENANT) is 1-64 letters, digits, '.', '_' or '-'")
        if secret.startswith("sha256:"):
            digest = secret.removeprefix("sha256:").strip().lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise KeyFileError(f"line {number}: sha256 needs 64 hex digits")
        else:
            digest = hash_key(secret)
        out[digest] = name
    return out


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The keys file, reread when its modification time or size changes (checked at most once a second)."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self._keys: dict[str, str] = {}
        self._stamp: tuple[float, int] | None = None
        self._checked = -math.inf
        if path is None:
            log.warning("SDC_API_KEYS_FILE is not set: every route is open to anyone who can reach it")
        else:
            self._reload()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _reload(self) -> None:
        self._checked = self.clock()
        if self.path is None:
            return
        try:
            st = self.path.stat()
            stamp = (st.st_mtime, st.st_size)
            if stamp == self._stamp:
                return
            keys = parse_keys(self.path.read_text())
        except (OSError, UnicodeDecodeError, KeyFileError) as err:
            # Keep the last good keys: a half-written file must not open or close the door.
            log.error("keys file %s unusable, keeping %d known keys: %s", self.path, len(self._keys), err)
            return
        self._keys, self._stamp = keys, stamp
        log.info("loaded %d API keys from %s", len(keys), self.path)

    def name_of(self, key: str) -> str | None:
        if self.path is not None and self.clock() - self._checked >= 1.0:
            self._reload()
        return self._keys.get(hash_key(key))


@dataclass
class TokenBucket:
    """`rate_per_min` requests a minute, at most `rate_per_min` at once."""

    rate_per_min: int
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.rate_per_min)
        self.stamp = self.clock()

    def take(self) -> float:
        """0 when a request may pass (and take a token); otherwise the seconds until one may."""
        now = self.clock()
        per_s = self.rate_per_min / 60.0
        self.tokens = min(float(self.rate_per_min), self.tokens + (now - self.stamp) * per_s)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / per_s


@dataclass
class Limits:
    """Per-key buckets and in-flight counts (one process; each replica limits on its own)."""

    rate_per_min: int
    max_concurrent: int
    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)

    def admit(self, name: str) -> tuple[str, float] | None:
        """None when admitted (the caller must `release`); else (why, retry-after seconds)."""
        if self.max_concurrent and self.in_flight.get(name, 0) >= self.max_concurrent:
            return (f"key '{name}' already has {self.max_concurrent} requests in flight", 1.0)
        if self.rate_per_min:
            bucket = self.buckets.get(name)
            if bucket is None:
                bucket = self.buckets[name] = TokenBucket(self.rate_per_min, self.clock)
            wait = bucket.take()
            if wait > 0:
                return (f"key '{name}' is over its limit of {self.rate_per_min} requests per minute", wait)
        self.in_flight[name] = self.in_flight.get(name, 0) + 1
        return None

    def release(self, name: str) -> None:
        self.in_flight[name] = max(0, self.in_flight.get(name, 0) - 1)


def bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


class BodyTooLarge(HTTPException):
    """Raised while the body is read; an HTTPException so FastAPI's body parsing passes it on as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes (SDC_MAX_BODY_BYTES)")


class GatewayMiddleware:
    """Keys, then the body limit, then per-key limits; the key's name goes to `scope["state"]["key_name"]`."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing,
        limits: Limits,
        max_body_bytes: int,
        admin_names: frozenset[str],
    ) -> None:
        self.app = app
        self.keys = keys
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.admin_names = admin_names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            scope.setdefault("state", {})["metrics_full"] = self._may_see_key_names(scope)
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        name, tenant = ANONYMOUS, DEFAULT_TENANT
        if self.keys.enabled:
            token = bearer(scope)
            found = self.keys.name_of(token) if token else None
            if found is None:
                _count("unknown", "unauthorized")
                why = "a valid API key is required" if token is None else "the API key is not valid"
                await _refuse(
                    send, 401, f"{why} (Authorization: Bearer KEY)", "invalid_api_key", {"www-authenticate": "Bearer"}
                )
                return
            name, _, tenant = found.partition("@")
            tenant = tenant or DEFAULT_TENANT
        scope.setdefault("state", {})["key_name"] = name
        scope["state"]["tenant"] = tenant
        # An admin key sees every tenant's reports (the shadow comparison); with no admin names, every key is one.
        scope["state"]["admin"] = not self.keys.enabled or not self.admin_names or name in self.admin_names
        if self.admin_names and _is_admin_route(scope) and name not in self.admin_names:
            _count(name, "forbidden")
            await _refuse(send, 403, f"key '{name}' may not change documents", "permission_denied")
            return
        declared = content_length(scope)
        if declared is not None and (declared < 0 or declared > self.max_body_bytes):
            _count(name, "too_large")
            await _refuse(send, 413, self._too_large(), "request_too_large")
            return
        refused = self.limits.admit(name)
        if refused is not None:
            why, wait = refused
            _count(name, "rate_limited")
            retry = str(max(1, math.ceil(wait)))
            await _refuse(send, 429, why, "rate_limit_exceeded", {"retry-after": retry})
            return
        _count(name, "admitted")
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            _count(name, "too_large")
            if not started:
                await _refuse(send, 413, self._too_large(), "request_too_large")
        finally:
            self.limits.release(name)

    def _may_see_key_names(self, scope: Scope) -> bool:
        if not self.keys.enabled:
            return True
        token = bearer(scope)
        name = self.keys.name_of(token) if token else None
        return name is not None and (not self.admin_names or name in self.admin_names)

    def _too_large(self) -> str:
        return str(BodyTooLarge(self.max_body_bytes).detail)


def without_key_names(exposition: bytes) -> bytes:
    """Prometheus text without the per-key family (its HELP, TYPE and samples)."""
    family = b"sdc_orchestrator_key_requests"
    kept = [
        line
        for line in exposition.split(b"\n")
        if not line.startswith(family) and not line.startswith((b"# HELP " + family, b"# TYPE " + family))
    ]
    return b"\n".join(kept)


def _is_admin_route(scope: Scope) -> bool:
    return scope["path"].startswith("/api/v1/documents") and scope["method"] in ("POST", "PUT", "DELETE")


def _count(name: str, outcome: str) -> None:
    metrics.KEY_REQUESTS.labels(name, outcome).inc()
    metrics.GATEWAY_REQUESTS.labels(outcome).inc()


async def _refuse(send: Send, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
