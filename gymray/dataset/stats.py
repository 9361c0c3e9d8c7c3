"""The run's numbers, merged from the parts' stats and the driver's decisions.

Everything here is small: counts per reason, per input file and per environment;
per-task reward aggregates (grouped recipes); the rewards of the lines that have
one; record lengths. ``input_lines == used + sum(filtered) + sum(rejected)``
always holds, and is checked.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from gymray.dataset.assemble import Plan
from gymray.engine.write import PartStats
from gymray.histogram import reward_summary


@dataclass
class Counts:
    input_lines: int = 0
    used: int = 0
    filtered: collections.Counter = field(default_factory=collections.Counter)
    rejected: collections.Counter = field(default_factory=collections.Counter)
    records: dict = field(default_factory=lambda: {"train": 0, "val": 0})

    def as_dict(self) -> dict:
        return {
            "input_lines": self.input_lines,
            "used": self.used,
            "filtered": dict(sorted(self.filtered.items())),
            "rejected": dict(sorted(self.rejected.items())),
            "records": dict(self.records),
        }

    def reconciles(self) -> bool:
        return self.input_lines == self.used + sum(self.filtered.values()) + sum(
            self.rejected.values()
        )


@dataclass
class RunStats:
    counts: Counts
    per_file: dict[int, collections.Counter]
    per_env: dict[str, collections.Counter]
    per_task: np.ndarray  # (n_tasks, 4): rollouts, reward sum, min, max
    rewards: np.ndarray
    env_names: list[str]  # the environments the codes below stand for
    reward_env: np.ndarray  # code of each reward's environment
    notes: collections.Counter
    chars: dict  # split -> array of the kept records' trained characters
    chars_env: dict  # split -> codes of their environments
    values: dict  # split -> array of the kept records' values (the recipe's number)


def merge(parts: list[PartStats], plan: Plan) -> RunStats:
    counts = Counts()
    per_file: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    per_env: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    notes: collections.Counter = collections.Counter()
    chars: dict[str, list] = {"train": [], "val": []}
    chars_env: dict[str, list] = {"train": [], "val": []}
    values: dict[str, list] = {"train": [], "val": []}
    codes: dict[str, int] = {}  # environment -> its code in this run
    reward_env: list[np.ndarray] = []
    for p in parts:
        # the part's environment codes in the run's codes
        run_code = np.array([codes.setdefault(e, len(codes)) for e in p.envs], np.int32)
        if p.reward_env is not None and len(p.reward_env):
            reward_env.append(run_code[p.reward_env])
        counts.input_lines += p.lines
        counts.used += p.used
        counts.filtered.update(p.filtered)
        counts.rejected.update(p.rejected)
        notes.update(p.notes)
        for fid, c in p.per_file.items():
            per_file[fid].update(c)
        for env, c in p.per_env.items():
            per_env[env].update(c)
        rec = p.records
        m = len(rec.get("nbytes", ()))
        if not m:
            continue
        dropped = plan.dropped.get(p.key, np.zeros(m, bool))
        moved = plan.moved.get(p.key, np.zeros(m, bool))
        is_val = rec["is_val"].astype(bool)
        env = rec["env"]  # codes into p.envs
        gone = np.flatnonzero(dropped)
        if len(gone):
            # duplicates' lines were used: now they are filtered as duplicates (counted
            # per file and per environment and split, not record by record)
            counts.used -= len(gone)
            counts.filtered["duplicate"] += len(gone)
            by_file = collections.Counter(np.asarray(rec["file_id"])[gone].tolist())
            for fid, n in by_file.items():
                per_file[int(fid)].update({"used": -n, "filtered": n})
            pairs = zip(env[gone].tolist(), is_val[gone].tolist(), strict=True)
            for (code, val), n in collections.Counter(pairs).items():
                split = "val" if val else "train"
                per_env[p.envs[code]].update(
                    {"used": -n, "filtered": n, "filtered:duplicate": n, f"records:{split}": -n}
                )
        for j in np.flatnonzero(moved):
            per_env[p.envs[env[j]]].update({"records:train": -1, "records:val": 1})
        kept = (
            rec["notes"]
            if not dropped.any()
            else [rec["notes"][j] for j in np.flatnonzero(~dropped)]
        )
        kept_envs = (env if not dropped.any() else env[~dropped]).tolist()
        for (code, joined), n in collections.Counter(zip(kept_envs, kept, strict=True)).items():
            for note in joined.split("\n") if joined else ():
                notes[note] += n
                per_env[p.envs[code]][f"note:{note}"] += n
        for split, mask in (
            ("val", (is_val | moved) & ~dropped),
            ("train", ~is_val & ~moved & ~dropped),
        ):
            chars[split].append(rec["chars"][mask])
            values[split].append(np.asarray(rec["value"], dtype=np.float64)[mask])
            chars_env[split].append(run_code[env[mask]])
    counts.records = dict(plan.records)
    return RunStats(
        counts=counts,
        per_file=dict(per_file),
        per_env={k: _positive(v) for k, v in per_env.items()},
        per_task=_per_task(parts),
        rewards=np.concatenate([p.rewards for p in parts]) if parts else np.zeros(0),
        env_names=list(codes),
        reward_env=np.concatenate(reward_env) if reward_env else np.zeros(0, np.int32),
        notes=notes,
        chars={s: np.concatenate(v) if v else np.zeros(0, np.int64) for s, v in chars.items()},
        chars_env={
            s: np.concatenate(v) if v else np.zeros(0, np.int32) for s, v in chars_env.items()
        },
        values={s: np.concatenate(v) if v else np.zeros(0) for s, v in values.items()},
    )


def _positive(c: collections.Counter) -> dict:
    return {k: v for k, v in sorted(c.items()) if v}


def _per_task(parts: list[PartStats]) -> np.ndarray:
    """Per-task (rollouts, reward sum, min, max) over the parts: a task sorted
    into consecutive parts has its rows merged."""
    with_tasks = [p for p in parts if p.tasks is not None and len(p.tasks)]
    if not with_tasks:
        return np.zeros((0, 4))
    hashes = np.concatenate([p.task_hashes for p in with_tasks])
    stats = np.concatenate([p.tasks for p in with_tasks])
    starts = np.flatnonzero(np.concatenate([[True], hashes[1:] != hashes[:-1]]))
    return np.column_stack(
        [
            np.add.reduceat(stats[:, 0], starts),
            np.add.reduceat(stats[:, 1], starts),
            np.minimum.reduceat(stats[:, 2], starts),
            np.maximum.reduceat(stats[:, 3], starts),
        ]
    )


def file_counts(per_file: dict, files: list[str]) -> dict[str, dict]:
    """Per input file: used, filtered, rejected, lines, and its most common reject."""
    out = {}
    for fid in sorted(per_file):
        pf = per_file[fid]
        c = {k: pf[k] for k in ("used", "filtered", "rejected")}
        c["lines"] = sum(c.values())
        reasons = {k.split(":", 1)[1]: v for k, v in pf.items() if k.startswith("rejected:")}
        if reasons:
            c["top_reject"] = max(sorted(reasons), key=reasons.get)
        out[files[fid]] = c
    return out


def dead_file_warnings(per_file: dict, files: list[str] = ()) -> list[str]:
    """One warning per reason for input files of which every line was rejected, and one
    for those of ``files`` (every input) that hold no line at all."""
    dead: dict[str, list[str]] = {}
    for uri, fc in per_file.items():
        if fc["lines"] and fc["rejected"] == fc["lines"]:
            dead.setdefault(fc.get("top_reject", "?"), []).append(uri)
    out = []
    for reason, uris in sorted(dead.items()):
        hint = (
            " (task files such as example.jsonl have no response: pass rollouts files only, "
            "e.g. a glob '**/*rollouts*.jsonl')"
            if reason == "missing_response"
            else ""
        )
        out.append(
            f"every line of {len(uris)} file(s) was rejected, mostly {reason}: {_shown(uris)}{hint}"
        )
    empty = [uri for uri in files if not per_file.get(uri, {}).get("lines")]
    if empty:
        out.append(f"{len(empty)} input file(s) hold no line at all (empty): {_shown(empty)}")
    return out


def _shown(uris: list[str]) -> str:
    return ", ".join(uris[:3]) + (f" and {len(uris) - 3} more" if len(uris) > 3 else "")


def _quantiles(values: np.ndarray, points: int = 1001) -> list[int]:
    """The values themselves when few, else ``points`` evenly spaced quantiles:
    enough to count, within 0.1% of the records, how many exceed any limit."""
    if values.size <= points:
        return sorted(int(v) for v in values)
    return [int(v) for v in np.quantile(values, np.linspace(0, 1, points), method="nearest")]


def lengths(run: RunStats, chars_per_token: float) -> dict:
    """Record lengths per split (characters of what NeMo RL tokenizes), for the
    report and for the check of a launch's sequence limits."""
    out: dict = {"chars_per_token": chars_per_token}
    for split, chars in run.chars.items():
        out[split] = {"records": int(chars.size), "chars": _quantiles(chars)}
    return out


def values(run: RunStats, name: str | None) -> dict | None:
    """The distribution of the recipe's number over the kept records, per split."""
    if name is None:
        return None
    out: dict = {"name": name}
    for split, v in run.values.items():
        v = v[~np.isnan(v)]
        out[split] = reward_summary(v)
    return out


def _grouped(codes: np.ndarray, values: np.ndarray, n: int) -> list[np.ndarray]:
    """``values`` by their code (0 to ``n - 1``), each group in its order: one stable sort,
    where a mask per environment reads every line once an environment (143 in the real
    fixtures)."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n + 1)).tolist()
    ordered = values[order]
    return [ordered[bounds[k] : bounds[k + 1]] for k in range(n)]


def environments(run: RunStats, chars_per_token: float, reward: dict) -> dict[str, dict]:
    """Per environment: what became of its lines, its rewards (and their histogram on
    the bins of ``reward``, the run's own summary), its records' lengths."""
    out: dict[str, dict] = {}
    edges = (reward.get("histogram") or {}).get("edges")
    codes = {env: k for k, env in enumerate(run.env_names)}
    none = np.zeros(0)
    rewards_of = _grouped(run.reward_env, run.rewards, len(codes))
    chars_of = [_grouped(run.chars_env[s], v, len(codes)) for s, v in run.chars.items() if v.size]
    for env in sorted(run.per_env):
        code = codes.get(env)
        c = run.per_env[env]
        e = {
            "lines": sum(c.get(k, 0) for k in ("used", "filtered", "rejected")),
            "used": c.get("used", 0),
            "filtered": {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("filtered:")},
            "rejected": {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("rejected:")},
            "records": {"train": c.get("records:train", 0), "val": c.get("records:val", 0)},
            "notes": {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("note:")},
        }
        rewards = none if code is None else rewards_of[code]
        if rewards.size:
            e["reward"] = {
                "count": int(rewards.size),
                "mean": float(rewards.mean()),
                "std": float(rewards.std()),
                "min": float(rewards.min()),
                "max": float(rewards.max()),
                "histogram": [int(c) for c in np.histogram(rewards, bins=edges)[0]],
            }
        groups = [g[code] for g in chars_of] if code is not None else []
        chars = np.concatenate(groups) if groups else none
        if chars.size:
            p50, p90 = np.percentile(chars, [50, 90])
            e["chars"] = {"p50": int(p50), "p90": int(p90), "max": int(chars.max())}
            e["tokens_est"] = {k: int(v / chars_per_token) for k, v in e["chars"].items()}
        out[env] = e
    return out
