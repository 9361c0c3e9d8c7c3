"""gymray.formats: each record format's fields, Parquet schema, NeMo RL block, and the
lengths and hashes decided on its encoded fields."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest

from gymray import formats
from gymray.formats import FORMATS, content_hashes, encode

RECORDS = {
    "openai": {"messages": [{"role": "user", "content": "q"}], "tools": [], "meta": {"t": 1}},
    "simple": {"input": "q", "output": "a", "meta": {}},
    "preference": {
        "context": [{"role": "user", "content": "q"}],
        "completions": [
            {"rank": 0, "completion": [{"role": "assistant", "content": "long answer"}]},
            {"rank": 1, "completion": [{"role": "assistant", "content": "no"}]},
        ],
        "meta": {},
    },
    "binary": {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": "yes!",
        "rejected": "no",
        "chosen_reward": 1.0,
        "rejected_reward": 0.0,
        "reward_gap": 1.0,
        "meta": {},
    },  # fmt: skip
    "nemo_gym": {
        "responses_create_params": {"input": "q"},
        "agent_ref": {"name": "a"},
        "expected_answer": "4",
        "meta": {},
    },  # fmt: skip
    "math": {"input": "q", "ground_truth": "4", "meta": {}},
}


def test_every_format_has_a_sample_record_and_meta():
    assert set(RECORDS) == set(FORMATS)
    for name, fmt in FORMATS.items():
        assert "meta" in fmt.fields and fmt.name == name and fmt.description
        assert set(fmt.sample_fields) <= set(fmt.fields)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_parquet_schema_holds_each_column_value(name):
    fmt = FORMATS[name]
    record = RECORDS[name]
    _, encoded = encode(record)
    schema = fmt.parquet_schema()
    assert schema.names == list(fmt.fields)
    row = {n: fmt.column_value(n, record, encoded) for n in fmt.fields}
    table = pa.Table.from_pylist([row], schema=schema)  # fails on a type that does not fit
    for n, kind in fmt.fields.items():
        value = table.column(n)[0].as_py()
        if n == fmt.rest_column:  # the task's own fields, JSON in one column
            assert orjson.loads(value) == {k: v for k, v in record.items() if k not in fmt.fields}
        elif kind == "json":
            assert orjson.loads(value) == record[n]
        else:
            assert value == record[n]
    for n, kind in fmt.fields.items():
        assert schema.field(n).type == (pa.float64() if kind == "float" else pa.string())


def test_encode_is_orjson_and_keeps_key_order():
    record = {"b": [1, {"x": "é\u2028"}], "a": None}
    line, fields = encode(record)
    assert line == orjson.dumps(record) + b"\n"
    assert list(fields) == ["b", "a"] and fields["a"] == b"null"
    # keys' JSON is remembered per position (first or not): the same keys in
    # another order, keys to escape, and no key at all still write what orjson does
    for other in ({"a": 1, "b": 2}, {"b": 3, "a": {}}, {'q"\u00e9\n': [1]}, {}):
        assert encode(other)[0] == orjson.dumps(other) + b"\n"


def test_trained_chars_count_the_sample_and_the_longer_alternative():
    def chars(name):
        record = RECORDS[name]
        return FORMATS[name].trained_chars(record, encode(record)[1])

    enc = {k: encode(RECORDS[k])[1] for k in RECORDS}
    assert chars("openai") == len(enc["openai"]["messages"]) + len(enc["openai"]["tools"])
    longer = orjson.dumps(RECORDS["preference"]["completions"][0]["completion"])
    assert chars("preference") == len(enc["preference"]["context"]) + len(longer)
    assert chars("binary") == len(enc["binary"]["prompt"]) + len(b'"yes!"')
    assert chars("math") == len(b'"q"')  # the ground truth is not trained on


def test_content_hash_ignores_meta_and_tools_hash_only_the_tools():
    a = RECORDS["openai"]
    b = {**a, "meta": {"t": 2}}
    c = {**a, "messages": [{"role": "user", "content": "other"}]}
    d = {**a, "tools": [{"type": "function", "function": {"name": "f"}}]}
    h = {k: content_hashes(encode(r)[1]) for k, r in (("a", a), ("b", b), ("c", c), ("d", d))}
    assert h["a"] == h["b"]  # provenance is not content
    assert h["a"][0] == h["c"][0] and h["a"][1] != h["c"][1]
    assert h["a"][0] != h["d"][0] and h["a"][1] != h["d"][1]
    assert content_hashes(encode(a)[1], content=False) == (h["a"][0], None)
    # a record without tools hashes its tools as an empty list
    assert content_hashes(encode(RECORDS["simple"])[1])[0] == content_hashes({"tools": b"[]"})[0]
    assert all(-(2**63) <= x < 2**63 for x in h["a"])  # fits Arrow's int64


def test_data_config_points_each_split_at_its_file():
    for fmt in FORMATS.values():
        cfg = fmt.data_config("d/train.jsonl", "d/val.jsonl", {"tools_differ": True})
        assert cfg["data"]["train"]["data_path"] == "d/train.jsonl"
        assert cfg["data"]["validation"]["data_path"] == "d/val.jsonl"
        assert fmt.data_config("d/train.jsonl", None, {})["data"]["validation"] is None
        assert ("default" in cfg["data"]) == (fmt.default is not None)
    assert formats.get("openai").block("p", {})["use_preserving_dataset"] is False
