#!/usr/bin/env bash
# Start (or stop) a local Ray head for the tests that dispatch benchmark runs to a cluster (tests/test_ray_runner.py).
#
#   export RAY_ADDRESS="$(bash .ci/ray.sh)"    # start; stdout is exactly one line, the address (127.0.0.1:PORT)
#   bash .ci/ray.sh stop                         # stop the head this script started
#
# - the head listens on 127.0.0.1 only, on a free port (or SB3_PPO_VARIANTS_RAY_PORT), with
#   SB3_PPO_VARIANTS_RAY_CPUS CPUs (2), no dashboard, no usage statistics; progress goes to stderr;
# - idempotent: when the head this script started is still running, its address is printed again;
# - `ray` is the virtual environment's ($VENV/bin/ray, VENV=.venv as in the Makefile, relative to the repository);
# - the head runs as `ray start --head --block` in the background: stopping it ends that one process (by its id,
#   recorded in SB3_PPO_VARIANTS_RAY_DIR, /tmp/sb3_ppo_variants_ray), which takes the head's processes with it; other
#   Ray processes on the machine are left alone (unlike `ray stop`, which ends every Ray process of the machine).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
RAY="$VENV/bin/ray"
CPUS="${SB3_PPO_VARIANTS_RAY_CPUS:-2}"
STATE="${SB3_PPO_VARIANTS_RAY_DIR:-/tmp/sb3_ppo_variants_ray}"
PID_FILE="$STATE/head.pid"
ADDRESS_FILE="$STATE/address"
LOG="$STATE/head.log"

log() { echo "ray.sh: $*" >&2; }

running() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

if [ "${1:-start}" = "stop" ]; then
  if running; then
    pid="$(cat "$PID_FILE")"
    log "stopping the head (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "the head (pid $pid) did not stop in 30 s"
      exit 1
    fi
  else
    log "no head started by this script is running"
  fi
  rm -f "$PID_FILE" "$ADDRESS_FILE"
  exit 0
fi

if [ ! -x "$RAY" ]; then
  log "no $RAY: run make install first (it installs the ray extra), or set VENV"
  exit 1
fi

# 1. already running: the same address again
if running && [ -s "$ADDRESS_FILE" ] && "$RAY" status --address "$(cat "$ADDRESS_FILE")" >/dev/null 2>&1; then
  log "already running (pid $(cat "$PID_FILE")): export RAY_ADDRESS=$(cat "$ADDRESS_FILE")"
  cat "$ADDRESS_FILE"
  exit 0
fi

# 2. start the head in the background, its output to the log, on a free port of 127.0.0.1
mkdir -p "$STATE"
PORT="${SB3_PPO_VARIANTS_RAY_PORT:-$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
ADDRESS="127.0.0.1:$PORT"
log "starting a Ray head on $ADDRESS with $CPUS CPUs (log: $LOG)"
nohup "$RAY" start --head --block --node-ip-address 127.0.0.1 --port "$PORT" --num-cpus "$CPUS" \
  --include-dashboard=false --disable-usage-stats </dev/null >"$LOG" 2>&1 &
echo $! >"$PID_FILE"

# 3. ready when `ray status` answers at the address
for _ in $(seq 1 120); do
  if "$RAY" status --address "$ADDRESS" >/dev/null 2>&1; then
    echo "$ADDRESS" >"$ADDRESS_FILE"
    log "ready: export RAY_ADDRESS=$ADDRESS"
    echo "$ADDRESS"
    exit 0
  fi
  if ! running; then
    log "the head exited; see $LOG"
    exit 1
  fi
  sleep 0.5
done
log "the head did not answer at $ADDRESS in 60 s; see $LOG"
exit 1
