"""NeMo RL reads local paths only: copy an object-store dataset's JSONL to shared storage."""

from __future__ import annotations

import logging
import os
import posixpath
from typing import Any

from gymray.errors import DENIED, NO_SPACE, StorageError, StorageIOError, error_number, write_error
from gymray.storage.commit import MANIFEST, Staging, read_manifest
from gymray.storage.fs import filesystem, is_remote

log = logging.getLogger("gymray")


# --------------------------------------------------------------------------- NeMo RL side
def local_dataset_path(output: str, materialize_to: str | None = None, storage: Any = None) -> str:
    """A local directory with the committed dataset's ``train.jsonl`` (and
    ``val.jsonl``) that NeMo RL can open.

    A local output is returned as is. An object-store output is copied (JSONL
    files plus a manifest) to ``<materialize_to>/<name>-<fingerprint[:12]>`` once;
    later calls reuse the copy. Without ``materialize_to`` it raises, naming the
    setting, because NeMo RL reads its data files from local paths only.

    Example::

        path = local_dataset_path("s3://b/ds/sft-v1", "/lustre/gymray-cache")
        # -> /lustre/gymray-cache/sft-v1-0123456789ab (train.jsonl, val.jsonl, manifest.json)
    """
    manifest = read_manifest(output, storage)
    if not manifest or not (manifest.get("files") or {}).get("train"):
        raise StorageError(
            f"{output} holds no committed gymray dataset (no readable {MANIFEST}): prepare "
            f"it first (python -m gymray.run <algo> input=... output={output} --prepare-only)"
        )
    if not is_remote(output):
        return filesystem(output)[1]
    if not materialize_to:
        raise StorageError(
            f"dataset {output} is in an object store and NeMo RL reads its data files from "
            "local paths: set storage.materialize_to=<a directory every training node can "
            "read, e.g. on Lustre/NFS> to copy train/val there, or write the dataset to a "
            "shared path (output=/shared/...)"
        )
    if is_remote(materialize_to):
        raise StorageError(
            f"storage.materialize_to={materialize_to} must be a local or shared (NFS/Lustre) "
            "directory, not an object store"
        )
    fingerprint = str(manifest.get("fingerprint", ""))
    name = posixpath.basename(output.rstrip("/"))
    dest = os.path.join(
        os.path.abspath(os.path.expanduser(materialize_to)), f"{name}-{fingerprint[:12]}"
    )
    done = read_manifest(dest)
    if done is not None and done.get("fingerprint") == fingerprint:
        return dest
    files = manifest.get("files") or {}
    wanted = [files[k] for k in ("train", "val") if files.get(k)]
    fs, src = filesystem(output, storage)
    staging = Staging(dest, overwrite=True)
    try:
        for rel in wanted:
            with fs.open_input_stream(posixpath.join(src, rel)) as r, staging.open(rel) as w:
                while chunk := r.read(8 << 20):
                    w.write(chunk)
        local = {
            **manifest,
            "output": dest,
            "materialized_from": output,
            # Only the JSONL NeMo RL reads is copied; the rest stays at the source.
            "files": {
                **{k: files.get(k) for k in ("train", "val")},
                "parquet": {"train": [], "val": []},
            },
        }
        staging.commit(local)
    except OSError as e:
        staging.abort()
        code = error_number(e)
        if code in NO_SPACE or code in DENIED:
            raise write_error(e, dest, fix="choose another storage.materialize_to") from None
        raise StorageIOError(f"cannot copy {output} to {dest}: {e}") from None
    except BaseException:
        staging.abort()
        raise
    log.info("copied %s (%s) to %s for NeMo RL", output, ", ".join(wanted), dest)
    return dest
