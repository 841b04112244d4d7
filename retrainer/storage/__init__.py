"""Where retrainer keeps what it knows: data by URL (:mod:`.blobs`), metadata in SQL (:mod:`.metadata`).

* **Data** (accepted batches, quarantine copies): a local folder by default, any ``s3://`` URL at
  scale (:func:`open_blobs`). Objects are written whole and never changed.
* **Metadata** (manifests, promotion history and intents, incident state, announcement ledgers): a
  SQL database through SQLAlchemy (:class:`Metadata`), a SQLite file by default and PostgreSQL at
  scale. Writers of one thing serialise on a named lock held by the database itself, so workers on
  several machines never lose an update or move an alias twice.

The two meet in :class:`Storage`. SQLAlchemy and boto3 are imported here only, lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retrainer.storage.blobs import Blobs, LocalBlobs, S3Access, S3Blobs, is_s3_url, open_blobs, read_object, too_large
from retrainer.storage.metadata import Document, Metadata, sqlite_url

__all__ = [
    "Blobs",
    "Document",
    "LocalBlobs",
    "Metadata",
    "S3Access",
    "S3Blobs",
    "Storage",
    "is_s3_url",
    "open_blobs",
    "read_object",
    "sqlite_url",
    "too_large",
]


@dataclass(frozen=True)
class Storage:
    """The data store and the metadata store of one deployment."""

    blobs: Blobs
    metadata: Metadata

    @classmethod
    def local(cls, root: Path) -> Storage:
        """Both stores in one local folder: data under ``root``, metadata in ``root/metadata.db``."""
        return cls(LocalBlobs(root), Metadata(sqlite_url(root / "metadata.db")))

    def check(self) -> None:
        """Reach both stores once, the start-up check: wrong credentials fail here, not in the first run.

        Raises:
            StorageError: a store refused the credentials or the URL is wrong (final);
                ``TransientStorageError`` when one could not be reached.
        """
        self.metadata.check()
        self.blobs.check()
