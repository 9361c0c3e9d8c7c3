"""gymray.storage.fs: which file system a URI maps to, endpoints, credentials kept out
of URIs (against a real S3 server, SeaweedFS on loopback)."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest
from support import S3_BUCKET, put, uri

from gymray import storage
from gymray.storage import StorageError, expand_inputs

BUCKET = S3_BUCKET


def test_settings_endpoint_wins_over_env_and_no_credentials_in_uris(s3, monkeypatch):
    put(s3, "ep/a.jsonl", b"{}\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(StorageError):
        expand_inputs([uri("ep/a.jsonl")])
    found = expand_inputs([uri("ep/a.jsonl")], {"endpoint_url": s3.endpoint_url})
    assert [f.uri for f in found] == [uri("ep/a.jsonl")]
    with pytest.raises(StorageError, match="credentials"):
        storage.filesystem(uri("x"), {"endpoint_url": "http://me:pw@127.0.0.1:1"})
    with pytest.raises(StorageError, match="credentials in the URI"):
        storage.filesystem(f"s3://AKIA:secret@{BUCKET}/x")


# --------------------------------------------------------------------------- NeMo RL paths


def test_gcs_and_local_uris_map_to_their_file_systems(tmp_path):
    # No GCS server here: this checks the mapping only (no request is made).
    fs, path = storage.filesystem("gs://bucket/rollouts/a.jsonl")
    assert isinstance(fs, pafs.GcsFileSystem) and path == "bucket/rollouts/a.jsonl"
    fs, path = storage.filesystem(f"file://{tmp_path}/x/")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "x")
    with pytest.raises(StorageError, match="unsupported URI scheme 'hdfs://'"):
        storage.filesystem("hdfs://nn/x")
