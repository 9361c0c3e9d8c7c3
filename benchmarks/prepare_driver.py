#!/usr/bin/env python3
"""A driver connected to a running Ray (``RAY_ADDRESS``) that calls
``gymray.prepare`` when asked: one JSON request a line on stdin
(``{"algo": ..., "kwargs": {...}}``), one JSON reply a line on stdout
(``seconds`` around the call, ``counts``, ``paths``).

Run by the benchmarks (``_common.Driver``), which measure the CPU and memory
of this process and of the Ray cluster around each request. Only the public
API is used, so the benchmark survives engine changes.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    t0 = time.perf_counter()
    import ray

    import gymray

    imported = time.perf_counter()
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    ready = {
        "gymray_file": os.path.realpath(gymray.__file__),
        "import_seconds": round(imported - t0, 2),
        "connect_seconds": round(time.perf_counter() - imported, 2),
    }
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        t = time.perf_counter()
        try:
            result = gymray.prepare(req["algo"], **req["kwargs"])
        except Exception as e:  # noqa: BLE001 (reported to the harness)
            print(json.dumps({"error": repr(e)}), flush=True)
            raise
        seconds = time.perf_counter() - t
        reply = {
            "seconds": round(seconds, 3),
            "reused": result.reused,
            "counts": result.counts,
            "paths": result.paths,
        }
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
