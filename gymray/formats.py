"""Output formats: one table entry per record format NeMo RL reads.

An entry says what a record holds (its fields and their Parquet types) and which
NeMo RL dataset block reads it. JSONL holds each record exactly as NeMo RL reads
it; Parquet holds the same records with a fixed schema, where nested values
(messages, tools, meta, ...) are JSON-encoded strings and scalars keep their type.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

_ARROW = {"string": pa.string(), "float": pa.float64(), "json": pa.string()}


@dataclass(frozen=True)
class Format:
    """A record format: its fields (name -> ``string`` | ``float`` | ``json``) and the
    NeMo RL ``data.train`` / ``data.validation`` block that reads a file of it."""

    name: str
    fields: dict[str, str]
    block: Callable[[str, dict], dict]  # (data_path, facts) -> dataset block
    description: str
    default: dict | None = None  # NeMo RL `data.default`, when the format needs one
    config: dict = field(default_factory=dict)  # other NeMo RL config the format needs
    # nemo_gym: fields beyond the fixed ones are the task's, kept in one JSON column
    rest_column: str | None = None
    # the fields NeMo RL tokenizes as one sample, and pairs of alternatives of which
    # the longer counts (preference data: chosen or rejected, each after the context)
    sample_fields: tuple[str, ...] = ()
    alternatives: tuple[str, ...] = ()

    def parquet_schema(self) -> pa.Schema:
        return pa.schema([pa.field(n, _ARROW[k]) for n, k in self.fields.items()])

    def data_config(self, train: str, val: str | None, facts: dict) -> dict[str, Any]:
        """The partial NeMo RL config that points NeMo RL at the written files.

        Paths should be absolute: NeMo RL runs from its checkout root. ``data.validation``
        is None when there is no val file (gymray's config writer makes both blocks
        replace the base config's blocks whole)."""
        data: dict[str, Any] = {
            "train": self.block(train, facts),
            "validation": self.block(val, facts) if val else None,
        }
        if self.default:
            data["default"] = dict(self.default)
        return {"data": data, **self.config}

    def trained_chars(self, record: dict, encoded: dict[str, bytes]) -> int:
        """Characters of the longest sample NeMo RL tokenizes from this record (the
        JSON of its fields, close to a chat template's rendering): the basis of the
        length estimates NeMo RL's ``max_input_seq_length`` is compared with."""
        size = sum(len(encoded[k]) for k in self.sample_fields if k in encoded)
        if self.alternatives == ("completions",):
            comps = record.get("completions") or ()
            size += max((len(orjson.dumps(c.get("completion"))) for c in comps), default=0)
        elif self.alternatives:
            size += max(len(encoded.get(k, b"")) for k in self.alternatives)
        return size

    def column_value(self, name: str, record: dict, encoded: dict[str, bytes]) -> Any:
        """The Parquet value of one field (JSON fields as their encoded text)."""
        if name == self.rest_column:
            fixed = set(self.fields)
            return orjson.dumps({k: v for k, v in record.items() if k not in fixed})
        if self.fields[name] == "json":
            return encoded.get(name)
        return record.get(name)


def _openai(path: str, facts: dict) -> dict:
    return {
        "dataset_name": "openai_format",
        "data_path": path,
        "chat_key": "messages",
        "tool_key": "tools",
        # Without it, rows whose tool schemas differ get None for missing arguments.
        "use_preserving_dataset": bool(facts.get("tools_differ")),
    }


def _response(output_key: str) -> Callable[[str, dict], dict]:
    def block(path: str, facts: dict) -> dict:
        return {
            "dataset_name": "ResponseDataset",
            "data_path": path,
            "input_key": "input",
            "output_key": output_key,
        }

    return block


def _preference(path: str, facts: dict) -> dict:
    return {"dataset_name": "PreferenceDataset", "data_path": path}


def _binary(path: str, facts: dict) -> dict:
    return {
        "dataset_name": "BinaryPreferenceDataset",
        "data_path": path,
        "prompt_key": "prompt",
        "chosen_key": "chosen",
        "rejected_key": "rejected",
    }


def _nemo_gym(path: str, facts: dict) -> dict:
    return {"data_path": path}  # dataset_name, env_name and processor: data.default


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "openai",
            {"messages": "json", "tools": "json", "meta": "json"},
            _openai,
            "{messages, tools}: NeMo RL openai_format (tool calls and multi-turn kept)",
            sample_fields=("messages", "tools"),
        ),
        Format(
            "simple",
            {"input": "string", "output": "string", "meta": "json"},
            _response("output"),
            "{input, output} strings: NeMo RL ResponseDataset (single-turn text only)",
            sample_fields=("input", "output"),
        ),
        Format(
            "preference",
            {"context": "json", "completions": "json", "meta": "json"},
            _preference,
            "{context, completions: [{rank, completion}] x2}: NeMo RL PreferenceDataset",
            sample_fields=("context",),
            alternatives=("completions",),
        ),
        Format(
            "binary",
            {
                "prompt": "json",
                "chosen": "string",
                "rejected": "string",
                "chosen_reward": "float",
                "rejected_reward": "float",
                "reward_gap": "float",
                "meta": "json",
            },
            _binary,
            "{prompt, chosen, rejected} strings: NeMo RL BinaryPreferenceDataset",
            sample_fields=("prompt",),
            alternatives=("chosen", "rejected"),
        ),
        Format(
            "nemo_gym",
            {
                "responses_create_params": "json",
                "agent_ref": "json",
                "task_fields": "json",
                "meta": "json",
            },
            _nemo_gym,
            "NeMo Gym task rows for NemoGymDataset (Gym verifies online)",
            default={
                "dataset_name": "NemoGymDataset",
                "env_name": "nemo_gym",
                "processor": "nemo_gym_data_processor",
            },
            config={"env": {"should_use_nemo_gym": True}},
            rest_column="task_fields",
            sample_fields=("responses_create_params",),
        ),
        Format(
            "math",
            {"input": "string", "ground_truth": "string", "meta": "json"},
            _response("ground_truth"),
            "{input, ground_truth} strings: NeMo RL ResponseDataset + math verifier",
            sample_fields=("input",),
        ),
    )
}


# What the length estimates assume of a tokenizer (English text and code with a
# modern BPE vocabulary run 3-4.5 characters a token; JSON punctuation less).
CHARS_PER_TOKEN = 3.5


def get(name: str) -> Format:
    return FORMATS[name]


def encode(record: dict) -> tuple[bytes, dict[str, bytes]]:
    """(JSONL line, each field's JSON): every value is serialized once, and the
    line is byte-for-byte what ``orjson.dumps(record)`` writes."""
    dumps = orjson.dumps
    fields = {k: dumps(v) for k, v in record.items()}
    parts, sep = [], b"{"
    for k, v in fields.items():  # one join: each value's bytes are copied once
        key = _KEYS.get((sep, k))
        if key is None:
            key = sep + dumps(k) + b":"
            if len(_KEYS) < 4096:  # formats have a handful of keys; task fields vary
                _KEYS[(sep, k)] = key
        parts += (key, v)
        sep = b","
    parts.append(b"}\n" if fields else b"{}\n")
    return b"".join(parts), fields


_KEYS: dict[tuple[bytes, str], bytes] = {}  # (separator, key) -> its JSON before the value


def content_hashes(fields: dict[str, bytes], content: bool = True) -> tuple[int, int | None]:
    """64-bit hashes of (the tool schemas, the content without provenance): what
    ``use_preserving_dataset`` and exact-duplicate removal are decided on. SHA-1 runs
    at twice BLAKE2's speed here, and the content is most of a record's bytes."""
    tools = _h64(fields.get("tools", b"[]"))
    if not content:
        return tools, None
    content = b"\x00".join([v for k, v in fields.items() if k != "meta"])
    return tools, _h64(content)


def _h64(data: bytes) -> int:
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "little", signed=True)
