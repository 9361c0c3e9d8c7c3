"""Storage: file systems (local, NFS, s3://, gs://), input listing, atomic commit, materializing."""

from gymray.errors import StorageError
from gymray.storage.commit import (
    MANIFEST,
    WRITING_MARKER,
    Staging,
    inspect_output,
    output_state,
    read_bytes,
    read_manifest,
    refuse_overlap,
    refuse_unless_replaceable,
)
from gymray.storage.fs import filesystem, for_tasks, is_remote, join
from gymray.storage.inputs import InputFile, existing_file, expand_inputs, open_input
from gymray.storage.materialize import local_dataset_path

__all__ = [
    "MANIFEST",
    "WRITING_MARKER",
    "InputFile",
    "existing_file",
    "Staging",
    "StorageError",
    "expand_inputs",
    "filesystem",
    "for_tasks",
    "inspect_output",
    "is_remote",
    "join",
    "local_dataset_path",
    "open_input",
    "output_state",
    "read_bytes",
    "read_manifest",
    "refuse_overlap",
    "refuse_unless_replaceable",
]
