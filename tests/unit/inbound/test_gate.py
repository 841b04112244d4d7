from __future__ import annotations

import pytest

from retrainer.inbound.gate import (
    MAX_BODY_BYTES,
    Gate,
    Incoming,
    RateLimiter,
    Refusal,
    ReplayGuard,
    Signature,
    parse_signature,
    sign,
    verify,
)

SECRET = "s3cret-s3cret-s3cret"  # noqa: S105 (a test secret)
NOW = 1_800_000_000
BODY = b'{"model": "churn", "drift_share": 0.6}'


def test_a_signature_verifies_against_its_body_and_secret_only() -> None:
    header = sign(SECRET, BODY, NOW)
    verified = verify(SECRET, header, BODY, NOW, 300)
    assert isinstance(verified, Signature) and verified.timestamp == NOW
    assert _rule(verify(SECRET, header, BODY + b" ", NOW, 300)) == "bad_signature"
    assert _rule(verify("another-secret-entirely", header, BODY, NOW, 300)) == "bad_signature"
    # The timestamp is signed too: moving it breaks the signature.
    moved = header.replace(f"t={NOW}", f"t={NOW + 1}")
    assert _rule(verify(SECRET, moved, BODY, NOW, 300)) == "bad_signature"


@pytest.mark.parametrize("offset", [-301, 301, -10_000])
def test_signatures_outside_the_window_are_stale(offset: int) -> None:
    header = sign(SECRET, BODY, NOW + offset)
    assert _rule(verify(SECRET, header, BODY, NOW, 300)) == "stale_signature"


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_signatures_inside_the_window_pass(offset: int) -> None:
    assert isinstance(verify(SECRET, sign(SECRET, BODY, NOW + offset), BODY, NOW, 300), Signature)


@pytest.mark.parametrize(
    "header",
    ["", "t=1", "v1=" + "a" * 64, "t=x,v1=" + "a" * 64, f"t={NOW},v1=short", f"t={NOW},v1=" + "G" * 64, "garbage"],
)
def test_malformed_headers_are_refused_with_a_reason(header: str) -> None:
    assert _rule(verify(SECRET, header, BODY, NOW, 300)) in {"missing_signature", "malformed_signature"}


def test_one_matching_digest_among_several_is_enough_for_secret_rotation() -> None:
    good = sign(SECRET, BODY, NOW).split("v1=")[1]
    header = f"t={NOW},v1={'0' * 64},v1={good}"
    assert parse_signature(header) == (NOW, ["0" * 64, good])
    assert isinstance(verify(SECRET, header, BODY, NOW, 300), Signature)


def test_a_signature_is_refused_the_second_time_until_it_expires() -> None:
    guard = ReplayGuard(window=300)
    signature = Signature(NOW, "d" * 64)
    assert guard.first_use(signature, NOW)
    assert not guard.first_use(signature, NOW + 299)
    # Remembered until its own timestamp leaves the window (by then verify calls it stale anyway).
    assert not guard.first_use(signature, NOW + 300)
    assert guard.first_use(signature, NOW + 301)


def test_a_future_dated_signature_is_remembered_for_its_whole_validity() -> None:
    guard = ReplayGuard(window=300)
    future = Signature(NOW + 300, "e" * 64)
    assert guard.first_use(future, NOW)
    assert not guard.first_use(future, NOW + 599)


def test_rate_limiter_allows_a_burst_then_refills_per_source() -> None:
    limiter = RateLimiter(per_minute=60, burst=3)
    assert [limiter.allow("a", NOW) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", NOW)  # another source has its own bucket
    assert not limiter.allow("a", NOW + 0.5)
    assert limiter.allow("a", NOW + 1.5)  # one token per second at 60 per minute


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(per_minute=60, burst=1, max_sources=10)
    for n in range(100):
        limiter.allow(f"10.0.0.{n}", NOW)
    assert len(limiter._buckets) == 10


def _incoming(**changes: object) -> Incoming:
    fields: dict[str, object] = {
        "source": "127.0.0.1",
        "content_type": "application/json",
        "declared_length": len(BODY),
        "signature": sign(SECRET, BODY, NOW),
    }
    return Incoming(**{**fields, **changes})  # type: ignore[arg-type]


def test_gate_refuses_each_class_with_its_status() -> None:
    gate = Gate(SECRET, 300, RateLimiter(per_minute=600, burst=100))
    assert gate.before_body(_incoming(), NOW) is None
    assert _status(gate.before_body(_incoming(declared_length=MAX_BODY_BYTES + 1), NOW)) == 413
    assert _status(gate.before_body(_incoming(content_type="text/plain"), NOW)) == 415
    assert _status(gate.before_body(_incoming(content_type=None), NOW)) == 415
    assert gate.before_body(_incoming(content_type="Application/JSON; charset=utf-8"), NOW) is None
    assert _status(gate.with_body(_incoming(), b"x" * (MAX_BODY_BYTES + 1), NOW)) == 413
    assert _status(gate.with_body(_incoming(signature=None), BODY, NOW)) == 401
    assert gate.with_body(_incoming(), BODY, NOW) is None
    assert _status(gate.with_body(_incoming(), BODY, NOW + 1)) == 409


def test_gate_rate_limits_before_anything_else() -> None:
    gate = Gate(SECRET, 300, RateLimiter(per_minute=1, burst=1))
    assert gate.before_body(_incoming(), NOW) is None
    assert _status(gate.before_body(_incoming(content_type="text/plain"), NOW)) == 429


def test_unsigned_gate_skips_signature_and_replay_checks() -> None:
    gate = Gate(None, 300, RateLimiter(per_minute=600, burst=100))
    assert not gate.signed
    assert gate.with_body(_incoming(signature=None), BODY, NOW) is None
    assert gate.with_body(_incoming(signature=None), BODY, NOW) is None


def _rule(verdict: Signature | Refusal) -> str:
    assert isinstance(verdict, Refusal), verdict
    assert SECRET not in verdict.message
    return verdict.rule


def _status(refusal: Refusal | None) -> int:
    assert refusal is not None
    return refusal.status


def test_unsigned_and_forged_requests_do_not_drain_the_signed_senders_bucket() -> None:
    gate = Gate(SECRET, 300, RateLimiter(per_minute=1, burst=2))
    unsigned, forged = _incoming(signature=None), _incoming(signature=sign("a-forger-without-the-key", BODY, NOW))
    flood = [gate.before_body(unsigned, NOW) for _ in range(3)]
    assert [_status(r) if r else None for r in flood] == [None, None, 429]
    # A well-formed but forged signature is charged to the unsigned bucket once it fails to verify.
    assert gate.before_body(forged, NOW) is None
    assert _status(gate.with_body(forged, BODY, NOW)) == 401
    for n in range(2):
        body = BODY + b" " * n
        signed = _incoming(signature=sign(SECRET, body, NOW))
        assert gate.before_body(signed, NOW) is None
        assert gate.with_body(signed, body, NOW) is None
