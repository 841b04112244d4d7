"""``retrainer send``: sign and post a drift alert or a new-data notice to a webhook receiver.

The message is validated here first, so a typo fails before anything is sent, and it always
carries its id (``alert_id`` / ``notice_id``, the content digest unless given), so the receiver and
a Prefect Cloud webhook derive the same incident key from it. As the owner of httpx, it also says
which HTTP failures are worth retrying (:func:`transient_http_error`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from retrainer.config import validation_problems
from retrainer.errors import ConfigError
from retrainer.inbound.gate import JSON_TYPE, SIGNATURE_HEADER, sign
from retrainer.inbound.messages import DataNotice, DriftAlert
from retrainer.storage import is_s3_url

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Answer:
    """What the receiver said."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Whether the message was taken (2xx)."""
        return 200 <= self.status < 300


def drift_alert(
    model: str,
    *,
    source: str,
    drift_share: float | None = None,
    columns: list[str] | None = None,
    snapshot: Path | None = None,
    compact: bool = False,
    report_uri: str | None = None,
    alert_id: str | None = None,
) -> DriftAlert:
    """Build a validated drift alert from command-line values.

    With ``snapshot`` the Evidently snapshot file is sent as is, or, with ``compact``, reduced to its
    share and drifted columns (Prefect Cloud webhook templates cannot read snapshots).

    Raises:
        ConfigError: the values do not make a valid alert (the message says which field and why).
    """
    fields: dict[str, Any] = {"model": model, "source": source, "report_uri": report_uri, "alert_id": alert_id}
    if snapshot is not None:
        fields["snapshot"] = _read_json(snapshot)
    else:
        fields |= {"drift_share": drift_share, "drifted_columns": columns or []}
    alert = _validated(DriftAlert, fields)
    if compact and alert.snapshot is not None:
        drift = alert.drift()
        columns_found = [c.model_dump() for c in drift.columns]
        fields = {**fields, "snapshot": None, "drift_share": drift.share, "drifted_columns": columns_found}
        alert = _validated(DriftAlert, fields)
    return alert.model_copy(update={"alert_id": alert.key})


def data_notice(
    model: str, files: list[str], *, source: str, notice_id: str | None = None, kind: str = "labelled"
) -> DataNotice:
    """Build a validated new-data notice (``kind``: labelled, inference or labels).

    Local files are sent as absolute paths, ``s3://`` URLs as given.

    Raises:
        ConfigError: the values do not make a valid notice.
    """
    paths = [f if is_s3_url(f) else str(Path(f).absolute()) for f in files]
    fields = {"model": model, "source": source, "files": paths, "notice_id": notice_id, "kind": kind}
    notice = _validated(DataNotice, fields)
    return notice.model_copy(update={"notice_id": notice.key})


def post(url: str, message: BaseModel, secret: str | None, timeout: float = 30.0) -> Answer:
    """Post ``message`` as JSON, signed with ``secret`` when there is one; return the answer.

    Raises:
        ConfigError: the receiver could not be reached.
    """
    import httpx

    body = message.model_dump_json(exclude_none=True).encode()
    headers = {"Content-Type": JSON_TYPE}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ConfigError(f"{url}: cannot reach the webhook receiver: {exc}") from None
    try:
        answer = response.json() if response.content else {}
    except ValueError:
        answer = {"detail": response.text[:500]}
    return Answer(response.status_code, answer if isinstance(answer, dict) else {"answer": answer})


def transient_http_error(error: BaseException) -> bool:
    """True for an HTTP failure worth retrying: no connection, a timeout, or a 429 / 5xx answer."""
    import httpx

    if isinstance(error, httpx.TransportError):
        return True
    return isinstance(error, httpx.HTTPStatusError) and (
        error.response.status_code == 429 or error.response.status_code >= 500
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None


def _validated(kind: type[M], fields: dict[str, Any]) -> M:
    try:
        return kind.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc))
        raise ConfigError(f"invalid {kind.__name__}: {problems}") from None
