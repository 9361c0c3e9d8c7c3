"""A prepared dataset, as the Python API hands it back: where it is, what it holds."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gymray import formats
from gymray.inspect import read_head, render_dataset
from gymray.storage import filesystem

if TYPE_CHECKING:
    import ray.data


@dataclass(repr=False)
class PrepareResult:
    """A prepared dataset: its directory, counts, manifest and settings.

    Example::

        ds = gymray.prepare("sft", input="rollouts/", output="/shared/ds/sft")
        ds                          # PrepareResult(sft/openai at /shared/ds/sft: 231 train, 11 val)
        ds.counts["filtered"]       # {'below_reward_threshold': 200, ...}
        ds.head(2)                  # the first records, as dicts
        ds.dataset("train")         # a Ray Dataset of the records (nested values decoded)
        print(ds.describe())        # counts, environments, records as conversations
    """

    output: str
    manifest: dict
    reused: bool
    paths: dict = field(default_factory=dict)
    settings: Any = None

    @property
    def counts(self) -> dict:
        return self.manifest["counts"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def storage(self) -> Any:
        return self.settings.storage if self.settings else None

    @property
    def environments(self) -> dict:
        return self.manifest.get("environments") or {}

    def head(self, n: int = 5, split: str = "train") -> list[dict]:
        """The first ``n`` records of ``split`` (val when train has none), read directly."""
        for name in (split, "val") if split == "train" else (split,):
            rel = self.manifest["files"].get(name)
            if not rel:
                continue
            fs, base = filesystem(self.output, self.storage)
            with fs.open_input_stream(f"{base}/{rel}") as f:
                rows = read_head(f, n)
            if rows:
                return rows
        return []

    def dataset(self, split: str = "train") -> ray.data.Dataset:
        """The records of ``split`` as a Ray Dataset, nested fields (messages, tools,
        meta, ...) as real nested values (read from the Parquet files)."""
        fs, base = filesystem(self.output, self.storage)
        files = [f"{base}/{p}" for p in self.manifest["files"]["parquet"][split]]
        fmt = formats.get(self.manifest["format"])
        nested = [k for k, kind in fmt.fields.items() if kind == "json"]

        def decode(row: dict) -> dict:
            return {k: orjson.loads(v) if k in nested and v is not None else v
                    for k, v in row.items()}  # fmt: skip

        # imported here: only this method needs Ray Data (see gymray.engine.stream)
        import ray.data

        return ray.data.read_parquet(files, filesystem=fs).map(decode)

    def describe(self, examples: int = 2) -> str:
        """Counts, the per-environment table and a few records as conversations."""
        return render_dataset(self, examples)

    def summary(self) -> dict:
        return {
            "output": self.output,
            "reused": self.reused,
            "fingerprint": self.fingerprint,
            "paths": self.paths,
            "counts": self.counts,
        }

    def __repr__(self) -> str:
        m, r = self.manifest, self.counts["records"]
        return (
            f"PrepareResult({m.get('algo')}/{m.get('format')} at {self.output}: "
            f"{r['train']} train, {r['val']} val{', reused' if self.reused else ''})"
        )

    def _repr_html_(self) -> str:
        m, c = self.manifest, self.counts
        cells = [
            ("dataset", f"{m.get('algo')} / {m.get('format')}"),
            ("output", self.output),
            ("records", f"{c['records']['train']} train, {c['records']['val']} val"),
            ("lines", f"{c['input_lines']}: used {c['used']}, filtered "
                      f"{sum(c['filtered'].values())}, rejected {sum(c['rejected'].values())}"),
            ("environments", str(len(self.environments))),
            ("report", self.paths.get("report_html") or self.paths.get("report", "")),
        ]  # fmt: skip
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in cells
        )
        return f"<table>{rows}</table>"
