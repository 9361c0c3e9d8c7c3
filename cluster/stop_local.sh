#!/usr/bin/env bash
# Stop the Ray processes started by start_local_head.sh / start_local_worker.sh (those
# whose command line names RAY_TMP), and nothing else: `ray stop` would also kill every
# other Ray on this machine.
set -euo pipefail
RAY_TMP=${RAY_TMP:-/tmp/gymray-ray}
RAY_PORT=${RAY_PORT:-6379}

pids=$(ps -eo pid=,args= | awk -v t="$RAY_TMP" -v a="127.0.0.1:$RAY_PORT" \
    'index($0, t) || index($0, "--address=" a) || index($0, "--gcs-address=" a) {print $1}')
[[ -z "$pids" ]] && { echo "no Ray processes for $RAY_TMP"; exit 0; }
# Raylets' children (workers) go with them; gcs_server can take a few seconds on SIGTERM.
kill $pids 2>/dev/null || true
for _ in $(seq 20); do
    alive=$(for p in $pids; do kill -0 "$p" 2>/dev/null && echo "$p"; done || true)
    [[ -z "$alive" ]] && { echo "stopped"; exit 0; }
    sleep 0.5
done
kill -9 $alive 2>/dev/null || true
echo "stopped (forced: $alive)"
