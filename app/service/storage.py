"""Where uploaded audio, job results and sync blobs live: a local folder or an S3 bucket.

Keys are built by the service only from ids it generated and hex digests it validated
(:func:`key`); a user-supplied string never becomes part of a path.

Both backends keep one contract (``tests/service/test_storage_s3.py`` runs it on each): a
missing key is :class:`StorageNotFound`, any other backend failure :class:`StorageError`,
an unsafe key is refused, and a put is atomic (readers see the old object or the whole new
one, never part of it).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

from app.service.settings import Settings

log = logging.getLogger("app.service.storage")

_SAFE_PART = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class StorageError(RuntimeError):
    """The storage backend failed (unreachable, refused, misconfigured) or a key is unsafe."""


class StorageNotFound(StorageError):
    """No object is stored under the key."""


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
        p = (self.root / _checked(k)).resolve()
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
        src = self._path(key)
        if not src.is_file():
            raise StorageNotFound(f"no stored object {key!r}")
        shutil.copyfile(src, dest)

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as e:
            raise StorageNotFound(f"no stored object {key!r}") from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


class S3Storage:
    """Any S3-compatible store (AWS, MinIO, Ceph) through boto3; thread-safe (one client).

    The bucket must exist: it is checked once here, so that a wrong bucket, endpoint or
    credentials stop the service at start-up instead of failing the first upload.
    """

    def __init__(self, settings: Settings) -> None:
        import boto3

        kwargs: dict[str, str] = {}
        if settings.s3_endpoint_url:
            kwargs["endpoint_url"] = settings.s3_endpoint_url
        if settings.s3_access_key_id:
            kwargs["aws_access_key_id"] = settings.s3_access_key_id
            kwargs["aws_secret_access_key"] = settings.s3_secret_access_key
            if settings.s3_session_token:  # temporary (STS) credentials are a triple
                kwargs["aws_session_token"] = settings.s3_session_token
        if settings.s3_region:
            kwargs["region_name"] = settings.s3_region
        self.bucket = settings.s3_bucket
        self._where = f"bucket {self.bucket!r} at {settings.s3_endpoint_url or 'AWS S3'}"
        self.client = boto3.client("s3", **kwargs)
        self._check_bucket()

    def _check_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 403:
                # Credentials limited to object access (no s3:ListBucket) cannot HEAD a
                # bucket; wrong credentials fail on the first request anyway.
                log.warning("cannot verify %s (403 Forbidden); continuing", self._where)
                return
            raise self._error(e, "HEAD bucket", "") from e
        except BotoCoreError as e:
            raise StorageError(f"S3 {self._where} is unreachable: {e}") from e

    def _error(self, e: Exception, op: str, k: str) -> StorageError:
        """A boto3 failure as one of ours, naming the operation, key and bucket."""
        from botocore.exceptions import ClientError

        what = f"S3 {op} {k!r} in {self._where}" if k else f"S3 {op} of {self._where}"
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            head_404 = code in ("404", "NotFound")  # a HEAD: no body says what is missing
            if code == "NoSuchBucket" or (head_404 and (not k or not self._bucket_exists())):
                return StorageError(f"{what} failed: the bucket does not exist")
            if code == "NoSuchKey" or head_404:
                return StorageNotFound(f"no stored object {k!r} in {self._where}")
            return StorageError(f"{what} failed: {code} {err.get('Message', '')}".rstrip())
        return StorageError(f"{what} failed: {e}")

    def _bucket_exists(self) -> bool:
        """Whether the bucket is there (if that cannot be told, assume it is)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            return e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404
        except BotoCoreError:
            pass
        return True

    def put_file(self, key: str, src: Path) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        # One PUT, or a multipart upload above 8 MB that S3 assembles only when complete
        # (s3transfer aborts it on failure): either way readers never see half an object.
        try:
            self.client.upload_file(str(src), self.bucket, _checked(key))
        except (BotoCoreError, ClientError, S3UploadFailedError) as e:
            raise self._error(e, "upload", key) from e

    def get_to_file(self, key: str, dest: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_file(self.bucket, _checked(key), str(dest))
        except (BotoCoreError, ClientError) as e:
            raise self._error(e, "download", key) from e

    def open(self, key: str) -> BinaryIO:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=_checked(key))["Body"]  # type: ignore[no-any-return]
        except (BotoCoreError, ClientError) as e:
            raise self._error(e, "GET", key) from e

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=_checked(key))
            return True
        except (BotoCoreError, ClientError) as e:
            err = self._error(e, "HEAD", key)
            if isinstance(err, StorageNotFound):
                return False
            raise err from e

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=_checked(key))
        except (BotoCoreError, ClientError) as e:
            raise self._error(e, "DELETE", key) from e

    def local_path(self, key: str) -> Path | None:
        return None


def _checked(k: str) -> str:
    """``k`` if every part passes :func:`key`'s rule (S3 keys are plain strings; this keeps
    both backends refusing the same keys)."""
    return key(*k.split("/"))


def make_storage(settings: Settings) -> Storage:
    if settings.storage_provider == "s3":
        return S3Storage(settings)
    return LocalStorage(settings.storage_dir)
