#!/usr/bin/env bash
# Add a worker node on the same machine as cluster/start_local_head.sh's head.
#
#   NUM_CPUS=2 cluster/start_local_worker.sh
#
# A second raylet on one host must not reuse the head's ports or temp dir: every port is
# chosen here (the head took the defaults), and the worker gets its own session under the
# head's temp dir via --temp-dir. A custom resource (`local_worker`) lets tests pin work to
# it. Same loopback and token settings as the head, with one workaround (below).
set -euo pipefail

RAY_PORT=${RAY_PORT:-6379}
RAY_TMP=${RAY_TMP:-/tmp/gymray-ray}
BASE_PORT=${WORKER_BASE_PORT:-21000}   # uses BASE_PORT .. BASE_PORT+1100
RAY=${RAY:-ray}

export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_USAGE_STATS_ENABLED=0
export RAY_AUTH_MODE=token

args=(--address="127.0.0.1:$RAY_PORT" --node-ip-address=127.0.0.1
      --temp-dir="$RAY_TMP"
      --node-manager-port=$((BASE_PORT)) --object-manager-port=$((BASE_PORT + 1))
      --dashboard-agent-listen-port=$((BASE_PORT + 2)) --dashboard-agent-grpc-port=$((BASE_PORT + 3))
      --metrics-export-port=$((BASE_PORT + 4)) --runtime-env-agent-port=$((BASE_PORT + 5))
      --min-worker-port=$((BASE_PORT + 100)) --max-worker-port=$((BASE_PORT + 1100))
      --resources='{"local_worker": 1}' --disable-usage-stats)
[[ -n "${NUM_CPUS:-}" ]] && args+=(--num-cpus="$NUM_CPUS")
# Workaround: with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 `ray start --address` refuses to
# start a worker ("Multi-node Ray clusters are not supported"); with it unset, Ray rewrites
# 127.0.0.1 to the machine's outward IP, where the head's GCS does not listen, and so do
# the drivers and workers this node starts. So the variable stays 0 (inherited by every
# process of this node) and only this CLI process is told multi-node is fine, with its
# IP lookup pinned to loopback.
PYTHON=${PYTHON:-$(dirname "$(command -v "$RAY")")/python}
exec "$PYTHON" - start "${args[@]}" <<'PY'
import sys

import ray._private.ray_constants as ray_constants
import ray._private.services as services
from ray.scripts.scripts import main

ray_constants.ENABLE_RAY_CLUSTER = True
services.get_node_ip_address = lambda address=None: "127.0.0.1"
sys.argv = ["ray", *sys.argv[1:]]
main()
PY
