"""File systems: local paths, NFS/Lustre, ``s3://`` and ``gs://``, through pyarrow.

Credentials come from the usual environment of each process that touches the
data (the driver and the Ray workers): ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` / ``AWS_PROFILE`` for S3,
``GOOGLE_APPLICATION_CREDENTIALS`` for GCS. Nothing secret is ever put in
settings, manifests or logs.
"""

from __future__ import annotations

import functools
import os
import posixpath
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from gymray.errors import StorageError


# --------------------------------------------------------------------------- file systems
def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def is_remote(uri: str) -> bool:
    return _scheme(uri) not in ("", "file")


def _opt(storage: Any, name: str) -> Any:
    """A storage setting from the pydantic model, a plain dict, or None."""
    if storage is None:
        return None
    if isinstance(storage, dict):
        return storage.get(name)
    return getattr(storage, name, None)


def _endpoint_url(storage: Any) -> str | None:
    return (
        _opt(storage, "endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


def _region(storage: Any) -> str | None:
    return (
        _opt(storage, "region")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )


def for_tasks(storage: Any) -> dict:
    """The storage settings as Ray tasks get them: a plain dict, with the S3 endpoint and
    region this process takes from its environment written in. A worker's environment is
    its cluster's, not the driver's (a notebook that set ``AWS_ENDPOINT_URL`` after
    joining): without them its tasks went to AWS itself, not to the store the driver
    wrote the staging directory to. Credentials stay in each process's environment."""
    settings = dict(storage) if isinstance(storage, dict) else storage.model_dump()
    settings["endpoint_url"], settings["region"] = _endpoint_url(storage), _region(storage)
    return settings


def _s3_endpoint(storage: Any) -> tuple[str, str] | None:
    """(scheme, host[:port]) of an S3-compatible endpoint, or None for AWS itself."""
    raw = _endpoint_url(storage)
    if not raw:
        return None
    parts = urlsplit(raw if "://" in raw else f"https://{raw}")
    if parts.username or parts.password:
        # The endpoint is recorded in the manifest: keys must come from the environment.
        raise StorageError(
            "the S3 endpoint URL holds credentials; give the bare URL in storage.endpoint_url "
            "or AWS_ENDPOINT_URL and the keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        )
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StorageError(
            f"S3 endpoint {raw!r} is not an http(s) URL (expected e.g. http://minio:9000)"
        )
    return parts.scheme, parts.netloc


@functools.lru_cache(maxsize=64)
def _bucket_region(bucket: str) -> str | None:
    # Only for AWS itself with no region configured: a bucket answers only in its own
    # region. One unauthenticated HEAD per bucket and process.
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError:
        return None


# File systems are cached per process (a Ray worker opens many inputs), keyed by
# their options, which are re-read from the environment on every call; the key id
# and profile are in the key so that changed credentials get a new client.
@functools.lru_cache(maxsize=16)
def _s3(
    endpoint: tuple[str, str] | None,
    region: str | None,
    anonymous: bool,
    identity: tuple[str | None, str | None],
) -> pafs.FileSystem:
    kwargs: dict[str, Any] = {"allow_bucket_creation": True}
    if endpoint:
        kwargs.update(scheme=endpoint[0], endpoint_override=endpoint[1])
    if region:
        kwargs["region"] = region
    if anonymous:
        kwargs["anonymous"] = True
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=4)
def _gcs(anonymous: bool) -> pafs.FileSystem:
    # Default credentials: GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC, or the VM's.
    return pafs.GcsFileSystem(anonymous=True) if anonymous else pafs.GcsFileSystem()


def filesystem(uri: str, storage: Any = None) -> tuple[pafs.FileSystem, str]:
    """(file system, path inside it) for a local path or a URI.

    S3: endpoint from ``storage.endpoint_url``, ``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL``; region from ``storage.region``, ``AWS_REGION`` or
    ``AWS_DEFAULT_REGION``; credentials from the AWS SDK's usual chain.
    """
    scheme = _scheme(uri)
    if scheme in ("", "file"):
        path = uri[len("file://") :] if scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    rest = uri.split("://", 1)[1]
    bucket = rest.split("/", 1)[0]
    if "@" in bucket:
        raise StorageError(
            f"{_redact_uri(uri)}: credentials in the URI are not accepted (they would be "
            "recorded in the manifest); set them in the environment instead"
        )
    if not bucket:
        raise StorageError(f"{uri}: no bucket name")
    path = posixpath.normpath(rest) if rest.strip("/") else bucket
    anonymous = bool(_opt(storage, "anonymous"))
    if scheme in ("s3", "s3a"):
        endpoint = _s3_endpoint(storage)
        region = _region(storage)
        if not region:
            # S3-compatible stores accept any region; AWS wants the bucket's own.
            region = "us-east-1" if endpoint else _bucket_region(bucket)
        identity = (os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_PROFILE"))
        return _s3(endpoint, region, anonymous, identity), path
    if scheme in ("gs", "gcs"):
        return _gcs(anonymous), path
    raise StorageError(
        f"unsupported URI scheme '{scheme}://' in {uri} (use a local path, s3:// or gs://)"
    )


def _redact_uri(uri: str) -> str:
    scheme, _, rest = uri.partition("://")
    bucket, sep, key = rest.partition("/")
    return f"{scheme}://<credentials>@{bucket.rsplit('@', 1)[-1]}{sep}{key}"


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)
