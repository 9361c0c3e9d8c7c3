"""Helpers the tests share: where the fixtures are, reading JSONL, building specs.

The real NeMo Gym fixtures live in ``../shared/fixtures/nemo_gym`` beside the
repo. Tests on them run whenever that folder exists; CI sets
``GYMRAY_REQUIRE_SHARED=1``, where its absence is a failure, not a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pyarrow.fs as pafs
import pytest

from gymray.recipes.base import Member
from gymray.rollouts import Rollout

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GYMRAY_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "nemo_gym"
S3_BUCKET = "gymray-test"


def fixture(rel: str) -> Path:
    """A real NeMo Gym fixture file; skips (fails in CI) when ../shared is absent."""
    path = FIXTURES / rel
    if not path.is_file():
        require_shared()
        pytest.fail(f"shared fixture missing: {path}")
    return path


_GENERATED: list[Path] = []


def generated(rel: str) -> Path:
    """A file of the NeMo Gym-like tree ``gymray.samples.gym_shapes.gym_tree`` writes
    (same relative paths as the real fixtures), written once per session: for tests
    whose input only has to be Gym-shaped, so they run without ../shared."""
    if not _GENERATED:
        import atexit
        import shutil
        import tempfile

        from gymray.samples.gym_shapes import gym_tree

        root = Path(tempfile.mkdtemp(prefix="gymray-gym-"))
        atexit.register(shutil.rmtree, root, True)
        gym_tree(root)
        _GENERATED.append(root)
    path = _GENERATED[0] / rel
    assert path.is_file(), f"gym_tree writes no {rel}"
    return path


def require_shared() -> None:
    """Skip a test on the real fixtures when ../shared is not there, unless CI says
    it must be (GYMRAY_REQUIRE_SHARED=1): then its absence fails the test."""
    if FIXTURES.is_dir():
        return
    if os.environ.get("GYMRAY_REQUIRE_SHARED") == "1":
        pytest.fail(f"the shared fixtures are missing: {FIXTURES} (GYMRAY_REQUIRE_SHARED=1)")
    pytest.skip(f"no shared fixtures at {FIXTURES}")


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in Path(path).read_bytes().split(b"\n") if x]


def rollout_files() -> list[Path]:
    from gymray.rollouts import is_sidecar

    require_shared()
    return sorted(p for p in FIXTURES.rglob("*rollouts*.jsonl") if not is_sidecar(p.name))


def recipe_spec(settings, inputs):
    """The per-block spec a run of ``settings`` over ``inputs`` ships to its workers."""
    from gymray import recipes
    from gymray.engine.blocks import Spec
    from gymray.recipes.base import Context
    from gymray.rollouts import file_environment

    files = [f.uri for f in inputs]
    recipe = recipes.get(settings.algo)(settings, Context(files))
    return Spec(recipe, files, [file_environment(u) for u in files])


def run_standin(checkout: Path, script: str, config: str, report: Path, *overrides: str):
    """Run a stand-in NeMo RL entrypoint the way the job does (from the checkout root,
    `--config` plus overrides); returns (process, report or None)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, script, "--config", str(config), *overrides],
        cwd=checkout,
        env={**os.environ, "STANDIN_REPORT": str(report)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    seen = orjson.loads(report.read_bytes()) if report.exists() else None
    return proc, seen


def member(i: int, reward: float, answer: str | None = None, prompt: str = "q", **extra) -> Member:
    r = Rollout(
        reward=reward,
        task_key="agent:a#1",
        agent="a",
        task_index=1,
        rollout_index=i,
        prompt=[{"role": "user", "content": prompt}],
        completion=[
            {"role": "assistant", "content": answer if answer is not None else f"answer {i}"}
        ],
        tools=[],
        has_image=False,
        truncated=None,
        request={"input": prompt, "temperature": 0.7, "tools": []},
        extras=extra,
        agent_ref={"type": "responses_api_agents", "name": "a"},
    )
    return Member(r, "f.jsonl", i + 1, i)


def statuses(result, members):
    return [result.status.get(m.index) for m in members]


# --------------------------------------------------------------------------- S3
def put(server, key: str, data: bytes) -> None:
    with server.filesystem().open_output_stream(f"{S3_BUCKET}/{key}") as f:
        f.write(data)


def get(server, key: str) -> bytes:
    with server.filesystem().open_input_stream(f"{S3_BUCKET}/{key}") as f:
        return f.read()


def objects(server, prefix: str) -> dict[str, tuple[int, int]]:
    """{key relative to prefix: (size, mtime_ns)} of every object under it."""
    base = f"{S3_BUCKET}/{prefix}".rstrip("/")
    sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    return {
        i.path[len(base) + 1 :]: (i.size, i.mtime_ns)
        for i in server.filesystem().get_file_info(sel)
        if i.type == pafs.FileType.File
    }


def uri(key: str) -> str:
    return f"s3://{S3_BUCKET}/{key}"


def processes_titled(*prefixes: bytes) -> list[int]:
    """The processes whose title starts with one of ``prefixes``: a Ray worker is retitled
    ``ray::<task>`` while it runs a task (fault tests kill one mid-task)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        if title.startswith(prefixes):
            found.append(int(pid))
    return found
