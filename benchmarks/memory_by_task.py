#!/usr/bin/env python3
"""The most private memory of any process, by the Ray task it was running: which
stage of a prepare sets a worker's peak (the benchmarks' figure is by role, and
the same worker processes run every stage).

    python benchmarks/memory_by_task.py dpo <input> <output> [key=value ...]

Starts a local Ray (2 CPUs), runs ``gymray.prepare`` once, and samples
``/proc/PID/smaps_rollup`` (``Private_Clean + Private_Dirty``) of this process and of
every ``ray::`` process every 0.2 s. Prints the wall time and, per process title
(``ray::MapBatches(read_and_parse)``, ``ray::map``/``ray::reduce`` for the sort's tasks,
``ray::IDLE``, ...), the largest sample in MiB. A title is what the process ran at
the sample, so a worker's peak shows under the task that reached it, and its
earlier tasks' memory it still holds counts too. ``peak_private_mib_outside_object_store``
is the same without the pages of Ray's object store that the process alone maps (its
shared-memory file: object store memory, bounded by the store's size, not the
process's heap).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from _common import MIB, private_in_object_store, pss_and_private


def sample(stop: threading.Event, peaks: dict[str, int], own: dict[str, int]) -> None:
    me = os.getpid()
    while not stop.is_set():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read().split(b"\0")[0].decode(errors="replace")[:60]
                if int(pid) == me:
                    title = "driver"
                elif not title.startswith("ray::"):
                    continue
                measured = pss_and_private(int(pid))
            except OSError:  # the process ended
                continue
            if measured is None:  # (it ended meanwhile)
                continue
            mib = measured[1] // MIB
            peaks[title] = max(peaks.get(title, 0), mib)
            if mib > own.get(title, 0):  # (own <= private: else no news)
                mine = (measured[1] - private_in_object_store(int(pid))) // MIB
                own[title] = max(own.get(title, 0), mine)
        time.sleep(0.2)


def main() -> int:
    algo, source, output, *sets = sys.argv[1:]
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    import gymray

    peaks: dict[str, int] = {}
    own: dict[str, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(stop, peaks, own), daemon=True)
    sampler.start()
    start = time.perf_counter()
    gymray.prepare(algo, input=source, output=output, overwrite=True,
                   **dict(s.split("=", 1) for s in sets))  # fmt: skip
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    ray.shutdown()
    by_peak = dict(sorted(peaks.items(), key=lambda kv: -kv[1]))
    own = dict(sorted(own.items(), key=lambda kv: -kv[1]))
    print(json.dumps({"seconds": round(seconds, 1), "peak_private_mib": by_peak,
                      "peak_private_mib_outside_object_store": own}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
