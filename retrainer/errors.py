"""The domain errors retrainer raises.

Every error a user can cause or meet derives from :class:`RetrainerError`::

    RetrainerError
    ├── ConfigError          the config file or a setting is invalid (names file and key)
    ├── UnknownModelError    a model name that is not in the config
    ├── DataError            input data broke the contract (names file, column and rule)
    │   └── NoDataError      no accepted batch to train or judge on
    ├── RegistryError        the model registry refused an operation or holds no such version
    │   └── TransientRegistryError   the registry was unreachable; retrying may succeed
    ├── StorageError         the data or metadata store refused (credentials, bucket, a lost write race)
    │   └── TransientStorageError    the store was unreachable; retrying may succeed
    └── RollbackError        a rollback target is missing or was never judged (needs --force)

Only a :class:`TransientError` (``TransientRegistryError``, ``TransientStorageError``) is worth
retrying; every other error is final for its input. Every message names the store it concerns,
with any password masked.
"""

from __future__ import annotations

from dataclasses import dataclass


class RetrainerError(Exception):
    """Base class of every error retrainer raises on purpose."""


class ConfigError(RetrainerError):
    """The configuration file or a setting is invalid."""


class UnknownModelError(ConfigError):
    """A model name that the configuration does not define."""


@dataclass(frozen=True)
class Violation:
    """One broken rule of the data contract.

    Attributes:
        rule: Short machine-friendly rule name, e.g. ``missing_column``.
        message: Human sentence with the numbers that broke the rule.
        column: The column concerned, or ``None`` for whole-file rules.
    """

    rule: str
    message: str
    column: str | None = None

    def render(self, source: str) -> str:
        """Return ``file: column 'c': rule: message`` for error output."""
        where = f"column {self.column!r}: " if self.column else ""
        return f"{source}: {where}{self.rule}: {self.message}"


class DataError(RetrainerError):
    """Input data broke the contract; carries every violation found, not only the first.

    Args:
        source: The file (or batch) the violations were found in.
        violations: All broken rules, in the order they were checked.
    """

    def __init__(self, source: str, violations: list[Violation]) -> None:
        self.source = source
        self.violations = violations
        super().__init__("\n".join(v.render(source) for v in violations))


class NoDataError(DataError):
    """There is no accepted batch to train or judge on."""

    def __init__(self, model: str, detail: str) -> None:
        super().__init__(model, [Violation("no_data", detail)])


class TransientError(RetrainerError):
    """Something outside could not be reached; the same call may succeed later."""


class RegistryError(RetrainerError):
    """The model registry refused an operation or holds no such version."""


class TransientRegistryError(RegistryError, TransientError):
    """The registry could not be reached; the same call may succeed later."""


class StorageError(RetrainerError):
    """The data or metadata store refused an operation (credentials, a missing bucket, a lost write race)."""


class TransientStorageError(StorageError, TransientError):
    """The data or metadata store could not be reached; the same call may succeed later."""


class RollbackError(RetrainerError):
    """A rollback target does not exist or never passed a judgement."""
