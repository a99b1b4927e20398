"""Where uploaded audio, job results and sync blobs live: a local folder or an S3 bucket.

Keys are built by the service only from ids it generated and hex digests it validated
(:func:`key`); a user-supplied string never becomes part of a path.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

from app.service.settings import Settings

_SAFE_PART = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class StorageError(RuntimeError):
    pass


def key(*parts: str) -> str:
    """Join validated parts into a storage key (``jobs/<hex>/input.wav``)."""
    for p in parts:
        if not _SAFE_PART.match(p) or ".." in p:
            raise StorageError(f"unsafe storage key part {p!r}")
    return "/".join(parts)


class Storage(Protocol):
    def put_file(self, key: str, src: Path) -> None: ...
    def get_to_file(self, key: str, dest: Path) -> None: ...
    def open(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def local_path(self, key: str) -> Path | None: ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, k: str) -> Path:
        p = (self.root / k).resolve()
        if self.root not in p.parents:
            raise StorageError(f"key {k!r} leaves the storage root")
        return p

    def put_file(self, key: str, src: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)  # atomic: readers never see half a blob
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_to_file(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


class S3Storage:
    """Any S3-compatible store (AWS, MinIO, Ceph) through boto3."""

    def __init__(self, settings: Settings) -> None:
        import boto3

        kwargs: dict[str, str] = {}
        if settings.s3_endpoint_url:
            kwargs["endpoint_url"] = settings.s3_endpoint_url
        if settings.s3_access_key_id:
            kwargs["aws_access_key_id"] = settings.s3_access_key_id
            kwargs["aws_secret_access_key"] = settings.s3_secret_access_key
        if settings.s3_region:
            kwargs["region_name"] = settings.s3_region
        self.bucket = settings.s3_bucket
        self.client = boto3.client("s3", **kwargs)

    def put_file(self, key: str, src: Path) -> None:
        self.client.upload_file(str(src), self.bucket, key)

    def get_to_file(self, key: str, dest: Path) -> None:
        self.client.download_file(self.bucket, key, str(dest))

    def open(self, key: str) -> BinaryIO:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]  # type: ignore[no-any-return]

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def local_path(self, key: str) -> Path | None:
        return None


def make_storage(settings: Settings) -> Storage:
    if settings.storage_provider == "s3":
        return S3Storage(settings)
    return LocalStorage(settings.storage_dir)
