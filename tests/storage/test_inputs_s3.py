"""gymray.storage.inputs on a real S3 server and on local disk: the same globs select
the same rollout files (sidecars, hidden files and non-rollouts left out), and gzip
reads back whole."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest
from support import REPO, generated, objects, put, uri

from gymray.storage import StorageError, expand_inputs, open_input

CITATION = "resources_servers/citation_if/data/example_rollouts.jsonl"
GARBAGE = b"this is not a rollout\n{also not\n"


LAYOUT = {
    "r/blackjack.jsonl": b"{}\n",
    "r/citation.jsonl.gz": gzip.compress(b"{}\n"),
    "r/a1.jsonl": b"{}\n",
    "r/a2.jsonl": b"{}\n",
    "r/b1.jsonl": b"{}\n",
    "r/run_failures.jsonl": GARBAGE,
    "r/run_materialized_inputs.jsonl": GARBAGE,
    "r/run_reward_profiling.jsonl": GARBAGE,
    "r/run_aggregate_metrics.json": b"{}",
    "r/notes.txt": GARBAGE,
    "r/sub/d.jsonl.gz": gzip.compress(b"{}\n"),
    "r/sub/deep/c.jsonl": b"{}\n",
    "r/.hidden/e.jsonl": b"{}\n",
    "r/.f.jsonl": b"{}\n",
}


TOP_JSONL = ["r/a1.jsonl", "r/a2.jsonl", "r/b1.jsonl", "r/blackjack.jsonl"]


GLOBS = [
    ("r/*.jsonl", TOP_JSONL),
    ("r/*", [*TOP_JSONL, "r/citation.jsonl.gz"]),
    ("r/**/*.jsonl", [*TOP_JSONL, "r/sub/deep/c.jsonl"]),
    ("r/**/*.jsonl.gz", ["r/citation.jsonl.gz", "r/sub/d.jsonl.gz"]),
    ("r/a?.jsonl", ["r/a1.jsonl", "r/a2.jsonl"]),
    ("r/[ab]1.jsonl", ["r/a1.jsonl", "r/b1.jsonl"]),
    ("r/[!a]*.jsonl", ["r/b1.jsonl", "r/blackjack.jsonl"]),
    ("r/*/*.jsonl*", ["r/sub/d.jsonl.gz"]),
    ("r/**/deep/*.jsonl", ["r/sub/deep/c.jsonl"]),
    ("r/**", [*TOP_JSONL, "r/citation.jsonl.gz", "r/sub/d.jsonl.gz", "r/sub/deep/c.jsonl"]),
    # a directory: everything below it but sidecars and hidden files
    ("r/", [*TOP_JSONL, "r/citation.jsonl.gz", "r/sub/d.jsonl.gz", "r/sub/deep/c.jsonl"]),
]


@pytest.fixture(scope="module")
def glob_roots(s3, tmp_path_factory):
    local = tmp_path_factory.mktemp("glob")
    for rel, data in LAYOUT.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
        put(s3, f"glob/{rel}", data)
    return {"local": str(local), "s3": uri("glob")}


@pytest.mark.parametrize("backend", ["local", "s3"])
@pytest.mark.parametrize(("pattern", "expected"), GLOBS, ids=[g[0] for g in GLOBS])
def test_glob_selects_rollout_files(glob_roots, backend, pattern, expected):
    root = glob_roots[backend]
    found = expand_inputs([f"{root}/{pattern}"])
    assert [f.uri[len(root) + 1 :] for f in found] == sorted(expected)
    assert all(f.size > 0 for f in found)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_glob_without_matches_and_missing_inputs_say_so(glob_roots, backend):
    root = glob_roots[backend]
    with pytest.raises(StorageError, match="matches no rollout files"):
        expand_inputs([f"{root}/r/*_failures.jsonl"])
    with pytest.raises(StorageError, match="matches no rollout files"):
        expand_inputs([f"{root}/nowhere/**/*.jsonl"])
    with pytest.raises(StorageError, match="input not found"):
        expand_inputs([f"{root}/r/missing.jsonl"])


def test_gzip_inputs_read_back_whole(s3, tmp_path):
    """Multi-member gzip, on disk and on S3 (where SeaweedFS serves *.gz objects
    with a gzip layer of its own on top)."""
    text = generated(CITATION).read_bytes()
    half = text.index(b"\n", len(text) // 2) + 1
    data = gzip.compress(text[:half]) + gzip.compress(text[half:])
    (tmp_path / "c.jsonl.gz").write_bytes(data)
    put(s3, "gz/c.jsonl.gz", data)
    for where in (str(tmp_path / "c.jsonl.gz"), uri("gz/c.jsonl.gz")):
        (f,) = expand_inputs([where])
        with open_input(f) as stream:
            assert stream.read() == text, where


# --------------------------------------------------------------------------- S3 end to end


# A notebook's driver on a Ray whose workers do not have the endpoint in their
# environment (it was set in the driver alone, after Ray started): they must still
# reach the store the driver reached, not AWS.
ENDPOINT_IN_THE_DRIVER_ALONE = """
import os, sys
import ray
import gymray

endpoint = os.environ.pop("AWS_ENDPOINT_URL")
ray.init(address="local", num_cpus=1, include_dashboard=False,
         object_store_memory=80 * 1024**2, log_to_driver=False)
os.environ["AWS_ENDPOINT_URL"] = endpoint
seen = ray.get(ray.remote(lambda: os.environ.get("AWS_ENDPOINT_URL")).remote())
ds = gymray.prepare("sft", input=sys.argv[1], output=sys.argv[2], sft={"reward_threshold": 0})
print(seen, ds.counts["records"]["train"] + ds.counts["records"]["val"])
"""


def test_workers_reach_the_s3_endpoint_the_driver_was_given(s3, tmp_path):
    src = tmp_path / "blackjack.jsonl"
    src.write_bytes(generated("environments/blackjack/data/example_rollouts.jsonl").read_bytes())
    run = subprocess.run(
        [sys.executable, "-c", ENDPOINT_IN_THE_DRIVER_ALONE, str(src), uri("datasets/endpoint")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    seen, records = run.stdout.split()
    assert seen == "None" and int(records) > 0  # (the workers' environment had no endpoint)
    assert "manifest.json" in objects(s3, "datasets/endpoint")
