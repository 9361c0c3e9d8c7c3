"""The recipe protocol and registry.

A recipe turns canonical rollouts into records of one NeMo RL algorithm. It is
pure Python (no Ray): the engine runs it on blocks of rollouts wherever they are
read, and never needs to know which algorithm it runs. A recipe is either

- **per rollout** (``grouped = False``): ``record(rollout, source)`` makes one
  record or names a filter reason; ``prefilter(reward)`` may filter a line on its
  reward before the chat conversion is paid for; or
- **grouped** (``grouped = True``): all rollouts of a task meet in one place, in
  three steps, so that only small keys travel to where they meet:
  ``summarize(member)`` where a line is parsed, ``decide(keys)`` per task (a
  status per rollout and the records to build), ``build(members, params)`` per
  record from the full rollouts a plan names.

A recipe module declares its settings (the ``<name>.*`` section), its formats,
the NeMo RL entrypoint of each format, and registers itself with
:func:`register`; ``gymray/recipes/__init__.py`` imports every module of the
package, so adding an algorithm is adding its file (and its config templates in
``configs/``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict

from gymray.rollouts import Checked, Rollout


class Section(BaseModel):
    """Base of every settings model: unknown keys are errors, assignments are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


REGISTRY: dict[str, type[Recipe]] = {}


def register(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: make a recipe available as ``python -m gymray.run <cls.name>``."""
    REGISTRY[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Entrypoint:
    """The NeMo RL script that trains a format, and its default base config
    (paths inside the NeMo RL checkout)."""

    script: str
    base_config: str


@dataclass
class Context:
    """What a recipe may need to know of its inputs before the run, read for it by
    the engine: ``sample()`` yields the first lines of the input files (for
    format detection), ``tasks`` are the task files as ``(uri, bytes)``: the
    ``tasks=`` ones, or those found beside rollouts files (``task_owners``)."""

    files: list[str]
    sample: Callable[[], Iterator[bytes]] = field(default=lambda: iter(()))
    tasks: list[tuple[str, bytes]] = field(default_factory=list)
    task_owners: dict[str, str] = field(default_factory=dict)  # found beside a rollouts file


@dataclass
class Member:
    """A rollout of a task group, with where it came from."""

    rollout: Rollout
    file: str
    line: int
    index: int  # position in the group

    @property
    def source(self) -> tuple[str, int]:
        return (self.file, self.line)


@dataclass
class Key:
    """What a grouped recipe decides on for one rollout, in place of the rollout:
    small enough that a shuffle of keys stays cheap whatever the data size."""

    index: int  # position in the group (input order)
    reward: float
    summary: Any  # the recipe's ``summarize``: a filter reason (str) or JSON facts
    source: tuple[str, int]  # (file, line)


@dataclass
class GroupResult:
    """What a grouped recipe decided for one task: a status per member
    (``used`` or ``filtered`` with a reason), the records it asks for (``plans``:
    anchor member index, the members whose full rollouts build the record, and
    parameters) and, once built, the records, each anchored on a member (for
    ordering and provenance)."""

    status: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    plans: list[tuple[int, list[int], dict]] = field(default_factory=list)
    records: list[tuple[dict, int]] = field(default_factory=list)  # (record, anchor member index)
    notes: list[str] = field(default_factory=list)  # facts about the task, for the report

    def use(self, m: Member | Key) -> None:
        self.status[m.index] = ("used", None)

    def drop(self, m: Member | Key, reason: str) -> None:
        self.status.setdefault(m.index, ("filtered", reason))


def manifest_notes(manifest: dict) -> dict[str, int]:
    """A dataset's note counts (what :meth:`Recipe.notes` said of its records), from its
    manifest: ``{"content:images": 5, "agent:math_agent": 30, ...}``."""
    return (manifest.get("stats") or {}).get("notes") or {}


@dataclass
class Outcome:
    """What a run produced, for a recipe's report section and warnings: counts,
    the format, per-task ``(rollouts, reward sum, min, max)`` rows (grouped
    recipes), and the notes records carried (e.g. where ground truth came from)."""

    counts: dict
    format: str
    per_task: Any  # numpy array (n_tasks, 4)
    notes: dict


class Recipe:
    """Base class of the algorithms; see the module docstring."""

    name: ClassVar[str]
    help: ClassVar[str]  # one line, for --help
    settings: ClassVar[type[BaseModel]]  # the `<name>.*` section
    entrypoints: ClassVar[dict[str, Entrypoint]]  # format -> NeMo RL entrypoint
    # The rollouts shuffle drops the request dump and verifier fields unless a
    # recipe builds records from them.
    needs_request: ClassVar[bool] = False

    def __init__(self, settings: Any, context: Context):
        # What workers read of the settings, not the whole Settings: unpickling that
        # imports gymray.config (OmegaConf, every algorithm's models) in each worker.
        self.seed = settings.split.seed
        self.section = getattr(settings, self.name)
        self.chat = settings.chat
        self.context = context
        self.format = self.choose_format()

    # ----------------------------------------------------------------- shape
    @classmethod
    def formats(cls) -> tuple[str, ...]:
        return tuple(cls.entrypoints)

    @classmethod
    def task_files(cls, settings: Any, rollout_files: list[str]) -> dict[str, list[str]]:
        """Per rollouts file, task files beside it the recipe reads too, best first (the
        first that exists is taken)."""
        return {}

    @classmethod
    def entrypoint(cls, fmt: str, manifest: dict) -> Entrypoint:
        """The NeMo RL entrypoint that trains this dataset (``manifest``)."""
        return cls.entrypoints[fmt]

    def choose_format(self) -> str:
        return self.section.format

    @property
    def grouped(self) -> bool:
        return True

    @property
    def dedup(self) -> bool:
        """Whether exact duplicate records (meta aside) are dropped."""
        return False

    # ----------------------------------------------------------- per rollout
    def prefilter(self, checked: Checked) -> str | None:
        """A filter reason known from the line's reward alone (no conversion yet)."""
        return None

    def record(self, r: Rollout, source: tuple[str, int]) -> tuple[dict | None, str | None]:
        raise NotImplementedError

    # --------------------------------------------------------------- grouped
    def summarize(self, m: Member) -> Any:
        raise NotImplementedError

    def decide(self, keys: list[Key]) -> GroupResult:
        raise NotImplementedError

    def build(self, members: list[Member], params: dict) -> dict:
        raise NotImplementedError

    def key(self, m: Member) -> Key:
        # Through JSON, as the shuffle carries it, so both ways decide alike.
        summary = orjson.loads(orjson.dumps(self.summarize(m)))
        return Key(m.index, m.rollout.reward, summary, m.source)

    def __call__(self, members: list[Member]) -> GroupResult:
        """All three steps in one place, on a task's full rollouts."""
        result = self.decide([self.key(m) for m in members])
        by_index = {m.index: m for m in members}
        result.records = [
            (self.build([by_index[i] for i in need], params), anchor)
            for anchor, need, params in result.plans
        ]
        return result

    # ------------------------------------------------------------ reporting
    # The number the report shows the distribution of, per record (None: none).
    value_name: ClassVar[str | None] = None

    def value(self, record: dict) -> float | None:
        return None

    def notes(self, record: dict) -> list[str]:
        """Facts about a record to count in the stats, overall and per environment
        (e.g. where its ground truth came from)."""
        return []

    def explain(self, outcome: Outcome) -> tuple[list[str], list[str]]:
        """Report sections (markdown) and warnings about a run's outcome."""
        return [], []


def get(name: str) -> type[Recipe]:
    return REGISTRY[name]


def meta_of(r: Rollout, sources: list[tuple[str, int]]) -> dict:
    """Provenance of a record: where each rollout it came from is, and what it scored."""
    meta = {
        "task": r.task_key,
        "source": [{"file": f, "line": n} for f, n in sources],
        "reward": r.reward,
    }
    if r.agent is not None:
        meta["agent"] = r.agent
    if r.task_index is not None:
        meta["task_index"] = r.task_index
    if r.rollout_index is not None:
        meta["rollout_index"] = r.rollout_index
    if r.truncated:
        meta["truncated"] = r.truncated
    return meta


def conversation_problem(messages: list[dict]) -> str | None:
    """A filter reason when a conversation cannot be a training example."""
    called: set[str] = set()
    for m in messages:
        if m["role"] == "assistant":
            called.update(c["id"] for c in m.get("tool_calls") or ())
        elif m["role"] == "tool" and m["tool_call_id"] not in called:
            return "tool_result_without_call"
    return None
