"""The data store: immutable objects under one root, a local folder or an ``s3://`` URL.

Keys are relative POSIX paths (``churn/batches/<id>.parquet``). An object is written whole or not
at all (a local file through a fsynced temporary renamed into place, an S3 object by one PUT) and
never changed after. Parquet is read lazily by polars' native object-store support; other objects
(quarantine copies, their reasons) go through boto3 on S3.

S3 credentials and endpoint come from the standard variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``), so a Prefect
Secret block or a pod's environment supplies them; they never appear in a message or ``repr``.
An unreachable store is a :class:`~retrainer.errors.TransientStorageError` naming it; refused
credentials or a missing bucket a final :class:`~retrainer.errors.StorageError`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from retrainer.errors import DataError, StorageError, TransientStorageError, Violation
from retrainer.fsutil import atomic_write, remove_stale_temporaries

_S3 = "s3://"
_OWNER_READ_WRITE = 0o600
_OWNER_READ = 0o400
_REFUSED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}
_FINAL_CODES = {*_REFUSED_CODES, "NoSuchBucket", "InvalidBucketName"}
_REFUSED_TEXT = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden", "status: 403")
_BUSY_CODES = {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "TooManyRequests", "Throttling"}
# What polars' object store says when waiting may help (it raises ConnectionError for a refused connection).
_UNREACHABLE_TEXT = (
    "error sending request",
    "connection refused",
    "connection reset",
    "timed out",
    "dns error",
    "service unavailable",
    "slowdown",
    "slow down",
    "too many requests",
)
_MISSING_TEXT = ("not found", "nosuchkey", "no such file")
_MISSING = "missing"


def is_s3_url(text: str) -> bool:
    """True for an ``s3://bucket/key`` URL."""
    return text.startswith(_S3)


class Blobs(Protocol):
    """What the batch store needs of a data store."""

    @property
    def url(self) -> str:
        """The root, as configured (a path or an ``s3://`` URL)."""

    def location(self, key: str) -> str:
        """Where ``key`` lives, for messages and for polars (a path or an ``s3://`` URL)."""

    def write_parquet(self, key: str, frame: pl.DataFrame) -> None:
        """Publish ``frame`` as an immutable Parquet object."""

    def put_private(self, key: str, data: bytes, read_only: bool) -> None:
        """Publish ``data`` readable only by its owner (read-only when asked)."""

    def get(self, key: str) -> bytes:
        """The object's bytes (``FileNotFoundError`` when absent)."""

    def scan_parquet(self, keys: list[str]) -> list[pl.LazyFrame]:
        """One lazy frame per Parquet object, in order."""

    @contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """Translate the store's failures inside the block (e.g. around ``collect``)."""
        yield

    def sweep(self, prefix: str) -> None:
        """Remove what killed writers left in the folder ``prefix`` (call only while holding its lock)."""

    def check(self) -> None:
        """Reach the store once (the start-up check); raise its translated errors."""


class LocalBlobs:
    """A data store in a local folder (created on first write).

    Args:
        root: The folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    @property
    def url(self) -> str:
        """The folder, as text."""
        return str(self.root)

    def path(self, key: str) -> Path:
        """The file of ``key``."""
        return self.root / key

    def location(self, key: str) -> str:
        """The file of ``key``, as text."""
        return str(self.path(key))

    def write_parquet(self, key: str, frame: pl.DataFrame) -> None:
        """Publish ``frame`` read-only, through a fsynced temporary renamed into place."""
        atomic_write(self.path(key), lambda tmp: frame.write_parquet(tmp), read_only=True)

    def put_private(self, key: str, data: bytes, read_only: bool) -> None:
        """Publish ``data`` as 0400 (read-only) or 0600, whatever the umask."""
        mode = _OWNER_READ if read_only else _OWNER_READ_WRITE
        atomic_write(self.path(key), lambda tmp: _write_private(tmp, data, mode))

    def get(self, key: str) -> bytes:
        """The file's bytes."""
        return self.path(key).read_bytes()

    def scan_parquet(self, keys: list[str]) -> list[pl.LazyFrame]:
        """Lazy scans of the files."""
        return [pl.scan_parquet(self.path(key)) for key in keys]

    @contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """Local reads need no translation."""
        yield

    def sweep(self, prefix: str) -> None:
        """Delete temporaries of killed writers in the folder ``prefix``."""
        if self.path(prefix).is_dir():
            remove_stale_temporaries(self.path(prefix))

    def check(self) -> None:
        """A folder needs no check: it is created by the first write."""


@dataclass(frozen=True)
class S3Access:
    """How to reach an S3-compatible store, from the standard ``AWS_*`` variables."""

    endpoint: str | None = None
    region: str | None = None
    key_id: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Access:
        """Read ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), ``AWS_REGION`` and the credentials."""
        env = os.environ if env is None else env
        return cls(
            endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            key_id=env.get("AWS_ACCESS_KEY_ID"),
            secret=env.get("AWS_SECRET_ACCESS_KEY"),
            token=env.get("AWS_SESSION_TOKEN"),
        )

    def polars_options(self) -> dict[str, str]:
        """``storage_options`` for polars' object store."""
        options = {
            "aws_endpoint_url": self.endpoint,
            "aws_region": self.region,
            "aws_access_key_id": self.key_id,
            "aws_secret_access_key": self.secret,
            "aws_session_token": self.token,
        }
        found = {key: value for key, value in options.items() if value}
        if self.endpoint and self.endpoint.startswith("http://"):
            found["aws_allow_http"] = "true"
        return found

    def client(self) -> Any:
        """A boto3 S3 client with bounded retries and timeouts."""
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            s3={"addressing_style": "path"},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region or "us-east-1",
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            aws_session_token=self.token,
            config=config,
        )


class S3Blobs:
    """A data store under an ``s3://bucket/prefix`` URL.

    Args:
        url: The root URL.
        access: Endpoint, region and credentials (default: from the environment).
    """

    def __init__(self, url: str, access: S3Access | None = None) -> None:
        bucket, _, prefix = url.removeprefix(_S3).partition("/")
        if not bucket:
            raise StorageError(f"data store {url!r}: no bucket in the URL")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.access = access or S3Access.from_env()

    @property
    def url(self) -> str:
        """The root URL."""
        return f"{_S3}{self.bucket}/{self.prefix}" if self.prefix else f"{_S3}{self.bucket}"

    @property
    def name(self) -> str:
        """The store as messages name it: endpoint and root URL."""
        return f"{self.url} at {self.access.endpoint}" if self.access.endpoint else self.url

    def object_key(self, key: str) -> str:
        """The S3 key of ``key``."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def location(self, key: str) -> str:
        """The ``s3://`` URL of ``key``."""
        return f"{_S3}{self.bucket}/{self.object_key(key)}"

    @cached_property
    def _client(self) -> Any:
        return self.access.client()

    def write_parquet(self, key: str, frame: pl.DataFrame) -> None:
        """Publish ``frame`` by one PUT (S3 objects appear whole or not at all)."""
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        self._put(key, buffer.getvalue())

    def put_private(self, key: str, data: bytes, read_only: bool) -> None:
        """Publish ``data`` (the bucket's policy decides who reads it; objects are never changed)."""
        self._put(key, data)

    def _put(self, key: str, data: bytes) -> None:
        with s3_errors(self.name, f"writing {key}"):
            self._client.put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data)

    def get(self, key: str) -> bytes:
        """The object's bytes."""
        from botocore.exceptions import ClientError

        try:
            with s3_errors(self.name, f"reading {key}"):
                body: bytes = self._client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"].read()
                return body
        except ClientError as exc:  # only a missing key gets here: s3_errors translated the rest
            raise FileNotFoundError(self.location(key)) from exc

    def scan_parquet(self, keys: list[str]) -> list[pl.LazyFrame]:
        """Lazy scans through polars' object store (collect inside :meth:`reading`)."""
        options = self.access.polars_options()
        return [pl.scan_parquet(self.location(key), storage_options=options) for key in keys]

    @contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """Translate polars' object-store failures into storage errors naming this store."""
        try:
            yield
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise self._translate(exc, what) from None

    def _translate(self, exc: Exception, what: str) -> Exception:
        text = str(exc)
        lowered, first = text.lower(), first_line(exc)
        if any(marker in text for marker in _REFUSED_TEXT):
            return StorageError(f"data store {self.name} refused the credentials ({what}): {first}")
        if isinstance(exc, ConnectionError | TimeoutError) or any(m in lowered for m in _UNREACHABLE_TEXT):
            return TransientStorageError(f"data store {self.name} is unreachable ({what}): {first}")
        if isinstance(exc, FileNotFoundError) or any(m in lowered for m in _MISSING_TEXT):
            return StorageError(f"data store {self.name}: an object is missing ({what}): {first}")
        if isinstance(exc, OSError) or "object-store" in lowered:
            return StorageError(f"data store {self.name} failed ({what}): {first}")
        return exc  # polars' own verdict on the data (a cast, a schema): the caller's to handle

    def sweep(self, prefix: str) -> None:
        """Nothing to sweep: a PUT leaves no partial object."""

    def check(self) -> None:
        """Reach the bucket once: the start-up check (raises the translated errors)."""
        with s3_errors(self.name, "checking the bucket"):
            self._client.head_bucket(Bucket=self.bucket)


def open_blobs(url: str | Path) -> Blobs:
    """The data store at ``url``: an ``s3://`` URL, else a local folder."""
    text = str(url)
    return S3Blobs(text) if is_s3_url(text) else LocalBlobs(Path(text))


@contextmanager
def s3_errors(store: str, what: str) -> Iterator[None]:
    """Translate boto3 failures: unreachable → transient; refused, no bucket → final; a missing key passes."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _REFUSED_CODES or status == 403:
            raise StorageError(f"data store {store} refused the credentials ({what}): {code or status}") from None
        if code in _FINAL_CODES:
            raise StorageError(f"data store {store}: {code} ({what})") from None
        if code in {"NoSuchKey", "404", "NotFound"}:
            raise
        if status >= 500 or status == 429 or code in _BUSY_CODES:
            raise TransientStorageError(f"data store {store} is unreachable ({what}): {code or status}") from None
        raise StorageError(f"data store {store} refused {what}: {code or status}") from None
    except NoCredentialsError:
        raise StorageError(f"data store {store}: no credentials (set AWS_ACCESS_KEY_ID and ...SECRET...)") from None
    except (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError) as exc:
        raise TransientStorageError(f"data store {store} is unreachable ({what}): {type(exc).__name__}") from None
    except BotoCoreError as exc:  # a bucket name S3 cannot take, a malformed endpoint: waiting will not help
        raise StorageError(f"data store {store}: {what} failed: {first_line(exc)}") from None


def read_object(url: str, max_bytes: int, access: S3Access | None = None) -> bytes:
    """The bytes of the input file at an ``s3://`` URL, if it holds at most ``max_bytes``.

    Raises:
        DataError: rule ``missing`` (no such object) or ``too_large`` (with both sizes).
        StorageError: the store refused (credentials, bucket); ``TransientStorageError`` when unreachable.
    """
    from botocore.exceptions import ClientError

    bucket, _, key = url.removeprefix(_S3).partition("/")
    s3 = (access or S3Access.from_env()).client()
    store = f"{_S3}{bucket}"
    try:
        with s3_errors(store, f"reading {url}"):
            size = int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
            if size > max_bytes:
                raise DataError(url, [too_large(size, max_bytes)])
            data: bytes = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes}")["Body"].read()
    except ClientError:
        raise DataError(url, [Violation(_MISSING, "no such object")]) from None
    if len(data) > max_bytes:
        raise DataError(url, [too_large(len(data), max_bytes)])
    return data


def too_large(size: int, max_bytes: int) -> Violation:
    """The violation of a file over ``ingest.max_file_bytes``."""
    return Violation("too_large", f"{size} bytes exceed ingest.max_file_bytes ({max_bytes})")


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file created owner-only, then give it ``mode`` (also owner-only)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _OWNER_READ_WRITE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), _OWNER_READ_WRITE)
        handle.write(data)
        os.fchmod(handle.fileno(), mode)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), for one-line reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
