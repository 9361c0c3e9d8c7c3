"""Record formats: the fields of each NeMo RL record and their Parquet schema.

JSONL holds each record exactly as NeMo RL reads it; Parquet holds the same
records with a fixed schema, where nested values (messages, tools, meta, ...)
are JSON-encoded strings and scalars keep their type.
"""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa

# field name -> "string" | "float" | "json"
FORMATS: dict[str, dict[str, str]] = {
    "openai": {"messages": "json", "tools": "json", "meta": "json"},
    "simple": {"input": "string", "output": "string", "meta": "json"},
    "preference": {"context": "json", "completions": "json", "meta": "json"},
    "binary": {
        "prompt": "json",
        "chosen": "string",
        "rejected": "string",
        "chosen_reward": "float",
        "rejected_reward": "float",
        "reward_gap": "float",
        "meta": "json",
    },
    "nemo_gym": {
        "responses_create_params": "json",
        "agent_ref": "json",
        "task_fields": "json",
        "meta": "json",
    },
    "math": {"input": "string", "ground_truth": "string", "meta": "json"},
}

_ARROW = {"string": pa.string(), "float": pa.float64(), "json": pa.string()}


def parquet_schema(fmt: str) -> pa.Schema:
    return pa.schema([pa.field(name, _ARROW[kind]) for name, kind in FORMATS[fmt].items()])


def encode(record: dict) -> tuple[bytes, dict[str, bytes]]:
    """(JSONL line, each field's JSON): every value is serialized once, and the
    line is byte-for-byte what ``orjson.dumps(record)`` writes."""
    fields = {k: orjson.dumps(v) for k, v in record.items()}
    line = b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in fields.items()) + b"}\n"
    return line, fields


def column_value(fmt: str, name: str, record: dict, fields: dict[str, bytes]) -> Any:
    """The Parquet value of one field of ``record`` (JSON fields as their encoded text)."""
    kind = FORMATS[fmt][name]
    if name == "task_fields":  # nemo_gym rows: whatever the task carries beyond the fixed keys
        rest = {
            k: v
            for k, v in record.items()
            if k not in ("responses_create_params", "agent_ref", "meta")
        }
        return orjson.dumps(rest)
    if kind == "json":
        return fields.get(name)
    return record.get(name)


def content_hashes(fields: dict[str, bytes]) -> tuple[bytes, bytes]:
    """(tool schemas, content without provenance): what the hashes for
    ``use_preserving_dataset`` and exact-duplicate removal are taken over."""
    return fields.get("tools", b"[]"), b"\x00".join(v for k, v in fields.items() if k != "meta")
