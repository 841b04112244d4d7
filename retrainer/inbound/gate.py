"""The webhook's gate: signatures, replay, size, type and rate checks, free of any web framework.

A request is signed with a shared secret as ``X-Retrainer-Signature: t=<unix seconds>,v1=<hex>``,
where ``<hex>`` is HMAC-SHA256 over ``<t>.<raw body>``. The receiver accepts a signature whose
timestamp is within ``window`` seconds of its clock (either way) and that it has not seen before
within that window. Several ``v1=`` entries may be sent (e.g. while rotating secrets); one must match.

:class:`Gate` applies the checks in a fixed order and answers the first :class:`Refusal`, so each
refusal has one status: 429 rate, 413 size, 415 type, 401 signature, 409 replay.

Signed and unsigned traffic of one source fill separate rate buckets, so a flood of unsigned (or
forged) requests cannot use up what a real sender may send from the same address. A request counts
as signed when its signature header parses; one whose signature then fails verification is moved
to the unsigned bucket.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import threading
from dataclasses import dataclass, field

SIGNATURE_HEADER = "X-Retrainer-Signature"
MAX_BODY_BYTES = 1024 * 1024
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: its HTTP status, a rule name and a message safe to log and return.

    Attributes:
        status: HTTP status code.
        rule: Short name, e.g. ``bad_signature``.
        message: Sentence for the sender; never contains the secret.
    """

    status: int
    rule: str
    message: str


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Retrainer-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def parse_signature(header: str) -> tuple[int, list[str]]:
    """Timestamp and candidate digests of a signature header.

    Raises:
        ValueError: the header is not ``t=<int>,v1=<hex>[,v1=<hex>...]``.
    """
    timestamp: int | None = None
    digests = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and timestamp is None:
            timestamp = int(value)
        elif name == "v1" and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            digests.append(value)
    if timestamp is None or not digests:
        raise ValueError("expected t=<unix seconds>,v1=<64 hex digits>")
    return timestamp, digests


@dataclass(frozen=True)
class Signature:
    """A verified signature: when it was made and its digest (the replay key)."""

    timestamp: int
    digest: str


def verify(secret: str, header: str | None, body: bytes, now: float, window: int) -> Signature | Refusal:
    """Check a signature header against ``body``; return the verified signature or the refusal."""
    if not header:
        return Refusal(401, "missing_signature", f"no {SIGNATURE_HEADER} header")
    try:
        timestamp, digests = parse_signature(header)
    except ValueError as exc:
        return Refusal(401, "malformed_signature", f"{SIGNATURE_HEADER}: {exc}")
    if abs(now - timestamp) > window:
        return Refusal(401, "stale_signature", f"signature timestamp is more than {window} s from the receiver's clock")
    expected = _digest(secret, timestamp, body)
    # Compare every candidate so the time taken does not tell which one (or whether any) matched.
    matched = [hmac.compare_digest(expected, digest) for digest in digests]
    if not any(matched):
        return Refusal(401, "bad_signature", "signature does not match the body")
    return Signature(timestamp, expected)


@dataclass
class ReplayGuard:
    """Signatures still inside their validity window; a second use is a replay.

    A signature made at ``t`` is valid until ``t + window``, so it is remembered until then. Memory
    is bounded by what the rate limit lets in during one window.
    """

    window: int
    _expiry: dict[str, float] = field(default_factory=dict)
    _queue: list[tuple[float, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def first_use(self, signature: Signature, now: float) -> bool:
        """Record ``signature``; ``False`` when it was already used."""
        with self._lock:
            while self._queue and self._queue[0][0] < now:
                _, expired = heapq.heappop(self._queue)
                self._expiry.pop(expired, None)
            if signature.digest in self._expiry:
                return False
            expiry = float(signature.timestamp + self.window)
            self._expiry[signature.digest] = expiry
            heapq.heappush(self._queue, (expiry, signature.digest))
            return True


@dataclass
class RateLimiter:
    """A token bucket per source: ``burst`` requests at once, refilled at ``per_minute``."""

    per_minute: int
    burst: int
    max_sources: int = 10_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, source: str, now: float) -> bool:
        """Take one token from ``source``'s bucket; ``False`` when it is empty."""
        with self._lock:
            tokens, since = self._buckets.pop(source, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - since) * self.per_minute / 60)
            allowed = tokens >= 1
            self._buckets[source] = (tokens - 1 if allowed else tokens, now)
            if len(self._buckets) > self.max_sources:
                # The least recently seen source goes first (entries are re-inserted on every request).
                del self._buckets[next(iter(self._buckets))]
            return allowed

    def refund(self, source: str) -> None:
        """Give back the token last taken from ``source``'s bucket (never beyond ``burst``)."""
        with self._lock:
            if source in self._buckets:
                tokens, since = self._buckets[source]
                self._buckets[source] = (min(float(self.burst), tokens + 1), since)


@dataclass(frozen=True)
class Incoming:
    """What the gate needs of one HTTP request.

    Attributes:
        source: The client's address.
        content_type: The ``Content-Type`` header, if any.
        declared_length: The ``Content-Length`` header as a number, if sent.
        signature: The ``X-Retrainer-Signature`` header, if any.
    """

    source: str
    content_type: str | None
    declared_length: int | None
    signature: str | None

    @property
    def looks_signed(self) -> bool:
        """Whether the signature header is present and well-formed (not yet verified)."""
        if not self.signature:
            return False
        try:
            parse_signature(self.signature)
        except ValueError:
            return False
        return True


def _bucket(source: str, signed: bool) -> str:
    return f"{source} {'signed' if signed else 'unsigned'}"


class Gate:
    """Every check a request passes before its body is read as an alert or notice.

    Args:
        secret: Shared secret; ``None`` turns signature and replay checks off (insecure local mode).
        window: Accepted signature age in seconds, and how long a signature stays "seen".
        limiter: Per-source rate limit.
    """

    def __init__(self, secret: str | None, window: int, limiter: RateLimiter) -> None:
        self._secret = secret
        self._window = window
        self._limiter = limiter
        self._replays = ReplayGuard(window)

    @property
    def signed(self) -> bool:
        """Whether requests must be signed."""
        return self._secret is not None

    def before_body(self, request: Incoming, now: float) -> Refusal | None:
        """Checks that need no body: rate, declared size, content type."""
        if not self._limiter.allow(_bucket(request.source, request.looks_signed), now):
            return Refusal(429, "rate_limited", "too many requests from this source; slow down")
        if request.declared_length is not None and request.declared_length > MAX_BODY_BYTES:
            return _too_large()
        media_type = (request.content_type or "").split(";")[0].strip().lower()
        if media_type != JSON_TYPE:
            return Refusal(415, "not_json", f"Content-Type must be {JSON_TYPE}, got {media_type or 'none'}")
        return None

    def with_body(self, request: Incoming, body: bytes, now: float) -> Refusal | None:
        """Checks on the raw body: size, signature, replay."""
        if len(body) > MAX_BODY_BYTES:
            return _too_large()
        if self._secret is None:
            return None
        verdict = verify(self._secret, request.signature, body, now, self._window)
        if isinstance(verdict, Refusal):
            self._charge_as_unsigned(request, now)
            return verdict
        if not self._replays.first_use(verdict, now):
            return Refusal(409, "replayed_signature", "this signature was already used; sign the request again")
        return None

    def _charge_as_unsigned(self, request: Incoming, now: float) -> None:
        if request.looks_signed:
            self._limiter.refund(_bucket(request.source, signed=True))
            self._limiter.allow(_bucket(request.source, signed=False), now)


def _too_large() -> Refusal:
    return Refusal(413, "body_too_large", f"body exceeds {MAX_BODY_BYTES} bytes")
