"""Run the webhook receiver (``retrainer webhook``): HTTP alerts and notices in, Prefect events out.

The shared secret comes from ``RETRAINER_WEBHOOK_SECRET``, else from the Prefect Secret block named
by ``webhook.secret_block`` in the config. Without one the receiver refuses to start, unless it runs
``insecure_local``: unsigned requests accepted, on a loopback address only.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import cast

from retrainer.config import ProjectConfig, Settings
from retrainer.errors import ConfigError
from retrainer.inbound.gate import Gate, RateLimiter

MIN_SECRET_LENGTH = 16
log = logging.getLogger(__name__)


def resolve_secret(settings: Settings, project: ProjectConfig) -> str | None:
    """The shared secret from the environment or the configured Secret block; ``None`` if neither is set.

    Raises:
        ConfigError: the secret is shorter than 16 characters, or the named block cannot be read.
    """
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    block = project.webhook.secret_block
    if secret is None and block:
        secret = _read_secret_block(block)
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"the webhook secret must have at least {MIN_SECRET_LENGTH} characters")
    return secret


def _read_secret_block(name: str) -> str:
    from prefect.blocks.system import Secret

    try:
        block: Secret[str] = cast("Secret[str]", Secret.load(name, _sync=True))  # type: ignore[call-arg]
        value = block.get()
    except ValueError as exc:
        raise ConfigError(f"webhook.secret_block: cannot load the Prefect Secret block {name!r}: {exc}") from None
    return str(value)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(settings: Settings, project: ProjectConfig, host: str, port: int, insecure_local: bool) -> None:
    """Serve the receiver until interrupted.

    Raises:
        ConfigError: no secret and not ``insecure_local``; ``insecure_local`` on a non-loopback host;
            a secret given together with ``insecure_local``.
    """
    from deployments.event_sink import prefect_sink
    from retrainer.inbound.http import create_app, serve

    secret = resolve_secret(settings, project)
    if insecure_local:
        if secret is not None:
            raise ConfigError("a webhook secret is configured: drop --insecure-local")
        if not is_loopback(host):
            raise ConfigError(f"--insecure-local listens on loopback only, not {host}")
        log.warning("INSECURE: requests are not signed; listening on %s only", host)
    elif secret is None:
        raise ConfigError(
            "no webhook secret: set RETRAINER_WEBHOOK_SECRET or webhook.secret_block "
            "(or run --insecure-local for a loopback-only trial)"
        )
    policy = project.webhook
    limiter = RateLimiter(per_minute=policy.requests_per_minute, burst=policy.burst)
    gate = Gate(secret, policy.replay_window_seconds, limiter)
    serve(create_app(project, gate, prefect_sink), host, port, policy.request_timeout_seconds)
