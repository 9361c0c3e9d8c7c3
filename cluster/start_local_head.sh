#!/usr/bin/env bash
# Start a Ray head on this machine, on loopback only, with token auth; print how to use it.
#
#   cluster/start_local_head.sh                 # CPUs: all; ports 6379 / 8265
#   NUM_CPUS=4 RAY_PORT=6380 DASHBOARD_PORT=8266 CLIENT_PORT=9101 AGENT_PORT=52400 \
#       RAY_TMP=/tmp/gr2 cluster/start_local_head.sh
#   cluster/stop_local.sh                       # stops what this started (not other Rays)
#
# Why these settings: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 with --node-ip-address=127.0.0.1
# keeps every Ray address on loopback (otherwise Ray picks the machine's outward address);
# the dashboard (job API) listens on 127.0.0.1 only. Ray 2.56 turns token auth on only
# with RAY_AUTH_MODE=token; the token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
# ~/.ray/auth_token (created here if none exists).
set -euo pipefail

RAY_PORT=${RAY_PORT:-6379}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
RAY_TMP=${RAY_TMP:-/tmp/gymray-ray}   # short: Ray puts unix sockets under it
RAY=${RAY:-ray}

export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_USAGE_STATS_ENABLED=0
export RAY_AUTH_MODE=token
if [[ -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" && ! -s ~/.ray/auth_token ]]; then
    mkdir -p ~/.ray
    (umask 077; python3 -c 'import secrets; print(secrets.token_hex(16))' > ~/.ray/auth_token)
    echo "wrote a new auth token to ~/.ray/auth_token"
fi

args=(--head --port="$RAY_PORT" --node-ip-address=127.0.0.1
      --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --include-dashboard=true
      --temp-dir="$RAY_TMP" --disable-usage-stats
      # Fixed by default in Ray; set them when another Ray runs on this machine (the
      # client port must lie outside the worker range 10002-19999).
      --ray-client-server-port="${CLIENT_PORT:-10001}"
      --dashboard-agent-listen-port="${AGENT_PORT:-52365}")
[[ -n "${NUM_CPUS:-}" ]] && args+=(--num-cpus="$NUM_CPUS")
[[ -n "${NUM_GPUS:-}" ]] && args+=(--num-gpus="$NUM_GPUS")
"$RAY" start "${args[@]}"

cat <<MSG

Ray head on 127.0.0.1:$RAY_PORT, job API on http://127.0.0.1:$DASHBOARD_PORT (token auth on).
  export RAY_AUTH_MODE=token RAY_ADDRESS=127.0.0.1:$RAY_PORT   # the GCS address, not http://
  python -m gymray.run sft input=... output=... job.nemo_rl_dir=/path/to/nemo-rl
  cluster/start_local_worker.sh      # optional second node on this machine
MSG
