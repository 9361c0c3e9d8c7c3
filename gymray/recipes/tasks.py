"""NeMo Gym task files joined to the rollouts they were collected from.

A GRPO row must be the task as Gym gave it: when the rollouts lost task fields
(verifiers drop them), the task file has them. Task rows are joined on the
rollouts file they belong to *and* on the indices, never on the indices alone
(every collection run numbers its tasks from 0):

- ``X_materialized_inputs.jsonl`` belongs to ``X.jsonl`` (NeMo Gym writes it
  beside the rollouts), one row per (task, rollout) with ``_ng_task_index`` and
  ``_ng_rollout_index``;
- any other task file (``example.jsonl``, the collection's input) belongs to the
  rollouts files in its own directory; its row number is the task index.
"""

from __future__ import annotations

import posixpath

import orjson

from gymray.errors import ConfigError
from gymray.rollouts import too_deep

MATERIALIZED = "_materialized_inputs.jsonl"


class TaskTable:
    """Task rows by rollouts file: ``row(file, task_index, rollout_index)``."""

    def __init__(
        self,
        tasks: list[tuple[str, bytes]],
        rollout_files: list[str],
        owners: dict[str, str] | None = None,
    ):
        self.rows: dict[str, dict] = {}  # rollouts file -> {(task, rollout|None): row}
        self.bad_lines = 0
        owner_of: dict[str, str] = {}  # rollouts file -> the task file it joins
        for uri, data in tasks:
            owners_here = [owners[uri]] if owners and uri in owners else None
            owners_here = owners_here or _owners(uri, rollout_files)
            for_rollouts = owners_here
            if not for_rollouts:
                raise ConfigError(
                    f"tasks file {uri} belongs to none of the input rollouts files: name it "
                    f"<rollouts>{MATERIALIZED} beside <rollouts>.jsonl, or put it in the "
                    "same directory as its rollouts file"
                )
            for owner in for_rollouts:
                if owner in owner_of:
                    raise ConfigError(
                        f"rollouts file {owner} has two task files, {owner_of[owner]} and "
                        f"{uri}: pass one of them in tasks="
                    )
                owner_of[owner] = uri
                self.rows[owner] = self._load(uri, data)

    def _load(self, uri: str, data: bytes) -> dict:
        rows: dict = {}
        where: dict = {}
        n = 0
        for line_no, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or too_deep(raw, row):  # records could not hold it
                self.bad_lines += 1
                n += 1
                continue
            ti = row.get("_ng_task_index", n)
            key = (ti, row.get("_ng_rollout_index"))
            if key in rows and rows[key] != row:
                raise ConfigError(
                    f"task rows {uri}:{where[key]} and {uri}:{line_no} both claim task "
                    f"{key[0]}, rollout {key[1]}, and differ: a tasks file must hold one "
                    "collection run"
                )
            rows[key] = row
            where[key] = line_no
            rows.setdefault((ti, None), row)
            where.setdefault((ti, None), line_no)
            n += 1
        return rows

    def row(self, file: str, task_index: int | None, rollout_index: int | None) -> dict | None:
        table = self.rows.get(file)
        if table is None or task_index is None:
            return None
        return table.get((task_index, rollout_index)) or table.get((task_index, None))


def _owners(task_uri: str, rollout_files: list[str]) -> list[str]:
    name = posixpath.basename(task_uri)
    folder = posixpath.dirname(task_uri)
    if name.endswith(MATERIALIZED):
        own = posixpath.join(folder, name[: -len(MATERIALIZED)] + ".jsonl")
        return [f for f in rollout_files if f in (own, own + ".gz")]
    return [f for f in rollout_files if posixpath.dirname(f) == folder]


def sidecar_task_files(rollout_files: list[str]) -> dict[str, list[str]]:
    """The task files NeMo Gym may have left beside each rollouts file, best first:
    ``X_materialized_inputs.jsonl`` for ``X.jsonl``, then ``X.jsonl`` for
    ``X_rollouts.jsonl`` (the collection's input). The caller takes the first that exists."""
    out = {}
    for uri in rollout_files:
        folder, name = posixpath.split(uri)
        stem = name.removesuffix(".gz").removesuffix(".jsonl")
        found = [posixpath.join(folder, stem + MATERIALIZED)]
        if stem.endswith("_rollouts"):
            found.append(posixpath.join(folder, stem.removesuffix("_rollouts") + ".jsonl"))
        out[uri] = found
    return out
